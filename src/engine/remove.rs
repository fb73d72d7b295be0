//! Removing one tag without touching the manifest it points at (which other tags may share).
//! OCI 1.1 registries delete tags directly; older ones (Distribution 2.x) only delete manifests
//! by digest, so the tag is first moved to a tombstone manifest of its own, which is deleted.

use bytes::Bytes;
use futures::stream;

use super::desired::tombstone_manifest;
use super::{Engine, EngineError};
use crate::oci::Repository;
use crate::oci::media_types::OCI_EMPTY;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagRemoval {
    Removed,
    /// The tag did not exist.
    Absent,
    /// The tag points at another manifest than ours: left alone, it is not ours to delete.
    Elsewhere(String),
}

impl Engine {
    pub async fn remove_tag(
        &self,
        repo: &Repository,
        tag: &str,
        expected_digest: &str,
    ) -> Result<TagRemoval, EngineError> {
        match self.registry.head_manifest(repo, tag).await? {
            None => return Ok(TagRemoval::Absent),
            Some(head) if head.digest != expected_digest => {
                return Ok(TagRemoval::Elsewhere(head.digest));
            }
            Some(_) => {}
        }
        match self.registry.delete_manifest(repo, tag).await {
            Ok(true) => return Ok(TagRemoval::Removed),
            Ok(false) => return Ok(TagRemoval::Absent),
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
        Ok(TagRemoval::Removed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::test_support::{engine, repo, seed_image};
    use crate::oci::media_types::OCI_MANIFEST;
    use crate::registry::memory::{MemoryOptions, MemoryRegistry, Operation};

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
            let removed = engine.remove_tag(&a, "v1", &ours.digest).await.unwrap();
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
        let removal = engine.remove_tag(&a, "v1", &ours.digest).await.unwrap();
        assert_eq!(removal, TagRemoval::Elsewhere(theirs.digest.clone()));
        assert_eq!(registry.tag(&a, "v1"), Some(theirs.digest));
        assert_eq!(registry.count(Operation::DeleteManifest), 0);
        assert_eq!(
            engine.remove_tag(&a, "gone", &ours.digest).await.unwrap(),
            TagRemoval::Absent
        );
    }
}
