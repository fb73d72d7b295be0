//! Links between artefacts: references resolved to pinned descriptors, and OCI 1.1 referrers,
//! through the registry's referrers API where it has one and the fallback tag
//! `sha256-<hex of the subject digest>` where it does not.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::plan::{FallbackIndexUpdate, IndexChange};
use super::{Engine, EngineError, Inputs};
use crate::intent::{FieldPath, Link, Reference, ReferenceTarget};
use crate::oci::media_types::OCI_INDEX;
use crate::oci::{ImageReference, Repository};
use crate::registry::ManifestHead;

pub use crate::oci::media_types::LINK_ANNOTATION_PREFIX;
/// Writes of one change to a fallback index before giving up.
const FALLBACK_ATTEMPTS: u32 = 12;
/// After a write, the index is checked again after each of these waits.
const SETTLE_CHECKS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// A reference of the spec, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub field: FieldPath,
    /// As the spec says it: a reference, or `artifactRef:<name>`.
    pub reference: String,
    pub resolved: ImageReference,
    pub head: ManifestHead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkVia {
    ReferrersApi,
    FallbackTag,
}

impl std::fmt::Display for LinkVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkVia::ReferrersApi => "referrers-api",
            LinkVia::FallbackTag => "fallback-tag",
        })
    }
}

/// How a subject's referrers are found, as read before planning.
pub(super) enum SubjectLinks {
    ReferrersApi,
    /// The fallback index as it is (`None`: there is none yet).
    FallbackIndex(Option<Value>),
}

impl SubjectLinks {
    /// Pure: how `entry` is made findable from `subject`, and the fallback-index change that
    /// takes, if any.
    pub(super) fn link(
        &self,
        repo: &Repository,
        subject: &str,
        entry: &Value,
    ) -> (LinkVia, Option<FallbackIndexUpdate>) {
        match self {
            SubjectLinks::ReferrersApi => (LinkVia::ReferrersApi, None),
            SubjectLinks::FallbackIndex(index) => {
                let listed = index.as_ref().is_some_and(|index| lists(index, entry));
                let update = (!listed).then(|| FallbackIndexUpdate {
                    repository: repo.clone(),
                    subject: subject.to_string(),
                    change: IndexChange::Add(entry.clone()),
                });
                (LinkVia::FallbackTag, update)
            }
        }
    }
}

/// Where fallback-index failures point: they come from linking the subject.
fn subject_field() -> FieldPath {
    FieldPath::root("spec").child("subject")
}

/// The fallback tag of a subject: `sha256-<hex>`.
pub fn fallback_tag(subject_digest: &str) -> String {
    subject_digest.replacen(':', "-", 1)
}

/// `spec.links` as annotations: `io.gardenlinux.link.<rel>`, then `.1`, `.2`... for repeats.
pub fn link_annotations(links: &[Link]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for link in links {
        let n = seen.entry(link.rel.as_str()).or_insert(0);
        let key = match *n {
            0 => format!("{LINK_ANNOTATION_PREFIX}{}", link.rel),
            k => format!("{LINK_ANNOTATION_PREFIX}{}.{k}", link.rel),
        };
        *n += 1;
        out.insert(key, link.url.clone());
    }
    out
}

/// Pure: the fallback index with `entry` in it (replacing an entry of the same digest), every
/// other descriptor kept as it was, unknown fields included.
pub fn with_referrer(index: Option<&Value>, entry: &Value) -> Value {
    let mut index = index
        .cloned()
        .unwrap_or_else(|| json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }));
    let digest = entry.get("digest").cloned();
    if let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) {
        manifests.retain(|m| m.get("digest") != digest.as_ref());
        manifests.push(entry.clone());
    }
    index
}

/// Pure: the fallback index without the descriptor of `digest`.
pub fn without_referrer(index: &Value, digest: &str) -> Value {
    let mut index = index.clone();
    if let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) {
        manifests.retain(|m| m.get("digest").and_then(Value::as_str) != Some(digest));
    }
    index
}

fn lists(index: &Value, entry: &Value) -> bool {
    index
        .get("manifests")
        .and_then(Value::as_array)
        .is_some_and(|m| m.contains(entry))
}

fn lists_digest(index: &Value, digest: &str) -> bool {
    index
        .get("manifests")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|e| e.get("digest").and_then(Value::as_str) == Some(digest))
        })
}

impl Engine {
    /// A reference of the spec as a full reference: an `artifactRef` through what the front end
    /// resolved, a bare tag or digest in `target`, anything else as written.
    pub(super) async fn pin(
        &self,
        reference: &Reference,
        target: &Repository,
        inputs: &Inputs,
    ) -> Result<Pin, EngineError> {
        let field = &reference.field;
        let resolved = match &reference.target {
            ReferenceTarget::Object(name) => {
                inputs.artifacts.get(name).cloned().ok_or_else(|| {
                    EngineError::source(
                        &field.child("artifactRef"),
                        format!("GardenArtifact {name:?} of this namespace is not known or has no digest yet"),
                    )
                })?
            }
            ReferenceTarget::Registry(relative) => relative.resolve_in(target),
        };
        let head = self
            .registry
            .head_manifest(resolved.repository(), resolved.reference())
            .await?
            .ok_or_else(|| EngineError::source(field, format!("{resolved} does not exist")))?;
        Ok(Pin {
            field: field.clone(),
            reference: reference.shown(),
            resolved,
            head,
        })
    }

    /// Whether the registry keeps referrers itself, asked once per registry and process.
    async fn has_referrers_api(
        &self,
        repo: &Repository,
        subject: &str,
    ) -> Result<bool, EngineError> {
        if let Some(known) = self
            .referrers_api
            .lock()
            .expect("not poisoned")
            .get(repo.registry_id())
        {
            return Ok(*known);
        }
        let has = self.registry.referrers(repo, subject).await?.is_some();
        self.referrers_api
            .lock()
            .expect("not poisoned")
            .insert(repo.registry_id().clone(), has);
        Ok(has)
    }

    /// How `entry` (a referrer's descriptor) is made findable from `subject`, and the
    /// fallback-index change that takes, if any. With the referrers API the registry does it
    /// when the manifest is stored; otherwise the fallback index must list the descriptor.
    pub(super) async fn plan_link(
        &self,
        repo: &Repository,
        subject: &str,
        entry: &Value,
    ) -> Result<(LinkVia, Option<FallbackIndexUpdate>), EngineError> {
        let links = self.links_of(repo, subject).await?;
        Ok(links.link(repo, subject, entry))
    }

    /// How referrers of `subject` are found in `repo`, read once for any number of referrers:
    /// the registry's API, or the fallback index as it is now.
    pub(super) async fn links_of(
        &self,
        repo: &Repository,
        subject: &str,
    ) -> Result<SubjectLinks, EngineError> {
        if self.has_referrers_api(repo, subject).await? {
            return Ok(SubjectLinks::ReferrersApi);
        }
        let index = self.read_fallback(repo, &fallback_tag(subject)).await?;
        Ok(SubjectLinks::FallbackIndex(index))
    }

    /// The fallback-index change that takes the descriptor of `digest` out of the index of
    /// `subject`, if the registry keeps one and it lists the descriptor.
    pub(super) async fn plan_unlink(
        &self,
        repo: &Repository,
        subject: &str,
        digest: &str,
    ) -> Result<Option<FallbackIndexUpdate>, EngineError> {
        if self.has_referrers_api(repo, subject).await? {
            return Ok(None);
        }
        let index = self.read_fallback(repo, &fallback_tag(subject)).await?;
        Ok(index
            .is_some_and(|index| lists_digest(&index, digest))
            .then(|| FallbackIndexUpdate {
                repository: repo.clone(),
                subject: subject.to_string(),
                change: IndexChange::Remove(digest.to_string()),
            }))
    }

    /// Carries out one planned fallback-index change (see `update_fallback`).
    pub(super) async fn apply_fallback_update(
        &self,
        update: &FallbackIndexUpdate,
    ) -> Result<(), EngineError> {
        let (repo, subject) = (&update.repository, update.subject.as_str());
        match &update.change {
            IndexChange::Add(entry) => {
                self.update_fallback(repo, subject, |index| {
                    (!index.is_some_and(|i| lists(i, entry))).then(|| with_referrer(index, entry))
                })
                .await
            }
            IndexChange::Remove(digest) => {
                self.update_fallback(repo, subject, |index| {
                    index
                        .filter(|i| lists_digest(i, digest))
                        .map(|i| without_referrer(i, digest))
                })
                .await
            }
        }
    }

    /// Read-modify-write of the fallback index until it holds: `change` returns the new index,
    /// or `None` when the index already holds it.
    ///
    /// Writers in this process take turns (one lock per subject). Distribution offers no
    /// conditional write, so a writer in another process that read before our write can still
    /// overwrite it: after our write holds, the index is checked again at widening intervals
    /// (longer than any writer's read-to-write gap) and our change is made again if it was lost.
    /// Every writer does the same, so all changes survive once the writers settle.
    async fn update_fallback(
        &self,
        repo: &Repository,
        subject: &str,
        change: impl Fn(Option<&Value>) -> Option<Value>,
    ) -> Result<(), EngineError> {
        let tag = fallback_tag(subject);
        let mut ever_wrote = false;
        let mut checks_held = 0;
        for _ in 0..FALLBACK_ATTEMPTS {
            let wrote = self
                .write_fallback_once(repo, subject, &tag, &change)
                .await?;
            ever_wrote |= wrote;
            if !ever_wrote {
                // It held at the first look: nothing of ours to watch over.
                return Ok(());
            }
            if wrote {
                checks_held = 0;
            } else {
                checks_held += 1;
            }
            let Some(wait) = SETTLE_CHECKS.get(checks_held) else {
                return Ok(());
            };
            let jitter = Duration::from_millis(u64::from(std::process::id() % 13) * 7);
            tokio::time::sleep(*wait + jitter).await;
        }
        Err(EngineError::source(
            &subject_field(),
            format!(
                "the fallback index {repo}:{tag} kept changing under us; tried {FALLBACK_ATTEMPTS} times"
            ),
        ))
    }

    /// One serialized read-modify-write; true when it wrote (`change` found something to do).
    async fn write_fallback_once(
        &self,
        repo: &Repository,
        subject: &str,
        tag: &str,
        change: &impl Fn(Option<&Value>) -> Option<Value>,
    ) -> Result<bool, EngineError> {
        let lock = self.subject_lock(repo, subject);
        let _serialized = lock.lock().await;
        let current = self.read_fallback(repo, tag).await?;
        let Some(next) = change(current.as_ref()) else {
            return Ok(false);
        };
        let bytes = Bytes::from(serde_json::to_vec(&next).expect("JSON serializes"));
        self.registry
            .put_manifest(repo, tag, OCI_INDEX, bytes)
            .await?;
        self.tag_written(repo, tag);
        Ok(true)
    }

    async fn read_fallback(
        &self,
        repo: &Repository,
        tag: &str,
    ) -> Result<Option<Value>, EngineError> {
        let Some(raw) = self.registry.get_manifest(repo, tag).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw.bytes).map(Some).map_err(|e| {
            EngineError::source(
                &subject_field(),
                format!("{repo}:{tag} is not an image index: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::Mode;
    use crate::engine::test_support::{engine, reconcile_yaml, repo, seed_image, seed_referrer};
    use crate::intent::Link;
    use crate::registry::Registry;
    use crate::registry::memory::{MemoryOptions, MemoryRegistry, Operation};

    /// A signature-like artefact with the tag `v1` of `memory.test/a` as its subject.
    const REFERRER: &str = r#"
repository: memory.test/a
artifactType: application/vnd.test.signature
source:
  files:
    - name: signature.txt
      content: signed
      mediaType: application/vnd.test.file
subject:
  reference: v1
"#;

    fn digests(index: &Value) -> Vec<String> {
        let mut digests: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect();
        digests.sort();
        digests
    }

    fn fallback_index(registry: &MemoryRegistry, subject: &str) -> Option<Value> {
        let raw = registry.manifest(&repo("a"), &fallback_tag(subject))?;
        Some(serde_json::from_slice(&raw.bytes).unwrap())
    }

    fn index_of(entries: &[Value]) -> Bytes {
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
        Bytes::from(serde_json::to_vec(&index).unwrap())
    }

    /// The descriptor another writer put in the fallback index, of a referrer it stored.
    fn theirs(registry: &MemoryRegistry, subject: &str) -> Value {
        let digest = seed_referrer(registry, &repo("a"), subject, "theirs");
        let size = registry.manifest(&repo("a"), &digest).unwrap().bytes.len();
        json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size, "x-theirs": true })
    }

    #[tokio::test]
    async fn with_the_referrers_api_no_fallback_index_is_written() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let subject = seed_image(&registry, &repo("a"), "v1", &["layer"]).digest;
        let report = reconcile_yaml(&engine, REFERRER, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            report.subject,
            Some((subject.clone(), Some(LinkVia::ReferrersApi)))
        );
        assert!(fallback_index(&registry, &subject).is_none());
        let listed = registry
            .referrers(&repo("a"), &subject)
            .await
            .unwrap()
            .unwrap();
        let listed: Value = serde_json::from_slice(&listed).unwrap();
        assert_eq!(digests(&listed), [report.digest]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_it_the_fallback_index_gets_our_descriptor_and_keeps_theirs() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        let engine = engine(&registry);
        let a = repo("a");
        let subject = seed_image(&registry, &a, "v1", &["layer"]).digest;
        let theirs = theirs(&registry, &subject);
        registry.insert_manifest(
            &a,
            Some(&fallback_tag(&subject)),
            OCI_INDEX,
            index_of(std::slice::from_ref(&theirs)),
        );
        let report = reconcile_yaml(&engine, REFERRER, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            report.subject,
            Some((subject.clone(), Some(LinkVia::FallbackTag)))
        );
        let index = fallback_index(&registry, &subject).unwrap();
        let mut expected = vec![
            report.digest.clone(),
            theirs["digest"].as_str().unwrap().to_string(),
        ];
        expected.sort();
        assert_eq!(digests(&index), expected);
        assert!(
            index["manifests"].as_array().unwrap().contains(&theirs),
            "kept as written"
        );

        registry.clear_calls();
        reconcile_yaml(&engine, REFERRER, Mode::Apply)
            .await
            .unwrap();
        let fallback_writes = registry
            .calls()
            .into_iter()
            .filter(|c| {
                c.operation == Operation::PutManifest && c.reference == fallback_tag(&subject)
            })
            .count();
        assert_eq!(
            fallback_writes, 0,
            "a descriptor already there is not written again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_settle_checks_re_add_a_descriptor_another_writer_overwrote() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        let engine = engine(&registry);
        let a = repo("a");
        let subject = seed_image(&registry, &a, "v1", &["layer"]).digest;
        let tag = fallback_tag(&subject);
        let theirs = theirs(&registry, &subject);
        // Another process read the index before our write and writes its version after it.
        registry.after(Operation::PutManifest, Some(&tag), 1, {
            let (a, tag, theirs) = (a.clone(), tag.clone(), theirs.clone());
            move |registry| {
                registry.insert_manifest(&a, Some(&tag), OCI_INDEX, index_of(&[theirs]));
            }
        });
        let report = reconcile_yaml(&engine, REFERRER, Mode::Apply)
            .await
            .unwrap();
        let index = fallback_index(&registry, &subject).unwrap();
        let mut expected = vec![
            report.digest.clone(),
            theirs["digest"].as_str().unwrap().to_string(),
        ];
        expected.sort();
        assert_eq!(digests(&index), expected, "ours is back, theirs kept");
        let fallback_writes = registry
            .calls()
            .into_iter()
            .filter(|c| c.operation == Operation::PutManifest && c.reference == tag)
            .count();
        assert_eq!(fallback_writes, 2);
    }

    #[test]
    fn links_become_numbered_annotations() {
        let links = [
            Link {
                url: "https://a/notes".into(),
                rel: "release-notes".into(),
            },
            Link {
                url: "https://b/notes".into(),
                rel: "release-notes".into(),
            },
            Link {
                url: "https://gh/rel".into(),
                rel: "github-release".into(),
            },
        ];
        let a = link_annotations(&links);
        assert_eq!(a["io.gardenlinux.link.release-notes"], "https://a/notes");
        assert_eq!(a["io.gardenlinux.link.release-notes.1"], "https://b/notes");
        assert_eq!(a["io.gardenlinux.link.github-release"], "https://gh/rel");
    }

    #[test]
    fn the_fallback_index_keeps_other_writers_descriptors() {
        let theirs =
            json!({"mediaType": "m", "digest": "sha256:theirs", "size": 1, "x-unknown": true});
        let ours = json!({"mediaType": "m", "digest": "sha256:ours", "size": 2});
        let index = with_referrer(None, &theirs);
        let index = with_referrer(Some(&index), &ours);
        let again = with_referrer(Some(&index), &ours);
        assert_eq!(index, again, "adding twice is adding once");
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(index["manifests"][0], theirs, "unknown fields survive");
        let removed = without_referrer(&index, "sha256:ours");
        assert_eq!(removed["manifests"], json!([theirs]));
        assert_eq!(fallback_tag("sha256:abc"), "sha256-abc");
    }
}
