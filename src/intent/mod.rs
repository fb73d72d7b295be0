//! What an object asks for, as typed values: the output of validation and the only input of the
//! engine. Nothing here is a string that still needs checking: repositories, tags, references
//! and digests are parsed, the content is one of three kinds, and every value that an error may
//! have to point at carries its [`FieldPath`]. Both front ends build these: `api::validate` from
//! a GardenArtifact, the CLI verbs from their arguments.

mod component;
mod field;
mod tag_selection;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

pub use component::{
    ComponentIntent, ComponentReferenceIntent, Label, Relation, ResourceIntent, ResourceTarget,
};
pub use field::{FieldError, FieldPath, InvalidSpec};
pub use tag_selection::{Latest, TagSelection, VersionOrder, tag_pattern};

use crate::oci::{Digest, ImageReference, RelativeReference, Repository, Tag};

/// One artefact in one repository under some tags.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactIntent {
    pub repository: Repository,
    /// Every tag must point at the artefact (none only for a referrer).
    pub tags: Vec<Tag>,
    pub content: Content,
    /// Makes the artefact a referrer of another one (OCI 1.1 `subject`).
    pub subject: Option<Reference>,
    /// How often the controller re-checks the registry; `None` for its default.
    pub interval: Option<Duration>,
}

/// A repository carried into another: the selected tags of `source`, byte for byte, under
/// the same names in `target`.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorIntent {
    /// Where the source was given: errors about it name this.
    pub source_field: FieldPath,
    pub source: Repository,
    pub target: Repository,
    pub tags: TagSelection,
    /// Also each tag's OCI 1.1 referrers and cosign tags.
    pub referrers: bool,
    /// Delete target tags the mirror wrote that are no longer selected.
    pub prune: bool,
    pub interval: Option<Duration>,
}

/// Where the artefact comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    /// An artefact built from files, one layer each.
    Files(FilesContent),
    /// An existing artefact copied byte for byte.
    Image(ImageCopy),
    /// An image index over other artefacts.
    Index(IndexContent),
}

/// What the manifest of a built artefact says besides its layers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManifestFields {
    pub annotations: BTreeMap<String, String>,
    pub artifact_type: Option<String>,
    /// Foreign URLs, written as `io.gardenlinux.link.<rel>` annotations.
    pub links: Vec<Link>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FilesContent {
    pub files: Vec<File>,
    /// `None`: the OCI empty descriptor `{}`.
    pub config: Option<Config>,
    pub manifest: ManifestFields,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub media_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub content: Option<String>,
}

/// One layer.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// `spec.source.files[i]`, for errors about this file.
    pub field: FieldPath,
    /// The layer's title: a plain file name.
    pub name: String,
    /// Given, or from the Garden Linux suffix table.
    pub media_type: String,
    pub annotations: BTreeMap<String, String>,
    pub origin: FileOrigin,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FileOrigin {
    Inline(Bytes),
    /// A local file (`apply`), relative to the manifest's folder.
    Path(String),
    /// Fetched, and verified against `digest` while it streams. With `size` known the engine
    /// needs no request to the URL to build the manifest.
    Url {
        url: String,
        digest: Digest,
        size: Option<u64>,
    },
    /// A key of a ConfigMap in the object's namespace (controller).
    ConfigMapKey(KeyRef),
    /// A key of a Secret in the object's namespace (controller).
    SecretKey(KeyRef),
}

/// A key of a ConfigMap or Secret of the object's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageCopy {
    /// Where the source reference was given (`spec.source.image.reference`, `SRC`).
    pub source_field: FieldPath,
    pub source: ImageReference,
    /// Where the platform was given (`spec.source.image.platform`, `--platform`).
    pub platform_field: FieldPath,
    /// `os/arch[/variant]`: copy one manifest of an index instead of the index.
    pub platform: Option<String>,
    /// Also copy referrers and cosign tags.
    pub referrers: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexContent {
    pub entries: Vec<IndexEntry>,
    pub manifest: ManifestFields,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    pub reference: Reference,
    pub annotations: BTreeMap<String, String>,
    pub platform: Option<Platform>,
}

/// An index entry's platform, serialized as the image spec spells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub rel: String,
    pub url: String,
}

/// Another artefact, as a spec names it. [`Reference::target`] says how; `field` is where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub field: FieldPath,
    pub target: ReferenceTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceTarget {
    /// A GardenArtifact of the same namespace, by name; its front end knows where it is.
    Object(String),
    /// A full reference, or a tag or digest of the artefact's own repository.
    Registry(RelativeReference),
}

impl Reference {
    /// How the spec said it: `artifactRef:NAME`, or the reference as written.
    pub fn shown(&self) -> String {
        match &self.target {
            ReferenceTarget::Object(name) => format!("artifactRef:{name}"),
            ReferenceTarget::Registry(reference) => reference.to_string(),
        }
    }
}

impl ArtifactIntent {
    /// Every reference, the subject first, then index entries in order.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        let entries = match &self.content {
            Content::Index(index) => index.entries.as_slice(),
            _ => &[],
        };
        self.subject
            .iter()
            .chain(entries.iter().map(|entry| &entry.reference))
    }

    /// The repository:tag pairs this artefact reads by tag (so it waits for their producers),
    /// and the GardenArtifacts it names.
    pub fn reads(&self) -> (Vec<(Repository, Tag)>, Vec<&str>) {
        let mut tags = Vec::new();
        let mut objects = Vec::new();
        let mut by_tag = |reference: ImageReference| {
            if reference.digest().is_none()
                && let Some(tag) = reference.tag()
            {
                tags.push((reference.repository().clone(), tag.clone()));
            }
        };
        if let Content::Image(copy) = &self.content {
            by_tag(copy.source.clone());
        }
        for reference in self.references() {
            match &reference.target {
                ReferenceTarget::Object(name) => objects.push(name.as_str()),
                ReferenceTarget::Registry(relative) => {
                    by_tag(relative.resolve_in(&self.repository))
                }
            }
        }
        (tags, objects)
    }

    /// The files of a built artefact (none for a copy or an index).
    pub fn files(&self) -> &[File] {
        match &self.content {
            Content::Files(files) => &files.files,
            _ => &[],
        }
    }
}
