//! [`OciLayout`]: the [`Registry`] operations over an OCI image layout directory (image-spec
//! `image-layout.md`), the air-gapped carrier: `oci-layout`, `index.json`, and the blobs
//! under `blobs/<algorithm>/<hex>`. skopeo's `oci:PATH:TAG` and podman read and write the
//! same shape: a tag is an `index.json` entry annotated `org.opencontainers.image.ref.name`.
//!
//! A layout answers the referrers API itself: a manifest stored with a `subject` is listed in
//! `index.json` without a name (as `oras cp --to-oci-layout` writes it), and the referrers of
//! a digest are the listed manifests whose subject it is. So a layout written here carries an
//! artefact's referrers, and one written by another tool is read with them.
//!
//! One directory is one repository: the `repo` of every call is ignored ([`Routed`] sends a
//! layout only the calls for its repository). Writes go to a temporary file renamed into
//! place, and `index.json` is rewritten under a lock, so a crash leaves the old index or the
//! new one, never half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::api::{BlobStream, Registry, UploadBody};
use super::blobs::UploadStart;
use super::error::Error;
use super::manifests::{ManifestHead, PutManifestOutcome, RawManifest, media_type_from_body};
use super::transport::RequestStats;
use crate::oci::media_types::OCI_INDEX;
use crate::oci::{Digest, Repository};

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The registry host of the repositories that stand for layouts. `.invalid` is reserved
/// (RFC 2606): no network name ever resolves to it, so a layout is never mistaken for a
/// registry, nor a registry for a layout.
pub const LAYOUT_HOST: &str = "oci-layout.invalid";

pub struct OciLayout {
    root: PathBuf,
    /// `index.json` is read, changed and written by one writer at a time.
    index_lock: tokio::sync::Mutex<()>,
    stats: RequestStats,
}

impl OciLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            index_lock: tokio::sync::Mutex::new(()),
            stats: RequestStats::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn error(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Invalid {
            what: format!("{} ({what})", self.root.display()),
            detail: detail.to_string(),
        }
    }

    /// The file of a blob; refuses digests that are no digest (a path in disguise).
    fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        let parsed = Digest::parse(digest).map_err(|e| self.error("blob", e))?;
        let (algorithm, hex) = parsed
            .as_str()
            .split_once(':')
            .expect("a parsed digest has an algorithm");
        Ok(self.root.join("blobs").join(algorithm).join(hex))
    }

    async fn read_index(&self) -> Result<Value, Error> {
        match tokio::fs::read(self.root.join("index.json")).await {
            Ok(bytes) => {
                let index: Value =
                    serde_json::from_slice(&bytes).map_err(|e| self.error("index.json", e))?;
                if !index["manifests"].is_array() {
                    return Err(self.error("index.json", "has no manifests list"));
                }
                Ok(index)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [],
            })),
            Err(e) => Err(self.error("index.json", e)),
        }
    }

    async fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let folder = path.parent().expect("a file in the layout");
        tokio::fs::create_dir_all(folder)
            .await
            .map_err(|e| self.error("create folder", e))?;
        let temporary = folder.join(format!(
            ".{}.{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            next_temporary()
        ));
        tokio::fs::write(&temporary, bytes)
            .await
            .map_err(|e| self.error("write", e))?;
        tokio::fs::rename(&temporary, path)
            .await
            .map_err(|e| self.error("write", e))
    }

    async fn ensure_layout_file(&self) -> Result<(), Error> {
        let marker = self.root.join("oci-layout");
        if tokio::fs::metadata(&marker).await.is_err() {
            self.write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .await?;
        }
        Ok(())
    }

    /// Changes `index.json` under the lock.
    async fn change_index(&self, change: impl FnOnce(&mut Vec<Value>)) -> Result<(), Error> {
        let _turn = self.index_lock.lock().await;
        let mut index = self.read_index().await?;
        let manifests = index["manifests"]
            .as_array_mut()
            .expect("read_index checked the list");
        change(manifests);
        let bytes = serde_json::to_vec(&index).expect("JSON serializes");
        self.write_atomically(&self.root.join("index.json"), &bytes)
            .await
    }

    /// The digest a reference names: a digest itself, or the entry of a tag.
    async fn resolve(&self, reference: &str) -> Result<Option<String>, Error> {
        if Digest::parse(reference).is_ok() {
            return Ok(Some(reference.to_string()));
        }
        let index = self.read_index().await?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"][REF_NAME] == reference)
            .and_then(|d| d["digest"].as_str())
            .map(str::to_string))
    }

    async fn read_blob(&self, digest: &str) -> Result<Option<Bytes>, Error> {
        match tokio::fs::read(self.blob_path(digest)?).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("blob", e)),
        }
    }
}

/// A number for a temporary file no other write of this process uses: two writers of one
/// file (two uploads of one blob, two first writes of `oci-layout`) each rename their own.
fn next_temporary() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[async_trait::async_trait]
impl Registry for OciLayout {
    async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        Ok(self
            .get_manifest(repo, reference)
            .await?
            .map(|manifest| ManifestHead {
                size: manifest.bytes.len() as u64,
                digest: manifest.digest,
                media_type: manifest.media_type,
            }))
    }

    async fn get_manifest(
        &self,
        _repo: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, Error> {
        let Some(digest) = self.resolve(reference).await? else {
            return Ok(None);
        };
        let Some(bytes) = self.read_blob(&digest).await? else {
            return Ok(None);
        };
        let actual = sha256_of(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("{} manifest {reference}", self.root.display()),
                expected: digest,
                actual,
            });
        }
        let media_type = media_type_from_body(&bytes)
            .ok_or_else(|| self.error(reference, "the manifest names no mediaType"))?;
        Ok(Some(RawManifest {
            media_type,
            digest,
            bytes,
        }))
    }

    async fn put_manifest(
        &self,
        _repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error> {
        self.ensure_layout_file().await?;
        let digest = sha256_of(&bytes);
        if Digest::parse(reference).is_ok() && reference != digest {
            return Err(Error::DigestMismatch {
                what: format!("{} manifest", self.root.display()),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        self.write_atomically(&self.blob_path(&digest)?, &bytes)
            .await?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let has_subject = body["subject"]["digest"].is_string();
        let tag = Digest::parse(reference).is_err().then_some(reference);
        if tag.is_none() && !has_subject {
            // A child of an index: reachable through its parent, no entry of its own.
            return Ok(PutManifestOutcome::default());
        }
        let mut descriptor = json!({
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
        });
        if let Some(artifact_type) = body["artifactType"].as_str() {
            descriptor["artifactType"] = json!(artifact_type);
        }
        match tag {
            Some(tag) => descriptor["annotations"] = json!({ REF_NAME: tag }),
            None => {
                if let Some(annotations) = body["annotations"].as_object() {
                    descriptor["annotations"] = Value::Object(annotations.clone());
                }
            }
        }
        self.change_index(|manifests| {
            match tag {
                Some(tag) => manifests.retain(|d| d["annotations"][REF_NAME] != tag),
                None => manifests.retain(|d| {
                    d["digest"] != digest.as_str() || d["annotations"][REF_NAME].is_string()
                }),
            }
            manifests.push(descriptor);
        })
        .await?;
        Ok(PutManifestOutcome {
            subject_processed: has_subject,
        })
    }

    async fn delete_manifest(&self, _repo: &Repository, reference: &str) -> Result<bool, Error> {
        let mut removed = false;
        let by_digest = Digest::parse(reference).is_ok();
        self.change_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|d| {
                if by_digest {
                    d["digest"] != reference
                } else {
                    d["annotations"][REF_NAME] != reference
                }
            });
            removed = manifests.len() != before;
        })
        .await?;
        Ok(removed)
    }

    async fn head_blob(&self, _repo: &Repository, digest: &str) -> Result<Option<u64>, Error> {
        match tokio::fs::metadata(self.blob_path(digest)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("blob", e)),
        }
    }

    async fn get_blob(&self, _repo: &Repository, digest: &str) -> Result<BlobStream, Error> {
        let path = self.blob_path(digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.error(digest, e))?;
        let root = self.root.display().to_string();
        Ok(tokio_util::io::ReaderStream::new(file)
            .map(move |chunk| {
                chunk.map_err(|e| Error::Invalid {
                    what: root.clone(),
                    detail: e.to_string(),
                })
            })
            .boxed())
    }

    async fn start_upload(
        &self,
        _repo: &Repository,
        digest: &str,
        _mount_from: Option<&Repository>,
    ) -> Result<UploadStart, Error> {
        // The session names the blob's file; `finish_upload` writes beside it and renames.
        let path = self.blob_path(digest)?;
        let url = reqwest::Url::from_file_path(&path)
            .map_err(|()| self.error(digest, "the layout's path is not absolute"))?;
        Ok(UploadStart::Session(url))
    }

    async fn finish_upload(
        &self,
        _repo: &Repository,
        _session: reqwest::Url,
        digest: &str,
        _size: Option<u64>,
        mut body: UploadBody,
    ) -> Result<(), Error> {
        self.ensure_layout_file().await?;
        let path = self.blob_path(digest)?;
        let folder = path.parent().expect("a blob has a folder");
        tokio::fs::create_dir_all(folder)
            .await
            .map_err(|e| self.error("create folder", e))?;
        let temporary = folder.join(format!(
            ".upload.{}.{}.tmp",
            std::process::id(),
            next_temporary()
        ));
        let mut file = tokio::fs::File::create(&temporary)
            .await
            .map_err(|e| self.error("upload", e))?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.error("upload", e))?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| self.error("upload", e))?;
        }
        file.flush().await.map_err(|e| self.error("upload", e))?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(Error::DigestMismatch {
                what: format!("{} blob ({written} bytes)", self.root.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        self.stats.add_uploaded(written);
        tokio::fs::rename(&temporary, &path)
            .await
            .map_err(|e| self.error("upload", e))
    }

    async fn probe_push(&self, _repo: &Repository) -> Result<(), Error> {
        // A file written and removed: the folder takes writes.
        let probe = self.root.join(format!(
            ".probe.{}.{}.tmp",
            std::process::id(),
            next_temporary()
        ));
        self.write_atomically(&probe, b"").await?;
        tokio::fs::remove_file(&probe)
            .await
            .map_err(|e| self.error("probe", e))
    }

    async fn list_tags(
        &self,
        _repo: &Repository,
        _max_pages: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        let index = self.read_index().await?;
        Ok(Some(
            index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["annotations"][REF_NAME].as_str())
                .map(str::to_string)
                .collect(),
        ))
    }

    async fn referrers(&self, _repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error> {
        let index = self.read_index().await?;
        let mut referrers = Vec::new();
        for entry in index["manifests"].as_array().into_iter().flatten() {
            let Some(entry_digest) = entry["digest"].as_str() else {
                continue;
            };
            let Some(bytes) = self.read_blob(entry_digest).await? else {
                continue;
            };
            let manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if manifest["subject"]["digest"] != digest {
                continue;
            }
            let mut descriptor = json!({
                "mediaType": entry["mediaType"],
                "digest": entry_digest,
                "size": bytes.len(),
            });
            let artifact_type = manifest["artifactType"]
                .as_str()
                .or_else(|| manifest["config"]["mediaType"].as_str());
            if let Some(artifact_type) = artifact_type {
                descriptor["artifactType"] = json!(artifact_type);
            }
            if let Some(annotations) = manifest["annotations"].as_object() {
                descriptor["annotations"] = Value::Object(annotations.clone());
            }
            referrers.push(descriptor);
        }
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": referrers });
        Ok(Some(Bytes::from(
            serde_json::to_vec(&index).expect("JSON serializes"),
        )))
    }

    fn stats(&self) -> &RequestStats {
        &self.stats
    }
}

/// A registry client and layout directories behind one [`Registry`]: calls for a layout's
/// repository (registry [`LAYOUT_HOST`]) go to that layout, all others to the network.
pub struct Routed {
    network: Arc<dyn Registry>,
    layouts: BTreeMap<Repository, Arc<OciLayout>>,
}

impl Routed {
    pub fn new(network: Arc<dyn Registry>) -> Self {
        Self {
            network,
            layouts: BTreeMap::new(),
        }
    }

    /// The repository that stands for the layout at `root` in every call.
    pub fn add_layout(&mut self, root: &Path) -> Repository {
        let name = format!("{LAYOUT_HOST}/layout-{}", self.layouts.len() + 1);
        let repository = Repository::parse(&name).expect("a layout name is a repository");
        self.layouts
            .insert(repository.clone(), Arc::new(OciLayout::new(root)));
        repository
    }

    fn route(&self, repo: &Repository) -> &dyn Registry {
        match self.layouts.get(repo) {
            Some(layout) => layout.as_ref(),
            None => self.network.as_ref(),
        }
    }
}

#[async_trait::async_trait]
impl Registry for Routed {
    async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        self.route(repo).head_manifest(repo, reference).await
    }

    async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, Error> {
        self.route(repo).get_manifest(repo, reference).await
    }

    async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error> {
        self.route(repo)
            .put_manifest(repo, reference, media_type, bytes)
            .await
    }

    async fn delete_manifest(&self, repo: &Repository, reference: &str) -> Result<bool, Error> {
        self.route(repo).delete_manifest(repo, reference).await
    }

    async fn head_blob(&self, repo: &Repository, digest: &str) -> Result<Option<u64>, Error> {
        self.route(repo).head_blob(repo, digest).await
    }

    async fn get_blob(&self, repo: &Repository, digest: &str) -> Result<BlobStream, Error> {
        self.route(repo).get_blob(repo, digest).await
    }

    async fn start_upload(
        &self,
        repo: &Repository,
        digest: &str,
        mount_from: Option<&Repository>,
    ) -> Result<UploadStart, Error> {
        // A mount is a registry's own business; between a layout and anything else it is a copy.
        let mount_from = mount_from.filter(|from| !self.layouts.contains_key(from));
        self.route(repo)
            .start_upload(repo, digest, mount_from)
            .await
    }

    async fn finish_upload(
        &self,
        repo: &Repository,
        session: reqwest::Url,
        digest: &str,
        size: Option<u64>,
        body: UploadBody,
    ) -> Result<(), Error> {
        self.route(repo)
            .finish_upload(repo, session, digest, size, body)
            .await
    }

    async fn probe_push(&self, repo: &Repository) -> Result<(), Error> {
        self.route(repo).probe_push(repo).await
    }

    async fn list_tags(
        &self,
        repo: &Repository,
        max_pages: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        self.route(repo).list_tags(repo, max_pages).await
    }

    async fn referrers(&self, repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error> {
        self.route(repo).referrers(repo, digest).await
    }

    fn stats(&self) -> &RequestStats {
        self.network.stats()
    }
}
