//! Retiring an artefact (`deletionPolicy: Delete`): a plan of deletions, carried out by
//! `execute` like any other plan. A tag is deleted only while it still points at the artefact
//! (another object, or a person, may have moved it since); a referrer's descriptor is taken out
//! of its subject's fallback index, and a referrer without tags is deleted by digest.
//!
//! OCI 1.1 registries delete tags directly; older ones (Distribution 2.x) only delete manifests
//! by digest, so such a tag is first moved to a tombstone manifest of its own, which is deleted.

use bytes::Bytes;
use futures::stream;

use super::desired::tombstone_manifest;
use super::plan::{Deletion, Plan};
use super::{Engine, EngineError, Mode};
use crate::oci::Repository;
use crate::oci::media_types::OCI_EMPTY;

/// What to retire: the artefact an object wrote, under the tags it owns.
#[derive(Clone, Debug)]
pub struct Retirement<'a> {
    pub repository: &'a Repository,
    /// The artefact's manifest digest.
    pub digest: &'a str,
    /// The tags the object owns.
    pub tags: &'a [String],
    /// The subject's digest, for a referrer.
    pub subject: Option<&'a str>,
    /// The artefact has no tags at all (a referrer found through its subject): it is deleted
    /// by digest. Never for a tagged one, whose digest other objects' tags may share.
    pub untagged: bool,
}

/// What became of each tag of a retirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagRemoval {
    Removed,
    /// The tag did not exist.
    Absent,
    /// The tag points at another manifest than ours: left alone, it is not ours to delete.
    Elsewhere(String),
}

#[derive(Clone, Debug)]
pub struct RetirementReport {
    pub plan: Plan,
    /// Each tag, and what was (or, in a dry run, would be) done with it.
    pub tags: Vec<(String, TagRemoval)>,
    /// The referrer's manifest was deleted by digest.
    pub referrer_deleted: bool,
}

impl Engine {
    /// Plans the retirement (reads only) and, unless `mode` is a dry run, carries it out.
    pub async fn retire(
        &self,
        retirement: Retirement<'_>,
        mode: Mode,
    ) -> Result<RetirementReport, EngineError> {
        let repo = retirement.repository;
        let mut plan = Plan::unchanged();
        let mut tags = Vec::new();
        for tag in retirement.tags {
            let removal = match self.registry.head_manifest(repo, tag).await? {
                None => TagRemoval::Absent,
                Some(head) if head.digest != retirement.digest => {
                    TagRemoval::Elsewhere(head.digest)
                }
                Some(_) => {
                    plan.deletions.push(Deletion::Tag {
                        tag: tag.clone(),
                        digest: retirement.digest.to_string(),
                    });
                    TagRemoval::Removed
                }
            };
            tags.push((tag.clone(), removal));
        }
        if let Some(subject) = retirement.subject {
            plan.fallback_indexes
                .extend(self.plan_unlink(repo, subject, retirement.digest).await?);
            if retirement.untagged {
                plan.deletions.push(Deletion::Manifest {
                    digest: retirement.digest.to_string(),
                });
            }
        }
        let mut referrer_deleted = false;
        if mode == Mode::Apply && !plan.is_empty() {
            let deleted = self.execute_after_store(repo, None, &plan).await?;
            referrer_deleted = deleted
                .iter()
                .any(|d| matches!(d, Deletion::Manifest { .. }));
            for (tag, removal) in &mut tags {
                let gone = deleted
                    .iter()
                    .any(|d| matches!(d, Deletion::Tag { tag: t, .. } if t == tag));
                if *removal == TagRemoval::Removed && !gone {
                    *removal = TagRemoval::Absent;
                }
            }
        }
        Ok(RetirementReport {
            plan,
            tags,
            referrer_deleted,
        })
    }

    /// Carries out one deletion; true when there was something to delete.
    pub(super) async fn delete(
        &self,
        repo: &Repository,
        deletion: &Deletion,
    ) -> Result<bool, EngineError> {
        match deletion {
            Deletion::Manifest { digest } => {
                Ok(self.registry.delete_manifest(repo, digest).await?)
            }
            Deletion::Tag { tag, .. } => self.delete_tag(repo, tag).await,
        }
    }

    async fn delete_tag(&self, repo: &Repository, tag: &str) -> Result<bool, EngineError> {
        match self.registry.delete_manifest(repo, tag).await {
            Ok(deleted) => return Ok(deleted),
            // Distribution 2.x answers 400 DIGEST_INVALID, others 405 UNSUPPORTED.
            Err(e) if matches!(e.status(), Some(400 | 405)) => {}
            Err(e) => return Err(e.into()),
        }
        let tombstone = tombstone_manifest(repo, tag);
        if self
            .registry
            .head_blob(repo, &tombstone.blobs[0].digest)
            .await?
            .is_none()
        {
            let config = Bytes::from_static(b"{}");
            debug_assert_eq!(tombstone.blobs[0].media_type, OCI_EMPTY);
            self.upload(
                repo,
                &tombstone.blobs[0].digest,
                Some(2),
                stream::once(std::future::ready(Ok::<_, std::io::Error>(config))),
            )
            .await?;
        }
        self.registry
            .put_manifest(repo, tag, &tombstone.media_type, tombstone.bytes.clone())
            .await?;
        self.registry
            .delete_manifest(repo, &tombstone.digest)
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::test_support::{engine, repo, seed_image};
    use crate::oci::media_types::OCI_MANIFEST;
    use crate::registry::memory::{MemoryOptions, MemoryRegistry, Operation};

    /// Retires one tag of `digest`, as the controller does on deletion.
    async fn remove_tag(engine: &Engine, repo: &Repository, tag: &str, digest: &str) -> TagRemoval {
        let tags = [tag.to_string()];
        let retirement = Retirement {
            repository: repo,
            digest,
            tags: &tags,
            subject: None,
            untagged: false,
        };
        let report = engine.retire(retirement, Mode::Apply).await.unwrap();
        report.tags.into_iter().next().unwrap().1
    }

    #[tokio::test]
    async fn a_tag_still_on_our_digest_is_deleted_and_the_manifest_stays() {
        for options in [MemoryOptions::default(), MemoryOptions::distribution_2()] {
            let tag_deletion = options.tag_deletion;
            let registry = Arc::new(MemoryRegistry::new(options));
            let engine = engine(&registry);
            let a = repo("a");
            let ours = seed_image(&registry, &a, "v1", &["layer"]);
            let bytes = registry.manifest(&a, "v1").unwrap().bytes;
            registry.insert_manifest(&a, Some("other"), OCI_MANIFEST, bytes);
            let removed = remove_tag(&engine, &a, "v1", &ours.digest).await;
            assert_eq!(removed, TagRemoval::Removed, "tag deletion {tag_deletion}");
            assert_eq!(registry.tag(&a, "v1"), None);
            assert_eq!(
                registry.tag(&a, "other"),
                Some(ours.digest.clone()),
                "the manifest and its other tags stay (tag deletion {tag_deletion})"
            );
            let tombstone_puts = registry.count(Operation::PutManifest);
            assert_eq!(tombstone_puts, usize::from(!tag_deletion));
        }
    }

    #[tokio::test]
    async fn a_tag_that_moved_is_left_alone() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let a = repo("a");
        let ours = seed_image(&registry, &a, "v1", &["ours"]);
        let theirs = seed_image(&registry, &a, "v1", &["theirs"]);
        let removal = remove_tag(&engine, &a, "v1", &ours.digest).await;
        assert_eq!(removal, TagRemoval::Elsewhere(theirs.digest.clone()));
        assert_eq!(registry.tag(&a, "v1"), Some(theirs.digest));
        assert_eq!(registry.count(Operation::DeleteManifest), 0);
        assert_eq!(
            remove_tag(&engine, &a, "gone", &ours.digest).await,
            TagRemoval::Absent
        );
    }
}
