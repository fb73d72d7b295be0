//! What the engine's unit tests share: an engine over a [`MemoryRegistry`], content seeded
//! into it, and the one way into the engine every test takes ([`reconcile_yaml`]), so that a
//! change of the engine's entry point changes this file only.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::{Engine, EngineError, Inputs, Mode, Report};
use crate::api::GardenArtifactSpec;
use crate::api::validate::{Frontend, validate};
use crate::oci::Repository;
use crate::oci::media_types::{OCI_EMPTY, OCI_MANIFEST};
use crate::registry::memory::MemoryRegistry;
use crate::sources::{UrlFetcher, UrlPolicy};

/// The registry host of every test repository.
pub const REGISTRY: &str = "memory.test";

pub fn repo(name: &str) -> Repository {
    Repository::parse(&format!("{REGISTRY}/{name}")).expect("a repository")
}

/// An engine speaking to `registry`, fetching no URLs.
pub fn engine(registry: &Arc<MemoryRegistry>) -> Engine {
    let urls = UrlFetcher::new(UrlPolicy::none()).expect("a URL fetcher");
    Engine::new(Arc::clone(registry) as _, urls, 2)
}

/// Reconciles the GardenArtifact spec written as YAML, validated as `apply` validates it.
pub async fn reconcile_yaml(
    engine: &Engine,
    yaml: &str,
    mode: Mode,
) -> Result<Report, EngineError> {
    let spec: GardenArtifactSpec = serde_yaml::from_str(yaml).expect("a GardenArtifact spec");
    let intent = validate(&spec, Frontend::Apply).expect("a valid spec");
    engine.reconcile(&intent, &Inputs::default(), mode).await
}

/// An image stored in `repo` under `tag`.
pub struct Seeded {
    pub digest: String,
    /// Config first, then the layers.
    pub blobs: Vec<String>,
}

/// Stores an OCI image manifest with a config and one layer per entry of `layers`.
pub fn seed_image(
    registry: &MemoryRegistry,
    repo: &Repository,
    tag: &str,
    layers: &[&str],
) -> Seeded {
    let config = Bytes::from(format!("{{\"seed\":\"{tag}\"}}"));
    let config_size = config.len();
    let mut blobs = vec![registry.insert_blob(repo, config)];
    let mut descriptors = Vec::new();
    for layer in layers {
        let digest = registry.insert_blob(repo, layer.to_string());
        descriptors.push(json!({
            "mediaType": "application/octet-stream",
            "digest": digest,
            "size": layer.len(),
        }));
        blobs.push(digest);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blobs[0],
            "size": config_size,
        },
        "layers": descriptors,
    });
    let bytes = serde_json::to_vec(&manifest).expect("JSON serializes");
    let digest = registry.insert_manifest(repo, Some(tag), OCI_MANIFEST, bytes);
    Seeded { digest, blobs }
}

/// Stores (by digest) an artifact manifest whose subject is `subject`, as a signer would.
pub fn seed_referrer(
    registry: &MemoryRegistry,
    repo: &Repository,
    subject: &str,
    note: &str,
) -> String {
    let empty = registry.insert_blob(repo, "{}");
    let subject_size = registry
        .manifest(repo, subject)
        .map_or(0, |m| m.bytes.len());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.test.signature",
        "config": { "mediaType": OCI_EMPTY, "digest": empty, "size": 2 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size },
        "annotations": { "note": note },
    });
    let bytes = serde_json::to_vec(&manifest).expect("JSON serializes");
    registry.insert_manifest(repo, None, OCI_MANIFEST, bytes)
}
