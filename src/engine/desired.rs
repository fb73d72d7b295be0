//! Pure: from an intent and the descriptors of its content to the exact manifest bytes we want.
//! Same input, same bytes, same digest: that is what makes a converged resync cost one HEAD per
//! tag and nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use serde::Serialize;

use super::links::link_annotations;
use crate::intent::{Config, FieldPath, FilesContent, ManifestFields, Platform};
use crate::oci::Repository;
use crate::oci::digest::sha256_digest;
use crate::oci::media_types::{
    OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, TITLE_ANNOTATION, UNKNOWN_ARTIFACT,
};
use crate::registry::ManifestHead;

/// Where a blob's bytes come from when the target repository lacks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOrigin {
    Inline(Bytes),
    File(PathBuf),
    /// Fetched from `url`; a failure points at `field`.
    Url {
        url: String,
        field: FieldPath,
    },
    /// Another repository: mounted when it is on the same registry, streamed otherwise.
    Repository(Repository),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub origin: BlobOrigin,
}

/// A manifest exactly as it will be stored, with what must exist before it may be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
    /// Config and layers (for an image manifest).
    pub blobs: Vec<Blob>,
    /// Manifests an index points at; each must be stored before the index.
    pub children: Vec<Manifest>,
}

impl Manifest {
    pub fn new(
        media_type: String,
        bytes: Bytes,
        blobs: Vec<Blob>,
        children: Vec<Manifest>,
    ) -> Self {
        Self {
            digest: sha256_digest(&bytes),
            media_type,
            bytes,
            blobs,
            children,
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The whole wish for one object: this manifest, under these tags, in this repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub repository: Repository,
    pub tags: Vec<String>,
    pub manifest: Manifest,
}

/// A layer whose content is known by digest and size.
#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    pub media_type: String,
    pub annotations: BTreeMap<String, String>,
    pub blob: Blob,
}

fn descriptor(blob: &Blob, annotations: BTreeMap<String, String>) -> OciDescriptor {
    OciDescriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size as i64,
        urls: None,
        annotations: (!annotations.is_empty()).then_some(annotations),
        artifact_type: None,
    }
}

/// The config blob: the intent's, or the OCI empty descriptor `{}`.
pub fn config_blob(config: Option<&Config>) -> Blob {
    let content = Bytes::from(
        config
            .and_then(|c| c.content.clone())
            .unwrap_or_else(|| "{}".to_string()),
    );
    Blob {
        digest: sha256_digest(&content),
        size: content.len() as u64,
        media_type: config
            .and_then(|c| c.media_type.clone())
            .unwrap_or_else(|| OCI_EMPTY.to_string()),
        origin: BlobOrigin::Inline(content),
    }
}

/// The manifest annotations: the intent's, and its links.
fn annotations(fields: &ManifestFields) -> Option<BTreeMap<String, String>> {
    let mut all = fields.annotations.clone();
    all.extend(link_annotations(&fields.links));
    (!all.is_empty()).then_some(all)
}

/// The descriptor of a subject, as it goes into a referrer's `subject` field.
pub fn subject_descriptor(head: &ManifestHead) -> OciDescriptor {
    OciDescriptor {
        media_type: head.media_type.clone(),
        digest: head.digest.clone(),
        size: head.size as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// An image manifest over `layers`, in their order.
pub fn files_manifest(
    content: &FilesContent,
    subject: Option<OciDescriptor>,
    layers: Vec<Layer>,
) -> Manifest {
    let config = config_blob(content.config.as_ref());
    let config_annotations = content
        .config
        .as_ref()
        .map(|c| c.annotations.clone())
        .unwrap_or_default();
    let artifact_type = content.manifest.artifact_type.clone().or_else(|| {
        // The image spec requires an artifactType when the config is the empty descriptor.
        (config.media_type == OCI_EMPTY).then(|| UNKNOWN_ARTIFACT.to_string())
    });
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: descriptor(&config, config_annotations),
        layers: layers
            .iter()
            .map(|layer| {
                let mut annotations = layer.annotations.clone();
                annotations.insert(TITLE_ANNOTATION.to_string(), layer.name.clone());
                descriptor(&layer.blob, annotations)
            })
            .collect(),
        subject,
        artifact_type,
        annotations: annotations(&content.manifest),
    };
    let bytes = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    let mut blobs = vec![config];
    for layer in layers {
        if !blobs.iter().any(|b| b.digest == layer.blob.digest) {
            blobs.push(layer.blob);
        }
    }
    Manifest::new(
        OCI_MANIFEST.to_string(),
        Bytes::from(bytes),
        blobs,
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::FilesContent;

    fn spec() -> FilesContent {
        FilesContent {
            files: Vec::new(),
            config: None,
            manifest: ManifestFields {
                annotations: BTreeMap::from([
                    (
                        "cname".to_string(),
                        "aws-gardener_prod-amd64-1877.5-60d819dd".to_string(),
                    ),
                    ("architecture".to_string(), "amd64".to_string()),
                ]),
                artifact_type: None,
                links: Vec::new(),
            },
        }
    }

    fn layer(name: &str, content: &'static str, media_type: &str) -> Layer {
        let bytes = Bytes::from_static(content.as_bytes());
        Layer {
            name: name.into(),
            media_type: media_type.into(),
            annotations: BTreeMap::from([(
                "io.gardenlinux.image.layer.architecture".to_string(),
                "amd64".to_string(),
            )]),
            blob: Blob {
                digest: sha256_digest(&bytes),
                size: bytes.len() as u64,
                media_type: media_type.into(),
                origin: BlobOrigin::Inline(bytes),
            },
        }
    }

    #[test]
    fn same_spec_same_bytes() {
        let a = files_manifest(
            &spec(),
            None,
            vec![layer(
                "a.release",
                "x",
                "application/io.gardenlinux.release",
            )],
        );
        let b = files_manifest(
            &spec(),
            None,
            vec![layer(
                "a.release",
                "x",
                "application/io.gardenlinux.release",
            )],
        );
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.digest, sha256_digest(&a.bytes));
    }

    #[test]
    fn empty_config_gets_the_oci_empty_descriptor_and_an_artifact_type() {
        let m = files_manifest(
            &spec(),
            None,
            vec![layer(
                "a.release",
                "x",
                "application/io.gardenlinux.release",
            )],
        );
        let parsed: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(parsed["config"]["mediaType"], OCI_EMPTY);
        assert_eq!(
            parsed["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(parsed["artifactType"], UNKNOWN_ARTIFACT);
        assert_eq!(
            parsed["layers"][0]["annotations"][TITLE_ANNOTATION],
            "a.release"
        );
        assert_eq!(
            parsed["annotations"]["cname"],
            "aws-gardener_prod-amd64-1877.5-60d819dd"
        );
        assert_eq!(m.blobs.len(), 2);
    }

    #[test]
    fn gardenlinux_config_as_published_today() {
        let mut s = spec();
        s.config = Some(Config {
            media_type: Some("application/vnd.unknown.config.v1+json".into()),
            annotations: BTreeMap::from([("cname".to_string(), "x".to_string())]),
            content: None,
        });
        let m = files_manifest(
            &s,
            None,
            vec![layer(
                "a.raw",
                "x",
                "application/io.gardenlinux.image.archive.format.raw",
            )],
        );
        let parsed: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(
            parsed["config"]["mediaType"],
            "application/vnd.unknown.config.v1+json"
        );
        assert_eq!(parsed["config"]["annotations"]["cname"], "x");
        assert!(
            parsed.get("artifactType").is_none(),
            "Garden Linux manifests carry no artifactType"
        );
    }

    #[test]
    fn a_blob_used_twice_is_uploaded_once() {
        let m = files_manifest(
            &spec(),
            None,
            vec![
                layer("a.release", "{}", "application/io.gardenlinux.release"),
                layer("b.release", "{}", "application/io.gardenlinux.release"),
            ],
        );
        // The layer content `{}` equals the empty config.
        assert_eq!(m.blobs.len(), 1);
    }
}

/// The descriptor of a referrer in a fallback index: its artifactType (or config media type)
/// and annotations, so clients can filter without fetching it.
pub fn referrer_descriptor(manifest: &Manifest) -> serde_json::Value {
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
    let artifact_type = parsed
        .get("artifactType")
        .or_else(|| parsed.get("config").and_then(|c| c.get("mediaType")))
        .cloned();
    let mut entry = serde_json::json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": manifest.size(),
    });
    if let Some(artifact_type) = artifact_type {
        entry["artifactType"] = artifact_type;
    }
    if let Some(annotations) = parsed.get("annotations") {
        entry["annotations"] = annotations.clone();
    }
    entry
}

/// One entry of an index: the child's descriptor, with the spec's annotations and platform.
#[derive(Clone, Debug)]
pub struct IndexChild {
    pub head: ManifestHead,
    pub annotations: BTreeMap<String, String>,
    pub platform: Option<Platform>,
    /// The child's artifactType, when it has one.
    pub artifact_type: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocument<'a> {
    schema_version: u8,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    manifests: Vec<IndexDocumentEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<OciDescriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocumentEntry<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a Platform>,
}

/// An image index over `entries`, in their order. `copies` are the children that live in
/// another repository and must be stored in the target first.
pub fn index_manifest(
    fields: &ManifestFields,
    entries: &[IndexChild],
    subject: Option<OciDescriptor>,
    copies: Vec<Manifest>,
) -> Manifest {
    let document = IndexDocument {
        schema_version: 2,
        media_type: OCI_INDEX,
        artifact_type: fields.artifact_type.as_deref(),
        manifests: entries
            .iter()
            .map(|e| IndexDocumentEntry {
                media_type: &e.head.media_type,
                digest: &e.head.digest,
                size: e.head.size,
                artifact_type: e.artifact_type.as_deref(),
                annotations: &e.annotations,
                platform: e.platform.as_ref(),
            })
            .collect(),
        subject,
        annotations: annotations(fields),
    };
    let bytes = serde_json::to_vec(&document).expect("an index always serializes");
    Manifest::new(
        OCI_INDEX.to_string(),
        Bytes::from(bytes),
        Vec::new(),
        copies,
    )
}

/// A manifest that only this repository:tag uses: the tag is moved onto it, then it is deleted
/// by digest, which removes the tag and nothing else.
pub fn tombstone_manifest(repository: &Repository, tag: &str) -> Manifest {
    let empty = Bytes::from_static(b"{}");
    let config = Blob {
        digest: sha256_digest(&empty),
        size: 2,
        media_type: OCI_EMPTY.to_string(),
        origin: BlobOrigin::Inline(empty),
    };
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: descriptor(&config, BTreeMap::new()),
        layers: Vec::new(),
        subject: None,
        artifact_type: Some("application/vnd.gardenlinux.tombstone.v1".to_string()),
        annotations: Some(BTreeMap::from([(
            "io.gardenlinux.oci.tombstone".to_string(),
            format!("{repository}:{tag}"),
        )])),
    };
    let bytes = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    Manifest::new(
        OCI_MANIFEST.to_string(),
        Bytes::from(bytes),
        vec![config],
        Vec::new(),
    )
}
