//! Manifests and indexes as registries serve them: parsing never panics, a parsed document
//! serializes to JSON that parses to the same document, and what the engine does with a
//! registry's bytes (media type of a referrer descriptor, the fallback index edits) never panics.
#![no_main]

use bytes::Bytes;
use garden_artifacts::engine::desired::{Manifest, referrer_descriptor};
use garden_artifacts::engine::links::{with_referrer, without_referrer};
use garden_artifacts::oci::media_types;
use libfuzzer_sys::fuzz_target;
use oci_client::manifest::{OciImageIndex, OciImageManifest, OciManifest};
use serde_json::Value;

/// `serialize(parse(bytes))` is a fixed point: parsing it again and serializing gives the same.
fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) {
    let once = serde_json::to_vec(value).expect("a parsed manifest serializes");
    let parsed: T = serde_json::from_slice(&once).expect("what we serialized parses");
    let twice = serde_json::to_vec(&parsed).unwrap();
    assert_eq!(once, twice);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = serde_json::from_slice::<OciImageManifest>(data) {
        round_trips(&manifest);
        for layer in &manifest.layers {
            let _ = media_types::is_index(&layer.media_type);
        }
    }
    if let Ok(index) = serde_json::from_slice::<OciImageIndex>(data) {
        round_trips(&index);
        // What `source.image.platform` does with an index.
        for entry in &index.manifests {
            if let Some(p) = &entry.platform {
                let _ = format!("{}/{}/{:?}", p.os, p.architecture, p.variant);
            }
        }
    }
    if let Ok(any) = serde_json::from_slice::<OciManifest>(data) {
        let _ = any.content_type();
        let _ = any.to_string();
    }
    // A referrer's descriptor out of arbitrary bytes (the engine reads them back from a registry).
    let manifest = Manifest::new(
        media_types::OCI_MANIFEST.to_string(),
        Bytes::copy_from_slice(data),
        Vec::new(),
        Vec::new(),
    );
    let descriptor = referrer_descriptor(&manifest);
    assert_eq!(descriptor["digest"], Value::String(manifest.digest.clone()));
    // The fallback index of a registry without the referrers API, whatever it holds.
    if let Ok(index) = serde_json::from_slice::<Value>(data) {
        let added = with_referrer(Some(&index), &descriptor);
        let removed = without_referrer(&added, &manifest.digest);
        if let Some(entries) = removed.get("manifests").and_then(Value::as_array) {
            assert!(
                entries
                    .iter()
                    .all(|e| e.get("digest") != descriptor.get("digest")),
                "the referrer is still listed after removing it"
            );
        }
        let _ = with_referrer(None, &index);
    }
});
