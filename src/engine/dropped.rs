//! Tags an object wrote in earlier rounds and no longer wants: a tag taken out of its list, or
//! every tag when its repository changed. With [`OnDrop::Remove`] (`deletionPolicy: Delete`)
//! each is removed while it still points at what the object wrote, the same retirement as on
//! deletion; with [`OnDrop::Release`] it stays as it is and the report names it, so that a tag
//! is never left behind unsaid.
//!
//! Only the controller remembers what an object wrote (its status); the CLI supplies no
//! earlier tags, so a run of `apply` never drops any.

use std::collections::BTreeMap;

use super::remove::{Retirement, TagRemoval};
use super::{Engine, EngineError, Mode};
use crate::intent::ArtifactIntent;
use crate::oci::{Digest, Repository, Tag};

/// A tag an object wrote: where, and the manifest it pointed it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenTag {
    pub repository: Repository,
    pub tag: Tag,
    pub digest: Digest,
}

/// What becomes of a tag the object no longer wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDrop {
    /// Left in the registry as it is, and reported as released.
    #[default]
    Release,
    /// Removed, while it still points at what the object wrote.
    Remove,
}

/// The tags an object wrote before (as far as it remembers), and what becomes of those it no
/// longer wants. The front end leaves out tags another object now claims: those are handed
/// over, neither removed nor released.
#[derive(Clone, Debug, Default)]
pub struct Earlier {
    pub tags: Vec<WrittenTag>,
    pub on_drop: OnDrop,
}

/// What became of the tags an object no longer wants (in a dry run: would become).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Removed from the registry.
    pub removed: Vec<WrittenTag>,
    /// Left alone because they point at another manifest now (the digest they point at):
    /// someone moved them, so they are not ours to remove.
    pub moved: Vec<(WrittenTag, String)>,
    /// Left in the registry as they are ([`OnDrop::Release`]).
    pub released: Vec<WrittenTag>,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.moved.is_empty() && self.released.is_empty()
    }
}

/// The earlier tags `intent` no longer names in its repository (two spellings of one
/// repository are one repository).
pub fn dropped<'a>(earlier: &'a [WrittenTag], intent: &ArtifactIntent) -> Vec<&'a WrittenTag> {
    earlier
        .iter()
        .filter(|written| {
            written.repository != intent.repository || !intent.tags.contains(&written.tag)
        })
        .collect()
}

impl Engine {
    /// Removes or releases the earlier tags `intent` no longer wants. Removal is a retirement
    /// per repository and manifest: a plan of deletions (reads only), carried out unless `mode`
    /// is a dry run.
    pub async fn drop_tags(
        &self,
        intent: &ArtifactIntent,
        earlier: &Earlier,
        mode: Mode,
    ) -> Result<Dropped, EngineError> {
        let dropped = dropped(&earlier.tags, intent);
        let mut outcome = Dropped::default();
        if earlier.on_drop == OnDrop::Release {
            outcome.released = dropped.into_iter().cloned().collect();
            return Ok(outcome);
        }
        let mut by_manifest: BTreeMap<(&Repository, &Digest), Vec<&WrittenTag>> = BTreeMap::new();
        for written in dropped {
            by_manifest
                .entry((&written.repository, &written.digest))
                .or_default()
                .push(written);
        }
        for ((repository, digest), written) in by_manifest {
            let tags: Vec<String> = written.iter().map(|w| w.tag.to_string()).collect();
            let retirement = Retirement {
                repository,
                digest: digest.as_str(),
                tags: &tags,
                subject: None,
                untagged: false,
            };
            let retired = self.retire(retirement, mode).await?;
            for (written, (_, removal)) in written.into_iter().zip(retired.tags) {
                match removal {
                    TagRemoval::Removed => outcome.removed.push(written.clone()),
                    TagRemoval::Elsewhere(other) => outcome.moved.push((written.clone(), other)),
                    TagRemoval::Absent => {}
                }
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::GardenArtifactSpec;
    use crate::api::validate::{Frontend, validate};
    use crate::engine::test_support::{REGISTRY, engine, repo, seed_image};
    use crate::oci::media_types::OCI_MANIFEST;
    use crate::registry::memory::{MemoryOptions, MemoryRegistry, Operation};

    fn intent(repository: &str, tags: &[&str]) -> ArtifactIntent {
        let spec: GardenArtifactSpec = serde_yaml::from_str(&format!(
            "{{repository: '{repository}', tags: [{}], source: {{files: [{{name: a.raw, content: a}}]}}}}",
            tags.join(", ")
        ))
        .expect("a spec");
        validate(&spec, Frontend::Apply).expect("a valid spec")
    }

    fn written(repository: &Repository, tag: &str, digest: &str) -> WrittenTag {
        WrittenTag {
            repository: repository.clone(),
            tag: Tag::parse(tag).unwrap(),
            digest: Digest::parse(digest).unwrap(),
        }
    }

    #[test]
    fn a_tag_is_dropped_when_left_out_or_its_repository_changed() {
        let a = repo("a");
        let digest = format!("sha256:{}", "1".repeat(64));
        let earlier = [
            written(&a, "v1", &digest),
            written(&a, "v2", &digest),
            written(&repo("b"), "v1", &digest),
        ];
        let names = |dropped: Vec<&WrittenTag>| {
            dropped
                .iter()
                .map(|w| format!("{}:{}", w.repository, w.tag))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(dropped(
                &earlier,
                &intent(&format!("{REGISTRY}/a"), &["v1"])
            )),
            [format!("{REGISTRY}/a:v2"), format!("{REGISTRY}/b:v1")]
        );
        // Another spelling of the registry is the same repository.
        let respelled = intent(&format!("{}/a", REGISTRY.to_uppercase()), &["v1", "v2"]);
        assert_eq!(
            names(dropped(&earlier, &respelled)),
            [format!("{REGISTRY}/b:v1")]
        );
    }

    #[tokio::test]
    async fn a_dropped_tag_still_on_our_digest_is_removed_and_a_moved_one_left_alone() {
        for options in [MemoryOptions::default(), MemoryOptions::distribution_2()] {
            let registry = Arc::new(MemoryRegistry::new(options));
            let engine = engine(&registry);
            let a = repo("a");
            let ours = seed_image(&registry, &a, "kept", &["ours"]);
            let bytes = registry.manifest(&a, "kept").unwrap().bytes;
            for tag in ["v1", "v2"] {
                registry.insert_manifest(&a, Some(tag), OCI_MANIFEST, bytes.clone());
            }
            let theirs = seed_image(&registry, &a, "moved", &["theirs"]);
            let earlier = Earlier {
                tags: ["kept", "v1", "v2", "moved", "gone"]
                    .iter()
                    .map(|t| written(&a, t, &ours.digest))
                    .collect(),
                on_drop: OnDrop::Remove,
            };
            let wanted = intent(&format!("{REGISTRY}/a"), &["kept"]);

            let planned = engine
                .drop_tags(&wanted, &earlier, Mode::DryRun)
                .await
                .unwrap();
            assert_eq!(registry.count(Operation::DeleteManifest), 0, "a dry run");
            assert_eq!(planned.removed.len(), 2, "{planned:?}");

            let dropped = engine
                .drop_tags(&wanted, &earlier, Mode::Apply)
                .await
                .unwrap();

            let removed: Vec<&str> = dropped.removed.iter().map(|w| w.tag.as_str()).collect();
            assert_eq!(removed, ["v1", "v2"]);
            assert_eq!(registry.tag(&a, "v1"), None);
            assert_eq!(registry.tag(&a, "v2"), None);
            assert_eq!(registry.tag(&a, "kept"), Some(ours.digest.clone()));
            assert_eq!(
                dropped.moved,
                [(written(&a, "moved", &ours.digest), theirs.digest.clone())]
            );
            assert_eq!(registry.tag(&a, "moved"), Some(theirs.digest.clone()));
            assert!(dropped.released.is_empty());
        }
    }

    /// Through the engine's one entry: the new state is stored, then what is no longer
    /// wanted is removed (here: a new repository, so the tag moves from one to the other).
    #[tokio::test]
    async fn a_reconcile_stores_the_artefact_then_removes_what_it_no_longer_wants() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let (a, b) = (repo("a"), repo("b"));
        let inputs = crate::engine::Inputs::default();
        let first = engine
            .reconcile(&intent(&a.to_string(), &["v1"]), &inputs, Mode::Apply)
            .await
            .unwrap();
        let inputs = crate::engine::Inputs {
            earlier: Earlier {
                tags: vec![written(&a, "v1", &first.digest)],
                on_drop: OnDrop::Remove,
            },
            ..Default::default()
        };

        let moved = engine
            .reconcile(&intent(&b.to_string(), &["v1"]), &inputs, Mode::Apply)
            .await
            .unwrap();

        assert_eq!(moved.dropped.removed, inputs.earlier.tags);
        assert_eq!(registry.tag(&b, "v1"), Some(first.digest.clone()));
        assert_eq!(registry.tag(&a, "v1"), None);
        let calls = registry.calls();
        let last_put = calls
            .iter()
            .rposition(|c| c.operation == Operation::PutManifest && c.repository == b.to_string());
        let first_delete = calls
            .iter()
            .position(|c| c.operation == Operation::DeleteManifest);
        assert!(
            last_put < first_delete,
            "stored first, then removed: {calls:?}"
        );
    }

    #[tokio::test]
    async fn released_tags_are_listed_and_left_as_they_are() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let a = repo("a");
        let ours = seed_image(&registry, &a, "v1", &["ours"]);
        let earlier = Earlier {
            tags: vec![written(&a, "v1", &ours.digest)],
            on_drop: OnDrop::Release,
        };

        let dropped = engine
            .drop_tags(
                &intent(&format!("{REGISTRY}/b"), &["v1"]),
                &earlier,
                Mode::Apply,
            )
            .await
            .unwrap();

        assert_eq!(dropped.released, earlier.tags);
        assert!(dropped.removed.is_empty() && dropped.moved.is_empty());
        assert_eq!(registry.tag(&a, "v1"), Some(ours.digest));
        assert!(
            registry.calls().is_empty(),
            "no request: {:?}",
            registry.calls()
        );
    }
}
