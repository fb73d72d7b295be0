//! Pure: the order in which one run reconciles its objects. A copy of a tag that another object
//! of the same run produces waits for that object, so `apply -f examples/` works in one go.

use std::collections::BTreeMap;

use crate::registry::ImageReference;

/// What ordering needs to know of an object.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    pub repository: &'a str,
    pub tags: &'a [String],
    /// `spec.source.image.reference`, if any.
    pub copies: Option<&'a str>,
}

/// Indexes of `nodes` in waves: every object of a wave depends only on objects of earlier
/// waves. A cycle is an error naming the objects in it (by index).
pub fn waves(nodes: &[Node<'_>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let mut producers: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for tag in node.tags {
            producers
                .entry((node.repository, tag.as_str()))
                .or_insert(i);
        }
    }
    let depends_on: Vec<Option<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let reference = ImageReference::parse(node.copies?).ok()?;
            if reference.digest.is_some() {
                return None;
            }
            let repository = reference.repository.to_string();
            let tag = reference.tag?;
            producers
                .get(&(repository.as_str(), tag.as_str()))
                .copied()
                .filter(|p| *p != i)
        })
        .collect();

    let mut wave_of: Vec<Option<usize>> = vec![None; nodes.len()];
    for start in 0..nodes.len() {
        let mut chain = vec![start];
        let mut current = start;
        // Walk up to an object whose wave is known or that depends on nothing.
        while wave_of[current].is_none() {
            match depends_on[current] {
                Some(next) if chain.contains(&next) => {
                    let at = chain.iter().position(|n| *n == next).expect("contained");
                    return Err(chain[at..].to_vec());
                }
                Some(next) => {
                    chain.push(next);
                    current = next;
                }
                None => {
                    wave_of[current] = Some(0);
                }
            }
        }
        let mut wave = wave_of[current].expect("set above");
        for node in chain.iter().rev().skip(1) {
            wave += 1;
            wave_of[*node] = Some(wave);
        }
    }
    let count = wave_of.iter().flatten().max().map_or(0, |w| w + 1);
    let mut waves = vec![Vec::new(); count];
    for (i, wave) in wave_of.into_iter().enumerate() {
        waves[wave.expect("every node has a wave")].push(i);
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_wait_for_their_producers() {
        let release = vec!["1877.5".to_string()];
        let latest = vec!["latest".to_string()];
        let mirror = vec!["1877.5".to_string()];
        let nodes = [
            Node {
                repository: "127.0.0.1:5000/mirror",
                tags: &mirror,
                copies: Some("127.0.0.1:5000/gl:latest"),
            },
            Node {
                repository: "127.0.0.1:5000/gl",
                tags: &latest,
                copies: Some("127.0.0.1:5000/gl:1877.5"),
            },
            Node {
                repository: "127.0.0.1:5000/gl",
                tags: &release,
                copies: None,
            },
        ];
        assert_eq!(waves(&nodes).unwrap(), vec![vec![2], vec![1], vec![0]]);
    }

    #[test]
    fn a_cycle_is_refused() {
        let a = vec!["a".to_string()];
        let b = vec!["b".to_string()];
        let nodes = [
            Node {
                repository: "h:1/r",
                tags: &a,
                copies: Some("h:1/r:b"),
            },
            Node {
                repository: "h:1/r",
                tags: &b,
                copies: Some("h:1/r:a"),
            },
        ];
        let cycle = waves(&nodes).unwrap_err();
        assert_eq!(cycle.len(), 2);
    }
}
