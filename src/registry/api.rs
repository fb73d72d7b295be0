//! [`Registry`]: the operations the engine and the CLI verbs ask of a registry, one seam for
//! the real client ([`RegistryClient`]) and the in-memory one of tests
//! ([`MemoryRegistry`](super::memory::MemoryRegistry)).
//!
//! `async-trait` rather than native `async fn` in the trait: the engine holds an
//! `Arc<dyn Registry>`, and a trait with native async methods is not object-safe. The macro
//! writes the boxed, `Send` futures that spawned controller tasks need, lifetimes included,
//! which hand-written `BoxFuture` returns would repeat in every signature.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::blobs::UploadStart;
use super::client::RegistryClient;
use super::error::Error;
use super::manifests::{ManifestHead, PutManifestOutcome, RawManifest};
use super::transport::RequestStats;
use crate::oci::Repository;

/// A blob's content as the registry serves it; the reader verifies it.
pub type BlobStream = BoxStream<'static, Result<Bytes, Error>>;
/// The content of an upload as the caller supplies it.
pub type UploadBody = BoxStream<'static, Result<Bytes, std::io::Error>>;

#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The digest, media type and size of a manifest; `None` when absent.
    async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error>;

    /// A manifest with its digest verified; `None` when absent.
    async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, Error>;

    /// Stores a manifest under a tag or its digest.
    async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error>;

    /// Deletes a manifest (by digest) or a tag: true when it was there.
    async fn delete_manifest(&self, repo: &Repository, reference: &str) -> Result<bool, Error>;

    /// A blob's size; `None` when absent.
    async fn head_blob(&self, repo: &Repository, digest: &str) -> Result<Option<u64>, Error>;

    async fn get_blob(&self, repo: &Repository, digest: &str) -> Result<BlobStream, Error>;

    /// Opens an upload, mounting from `mount_from` when given; a registry that does not mount
    /// opens a session instead.
    async fn start_upload(
        &self,
        repo: &Repository,
        digest: &str,
        mount_from: Option<&Repository>,
    ) -> Result<UploadStart, Error>;

    /// Finishes an upload session with the whole content.
    async fn finish_upload(
        &self,
        repo: &Repository,
        session: reqwest::Url,
        digest: &str,
        size: Option<u64>,
        body: UploadBody,
    ) -> Result<(), Error>;

    /// Succeeds when the registry lets these credentials write `repo`; writes nothing that
    /// stays (an upload session opened and cancelled).
    async fn probe_push(&self, repo: &Repository) -> Result<(), Error>;

    /// Every tag of a repository, reading at most `max_pages` pages; `None` when it has more.
    async fn list_tags(
        &self,
        repo: &Repository,
        max_pages: usize,
    ) -> Result<Option<Vec<String>>, Error>;

    /// The referrers index of `digest`; `None` when the registry has no referrers API.
    async fn referrers(&self, repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error>;

    fn stats(&self) -> &RequestStats;
}

#[async_trait::async_trait]
impl Registry for RegistryClient {
    async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        RegistryClient::head_manifest(self, repo, reference).await
    }

    async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, Error> {
        RegistryClient::get_manifest(self, repo, reference).await
    }

    async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error> {
        RegistryClient::put_manifest(self, repo, reference, media_type, bytes).await
    }

    async fn delete_manifest(&self, repo: &Repository, reference: &str) -> Result<bool, Error> {
        RegistryClient::delete_manifest(self, repo, reference).await
    }

    async fn head_blob(&self, repo: &Repository, digest: &str) -> Result<Option<u64>, Error> {
        RegistryClient::head_blob(self, repo, digest).await
    }

    async fn get_blob(&self, repo: &Repository, digest: &str) -> Result<BlobStream, Error> {
        Ok(RegistryClient::get_blob(self, repo, digest).await?.boxed())
    }

    async fn start_upload(
        &self,
        repo: &Repository,
        digest: &str,
        mount_from: Option<&Repository>,
    ) -> Result<UploadStart, Error> {
        RegistryClient::start_upload(self, repo, digest, mount_from).await
    }

    async fn finish_upload(
        &self,
        repo: &Repository,
        session: reqwest::Url,
        digest: &str,
        size: Option<u64>,
        body: UploadBody,
    ) -> Result<(), Error> {
        RegistryClient::finish_upload(self, repo, session, digest, size, body).await
    }

    async fn probe_push(&self, repo: &Repository) -> Result<(), Error> {
        RegistryClient::probe_push(self, repo).await
    }

    async fn list_tags(
        &self,
        repo: &Repository,
        max_pages: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        RegistryClient::list_tags(self, repo, max_pages).await
    }

    async fn referrers(&self, repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error> {
        RegistryClient::referrers(self, repo, digest).await
    }

    fn stats(&self) -> &RequestStats {
        RegistryClient::stats(self)
    }
}
