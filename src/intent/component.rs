//! A component version to publish, as typed values: what validation of a GardenComponent
//! makes and the engine's component publishing takes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::FieldPath;
use crate::oci::ImageReference;
use crate::oci::Repository;
use crate::oci::ocm::{ComponentName, ComponentVersion, Format};

#[derive(Clone, Debug, PartialEq)]
pub struct ComponentIntent {
    /// The OCM repository; the version is stored below it (see [`crate::oci::ocm`]).
    pub repository: Repository,
    pub name: ComponentName,
    pub version: ComponentVersion,
    pub provider: String,
    pub labels: Vec<Label>,
    pub format: Format,
    /// Identities unique, in the spec's order.
    pub resources: Vec<ResourceIntent>,
    pub component_references: Vec<ComponentReferenceIntent>,
    /// Also an OCM ownership referrer on each resource.
    pub ownership_referrers: bool,
    pub interval: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResourceIntent {
    /// `spec.resources[i]`, for errors about this resource.
    pub field: FieldPath,
    pub name: String,
    pub type_: String,
    pub version: ComponentVersion,
    pub relation: Relation,
    pub extra_identity: BTreeMap<String, String>,
    pub labels: Vec<Label>,
    pub target: ResourceTarget,
}

impl ResourceIntent {
    /// The identity OCM gives it: name, version and the extra identity.
    pub fn identity(&self) -> BTreeMap<String, String> {
        let mut identity = self.extra_identity.clone();
        identity.insert("name".to_string(), self.name.clone());
        identity.insert("version".to_string(), self.version.to_string());
        identity
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Local,
    External,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Local => "local",
            Relation::External => "external",
        }
    }
}

/// Where a resource is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceTarget {
    /// A GardenArtifact of the same namespace: its first tag, at the digest it published.
    Object(String),
    /// An image reference with its registry, by tag (looked up each round) or by digest.
    Registry(ImageReference),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentReferenceIntent {
    pub name: String,
    pub component_name: ComponentName,
    pub version: ComponentVersion,
    pub extra_identity: BTreeMap<String, String>,
    pub labels: Vec<Label>,
}

impl ComponentIntent {
    /// The GardenArtifacts it names, in the spec's order.
    pub fn objects(&self) -> impl Iterator<Item = (&FieldPath, &str)> {
        self.resources.iter().filter_map(|r| match &r.target {
            ResourceTarget::Object(name) => Some((&r.field, name.as_str())),
            ResourceTarget::Registry(_) => None,
        })
    }
}
