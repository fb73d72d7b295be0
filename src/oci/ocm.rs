//! The Open Component Model's OCI storage mapping: where a component version lives in a
//! registry, the media types that mark it, the deterministic tar that holds its descriptor, and
//! the descriptor's v2 shape. Pure: the engine renders with it, `discover` and `pull` read with
//! it. Field names and media types follow ocm-spec and Gardener's `gardener-ocm`, which reads
//! what is written here (tests/ocm.rs).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Repository, Tag};

/// The config of a component version's manifest, current and legacy.
pub const OCM_CONFIG: &str = "application/vnd.ocm.software.component.config.v1+json";
pub const CNUDIE_CONFIG: &str = "application/vnd.gardener.cloud.cnudie.component.config.v1+json";
/// Layer 0: a tar holding exactly `component-descriptor.yaml`.
pub const OCM_DESCRIPTOR: &str = "application/vnd.ocm.software.component-descriptor.v2+yaml+tar";
pub const CNUDIE_DESCRIPTOR: &str =
    "application/vnd.gardener.cloud.cnudie.component-descriptor.v2+yaml+tar";
/// The artifactType of the referrer that tells a resource which component version owns it.
pub const OWNERSHIP_ARTIFACT_TYPE: &str = "application/vnd.ocm.software.ownership.v1+json";
pub const NAME_ANNOTATION: &str = "software.ocm.component.name";
pub const VERSION_ANNOTATION: &str = "software.ocm.component.version";
/// On an ownership referrer: which artefact of the component the subject is.
pub const ARTIFACT_ANNOTATION: &str = "software.ocm.artifact";
pub const DESCRIPTOR_FILE: &str = "component-descriptor.yaml";
/// Where component versions live below an OCM repository.
pub const DESCRIPTORS_PATH: &str = "component-descriptors";

/// A DNS-domain-prefixed, lowercase path (ocm-spec's component identity).
pub const COMPONENT_NAME: &str = r"^[a-z][-a-z0-9]*(?:[.][a-z][-a-z0-9]*)*[.][a-z]{2,}(?:/[a-z][-a-z0-9_]*(?:[.][a-z][-a-z0-9_]*)*)+$";
pub const COMPONENT_NAME_MAX: usize = 255;
/// ocm-spec's relaxed SemVer: an optional `v`, major, optional minor and patch, pre-release
/// and build as SemVer has them.
pub const RELAXED_SEMVER: &str = r"^v?(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))?(?:\.(?:0|[1-9][0-9]*))?(?:-(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$";
/// Names of resources, component references and identity attributes (the v2 schema's
/// `identityAttributeKey`).
pub const IDENTITY_KEY: &str = r"^[a-z0-9][-_+a-z0-9]*[a-z0-9]$";
/// Label names: lowercase, optionally domain-prefixed (`gardenlinux.io/cname`).
pub const LABEL_NAME: &str = r"^[a-z0-9](?:[-a-z0-9_./]{0,251}[a-z0-9])?$";

fn compiled(pattern: &'static str) -> Regex {
    Regex::new(pattern).expect("the patterns in this module are valid regular expressions")
}

pub static COMPONENT_NAME_RE: LazyLock<Regex> = LazyLock::new(|| compiled(COMPONENT_NAME));
pub static RELAXED_SEMVER_RE: LazyLock<Regex> = LazyLock::new(|| compiled(RELAXED_SEMVER));
pub static IDENTITY_KEY_RE: LazyLock<Regex> = LazyLock::new(|| compiled(IDENTITY_KEY));
pub static LABEL_NAME_RE: LazyLock<Regex> = LazyLock::new(|| compiled(LABEL_NAME));

/// Which media types mark the manifest: OCM's current ones, or Gardener's legacy `cnudie` ones
/// that older delivery tooling looks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Ocm,
    Cnudie,
}

impl Format {
    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Ocm => OCM_CONFIG,
            Format::Cnudie => CNUDIE_CONFIG,
        }
    }

    pub fn descriptor_media_type(self) -> &'static str {
        match self {
            Format::Ocm => OCM_DESCRIPTOR,
            Format::Cnudie => CNUDIE_DESCRIPTOR,
        }
    }

    /// The format whose config media type this is; `None` for any other manifest.
    pub fn of_config(media_type: &str) -> Option<Format> {
        match media_type {
            OCM_CONFIG => Some(Format::Ocm),
            CNUDIE_CONFIG => Some(Format::Cnudie),
            _ => None,
        }
    }
}

/// A component's name, checked against ocm-spec and against the OCI path it becomes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ComponentName(String);

impl ComponentName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > COMPONENT_NAME_MAX {
            return Err(format!(
                "is {} characters long, at most {COMPONENT_NAME_MAX} allowed",
                text.len()
            ));
        }
        if !COMPONENT_NAME_RE.is_match(text) {
            return Err(format!(
                "{text:?} is not an OCM component name: a DNS domain, then a lowercase path (e.g. github.com/gardenlinux/gardenlinux)"
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ComponentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version in OCM's relaxed SemVer; its tag is [`version_tag`]'s.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ComponentVersion(String);

impl ComponentVersion {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !RELAXED_SEMVER_RE.is_match(text) {
            return Err(format!(
                "{text:?} is not an OCM version (relaxed SemVer: 1877.5, v1.2.3, 1.2.3-rc.1+build.5)"
            ));
        }
        version_tag(text)?;
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn tag(&self) -> Tag {
        version_tag(&self.0).expect("checked when parsed")
    }
}

impl std::fmt::Display for ComponentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tag of a version: OCI tags have no `+`, so SemVer build metadata is written after
/// `.build-` (ocm-spec's mapping; `1.0.0+42` is tag `1.0.0.build-42`).
pub fn version_tag(version: &str) -> Result<Tag, String> {
    Tag::parse(&version.replace('+', ".build-"))
        .map_err(|_| format!("{version:?} does not map to an OCI tag (at most 128 characters)"))
}

/// Where the versions of component `name` live: `<repository>/component-descriptors/<name>`,
/// the name lower-cased since OCI paths are.
pub fn component_repository(base: &Repository, name: &ComponentName) -> Result<Repository, String> {
    let text = format!("{base}/{DESCRIPTORS_PATH}/{}", name.as_str().to_lowercase());
    Repository::parse(&text).map_err(|_| {
        format!("{text:?} is not an OCI repository (each path part must start and end with a letter or digit, at most 255 characters)")
    })
}

/// The repository context of `base` as the descriptor names it: `baseUrl` is the registry
/// host, `subPath` the rest (absent when the OCM repository is the registry's root).
pub fn repository_context(base: &Repository) -> RepositoryContext {
    RepositoryContext {
        type_: "OCIRegistry".to_string(),
        base_url: base.registry().to_string(),
        sub_path: Some(base.name().to_string()),
        component_name_mapping: "urlPath".to_string(),
    }
}

/// The config blob, naming the descriptor layer so readers need not guess which layer it is.
pub fn config_json(format: Format, layer_digest: &str, layer_size: u64) -> String {
    serde_json::json!({
        "componentDescriptorLayer": {
            "mediaType": format.descriptor_media_type(),
            "digest": layer_digest,
            "size": layer_size,
        }
    })
    .to_string()
}

const BLOCK: usize = 512;

/// A tar holding `component-descriptor.yaml` and nothing else, built by hand so that the same
/// descriptor gives the same bytes: mtime 0, uid/gid 0, mode 0644, no user names, no pax
/// headers (a tar library would stamp the time).
pub fn descriptor_tar(yaml: &[u8]) -> Vec<u8> {
    let mut header = [0u8; BLOCK];
    let mut put = |offset: usize, value: &[u8]| {
        header[offset..offset + value.len()].copy_from_slice(value);
    };
    put(0, DESCRIPTOR_FILE.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", yaml.len()).as_bytes());
    put(136, b"00000000000\0");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    // The checksum is computed with its own field as spaces.
    put(148, b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let padded = yaml.len().div_ceil(BLOCK) * BLOCK;
    let mut tar = Vec::with_capacity(BLOCK + padded + 2 * BLOCK);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(yaml);
    tar.resize(BLOCK + padded + 2 * BLOCK, 0);
    tar
}

/// `component-descriptor.yaml` out of a descriptor layer written by anyone (ustar or GNU, any
/// order of members); `None` when it is not there.
pub fn descriptor_from_tar(tar: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while at + BLOCK <= tar.len() {
        let header = &tar[at..at + BLOCK];
        if header.iter().all(|b| *b == 0) {
            return None;
        }
        let name_end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&header[..name_end]).ok()?;
        let size_text = std::str::from_utf8(&header[124..136]).ok()?;
        let size =
            usize::from_str_radix(size_text.trim_matches(|c| c == '\0' || c == ' '), 8).ok()?;
        let start = at + BLOCK;
        let end = start.checked_add(size)?;
        if name.trim_start_matches("./") == DESCRIPTOR_FILE && matches!(header[156], b'0' | 0) {
            return tar.get(start..end);
        }
        at = start + size.div_ceil(BLOCK) * BLOCK;
    }
    None
}

/// A component descriptor, schema v2, as written and read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    pub meta: Meta,
    pub component: Component,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub schema_version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub name: String,
    pub version: String,
    /// A plain name: v2's schema has the provider as a string (v3 made it an object).
    pub provider: String,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub repository_contexts: Vec<RepositoryContext>,
    #[serde(default)]
    pub sources: Vec<serde_json::Value>,
    #[serde(default)]
    pub component_references: Vec<ComponentReference>,
    #[serde(default)]
    pub resources: Vec<Resource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub value: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryContext {
    #[serde(rename = "type")]
    pub type_: String,
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default)]
    pub component_name_mapping: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReference {
    pub name: String,
    pub component_name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_identity: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub relation: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_identity: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    pub access: Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestSpec>,
}

/// How a resource is reached; this project writes `ociArtifact` only, and reads any type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<String>,
}

pub const OCI_ARTIFACT_ACCESS: &str = "ociArtifact";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestSpec {
    pub hash_algorithm: String,
    pub normalisation_algorithm: String,
    pub value: String,
}

impl DigestSpec {
    /// The digest of an OCI artefact as OCM records it: the manifest's sha256, hex only.
    pub fn oci_artifact(hex: &str) -> Self {
        Self {
            hash_algorithm: "SHA-256".to_string(),
            normalisation_algorithm: "ociArtifactDigest/v1".to_string(),
            value: hex.to_string(),
        }
    }
}

impl Descriptor {
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a descriptor always serializes")
    }
}

/// The `software.ocm.artifact` annotation of an ownership referrer: the resource's identity.
pub fn ownership_artifact(identity: &BTreeMap<String, String>) -> String {
    serde_json::json!({"identity": identity, "kind": "resource"}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_tags_with_build_metadata_spelt_out() {
        let tag = |v: &str| ComponentVersion::parse(v).unwrap().tag().to_string();
        assert_eq!(tag("1877.5"), "1877.5");
        assert_eq!(tag("v1.2.3-rc.1+build.42"), "v1.2.3-rc.1.build-build.42");
        assert_eq!(tag("1.0.0+42"), "1.0.0.build-42");
        for bad in ["1877.5.1.2", "01.2", "latest", "1.2.3+", ""] {
            assert!(ComponentVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_domain_prefixed_lowercase_paths() {
        assert!(ComponentName::parse("github.com/gardenlinux/gardenlinux").is_ok());
        for bad in [
            "gardenlinux",
            "github.com",
            "GitHub.com/gardenlinux",
            "github.com/Gardenlinux",
            "github.com//x",
        ] {
            assert!(ComponentName::parse(bad).is_err(), "{bad}");
        }
        let base = Repository::parse("127.0.0.1:5000/gardenlinux/ocm").unwrap();
        let name = ComponentName::parse("github.com/gardenlinux/gardenlinux").unwrap();
        assert_eq!(
            component_repository(&base, &name).unwrap().to_string(),
            "127.0.0.1:5000/gardenlinux/ocm/component-descriptors/github.com/gardenlinux/gardenlinux"
        );
        let context = repository_context(&base);
        assert_eq!(context.base_url, "127.0.0.1:5000");
        assert_eq!(context.sub_path.as_deref(), Some("gardenlinux/ocm"));
    }

    #[test]
    fn the_tar_is_the_same_bytes_for_the_same_descriptor_and_reads_back() {
        let yaml = b"meta:\n  schemaVersion: v2\n";
        let tar = descriptor_tar(yaml);
        assert_eq!(tar, descriptor_tar(yaml));
        assert_eq!(tar.len(), 512 * 4);
        assert_eq!(descriptor_from_tar(&tar), Some(&yaml[..]));
        assert_ne!(tar, descriptor_tar(b"meta:\n  schemaVersion: v3\n"));
        // The header's checksum is right, or tar readers refuse the member.
        let stored: u32 =
            u32::from_str_radix(std::str::from_utf8(&tar[148..154]).unwrap(), 8).unwrap();
        let mut header = tar[..512].to_vec();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|b| u32::from(*b)).sum::<u32>());
        assert!(descriptor_from_tar(&[0; 1024]).is_none());
    }

    #[test]
    fn both_formats_have_their_media_types_and_the_config_names_the_layer() {
        assert_eq!(Format::of_config(OCM_CONFIG), Some(Format::Ocm));
        assert_eq!(Format::of_config(CNUDIE_CONFIG), Some(Format::Cnudie));
        assert_eq!(
            Format::of_config("application/vnd.oci.image.config.v1+json"),
            None
        );
        let config: serde_json::Value =
            serde_json::from_str(&config_json(Format::Cnudie, "sha256:ab", 2048)).unwrap();
        assert_eq!(
            config["componentDescriptorLayer"]["mediaType"],
            CNUDIE_DESCRIPTOR
        );
        assert_eq!(config["componentDescriptorLayer"]["size"], 2048);
        let config: serde_json::Value =
            serde_json::from_str(&config_json(Format::Ocm, "sha256:ab", 1)).unwrap();
        assert_eq!(
            config["componentDescriptorLayer"]["mediaType"],
            OCM_DESCRIPTOR
        );
        assert_eq!(config["componentDescriptorLayer"]["digest"], "sha256:ab");
    }
}
