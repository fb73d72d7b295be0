//! YAML as `garden-artifacts apply` reads it (manifests::load, over a file) → validate into an
//! intent → for a valid object built from inline `content` only, the manifest the engine would push: the same
//! bytes every time, its digest the sha256 of those bytes, and the layers in file order with
//! the file names as titles. Nothing on the way panics, whatever the YAML.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use garden_artifacts::api::validate::{Frontend, validate};
use garden_artifacts::engine::desired::{Blob, BlobOrigin, Layer, files_manifest};
use garden_artifacts::intent::{Content, FileOrigin, FilesContent};
use garden_artifacts::manifests;
use garden_artifacts::oci::digest::sha256_digest;
use garden_artifacts::oci::media_types::{self, TITLE_ANNOTATION};
use libfuzzer_sys::fuzz_target;
use sha2::Digest;

/// One file, rewritten for every input (in /dev/shm when there is one).
fn scratch() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("garden-artifacts-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("input.yaml")
    })
}

/// The layers `resolve` builds for inline content, or `None` when a file has another origin.
fn inline_layers(content: &FilesContent) -> Option<Vec<Layer>> {
    content
        .files
        .iter()
        .map(|file| {
            let FileOrigin::Inline(bytes) = &file.origin else {
                return None;
            };
            Some(Layer {
                name: file.name.clone(),
                media_type: file.media_type.clone(),
                annotations: file.annotations.clone(),
                blob: Blob {
                    digest: sha256_digest(bytes),
                    size: bytes.len() as u64,
                    media_type: file.media_type.clone(),
                    origin: BlobOrigin::Inline(bytes.clone()),
                },
            })
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let file = scratch();
    std::fs::write(file, data).unwrap();
    let loaded = manifests::load(std::slice::from_ref(file));
    for object in &loaded.objects {
        let spec = &object.spec;
        let Ok(intent) = validate(spec, Frontend::Apply) else {
            continue;
        };
        let Content::Files(content) = &intent.content else {
            continue;
        };
        // The intent keeps the spec's files in order, each with the media type the spec gave
        // or the suffix table's.
        let spec_files = spec.source.files.as_ref().expect("files in the spec");
        assert_eq!(content.files.len(), spec_files.len());
        for (file, given) in content.files.iter().zip(spec_files) {
            assert_eq!(file.name, given.name);
            let expected = given
                .media_type
                .clone()
                .or_else(|| media_types::for_file_name(&given.name).map(str::to_string));
            assert_eq!(Some(&file.media_type), expected.as_ref());
        }
        let Some(layers) = inline_layers(content) else {
            continue;
        };
        let first = files_manifest(content, None, layers.clone());
        let second = files_manifest(content, None, layers.clone());
        assert_eq!(first.bytes, second.bytes, "same spec, different bytes");
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&first.bytes)));
        assert_eq!(first.digest, digest);
        assert_eq!(first.size(), first.bytes.len() as u64);

        let parsed: oci_client::manifest::OciImageManifest =
            serde_json::from_slice(&first.bytes).expect("our manifest parses as an OCI manifest");
        assert_eq!(parsed.layers.len(), layers.len());
        for (descriptor, layer) in parsed.layers.iter().zip(&layers) {
            let title = descriptor
                .annotations
                .as_ref()
                .and_then(|a| a.get(TITLE_ANNOTATION));
            assert_eq!(title, Some(&layer.name));
            assert_eq!(descriptor.digest, layer.blob.digest);
            assert_eq!(descriptor.media_type, layer.media_type);
        }
        // Every blob the manifest names is among the blobs to upload, with matching bytes.
        for descriptor in std::iter::once(&parsed.config).chain(&parsed.layers) {
            let blob = first
                .blobs
                .iter()
                .find(|b| b.digest == descriptor.digest)
                .expect("every descriptor has its blob");
            if let BlobOrigin::Inline(bytes) = &blob.origin {
                assert_eq!(sha256_digest(bytes), blob.digest);
                assert_eq!(bytes.len() as u64, blob.size);
            }
        }
    }
});
