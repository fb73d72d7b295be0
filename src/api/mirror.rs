//! The `GardenMirror` custom resource: the selected tags of a source repository kept in a
//! target repository, byte for byte, as skopeo sync and regsync do.

// kube's `printcolumn(...)` repeats `type_ = "string"` by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Credentials, patterns};

pub const MIRROR_KIND: &str = "GardenMirror";

/// A repository mirrored into another.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "oci.gardenlinux.io",
    version = "v1alpha1",
    kind = "GardenMirror",
    namespaced,
    status = "GardenMirrorStatus",
    shortname = "gm",
    category = "gardenlinux",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.selected"),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.source.repository"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GardenMirrorSpec {
    pub source: MirrorSource,

    /// The target repository, registry host included; each tag keeps its name there.
    #[schemars(pattern(patterns::REPOSITORY), length(max = 255))]
    pub repository: String,

    /// Which tags of the source are mirrored; every tag when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagRules>,

    /// Also each tag's OCI 1.1 referrers and cosign tags (`sha256-<hex>.sig`, ...).
    #[serde(default)]
    pub referrers: bool,

    /// Delete target tags this mirror wrote that are no longer selected or no longer in the
    /// source (only while they still point at what the mirror wrote).
    #[serde(default)]
    pub prune: bool,

    /// How often the source is listed again, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::DURATION))]
    pub interval: Option<String>,

    /// Stops mirroring while true.
    #[serde(default)]
    pub suspend: bool,

    /// Credentials for the target (controller mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorSource {
    /// The repository to mirror, registry host included.
    #[schemars(pattern(patterns::REPOSITORY), length(max = 255))]
    pub repository: String,
    /// Credentials for the source (controller mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagRules {
    /// RE2 regexes; a tag is selected when one matches (default: every tag).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub include: Vec<String>,
    /// ... and none of these match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub exclude: Vec<String>,
    /// Only the tags of the newest `count` versions of what include/exclude left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<LatestRule>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatestRule {
    #[schemars(range(min = 1))]
    pub count: u32,
    /// The version is this regex's first group (default: the whole tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
    #[serde(default)]
    pub order: Order,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Order {
    /// Dotted numbers compared as numbers (`1877.10` > `1877.9`), then SemVer pre-releases.
    #[default]
    Version,
    /// The version text compared byte by byte.
    Alphabetical,
}

/// What the last round found and did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GardenMirrorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// Tags the rules selected in the source.
    #[serde(default)]
    pub selected: u32,
    /// Of those, copied in the last round.
    #[serde(default)]
    pub copied: u32,
    /// Already in place.
    #[serde(default)]
    pub unchanged: u32,
    /// Neither (a registry error, or a tag another object owns).
    #[serde(default)]
    pub failed: u32,
    /// The first failed tags with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tags: Vec<FailedTag>,
    /// The target repository (its identity) the `written` tags are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Every target tag this mirror wrote, with its digest: what it owns, and all that
    /// `prune` may delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<super::TagStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedTag {
    pub tag: String,
    pub reason: String,
}
