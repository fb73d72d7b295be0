//! `garden-artifacts discover REF`: what hangs off an artefact, as a tree. For each manifest:
//! its annotations, its links (`io.gardenlinux.link.<rel>[.N]` annotations), an index's
//! children with their platforms, and its referrers: from the registry's referrers API when it
//! has one, else from the fallback tag `sha256-<hex>` (OCI 1.1). Children and referrers are
//! discovered in turn, down to [`MAX_DEPTH`] levels below REF.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use serde::Serialize;

use super::common::{self, Descriptor, Document, Failure, Format, Outcome, Platform, RegistryArgs};
use crate::engine::links::{LINK_ANNOTATION_PREFIX, fallback_tag};
use crate::oci::Repository;
use crate::oci::media_types::is_index;
use crate::registry::Registry;

/// Levels below REF that are followed (referrers of referrers of referrers).
pub const MAX_DEPTH: usize = 3;
/// Annotation keys of links: `io.gardenlinux.link.<rel>`, then `.1`, `.2`, ... for more of one rel.
const LINK_PREFIX: &str = LINK_ANNOTATION_PREFIX;

#[derive(Args)]
pub struct DiscoverArgs {
    /// The artefact: host[:port]/repository:tag or host[:port]/repository@sha256:...
    #[arg(value_name = "REF")]
    reference: String,
    /// A tree (text) or one nested JSON object.
    #[arg(
        short = 'o',
        long = "format",
        visible_alias = "output",
        value_enum,
        default_value = "text"
    )]
    format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// One manifest in the tree, as `--format json` prints it.
#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Node {
    /// REF as given (the root only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    digest: String,
    media_type: String,
    size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    /// The index entry's platform (children only).
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    /// The descriptor's annotations overlaid with the manifest's own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<LinkOut>,
    /// An index's children.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    manifests: Vec<Node>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    referrers: Vec<Node>,
    /// Where the referrers were found: `api` or `tag <fallback tag>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    referrers_source: Option<String>,
    /// A component version's descriptor: its resources and where they point.
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<crate::oci::ocm::Component>,
    /// Why this manifest could not be read (a dangling index entry or referrer).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct LinkOut {
    rel: String,
    url: String,
}

pub async fn run(args: DiscoverArgs) -> u8 {
    common::finish(discover(args).await)
}

async fn discover(args: DiscoverArgs) -> Outcome {
    let mut places = common::Places::new(&args.registry)?;
    let reference = places.reference("REF", &args.reference)?;
    let client = places.registry();
    let client = client.as_ref();
    let repo = &reference.repository();
    let head = client
        .head_manifest(repo, reference.reference())
        .await?
        .ok_or_else(|| {
            Failure::failed(format!(
                "REF {reference}: no manifest there (expected an artefact manifest or index)"
            ))
        })?;
    let root = Descriptor {
        media_type: head.media_type,
        digest: head.digest,
        size: head.size as i64,
        ..Default::default()
    };
    let mut seen = BTreeSet::new();
    let mut node = visit(client, repo, root, 0, &mut seen).await;
    if let Some(error) = node.error.take() {
        return Err(Failure::failed(format!("REF {reference}: {error}")));
    }
    node.reference = Some(args.reference.clone());
    match args.format {
        Format::Json => common::print_json(&node),
        Format::Text => {
            let label = match reference.tag() {
                Some(tag) if reference.digest().is_none() => {
                    format!("{repo}:{tag}@{}", node.digest)
                }
                _ => format!("{repo}@{}", node.digest),
            };
            print!("{}", render(&tree(&node, label)));
        }
    }
    Ok(())
}

/// One manifest and everything below it, `depth` levels under REF.
async fn visit(
    client: &dyn Registry,
    repo: &Repository,
    descriptor: Descriptor,
    depth: usize,
    seen: &mut BTreeSet<String>,
) -> Node {
    let mut node = Node {
        digest: descriptor.digest.clone(),
        media_type: descriptor.media_type.clone(),
        size: descriptor.size,
        artifact_type: descriptor.artifact_type.clone(),
        platform: descriptor.platform.clone(),
        annotations: descriptor.annotations.clone(),
        ..Default::default()
    };
    let document = match client.get_manifest(repo, &descriptor.digest).await {
        Ok(Some(raw)) => {
            node.media_type = raw.media_type.clone();
            match Document::parse(&format!("{repo}@{}", raw.digest), &raw) {
                Ok(document) => document,
                Err(e) => {
                    node.error = Some(e.message);
                    return node;
                }
            }
        }
        Ok(None) => {
            node.error = Some("listed, but the registry does not have it".into());
            return node;
        }
        Err(e) => {
            node.error = Some(e.to_string());
            return node;
        }
    };
    node.annotations.extend(document.annotations.clone());
    if node.artifact_type.is_none() {
        node.artifact_type = if is_index(&node.media_type) {
            document.artifact_type.clone()
        } else {
            document.effective_artifact_type()
        };
    }
    node.links = links(&node.annotations);
    match super::component::descriptor_yaml(client, repo, &document).await {
        Ok(Some(yaml)) => match super::component::parse(repo, &yaml) {
            Ok(descriptor) => node.component = Some(descriptor.component),
            Err(e) => node.error = Some(e.message),
        },
        Ok(None) => {}
        Err(e) => node.error = Some(e.message),
    }
    // A manifest reached twice (a referrer listed under two subjects) is expanded once.
    if depth >= MAX_DEPTH || !seen.insert(descriptor.digest.clone()) {
        return node;
    }
    for child in document.manifests {
        node.manifests
            .push(Box::pin(visit(client, repo, child, depth + 1, seen)).await);
    }
    match referrers(client, repo, &descriptor.digest).await {
        Ok((source, found)) => {
            if !found.is_empty() {
                node.referrers_source = Some(source);
            }
            for referrer in found {
                node.referrers
                    .push(Box::pin(visit(client, repo, referrer, depth + 1, seen)).await);
            }
        }
        Err(e) => node.error = Some(format!("referrers: {e}")),
    }
    node
}

/// The referrers of `digest` and where they came from.
async fn referrers(
    client: &dyn Registry,
    repo: &Repository,
    digest: &str,
) -> Result<(String, Vec<Descriptor>), Failure> {
    let what = format!("referrers of {repo}@{digest}");
    if let Some(bytes) = client.referrers(repo, digest).await? {
        let index: Document = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::failed(format!(
                "{what}: the referrers API answered something that is not an image index: {e}"
            ))
        })?;
        return Ok(("api".into(), index.manifests));
    }
    let tag = fallback_tag(digest);
    match client.get_manifest(repo, &tag).await? {
        Some(raw) if is_index(&raw.media_type) => {
            let index = Document::parse(&format!("{repo}:{tag}"), &raw)?;
            Ok((format!("tag {tag}"), index.manifests))
        }
        Some(raw) => Err(Failure::failed(format!(
            "{what}: the fallback tag {repo}:{tag} is a {}, expected an image index",
            raw.media_type
        ))),
        None => Ok((format!("tag {tag}"), Vec::new())),
    }
}

/// Links from annotations: `io.gardenlinux.link.<rel>` and, for more links of one rel,
/// `io.gardenlinux.link.<rel>.1`, `.2`, ... (a rel may contain dots, so a numeric suffix is
/// only read as a counter when the key without it exists too).
fn links(annotations: &BTreeMap<String, String>) -> Vec<LinkOut> {
    let mut found: Vec<(String, usize, String)> = annotations
        .iter()
        .filter_map(|(key, url)| {
            let rest = key.strip_prefix(LINK_PREFIX)?;
            if rest.is_empty() {
                return None;
            }
            if let Some((rel, n)) = rest.rsplit_once('.')
                && let Ok(n) = n.parse::<usize>()
                && annotations.contains_key(&format!("{LINK_PREFIX}{rel}"))
            {
                return Some((rel.to_string(), n, url.clone()));
            }
            Some((rest.to_string(), 0, url.clone()))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(rel, _, url)| LinkOut { rel, url })
        .collect()
}

/// A line of the text tree and the lines below it.
#[derive(Debug, PartialEq, Eq)]
struct Item {
    label: String,
    children: Vec<Item>,
}

fn leaf(label: String) -> Item {
    Item {
        label,
        children: Vec::new(),
    }
}

/// The text tree of a node, like `oras discover`: referrers grouped by artifact type.
fn tree(node: &Node, label: String) -> Item {
    let mut children = Vec::new();
    if let Some(error) = &node.error {
        children.push(leaf(format!("[error] {error}")));
    }
    let shown: Vec<Item> = node
        .annotations
        .iter()
        .filter(|(k, _)| !k.starts_with(LINK_PREFIX))
        .map(|(k, v)| leaf(format!("{k}: {v}")))
        .collect();
    if !shown.is_empty() {
        children.push(Item {
            label: "[annotations]".into(),
            children: shown,
        });
    }
    if !node.links.is_empty() {
        children.push(Item {
            label: "[links]".into(),
            children: node
                .links
                .iter()
                .map(|l| leaf(format!("{}: {}", l.rel, l.url)))
                .collect(),
        });
    }
    if let Some(component) = &node.component {
        children.push(component_tree(component));
    }
    if !node.manifests.is_empty() {
        children.push(Item {
            label: "[manifests]".into(),
            children: node
                .manifests
                .iter()
                .map(|child| {
                    let mut label = child.digest.clone();
                    if let Some(platform) = &child.platform {
                        label.push_str(&format!(" {platform}"));
                    }
                    if let Some(t) = &child.artifact_type {
                        label.push_str(&format!(" {t}"));
                    }
                    tree(child, label)
                })
                .collect(),
        });
    }
    let mut by_type: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
    for referrer in &node.referrers {
        by_type
            .entry(
                referrer
                    .artifact_type
                    .clone()
                    .unwrap_or_else(|| "(no artifact type)".into()),
            )
            .or_default()
            .push(referrer);
    }
    for (artifact_type, referrers) in by_type {
        children.push(Item {
            label: artifact_type,
            children: referrers
                .into_iter()
                .map(|r| tree(r, r.digest.clone()))
                .collect(),
        });
    }
    Item { label, children }
}

/// A component version: each resource by its identity, and where it points.
fn component_tree(component: &crate::oci::ocm::Component) -> Item {
    let mut children: Vec<Item> = component
        .resources
        .iter()
        .map(|r| {
            let identity: Vec<String> = r
                .extra_identity
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let target = r
                .access
                .image_reference
                .clone()
                .unwrap_or_else(|| format!("(access {})", r.access.type_));
            leaf(format!(
                "resource {} {} [{}] {} -> {target}",
                r.name,
                r.version,
                identity.join(", "),
                r.type_
            ))
        })
        .collect();
    children.extend(component.component_references.iter().map(|r| {
        leaf(format!(
            "reference {} -> {}:{}",
            r.name, r.component_name, r.version
        ))
    }));
    Item {
        label: format!(
            "[component] {}:{} (provider {})",
            component.name, component.version, component.provider
        ),
        children,
    }
}

fn render(root: &Item) -> String {
    fn below(item: &Item, prefix: &str, out: &mut String) {
        for (i, child) in item.children.iter().enumerate() {
            let last = i + 1 == item.children.len();
            out.push_str(prefix);
            out.push_str(if last { "└── " } else { "├── " });
            // Labels hold what a registry sent (annotations, media types): escaped, so a
            // control sequence never reaches the terminal.
            out.push_str(&common::without_control_characters(&child.label));
            out.push('\n');
            let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
            below(child, &deeper, out);
        }
    }
    let mut out = format!("{}\n", common::without_control_characters(&root.label));
    below(root, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_read_with_their_counters() {
        let annotations: BTreeMap<String, String> = [
            ("io.gardenlinux.link.release-notes", "https://a"),
            ("io.gardenlinux.link.release-notes.1", "https://b"),
            ("io.gardenlinux.link.v1.2", "https://c"),
            ("version", "1877.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let found = links(&annotations);
        let pairs: Vec<(&str, &str)> = found
            .iter()
            .map(|l| (l.rel.as_str(), l.url.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("release-notes", "https://a"),
                ("release-notes", "https://b"),
                ("v1.2", "https://c")
            ]
        );
    }

    #[test]
    fn renders_a_tree() {
        let root = Item {
            label: "r".into(),
            children: vec![
                Item {
                    label: "a".into(),
                    children: vec![leaf("a1".into())],
                },
                leaf("b".into()),
            ],
        };
        assert_eq!(render(&root), "r\n├── a\n│   └── a1\n└── b\n");
    }

    #[test]
    fn a_registry_cannot_send_control_sequences_to_the_terminal() {
        let root = Item {
            label: "r".into(),
            children: vec![leaf("note: \u{1b}[2Jcleared\nforged line".into())],
        };
        let text = render(&root);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert_eq!(text.lines().count(), 2, "{text:?}");
    }
}
