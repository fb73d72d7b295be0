//! The `GardenArtifact` custom resource: what a user asks of a registry.
//!
//! The OpenAPI schema generated from these types is the first line of validation (the API server
//! rejects what it can express); [`validate`] is the second and complete one, shared by the
//! controller and `apply`, so both front ends refuse the same objects with the same words.

// kube's `printcolumn(...)` repeats `type_ = "string"` by design; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod component;
pub mod conditions;
pub mod mirror;
pub mod patterns;
pub mod validate;

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use component::{GardenComponent, GardenComponentSpec, GardenComponentStatus};
pub use conditions::{Condition, ConditionStatus};
pub use mirror::{GardenMirror, GardenMirrorSpec, GardenMirrorStatus};

pub const GROUP: &str = "oci.gardenlinux.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "oci.gardenlinux.io/v1alpha1";
pub const KIND: &str = "GardenArtifact";

/// An artefact that must exist in an OCI registry under the given tags.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "oci.gardenlinux.io",
    version = "v1alpha1",
    kind = "GardenArtifact",
    namespaced,
    status = "GardenArtifactStatus",
    shortname = "ga",
    category = "gardenlinux",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Digest", type_ = "string", json_path = ".status.digest"),
    printcolumn(name = "Tags", type_ = "string", json_path = ".spec.tags"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GardenArtifactSpec {
    /// Target repository, registry host included: `registry.example.com/gardenlinux/gardenlinux`.
    #[schemars(pattern(patterns::REPOSITORY), length(max = 255))]
    pub repository: String,

    /// Every tag must point at this artefact. May be empty only for an artefact found through
    /// its subject. Tags in the shape of a referrers fallback tag (`sha256-<64 hex>`) or a cosign
    /// tag (the same with `.sig`, `.att`, `.sbom`) are refused: they belong to that digest.
    #[serde(default)]
    #[schemars(inner(pattern(patterns::TAG)), length(max = 64))]
    #[schemars(transform = patterns::tags_to_write)]
    pub tags: Vec<String>,

    /// Manifest annotations. Not allowed with `source.image`, whose bytes are copied unchanged.
    /// Keys `io.gardenlinux.link.*` are written from `links` and refused here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// OCI 1.1 `artifactType` of the manifest. Defaults to `application/vnd.unknown.artifact.v1`
    /// when the config is the empty descriptor (the image spec requires one then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::MEDIA_TYPE))]
    pub artifact_type: Option<String>,

    /// The config blob; the OCI empty descriptor (`{}`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,

    /// Where the content comes from: exactly one of `files`, `image`, `index`.
    pub source: Source,

    /// Makes this artefact a referrer of another one (OCI 1.1 `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<ArtifactReference>,

    /// Foreign URLs this artefact points at (release notes, a GitHub release, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,

    /// Registry credentials (controller mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,

    /// What happens to the registry when the object is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// How often the controller re-checks the registry for drift, e.g. `10m`, `1h30m`, `45s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::DURATION))]
    pub interval: Option<String>,

    /// Stops reconciliation while true.
    #[serde(default)]
    pub suspend: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::MEDIA_TYPE))]
    pub media_type: Option<String>,
    /// Annotations on the config descriptor.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The config blob's content as text; `{}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Exactly one of the fields is set (enforced by the schema's `oneOf` and by [`validate`]).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = patterns::exactly_one_of_files_image_index)]
pub struct Source {
    /// Build an artefact: one layer per file, in list order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub files: Option<Vec<FileSource>>,
    /// Copy an existing artefact byte for byte (retag, promote, mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
    /// An image index over other artefacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexSource>,
}

/// One layer. Exactly one of `content`, `path`, `url`, `configMapKeyRef`, `secretKeyRef`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = patterns::exactly_one_file_origin)]
pub struct FileSource {
    /// File name; becomes the layer's `org.opencontainers.image.title`.
    #[schemars(pattern(patterns::FILE_NAME), length(max = 255))]
    pub name: String,
    /// Inline text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A local file, relative to the manifest file (`apply` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An http(s) URL; `digest` is then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::HTTP_URL))]
    pub url: Option<String>,
    /// The expected digest of the content (`sha256:<64 hex>`); required with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::SHA256_DIGEST))]
    pub digest: Option<String>,
    /// The content's size in bytes, optional with `url`: with it, the manifest is built (and a
    /// dry run planned) without any request to the URL; the upload verifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A key of a ConfigMap in the object's namespace (controller only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// A key of a Secret in the object's namespace (controller only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// The layer's media type; derived from the Garden Linux suffix table when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::MEDIA_TYPE))]
    pub media_type: Option<String>,
    /// Layer annotations, besides the title (`org.opencontainers.image.title` is the name and
    /// is refused here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = patterns::without_title)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    #[schemars(pattern(patterns::OBJECT_NAME))]
    pub name: String,
    #[schemars(pattern(patterns::CONFIG_KEY))]
    pub key: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSource {
    /// `registry/repository:tag` or `registry/repository@sha256:...`, any registry.
    #[schemars(pattern(patterns::IMAGE_REFERENCE), length(max = 512))]
    pub reference: String,
    /// `os/arch[/variant]`: picks one manifest out of an index instead of copying the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::PLATFORM))]
    pub platform: Option<String>,
    /// Also copy what hangs off the artefact (referrers, cosign tags).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub referrers: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexSource {
    pub manifests: Vec<IndexEntry>,
}

/// One manifest of an index: another GardenArtifact of the namespace, or a reference.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = patterns::exactly_one_artifact_reference)]
pub struct IndexEntry {
    /// A GardenArtifact in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_ref: Option<LocalObjectRef>,
    /// A tag or digest of `spec.repository`, or a full reference on the same registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::ARTIFACT_REFERENCE), length(max = 512))]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<IndexPlatform>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexPlatform {
    #[schemars(pattern(patterns::PLATFORM_PART))]
    pub architecture: String,
    /// `linux`, or `gardenlinux` for Garden Linux flavours.
    #[schemars(pattern(patterns::PLATFORM_PART))]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::PLATFORM_PART))]
    pub variant: Option<String>,
}

/// Another artefact: a GardenArtifact of the same namespace, or a reference in the registry.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = patterns::exactly_one_artifact_reference)]
pub struct ArtifactReference {
    /// A GardenArtifact in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_ref: Option<LocalObjectRef>,
    /// A tag or digest of `spec.repository`, or a full reference in that repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::ARTIFACT_REFERENCE), length(max = 512))]
    pub reference: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectRef {
    #[schemars(pattern(patterns::OBJECT_NAME))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Link {
    #[schemars(pattern(patterns::HTTP_URL), length(max = 2048))]
    pub url: String,
    /// What the URL is: `release-notes`, `github-release`, `apt-repository`, `cloud-image`...
    /// Written as the annotation `io.gardenlinux.link.<rel>`.
    #[schemars(pattern(patterns::LINK_REL))]
    pub rel: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// A `kubernetes.io/dockerconfigjson` Secret in the object's own namespace.
    pub secret_ref: LocalObjectRef,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DeletionPolicy {
    /// Leave the registry as it is.
    #[default]
    Retain,
    /// Remove the tags this object owns.
    Delete,
}

/// What the controller last observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GardenArtifactStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The repository `tags` are in, as the spec named it when they were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagStatus>,
    /// Tags this object wrote and no longer wants (taken out of `spec.tags`, or left in a former
    /// `spec.repository`), left in the registry under `deletionPolicy: Retain`: nobody owns
    /// them now. Newest last, at most 32; a tag leaves the list when it is wanted again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_tags: Vec<ReleasedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// How this artefact is linked to its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectStatus>,
    /// Every reference of the spec (subject, index entries) with the digest it resolved to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<PinnedReference>,
    /// Whether the registry lets this object's credentials write its repository: a tag is
    /// owned only by an object that earned it (see `WriteAccess`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_access: Option<WriteAccess>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What the registry last answered to a write of this object's credentials in a repository.
/// Of the objects claiming one tag, those granted write access come first, then those never
/// tried, then those denied (or unable to try); within each, the oldest.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteAccess {
    /// The repository's identity (one spelling per registry, e.g. `127.0.0.1:5000/gl`);
    /// when `spec.repository` names another one, nothing is known yet.
    pub repository: String,
    pub result: AccessResult,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessResult {
    /// The registry accepted a write (or an upload session opened to prove one).
    Granted,
    /// The registry refused it (401, 403).
    Denied,
    /// The object could not try: its spec is invalid, or its Secret or an input is missing.
    /// It ranks with the refused: what cannot write does not keep a tag from what can.
    Unable,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectStatus {
    pub digest: String,
    /// `referrers-api` or `fallback-tag`.
    pub via: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedReference {
    /// The spec field, e.g. `spec.subject` or `spec.source.index.manifests[2]`.
    pub field: String,
    /// What the spec says: `tag`, `registry/repo:tag`, or `artifactRef:<name>`.
    pub reference: String,
    pub digest: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagStatus {
    pub name: String,
    pub digest: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedTag {
    pub repository: String,
    pub name: String,
    /// What the tag pointed at when it was released.
    pub digest: String,
}
