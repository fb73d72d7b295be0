//! From an intent to the exact [`Desired`] state: reads what the content needs (local files,
//! source manifests, URL blobs the target lacks) and hands the bytes to the pure builders.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::try_join_all;
use oci_client::manifest::{OciImageIndex, OciImageManifest};

use super::desired::{self, Blob, BlobOrigin, Desired, IndexChild, Layer, Manifest};
use super::links::Pin;
use super::{Engine, EngineError, Inputs, Mode};
use crate::intent::{
    ArtifactIntent, Content, FieldPath, File, FileOrigin, ImageCopy, IndexContent,
};
use crate::oci::Repository;
use crate::oci::digest::{VerifyingStream, sha256_digest};
use crate::oci::media_types::is_index;
use crate::registry::RawManifest;

/// The largest image config read to check a single manifest's platform; configs are a few KiB.
const MAX_CONFIG_SIZE: u64 = 4 * 1024 * 1024;

/// What resolving learned of a layer's blob in the target.
enum BlobState {
    /// Not known to be there; the plan decides.
    Missing,
    Present,
    /// Written while resolving: a URL whose size only its bytes could tell.
    StoredWhileResolving,
}

/// How the size of a URL blob was learned, and where its bytes are.
enum UrlSize {
    /// Known without the bytes; the plan uploads them if the target lacks them.
    ToUpload(u64),
    InTarget(u64),
    StoredWhileResolving(u64),
}

impl UrlSize {
    fn bytes(&self) -> u64 {
        match self {
            UrlSize::ToUpload(n) | UrlSize::InTarget(n) | UrlSize::StoredWhileResolving(n) => *n,
        }
    }
}

/// An index inside an index inside an index is as deep as real registries go.
const MAX_INDEX_DEPTH: usize = 3;

pub(super) struct Resolved {
    pub desired: Desired,
    /// Blobs that resolving already found (or put) in the target repository.
    pub blobs_present: BTreeSet<String>,
    /// Manifests known to be in the target: a copy within one repository was read from there.
    pub manifests_present: BTreeSet<String>,
    /// Blobs written while resolving (a URL whose size only its bytes tell): part of the plan.
    pub stored_while_resolving: Vec<Blob>,
    /// Every reference of the spec, resolved (the subject first).
    pub pins: Vec<Pin>,
    pub subject: Option<Pin>,
}

impl Engine {
    pub(super) async fn resolve(
        &self,
        intent: &ArtifactIntent,
        inputs: &Inputs,
        mode: Mode,
    ) -> Result<Resolved, EngineError> {
        let repository = &intent.repository;
        let mut blobs_present = BTreeSet::new();
        let mut manifests_present = BTreeSet::new();
        let mut stored_while_resolving = Vec::new();
        let mut pins = Vec::new();
        let subject = match &intent.subject {
            Some(subject) => {
                let pin = self.pin(subject, repository, inputs).await?;
                if pin.resolved.repository() != repository {
                    return Err(EngineError::source(
                        &subject.field,
                        format!(
                            "{} is in another repository; a referrer and its subject share one repository ({repository})",
                            pin.resolved
                        ),
                    ));
                }
                pins.push(pin.clone());
                Some(pin)
            }
            None => None,
        };
        let subject_descriptor = subject
            .as_ref()
            .map(|pin| desired::subject_descriptor(&pin.head));
        let manifest = match &intent.content {
            Content::Files(content) => {
                let layers = try_join_all(
                    content
                        .files
                        .iter()
                        .map(|file| self.resolve_file(file, repository, inputs, mode)),
                )
                .await?;
                let mut resolved_layers = Vec::with_capacity(layers.len());
                for (layer, state) in layers {
                    match state {
                        BlobState::Missing => {}
                        BlobState::Present => {
                            blobs_present.insert(layer.blob.digest.clone());
                        }
                        BlobState::StoredWhileResolving => {
                            blobs_present.insert(layer.blob.digest.clone());
                            stored_while_resolving.push(layer.blob.clone());
                        }
                    }
                    resolved_layers.push(layer);
                }
                desired::files_manifest(content, subject_descriptor, resolved_layers)
            }
            Content::Image(copy) => {
                let manifest = self.resolve_image(copy).await?;
                if copy.source.repository() == repository {
                    manifests_present.insert(manifest.digest.clone());
                }
                manifest
            }
            Content::Index(index) => {
                let (manifest, index_pins) = self
                    .resolve_index(index, repository, inputs, subject_descriptor)
                    .await?;
                pins.extend(index_pins);
                manifest
            }
        };
        Ok(Resolved {
            desired: Desired {
                repository: repository.clone(),
                tags: intent.tags.iter().map(ToString::to_string).collect(),
                manifest,
            },
            blobs_present,
            manifests_present,
            stored_while_resolving,
            pins,
            subject,
        })
    }

    /// An index over the entries, each pinned to a digest; children that live in another
    /// repository are copied into the target first.
    async fn resolve_index(
        &self,
        index: &IndexContent,
        repository: &Repository,
        inputs: &Inputs,
        subject: Option<oci_client::manifest::OciDescriptor>,
    ) -> Result<(Manifest, Vec<Pin>), EngineError> {
        let pins = try_join_all(
            index
                .entries
                .iter()
                .map(|entry| self.pin(&entry.reference, repository, inputs)),
        )
        .await?;
        let mut copies = Vec::new();
        for pin in pins
            .iter()
            .filter(|p| p.resolved.repository() != repository)
        {
            let source = &pin.resolved.repository();
            let raw = self
                .registry
                .get_manifest(source, &pin.head.digest)
                .await?
                .ok_or_else(|| {
                    EngineError::source(&pin.field, format!("{} does not exist", pin.resolved))
                })?;
            copies.push(Box::pin(self.copied_manifest(&pin.field, source, raw, 1)).await?);
        }
        let children: Vec<IndexChild> = index
            .entries
            .iter()
            .zip(&pins)
            .map(|(entry, pin)| IndexChild {
                head: pin.head.clone(),
                annotations: entry.annotations.clone(),
                platform: entry.platform.clone(),
                artifact_type: None,
            })
            .collect();
        Ok((
            desired::index_manifest(&index.manifest, &children, subject, copies),
            pins,
        ))
    }

    /// One layer, and whether its blob is already known to be in the target.
    async fn resolve_file(
        &self,
        file: &File,
        repository: &Repository,
        inputs: &Inputs,
        mode: Mode,
    ) -> Result<(Layer, BlobState), EngineError> {
        let field = &file.field;
        let media_type = file.media_type.clone();
        let inline = |bytes: Bytes| Blob {
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
            media_type: media_type.clone(),
            origin: BlobOrigin::Inline(bytes),
        };
        let (blob, state) = match &file.origin {
            FileOrigin::Inline(bytes) => (inline(bytes.clone()), BlobState::Missing),
            FileOrigin::ConfigMapKey(key) => {
                let bytes = inputs.config_map_keys.get(key).ok_or_else(|| {
                    EngineError::source(
                        &field.child("configMapKeyRef"),
                        format!("ConfigMap {:?} has no key {:?}", key.name, key.key),
                    )
                })?;
                (inline(bytes.clone()), BlobState::Missing)
            }
            FileOrigin::SecretKey(key) => {
                let bytes = inputs.secret_keys.get(key).ok_or_else(|| {
                    EngineError::source(
                        &field.child("secretKeyRef"),
                        format!("Secret {:?} has no key {:?}", key.name, key.key),
                    )
                })?;
                (inline(bytes.clone()), BlobState::Missing)
            }
            FileOrigin::Path(path) => {
                let full = match &inputs.base_dir {
                    Some(base) => base.join(path),
                    None => path.into(),
                };
                if let Some(kind) = not_a_regular_file(&full) {
                    return Err(EngineError::source(
                        &field.child("path"),
                        format!(
                            "{} is {kind}, not a regular file; refused before reading it",
                            full.display()
                        ),
                    ));
                }
                let (digest, size) = crate::sources::hash_file(&full).await.map_err(|e| {
                    EngineError::source(
                        &field.child("path"),
                        format!("cannot read {}: {e}", full.display()),
                    )
                })?;
                (
                    Blob {
                        digest,
                        size,
                        media_type: media_type.clone(),
                        origin: BlobOrigin::File(full),
                    },
                    BlobState::Missing,
                )
            }
            FileOrigin::Url { url, digest, size } => {
                let size = match size {
                    // Declared: the manifest can be built without asking anyone; the upload
                    // (in the plan) verifies the size along with the digest.
                    Some(size) => UrlSize::ToUpload(*size),
                    None => {
                        self.url_blob_size(field, repository, url, digest.as_str(), mode)
                            .await?
                    }
                };
                let blob = Blob {
                    digest: digest.to_string(),
                    size: size.bytes(),
                    media_type: media_type.clone(),
                    origin: BlobOrigin::Url {
                        url: url.clone(),
                        field: field.child("url"),
                    },
                };
                let state = match size {
                    UrlSize::ToUpload(_) => BlobState::Missing,
                    UrlSize::InTarget(_) => BlobState::Present,
                    UrlSize::StoredWhileResolving(_) => BlobState::StoredWhileResolving,
                };
                (blob, state)
            }
        };
        Ok((
            Layer {
                name: file.name.clone(),
                media_type,
                annotations: file.annotations.clone(),
                blob,
            },
            state,
        ))
    }

    /// The size of a URL blob, which the manifest needs, with as few requests as can be: none
    /// when it is known already (declared, or learned before), a HEAD of the target's blob, a
    /// HEAD of the URL. The bytes are fetched only when no one announces a size, and only to
    /// apply: then the blob is stored in the target on the way (content-addressed, so this moves
    /// no tag) and listed in the plan as written.
    async fn url_blob_size(
        &self,
        field: &FieldPath,
        repository: &Repository,
        url: &str,
        digest: &str,
        mode: Mode,
    ) -> Result<UrlSize, EngineError> {
        // A digest's size never changes: once learned, a resync needs no request for it.
        if let Some(size) = self.known_size(digest) {
            return Ok(UrlSize::ToUpload(size));
        }
        if let Some(size) = self.registry.head_blob(repository, digest).await? {
            self.remember_size(digest, size);
            return Ok(UrlSize::InTarget(size));
        }
        let url_field = field.child("url");
        let fetch = |error| EngineError::Fetch {
            field: url_field.clone(),
            error,
        };
        // Announced, not verified: the upload checks it along with the digest.
        if let Some(size) = self.urls.content_length(url).await.map_err(fetch)? {
            return Ok(UrlSize::ToUpload(size));
        }
        if mode == Mode::DryRun {
            return Err(EngineError::source(
                &url_field,
                format!(
                    "{url} announces no size (no Content-Length), and a dry run does not download; give {} to plan it",
                    field.child("size")
                ),
            ));
        }
        let (length, stream) = self.urls.open(url).await.map_err(fetch)?;
        let verified = VerifyingStream::new(stream, digest, length);
        let mismatch = |e: &dyn std::fmt::Display| {
            EngineError::source(&url_field, format!("content of {url} was refused: {e}"))
        };
        let counted = CountingStream::new(verified);
        let counter = counted.counter();
        self.upload(repository, digest, length, counted)
            .await
            .map_err(|e| match e {
                crate::registry::Error::Transport { detail, .. } => mismatch(&detail),
                e @ crate::registry::Error::Status { .. } if e.is_digest_invalid() => mismatch(&e),
                other => EngineError::Registry(other),
            })?;
        let size = counter.load(std::sync::atomic::Ordering::Relaxed);
        self.remember_size(digest, size);
        self.remember_blobs(repository, [digest.to_string()]);
        Ok(UrlSize::StoredWhileResolving(size))
    }

    /// The source repository and the manifest copied from it.
    async fn resolve_image(&self, copy: &ImageCopy) -> Result<Manifest, EngineError> {
        let field = &copy.source_field;
        let source = &copy.source;
        let raw = self
            .registry
            .get_manifest(source.repository(), source.reference())
            .await?
            .ok_or_else(|| EngineError::source(field, format!("{source} does not exist")))?;
        let raw = match &copy.platform {
            Some(platform) if is_index(&raw.media_type) => {
                let digest = pick_platform(&raw, platform)
                    .map_err(|e| EngineError::source(&copy.platform_field, e))?;
                self.registry
                    .get_manifest(source.repository(), &digest)
                    .await?
                    .ok_or_else(|| {
                        EngineError::source(
                            field,
                            format!("{source} lists {digest}, which does not exist"),
                        )
                    })?
            }
            Some(platform) => {
                self.check_single_platform(copy, &raw, platform).await?;
                raw
            }
            None => raw,
        };
        Box::pin(self.copied_manifest(field, source.repository(), raw, 0)).await
    }

    /// `platform` on a source that is one manifest, not an index: its config must say that
    /// platform, or the copy would be of another one without a word.
    async fn check_single_platform(
        &self,
        copy: &ImageCopy,
        raw: &RawManifest,
        platform: &str,
    ) -> Result<(), EngineError> {
        let source = &copy.source;
        let refuse = |detail: String| {
            EngineError::source(
                &copy.platform_field,
                format!("{source} is a single manifest, not an index, {detail}"),
            )
        };
        let manifest: OciImageManifest = serde_json::from_slice(&raw.bytes).map_err(|e| {
            refuse(format!(
                "and not a valid image manifest ({e}); its platform cannot be checked"
            ))
        })?;
        let config = &manifest.config;
        let unreadable = || {
            refuse(format!(
                "and its config ({}, {} bytes) names no platform; {platform} cannot be checked",
                config.media_type, config.size
            ))
        };
        if config.size < 0 || config.size as u64 > MAX_CONFIG_SIZE {
            return Err(unreadable());
        }
        let mut blob = self
            .registry
            .get_blob(source.repository(), &config.digest)
            .await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = blob.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() as u64 > MAX_CONFIG_SIZE {
                return Err(unreadable());
            }
        }
        #[derive(serde::Deserialize)]
        struct ConfigPlatform {
            os: Option<String>,
            architecture: Option<String>,
            variant: Option<String>,
        }
        let Ok(ConfigPlatform {
            os: Some(os),
            architecture: Some(architecture),
            variant,
        }) = serde_json::from_slice(&bytes)
        else {
            return Err(unreadable());
        };
        let mut wanted = platform.split('/');
        let matches = wanted.next() == Some(os.as_str())
            && wanted.next() == Some(architecture.as_str())
            && wanted.next().is_none_or(|v| variant.as_deref() == Some(v));
        if matches {
            return Ok(());
        }
        let found = match &variant {
            Some(variant) => format!("{os}/{architecture}/{variant}"),
            None => format!("{os}/{architecture}"),
        };
        Err(refuse(format!(
            "for {found}; it has no {platform} manifest"
        )))
    }

    /// A manifest copied byte for byte, with the blobs and children it needs in the target.
    pub(super) async fn copied_manifest(
        &self,
        field: &FieldPath,
        source: &Repository,
        raw: RawManifest,
        depth: usize,
    ) -> Result<Manifest, EngineError> {
        let invalid = |e: serde_json::Error| {
            EngineError::source(
                field,
                format!(
                    "{source}@{} is not a valid {}: {e}",
                    raw.digest, raw.media_type
                ),
            )
        };
        if is_index(&raw.media_type) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(EngineError::source(
                    field,
                    format!("indexes nest deeper than {MAX_INDEX_DEPTH}"),
                ));
            }
            let index: OciImageIndex = serde_json::from_slice(&raw.bytes).map_err(invalid)?;
            let parent = &raw.digest;
            let children = try_join_all(index.manifests.iter().map(|entry| async move {
                let child = self
                    .registry
                    .get_manifest(source, &entry.digest)
                    .await?
                    .ok_or_else(|| {
                        EngineError::source(
                            field,
                            format!(
                                "{source}@{parent} lists {}, which does not exist",
                                entry.digest
                            ),
                        )
                    })?;
                Box::pin(self.copied_manifest(field, source, child, depth + 1)).await
            }))
            .await?;
            Ok(Manifest {
                media_type: raw.media_type,
                digest: raw.digest,
                bytes: raw.bytes,
                blobs: Vec::new(),
                children,
            })
        } else {
            let manifest: OciImageManifest = serde_json::from_slice(&raw.bytes).map_err(invalid)?;
            let blobs = std::iter::once(&manifest.config)
                .chain(manifest.layers.iter())
                // Foreign layers live outside the registry by design.
                .filter(|d| d.urls.is_none())
                .map(|d| Blob {
                    digest: d.digest.clone(),
                    size: d.size.max(0) as u64,
                    media_type: d.media_type.clone(),
                    origin: BlobOrigin::Repository(source.clone()),
                })
                .fold(Vec::<Blob>::new(), |mut unique, blob| {
                    if !unique.iter().any(|b| b.digest == blob.digest) {
                        unique.push(blob);
                    }
                    unique
                });
            Ok(Manifest {
                media_type: raw.media_type,
                digest: raw.digest,
                bytes: raw.bytes,
                blobs,
                children: Vec::new(),
            })
        }
    }
}

/// The digest of the index entry for `os/arch[/variant]`.
fn pick_platform(raw: &RawManifest, platform: &str) -> Result<String, String> {
    let index: OciImageIndex = serde_json::from_slice(&raw.bytes)
        .map_err(|e| format!("the source index is not valid: {e}"))?;
    let mut wanted = platform.split('/');
    let (os, arch, variant) = (wanted.next(), wanted.next(), wanted.next());
    index
        .manifests
        .iter()
        .find(|entry| {
            entry.platform.as_ref().is_some_and(|p| {
                Some(p.os.to_string().as_str()) == os
                    && Some(p.architecture.to_string().as_str()) == arch
                    && (variant.is_none() || p.variant.as_deref() == variant)
            })
        })
        .map(|entry| entry.digest.clone())
        .ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            format!(
                "no manifest for {platform} in the source index (it has: {})",
                available.join(", ")
            )
        })
}

/// What `path` is when it exists but is not a regular file (after symlinks): reading a FIFO or
/// a character device such as `/dev/zero` would never end. A path that cannot be looked at is
/// left to the read, which names the error.
fn not_a_regular_file(path: &std::path::Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("neither a file nor a directory")
    }
}

/// Counts the bytes that pass, for content whose size is only known once read.
pub(super) struct CountingStream<S> {
    inner: S,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<S> CountingStream<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            count: Default::default(),
        }
    }

    pub fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.count.clone()
    }
}

impl<S> futures::Stream for CountingStream<S>
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.count
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Mode;
    use super::super::test_support::{engine, reconcile_yaml, repo, seed_image};
    use crate::registry::memory::{MemoryRegistry, Operation};

    fn copy_spec(target: &str, tag: &str, source: &str) -> String {
        format!(
            r#"
repository: memory.test/{target}
tags: [{tag}]
source:
  image:
    reference: memory.test/{source}
"#
        )
    }

    #[tokio::test]
    async fn a_copy_within_a_repository_is_manifest_only() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let a = repo("a");
        let image = seed_image(&registry, &a, "v1", &["layer one", "layer two"]);
        let report = reconcile_yaml(&engine, &copy_spec("a", "stable", "a:v1"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(report.digest, image.digest);
        assert_eq!(registry.tag(&a, "stable"), Some(image.digest));
        for blob_operation in [
            Operation::HeadBlob,
            Operation::GetBlob,
            Operation::StartUpload,
            Operation::FinishUpload,
        ] {
            assert_eq!(
                registry.count(blob_operation),
                0,
                "{blob_operation:?}: {:?}",
                registry.calls()
            );
        }
        assert_eq!(registry.count(Operation::PutManifest), 1);
    }

    #[tokio::test]
    async fn a_copy_across_repositories_mounts_and_uploads_where_mounts_fail() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let (a, b, c) = (repo("a"), repo("b"), repo("c"));
        let image = seed_image(&registry, &a, "v1", &["layer one", "layer two"]);

        reconcile_yaml(&engine, &copy_spec("b", "v1", "a:v1"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(registry.tag(&b, "v1"), Some(image.digest.clone()));
        assert_eq!(registry.count(Operation::StartUpload), image.blobs.len());
        assert_eq!(registry.count(Operation::GetBlob), 0, "mounted, not read");
        assert_eq!(registry.count(Operation::FinishUpload), 0);

        registry.configure(|o| o.cross_repository_mount = false);
        registry.clear_calls();
        reconcile_yaml(&engine, &copy_spec("c", "v1", "a:v1"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(registry.tag(&c, "v1"), Some(image.digest));
        assert_eq!(registry.count(Operation::GetBlob), image.blobs.len());
        assert_eq!(registry.count(Operation::FinishUpload), image.blobs.len());
        assert!(image.blobs.iter().all(|d| registry.has_blob(&c, d)));
    }

    /// `platform` on a single manifest: checked against its config in every mode, and a
    /// mismatch writes nothing.
    #[tokio::test]
    async fn platform_on_a_single_manifest_must_match_its_config() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let a = repo("a");
        let config = r#"{"architecture":"arm","os":"linux","variant":"v7"}"#;
        let config_digest = registry.insert_blob(&a, config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::media_types::OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
        });
        registry.insert_manifest(
            &a,
            Some("arm"),
            crate::oci::media_types::OCI_MANIFEST,
            serde_json::to_vec(&manifest).unwrap(),
        );
        seed_image(&registry, &a, "plain", &["layer"]);
        let with_platform = |tag: &str, source: &str, platform: &str| {
            format!("{}    platform: {platform}\n", copy_spec("b", tag, source))
        };
        for mode in [Mode::DryRun, Mode::Apply] {
            for (source, platform, expected) in [
                (
                    "a:arm",
                    "linux/arm64",
                    "for linux/arm/v7; it has no linux/arm64 manifest",
                ),
                (
                    "a:arm",
                    "linux/arm/v6",
                    "for linux/arm/v7; it has no linux/arm/v6 manifest",
                ),
                ("a:plain", "linux/amd64", "names no platform"),
            ] {
                let err = reconcile_yaml(&engine, &with_platform("x", source, platform), mode)
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.starts_with("spec.source.image.platform: ")
                        && err.contains("is a single manifest, not an index")
                        && err.contains(expected),
                    "{err}"
                );
            }
        }
        assert_eq!(registry.tag(&repo("b"), "x"), None);
        for platform in ["linux/arm", "linux/arm/v7"] {
            reconcile_yaml(
                &engine,
                &with_platform("ok", "a:arm", platform),
                Mode::Apply,
            )
            .await
            .unwrap();
        }
        assert_eq!(registry.tag(&repo("b"), "ok"), registry.tag(&a, "arm"));
    }
}
