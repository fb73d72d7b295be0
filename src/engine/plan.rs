//! Pure: what to write, from what we want and what the registry holds. A plan lists every write
//! a reconciliation makes, so a dry run prints all of it and `execute` is the only place that
//! writes. The order of a plan's stages is the engine's safety rule: blobs, then child
//! manifests, then tags, so a tag only ever moves to a manifest whose content is complete; then
//! what hangs off the artefact (copied referrers, fallback indexes); deletions last.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::desired::{Blob, Desired, Manifest};
use crate::oci::Repository;

/// What the registry holds, as far as the engine looked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Each desired tag and the digest it resolves to now (`None`: absent).
    pub tags: BTreeMap<String, Option<String>>,
    /// Manifest digests known to be stored in the target repository.
    pub manifests: BTreeSet<String>,
    /// Blob digests known to be stored in the target repository.
    pub blobs: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every tag already pointed at the desired manifest; nothing was written.
    Unchanged,
    /// None of the tags existed before.
    Created,
    /// Some tag existed and was moved, or some tag was missing.
    Updated,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Created => "created",
            Outcome::Updated => "updated",
        })
    }
}

/// A tag to (re)point, and where it pointed before (for "moved back" events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagWrite {
    pub tag: String,
    pub previous: Option<String>,
}

/// A change to the fallback index of a subject (`sha256-<hex>`), for a registry without the
/// referrers API. Carried out read-modify-write, keeping other writers' descriptors.
#[derive(Clone, Debug, PartialEq)]
pub struct FallbackIndexUpdate {
    pub repository: Repository,
    /// The subject's digest; the index is its fallback tag.
    pub subject: String,
    pub change: IndexChange,
}

#[derive(Clone, Debug, PartialEq)]
pub enum IndexChange {
    /// Add this referrer descriptor (replacing one of the same digest).
    Add(serde_json::Value),
    /// Take out the descriptor of this digest.
    Remove(String),
}

/// A referrer or cosign tag copied along with a mirrored artefact: its own desired state and
/// the plan that stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferrerCopy {
    pub desired: Desired,
    pub plan: Plan,
    /// A cosign tag (`sha256-<hex>.sig`, ...) rather than an OCI 1.1 referrer.
    pub cosign_tag: bool,
}

/// A deletion (`deletionPolicy: Delete`); each is planned only while what it deletes is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The tag, which still points at `digest`. On a registry that cannot delete tags it is
    /// moved to a tombstone manifest of its own first, which is then deleted.
    Tag { tag: String, digest: String },
    /// A manifest by digest (a referrer without tags).
    Manifest { digest: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub blobs: Vec<Blob>,
    /// Manifests stored by digest before any tag moves: children first, then, for an
    /// artefact without tags, the manifest itself.
    pub manifests: Vec<Manifest>,
    pub tags: Vec<TagWrite>,
    /// Referrers and cosign tags of a copied artefact, copied after it.
    pub referrers: Vec<ReferrerCopy>,
    /// Fallback-index changes that make referrers findable from their subject.
    pub fallback_indexes: Vec<FallbackIndexUpdate>,
    /// Deletions, in the target repository.
    pub deletions: Vec<Deletion>,
    /// Open and cancel an upload session in the target repository, first: proof that the
    /// credentials may write there, for a round that would otherwise write nothing.
    pub probe_push: bool,
    pub outcome: Outcome,
}

impl Plan {
    /// A plan that writes nothing.
    pub fn unchanged() -> Self {
        Self {
            blobs: Vec::new(),
            manifests: Vec::new(),
            tags: Vec::new(),
            referrers: Vec::new(),
            fallback_indexes: Vec::new(),
            deletions: Vec::new(),
            probe_push: false,
            outcome: Outcome::Unchanged,
        }
    }

    /// True when the artefact's own content and tags need no write.
    pub fn stores_nothing(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty() && self.tags.is_empty()
    }

    /// True when nothing at all would be written.
    pub fn is_empty(&self) -> bool {
        self.stores_nothing()
            && self.referrers.iter().all(|r| r.plan.is_empty())
            && self.fallback_indexes.is_empty()
            && self.deletions.is_empty()
            && !self.probe_push
    }

    /// Asks for proof of write access when the plan writes nothing else (any write proves it).
    pub fn prove_push(&mut self) {
        if self.is_empty() {
            self.probe_push = true;
        }
    }
}

/// True when every tag already resolves to the desired manifest (for an artefact without
/// tags: when it is stored).
pub fn converged(desired: &Desired, observed: &Observed) -> bool {
    if desired.tags.is_empty() {
        return observed.manifests.contains(&desired.manifest.digest);
    }
    desired.tags.iter().all(|tag| {
        observed.tags.get(tag).and_then(Option::as_ref) == Some(&desired.manifest.digest)
    })
}

/// The manifests whose content must be checked: those not known to be stored, walking down
/// from the root. A stored manifest implies its blobs and children are stored too (the
/// registry refuses a manifest whose references are missing).
pub fn manifests_to_inspect<'a>(desired: &'a Desired, observed: &Observed) -> Vec<&'a Manifest> {
    fn walk<'a>(m: &'a Manifest, observed: &Observed, out: &mut Vec<&'a Manifest>) {
        if observed.manifests.contains(&m.digest) {
            return;
        }
        out.push(m);
        for child in &m.children {
            walk(child, observed, out);
        }
    }
    let mut out = Vec::new();
    walk(&desired.manifest, observed, &mut out);
    out
}

pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let root = &desired.manifest;
    let tags: Vec<TagWrite> = desired
        .tags
        .iter()
        .filter_map(|tag| {
            let current = observed.tags.get(tag).cloned().flatten();
            (current.as_ref() != Some(&root.digest)).then(|| TagWrite {
                tag: tag.clone(),
                previous: current,
            })
        })
        .collect();

    let mut blobs: Vec<Blob> = Vec::new();
    let mut manifests: Vec<Manifest> = Vec::new();
    let needs_root = !observed.manifests.contains(&root.digest);
    if needs_root && (!tags.is_empty() || desired.tags.is_empty()) {
        let mut seen = BTreeSet::new();
        collect_missing(root, observed, &mut blobs, &mut manifests, &mut seen);
        if !desired.tags.is_empty() {
            // With tags, the root is stored by the first tag write, not by digest.
            manifests.retain(|m| m.digest != root.digest);
        }
    }

    let outcome = if tags.is_empty() && blobs.is_empty() && manifests.is_empty() {
        Outcome::Unchanged
    } else if desired
        .tags
        .iter()
        .all(|tag| observed.tags.get(tag).and_then(Option::as_ref).is_none())
    {
        Outcome::Created
    } else {
        Outcome::Updated
    };
    Plan {
        blobs,
        manifests,
        tags,
        outcome,
        ..Plan::unchanged()
    }
}

/// Post-order walk: a child's blobs and the child itself come before its parent.
fn collect_missing(
    m: &Manifest,
    observed: &Observed,
    blobs: &mut Vec<Blob>,
    manifests: &mut Vec<Manifest>,
    seen: &mut BTreeSet<String>,
) {
    if observed.manifests.contains(&m.digest) || !seen.insert(m.digest.clone()) {
        return;
    }
    for child in &m.children {
        collect_missing(child, observed, blobs, manifests, seen);
    }
    for blob in &m.blobs {
        if !observed.blobs.contains(&blob.digest) && seen.insert(blob.digest.clone()) {
            blobs.push(blob.clone());
        }
    }
    manifests.push(m.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::desired::BlobOrigin;
    use crate::oci::Repository;
    use crate::oci::digest::sha256_digest;
    use bytes::Bytes;

    fn blob(content: &'static str) -> Blob {
        Blob {
            digest: sha256_digest(content.as_bytes()),
            size: content.len() as u64,
            media_type: "application/octet-stream".into(),
            origin: BlobOrigin::Inline(Bytes::from_static(content.as_bytes())),
        }
    }

    fn manifest(body: &'static str, blobs: Vec<Blob>, children: Vec<Manifest>) -> Manifest {
        Manifest::new(
            "application/vnd.oci.image.manifest.v1+json".into(),
            Bytes::from_static(body.as_bytes()),
            blobs,
            children,
        )
    }

    fn desired(tags: &[&str], m: Manifest) -> Desired {
        Desired {
            repository: Repository::parse("127.0.0.1:5000/a").unwrap(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            manifest: m,
        }
    }

    fn observed_tags(pairs: &[(&str, Option<&str>)]) -> Observed {
        Observed {
            tags: pairs
                .iter()
                .map(|(t, d)| (t.to_string(), d.map(str::to_string)))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_converged_artefact_plans_nothing() {
        let m = manifest("m", vec![blob("a")], vec![]);
        let d = desired(&["1", "latest"], m.clone());
        let o = observed_tags(&[("1", Some(&m.digest)), ("latest", Some(&m.digest))]);
        assert!(converged(&d, &o));
        let p = plan(&d, &o);
        assert!(p.is_empty());
        assert_eq!(p.outcome, Outcome::Unchanged);
    }

    #[test]
    fn a_new_artefact_uploads_missing_blobs_then_tags() {
        let m = manifest("m", vec![blob("config"), blob("layer")], vec![]);
        let d = desired(&["1", "latest"], m.clone());
        let mut o = observed_tags(&[("1", None), ("latest", None)]);
        o.blobs.insert(blob("config").digest);
        let p = plan(&d, &o);
        assert_eq!(p.blobs, vec![blob("layer")]);
        assert!(p.manifests.is_empty(), "the root is stored by its tags");
        assert_eq!(p.tags.len(), 2);
        assert_eq!(p.outcome, Outcome::Created);
    }

    #[test]
    fn retag_of_a_stored_manifest_writes_no_blob() {
        let m = manifest("m", vec![blob("layer")], vec![]);
        let d = desired(&["1", "latest"], m.clone());
        let mut o = observed_tags(&[("1", Some(&m.digest)), ("latest", Some("sha256:old"))]);
        o.manifests.insert(m.digest.clone());
        let p = plan(&d, &o);
        assert!(p.blobs.is_empty());
        assert_eq!(
            p.tags,
            vec![TagWrite {
                tag: "latest".into(),
                previous: Some("sha256:old".into())
            }]
        );
        assert_eq!(p.outcome, Outcome::Updated);
    }

    #[test]
    fn an_index_stores_children_before_itself() {
        let child_a = manifest("a", vec![blob("x")], vec![]);
        let child_b = manifest("b", vec![blob("x"), blob("y")], vec![]);
        let index = Manifest::new(
            "application/vnd.oci.image.index.v1+json".into(),
            Bytes::from_static(b"i"),
            vec![],
            vec![child_a.clone(), child_b.clone()],
        );
        let d = desired(&["2150.0.0"], index.clone());
        let mut o = observed_tags(&[("2150.0.0", None)]);
        o.manifests.insert(child_a.digest.clone());
        let p = plan(&d, &o);
        assert_eq!(p.blobs, vec![blob("x"), blob("y")]);
        assert_eq!(p.manifests, vec![child_b]);
        assert_eq!(p.tags.len(), 1);
        let inspect = manifests_to_inspect(&d, &o);
        assert_eq!(
            inspect.len(),
            2,
            "the index and the child not known to be stored"
        );
    }

    #[test]
    fn an_untagged_artefact_is_stored_by_digest() {
        let m = manifest("m", vec![blob("a")], vec![]);
        let d = desired(&[], m.clone());
        let p = plan(&d, &Observed::default());
        assert_eq!(p.manifests, vec![m.clone()]);
        assert!(!converged(&d, &Observed::default()));
        let stored = Observed {
            manifests: [m.digest.clone()].into(),
            ..Default::default()
        };
        assert!(converged(&d, &stored));
        assert!(plan(&d, &stored).is_empty());
    }
}
