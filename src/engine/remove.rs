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
