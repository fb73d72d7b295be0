//! Pure: the order in which one run reconciles its objects. An object that reads what another
//! object of the same run produces (a copied tag, an index entry, a subject, an `artifactRef`)
//! waits for it, so `apply -f examples/` works in one go.

use std::collections::BTreeMap;

use crate::intent::{ArtifactIntent, ReferenceTarget};
use crate::oci::{Repository, Tag};

/// What ordering needs to know of an object.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub intent: &'a ArtifactIntent,
}

/// For each node, the nodes it reads from.
pub fn dependencies(nodes: &[Node<'_>]) -> Vec<Vec<usize>> {
    let mut producers: BTreeMap<(&Repository, &Tag), usize> = BTreeMap::new();
    let mut by_name: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for tag in &node.intent.tags {
            producers.entry((&node.intent.repository, tag)).or_insert(i);
        }
        by_name.insert((node.namespace, node.name), i);
    }
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (tags, names) = node.intent.reads();
            let mut deps: Vec<usize> = tags
                .iter()
                .filter_map(|(repo, tag)| producers.get(&(repo, tag)).copied())
                .chain(
                    names
                        .iter()
                        .filter_map(|n| by_name.get(&(node.namespace, *n)).copied()),
                )
                .filter(|d| *d != i)
                .collect();
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect()
}

/// Whether an index entry or the subject of `node` is `node` itself, by name or by one of its
/// own tags: a cycle of one. (An image copy of its own tag is not one: it copies the tag's
/// current content, and fails when there is none.)
fn names_itself(node: &Node<'_>) -> bool {
    let intent = node.intent;
    intent
        .references()
        .any(|reference| match &reference.target {
            ReferenceTarget::Object(name) => name == node.name,
            ReferenceTarget::Registry(relative) => {
                let resolved = relative.resolve_in(&intent.repository);
                resolved.digest().is_none()
                    && resolved.repository() == &intent.repository
                    && resolved.tag().is_some_and(|tag| intent.tags.contains(tag))
            }
        })
}

/// Indexes of `nodes` in waves: every object of a wave depends only on objects of earlier
/// waves. A cycle is an error listing the objects caught in it (by index).
pub fn waves(nodes: &[Node<'_>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let itself: Vec<usize> = (0..nodes.len())
        .filter(|i| names_itself(&nodes[*i]))
        .collect();
    if !itself.is_empty() {
        return Err(itself);
    }
    let depends_on = dependencies(nodes);
    // Kahn's algorithm, level by level.
    let mut wave_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut waves = Vec::new();
    loop {
        let ready: Vec<usize> = (0..nodes.len())
            .filter(|i| wave_of[*i].is_none())
            .filter(|i| {
                depends_on[*i]
                    .iter()
                    .all(|d| wave_of[*d].is_some_and(|w| w < waves.len()))
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in &ready {
            wave_of[*i] = Some(waves.len());
        }
        waves.push(ready);
    }
    let stuck: Vec<usize> = (0..nodes.len()).filter(|i| wave_of[*i].is_none()).collect();
    if stuck.is_empty() {
        Ok(waves)
    } else {
        Err(stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate::{Frontend, validate};

    /// Tests read their objects as a user writes them; the engine itself never sees a spec.
    fn spec(yaml: &str) -> ArtifactIntent {
        validate(&serde_yaml::from_str(yaml).unwrap(), Frontend::Apply).unwrap()
    }

    #[test]
    fn readers_wait_for_their_producers() {
        let specs = [
            spec(
                "{repository: h:1/mirror, tags: ['1'], source: {image: {reference: 'h:1/gl:latest'}}}",
            ),
            spec(
                "{repository: h:1/gl, tags: [latest], source: {image: {reference: 'h:1/gl:1877.5'}}}",
            ),
            spec(
                "{repository: h:1/gl, tags: ['1877.5'], source: {index: {manifests: [{artifactRef: {name: aws}}, {reference: 'gcp'}]}}}",
            ),
            spec("{repository: h:1/gl, tags: [aws], source: {files: [{name: a.raw, content: x}]}}"),
            spec("{repository: h:1/gl, tags: [gcp], source: {files: [{name: a.raw, content: y}]}}"),
            spec(
                "{repository: h:1/gl, tags: [], subject: {reference: aws}, source: {files: [{name: a.sbom, content: z}]}}",
            ),
        ];
        let names = ["mirror", "latest", "release", "aws", "gcp", "sbom"];
        let nodes: Vec<Node<'_>> = specs
            .iter()
            .zip(names)
            .map(|(intent, name)| Node {
                namespace: "r",
                name,
                intent,
            })
            .collect();
        assert_eq!(
            waves(&nodes).unwrap(),
            vec![vec![3, 4], vec![2, 5], vec![1], vec![0]]
        );
    }

    #[test]
    fn a_cycle_is_refused() {
        let a = spec("{repository: h:1/r, tags: [a], source: {image: {reference: 'h:1/r:b'}}}");
        let b = spec("{repository: h:1/r, tags: [b], source: {image: {reference: 'h:1/r:a'}}}");
        let nodes = [
            Node {
                namespace: "n",
                name: "a",
                intent: &a,
            },
            Node {
                namespace: "n",
                name: "b",
                intent: &b,
            },
        ];
        assert_eq!(waves(&nodes).unwrap_err(), vec![0, 1]);
    }

    #[test]
    fn a_copy_waits_for_its_producer_however_the_registry_is_spelled() {
        let copy = spec(
            "{repository: 'localhost:5000/mirror', tags: ['1'], source: {image: {reference: '127.0.0.1:5000/gl:1877.5'}}}",
        );
        let release = spec(
            "{repository: 'LocalHost:5000/gl', tags: ['1877.5'], source: {files: [{name: a.raw, content: x}]}}",
        );
        let hub_copy = spec(
            "{repository: 'localhost:5000/hub', tags: ['1'], source: {image: {reference: 'index.docker.io/library/debian:13'}}}",
        );
        let hub = spec(
            "{repository: 'docker.io/debian', tags: ['13'], source: {files: [{name: a.raw, content: y}]}}",
        );
        let nodes: Vec<Node<'_>> = [&copy, &release, &hub_copy, &hub]
            .into_iter()
            .zip(["copy", "release", "hub-copy", "hub"])
            .map(|(intent, name)| Node {
                namespace: "n",
                name,
                intent,
            })
            .collect();
        assert_eq!(waves(&nodes).unwrap(), vec![vec![1, 3], vec![0, 2]]);
    }

    #[test]
    fn an_index_or_referrer_naming_itself_is_a_cycle_of_one() {
        let by_name = spec(
            "{repository: h:1/r, tags: [a], source: {index: {manifests: [{artifactRef: {name: me}}]}}}",
        );
        let by_subject = spec(
            "{repository: h:1/r, tags: [], subject: {artifactRef: {name: me}}, source: {files: [{name: a.sbom, content: z}]}}",
        );
        let copy_of_own_tag =
            spec("{repository: h:1/r, tags: [a], source: {image: {reference: 'h:1/r:a'}}}");
        for (intent, expected) in [
            (&by_name, Err(vec![0])),
            (&by_subject, Err(vec![0])),
            (&copy_of_own_tag, Ok(vec![vec![0]])),
        ] {
            let nodes = [Node {
                namespace: "n",
                name: "me",
                intent,
            }];
            assert_eq!(waves(&nodes), expected, "{intent:?}");
        }
    }
}
