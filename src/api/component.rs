//! The `GardenComponent` custom resource: an OCM component version whose resources point at
//! artefacts by digest, so Gardener's delivery tooling finds a release through its descriptor.

// kube's `printcolumn(...)` repeats `type_ = "string"` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, Credentials, DeletionPolicy, LocalObjectRef, patterns};

pub const COMPONENT_KIND: &str = "GardenComponent";

/// A component version in an OCM repository.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "oci.gardenlinux.io",
    version = "v1alpha1",
    kind = "GardenComponent",
    namespaced,
    status = "GardenComponentStatus",
    shortname = "gc",
    category = "gardenlinux",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Component", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GardenComponentSpec {
    /// The OCM repository (`baseUrl[/subPath]`), registry host included; the version is stored
    /// at `<repository>/component-descriptors/<name>:<version>`.
    #[schemars(pattern(patterns::REPOSITORY), length(max = 255))]
    pub repository: String,
    /// The component's name: a DNS domain, then a lowercase path (`github.com/gardenlinux/gardenlinux`).
    #[schemars(pattern(patterns::COMPONENT_NAME), length(max = 255))]
    pub name: String,
    /// Relaxed SemVer (`1877.5`, `v1.2.3`); `+` is written as `.build-` in the tag.
    #[schemars(pattern(patterns::RELAXED_SEMVER))]
    pub version: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    /// `ocm` (current media types) or `cnudie` (Gardener's legacy ones).
    #[serde(default)]
    pub format: ComponentFormat,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub resources: Vec<ComponentResource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_references: Vec<ComponentReference>,
    /// Also an OCM ownership referrer (`application/vnd.ocm.software.ownership.v1+json`) on
    /// each resource, through the referrers API or its fallback tag.
    #[serde(default)]
    pub ownership_referrers: bool,
    /// How often the controller re-resolves the resources, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::DURATION))]
    pub interval: Option<String>,
    /// `Retain` only, for now: deleting the object leaves the component version in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Credentials for the OCM repository (controller mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Stops reconciliation while true.
    #[serde(default)]
    pub suspend: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Label {
    /// Lowercase, optionally domain-prefixed: `gardenlinux.io/cname`.
    #[schemars(pattern(patterns::LABEL_NAME))]
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum ComponentFormat {
    #[default]
    Ocm,
    Cnudie,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Relation {
    Local,
    #[default]
    External,
}

/// One resource: an artefact this project publishes (`artifactRef`) or any image reference.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = patterns::exactly_one_artifact_reference)]
pub struct ComponentResource {
    #[schemars(pattern(patterns::IDENTITY_KEY))]
    pub name: String,
    /// Free text, as OCM allows (`virtual_machine_image`, `ociImage`).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 255))]
    pub type_: String,
    /// Default: `spec.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::RELAXED_SEMVER))]
    pub version: Option<String>,
    #[serde(default)]
    pub relation: Relation,
    /// With the name, what tells resources of one name apart (glci: feature-flags,
    /// architecture, platform).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_identity: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    /// A GardenArtifact in this namespace: its first tag, pinned to the digest it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_ref: Option<LocalObjectRef>,
    /// A full image reference with its registry, by tag or digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(patterns::IMAGE_REFERENCE), length(max = 512))]
    pub reference: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentReference {
    #[schemars(pattern(patterns::IDENTITY_KEY))]
    pub name: String,
    #[schemars(pattern(patterns::COMPONENT_NAME), length(max = 255))]
    pub component_name: String,
    #[schemars(pattern(patterns::RELAXED_SEMVER))]
    pub version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_identity: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
}

/// What the last round published.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GardenComponentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `<repository>/component-descriptors/<name>:<tag>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The component version's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Each resource's reference, pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<super::PinnedReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
