//! Publishing an OCM component version: each resource resolved to a digest, the descriptor
//! rendered, and the version written as an artefact like any other, through the one plan and
//! execute path. The bytes depend only on the spec and the digests, so a converged component
//! costs the HEADs that resolve its references and one HEAD of its tag, and writes nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::try_join_all;

use super::{Engine, EngineError, Inputs, Mode, Report};
use crate::intent::{
    ArtifactIntent, ComponentIntent, Config, Content, File, FileOrigin, FilesContent,
    ManifestFields, Reference, ReferenceTarget, ResourceIntent, ResourceTarget,
};
use crate::oci::media_types::OCI_EMPTY;
use crate::oci::ocm::{self, Descriptor, DigestSpec};
use crate::oci::{ImageReference, RelativeReference};

/// The title of the descriptor layer (readers find the layer through the config, not by name).
const DESCRIPTOR_LAYER_TITLE: &str = "component-descriptor.yaml.tar";

/// What a front end supplies besides the spec.
#[derive(Clone, Debug, Default)]
pub struct ComponentInputs {
    /// Where each `artifactRef` (by object name) points: its first tag and, once published,
    /// its digest (`repo:tag@sha256:...`).
    pub artifacts: BTreeMap<String, ImageReference>,
}

/// One resource, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePin {
    /// `spec.resources[i]`.
    pub field: String,
    /// What the spec says: the reference, or `artifactRef:<name>`.
    pub shown: String,
    /// The `imageReference` written: `<registry>/<repo>:<tag>@sha256:<hex>`.
    pub image_reference: String,
    pub digest: String,
}

/// What publishing one component version found and did.
#[derive(Clone, Debug)]
pub struct ComponentReport {
    /// The component version's manifest, in `<repository>/component-descriptors/<name>`.
    pub version: Report,
    pub resources: Vec<ResourcePin>,
    /// One ownership referrer per resource, with `ownershipReferrers`.
    pub ownership: Vec<Report>,
}

impl Engine {
    /// Makes the registry hold the component version `intent` describes, its resources
    /// pinned to what they point at now.
    pub async fn publish_component(
        &self,
        intent: &ComponentIntent,
        inputs: &ComponentInputs,
        mode: Mode,
    ) -> Result<ComponentReport, EngineError> {
        let resolved = try_join_all(
            intent
                .resources
                .iter()
                .map(|resource| self.resolve_resource(resource, inputs)),
        )
        .await?;
        let descriptor = render_descriptor(intent, &resolved);
        let artefact = component_artifact(intent, &descriptor);
        // Every resource is resolved before anything is written: a reference to a tag that
        // is not there fails the run with nothing written.
        let version = self.reconcile(&artefact, &Inputs::default(), mode).await?;
        let mut ownership = Vec::new();
        if intent.ownership_referrers {
            for (resource, pin) in intent.resources.iter().zip(&resolved) {
                let referrer = ownership_referrer(intent, resource, pin)?;
                ownership.push(self.reconcile(&referrer, &Inputs::default(), mode).await?);
            }
        }
        Ok(ComponentReport {
            version,
            resources: resolved,
            ownership,
        })
    }

    /// The digest a resource points at now: an `artifactRef`'s published digest, a reference's
    /// digest as given, or its tag looked up.
    async fn resolve_resource(
        &self,
        resource: &ResourceIntent,
        inputs: &ComponentInputs,
    ) -> Result<ResourcePin, EngineError> {
        let (reference, shown, field) = match &resource.target {
            ResourceTarget::Object(name) => {
                let field = resource.field.child("artifactRef");
                let reference = inputs.artifacts.get(name).ok_or_else(|| {
                    EngineError::source(
                        &field,
                        format!("GardenArtifact {name:?} has published no artefact yet"),
                    )
                })?;
                (reference.clone(), format!("artifactRef:{name}"), field)
            }
            ResourceTarget::Registry(reference) => (
                reference.clone(),
                reference.to_string(),
                resource.field.child("reference"),
            ),
        };
        let digest = match reference.digest() {
            Some(digest) => digest.to_string(),
            None => {
                let tag = reference.reference();
                self.registry
                    .head_manifest(reference.repository(), tag)
                    .await?
                    .ok_or_else(|| {
                        EngineError::source(&field, format!("{reference} does not exist"))
                    })?
                    .digest
            }
        };
        let image_reference = match reference.tag() {
            Some(tag) => format!("{}:{tag}@{digest}", reference.repository()),
            None => format!("{}@{digest}", reference.repository()),
        };
        Ok(ResourcePin {
            field: resource.field.to_string(),
            shown,
            image_reference,
            digest,
        })
    }
}

/// The descriptor, v2, of `intent` with its resources at `pins` (in the same order).
pub fn render_descriptor(intent: &ComponentIntent, pins: &[ResourcePin]) -> Descriptor {
    let labels = |labels: &[crate::intent::Label]| -> Vec<ocm::Label> {
        labels
            .iter()
            .map(|l| ocm::Label {
                name: l.name.clone(),
                value: serde_json::Value::String(l.value.clone()),
            })
            .collect()
    };
    Descriptor {
        meta: ocm::Meta {
            schema_version: "v2".to_string(),
        },
        component: ocm::Component {
            name: intent.name.to_string(),
            version: intent.version.to_string(),
            provider: intent.provider.clone(),
            labels: labels(&intent.labels),
            repository_contexts: vec![ocm::repository_context(&intent.repository)],
            sources: Vec::new(),
            component_references: intent
                .component_references
                .iter()
                .map(|r| ocm::ComponentReference {
                    name: r.name.clone(),
                    component_name: r.component_name.to_string(),
                    version: r.version.to_string(),
                    extra_identity: r.extra_identity.clone(),
                    labels: labels(&r.labels),
                })
                .collect(),
            resources: intent
                .resources
                .iter()
                .zip(pins)
                .map(|(resource, pin)| ocm::Resource {
                    name: resource.name.clone(),
                    version: resource.version.to_string(),
                    type_: resource.type_.clone(),
                    relation: resource.relation.as_str().to_string(),
                    extra_identity: resource.extra_identity.clone(),
                    labels: labels(&resource.labels),
                    access: ocm::Access {
                        type_: ocm::OCI_ARTIFACT_ACCESS.to_string(),
                        image_reference: Some(pin.image_reference.clone()),
                    },
                    digest: Some(DigestSpec::oci_artifact(
                        pin.digest.trim_start_matches("sha256:"),
                    )),
                })
                .collect(),
        },
    }
}

/// The component version as an artefact: the descriptor tar as its one layer, the config
/// naming that layer, the manifest annotated with the component's name and version.
pub fn component_artifact(intent: &ComponentIntent, descriptor: &Descriptor) -> ArtifactIntent {
    let tar = Bytes::from(ocm::descriptor_tar(descriptor.to_yaml().as_bytes()));
    let layer_digest = crate::oci::digest::sha256_digest(&tar);
    let config = ocm::config_json(intent.format, &layer_digest, tar.len() as u64);
    ArtifactIntent {
        repository: ocm::component_repository(&intent.repository, &intent.name)
            .expect("validation checked the component's repository"),
        tags: vec![intent.version.tag()],
        content: Content::Files(FilesContent {
            files: vec![File {
                field: crate::intent::FieldPath::root("spec"),
                name: DESCRIPTOR_LAYER_TITLE.to_string(),
                media_type: intent.format.descriptor_media_type().to_string(),
                annotations: BTreeMap::new(),
                origin: FileOrigin::Inline(tar),
            }],
            config: Some(Config {
                media_type: Some(intent.format.config_media_type().to_string()),
                annotations: BTreeMap::new(),
                content: Some(config),
            }),
            manifest: ManifestFields {
                annotations: version_annotations(intent),
                artifact_type: None,
                links: Vec::new(),
            },
        }),
        subject: None,
        interval: intent.interval,
    }
}

fn version_annotations(intent: &ComponentIntent) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ocm::NAME_ANNOTATION.to_string(), intent.name.to_string()),
        (
            ocm::VERSION_ANNOTATION.to_string(),
            intent.version.to_string(),
        ),
    ])
}

/// The OCM ownership referrer of one resource: an empty artefact of the ownership
/// artifactType whose annotations name the component version and the resource's identity,
/// with the resource's manifest as its subject. Untagged: found through the referrers API or
/// the subject's fallback tag, as every referrer this project writes.
fn ownership_referrer(
    intent: &ComponentIntent,
    resource: &ResourceIntent,
    pin: &ResourcePin,
) -> Result<ArtifactIntent, EngineError> {
    let subject = ImageReference::parse(&pin.image_reference)
        .map_err(|e| EngineError::source(&resource.field, e))?;
    let repository = subject.repository().clone();
    let mut annotations = version_annotations(intent);
    annotations.insert(
        ocm::ARTIFACT_ANNOTATION.to_string(),
        ocm::ownership_artifact(&resource.identity()),
    );
    Ok(ArtifactIntent {
        repository,
        tags: Vec::new(),
        content: Content::Files(FilesContent {
            files: vec![File {
                field: resource.field.clone(),
                name: "ownership".to_string(),
                media_type: OCI_EMPTY.to_string(),
                annotations: BTreeMap::new(),
                origin: FileOrigin::Inline(Bytes::from_static(b"{}")),
            }],
            config: None,
            manifest: ManifestFields {
                annotations,
                artifact_type: Some(ocm::OWNERSHIP_ARTIFACT_TYPE.to_string()),
                links: Vec::new(),
            },
        }),
        subject: Some(Reference {
            field: resource.field.clone(),
            target: ReferenceTarget::Registry(RelativeReference::Absolute(subject)),
        }),
        interval: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::TryStreamExt;

    use super::*;
    use crate::api::GardenComponentSpec;
    use crate::api::validate::validate_component;
    use crate::engine::Outcome;
    use crate::engine::test_support::{engine, repo, seed_image};
    use crate::oci::Repository;
    use crate::registry::Registry;
    use crate::registry::memory::{MemoryRegistry, Operation};

    const SPEC: &str = r#"
repository: memory.test/gardenlinux/ocm
name: github.com/gardenlinux/gardenlinux
version: "1877.5"
provider: {name: SAP SE}
resources:
  - name: gardenlinux
    type: virtual_machine_image
    extraIdentity: {feature-flags: "aws,gardener,_prod", architecture: amd64, platform: aws}
    artifactRef: {name: gl-aws}
  - name: gardenlinux
    type: virtual_machine_image
    extraIdentity: {feature-flags: "metal,gardener,_prod", architecture: arm64, platform: metal}
    reference: memory.test/gardenlinux/gardenlinux:1877.5-metal
"#;

    fn intent(yaml: &str) -> ComponentIntent {
        let spec: GardenComponentSpec = serde_yaml::from_str(yaml).expect("a spec");
        validate_component(&spec).expect("a valid spec")
    }

    fn version_repo() -> Repository {
        repo("gardenlinux/ocm/component-descriptors/github.com/gardenlinux/gardenlinux")
    }

    /// The registry with both flavours, and the inputs naming the aws one.
    fn seeded() -> (Arc<MemoryRegistry>, ComponentInputs, String) {
        let registry = Arc::new(MemoryRegistry::default());
        let flavours = repo("gardenlinux/gardenlinux");
        let aws = seed_image(&registry, &flavours, "1877.5-aws", &["aws"]);
        seed_image(&registry, &flavours, "1877.5-metal", &["metal"]);
        let inputs = ComponentInputs {
            artifacts: BTreeMap::from([(
                "gl-aws".to_string(),
                ImageReference::parse(&format!("{flavours}:1877.5-aws@{}", aws.digest)).unwrap(),
            )]),
        };
        (registry, inputs, aws.digest)
    }

    async fn stored_descriptor(
        registry: &MemoryRegistry,
        tag: &str,
    ) -> (serde_json::Value, Descriptor) {
        let manifest = registry
            .manifest(&version_repo(), tag)
            .expect("the version is stored");
        let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let chunks: Vec<Bytes> = registry
            .get_blob(&version_repo(), layer)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let tar = chunks.concat();
        let yaml = ocm::descriptor_from_tar(&tar).expect("the tar holds the descriptor");
        (manifest, serde_yaml::from_slice(yaml).unwrap())
    }

    #[tokio::test]
    async fn a_component_version_points_at_its_resources_by_digest() {
        let (registry, inputs, aws) = seeded();
        let engine = engine(&registry);
        let report = engine
            .publish_component(&intent(SPEC), &inputs, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(report.version.outcome, Outcome::Created);
        let (manifest, descriptor) = stored_descriptor(&registry, "1877.5").await;
        assert_eq!(manifest["config"]["mediaType"], ocm::OCM_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], ocm::OCM_DESCRIPTOR);
        assert_eq!(
            manifest["annotations"][ocm::NAME_ANNOTATION],
            "github.com/gardenlinux/gardenlinux"
        );
        assert_eq!(manifest["annotations"][ocm::VERSION_ANNOTATION], "1877.5");
        let resources = &descriptor.component.resources;
        assert_eq!(
            resources[0].access.image_reference.as_deref(),
            Some(format!("memory.test/gardenlinux/gardenlinux:1877.5-aws@{aws}").as_str())
        );
        assert_eq!(
            resources[0].digest.as_ref().unwrap().value,
            aws.trim_start_matches("sha256:")
        );
        let metal = registry
            .tag(&repo("gardenlinux/gardenlinux"), "1877.5-metal")
            .unwrap();
        assert_eq!(report.resources[1].digest, metal);
        assert_eq!(resources[1].extra_identity["platform"], "metal");
        assert_eq!(
            descriptor.component.repository_contexts[0].base_url,
            "memory.test"
        );
    }

    #[tokio::test]
    async fn a_converged_component_costs_its_heads_and_writes_nothing() {
        let (registry, inputs, _) = seeded();
        let engine = engine(&registry);
        let intent = intent(SPEC);
        engine
            .publish_component(&intent, &inputs, Mode::Apply)
            .await
            .unwrap();
        registry.clear_calls();
        let report = engine
            .publish_component(&intent, &inputs, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(report.version.outcome, Outcome::Unchanged);
        let calls = registry.calls();
        assert!(
            calls.iter().all(|c| c.operation == Operation::HeadManifest),
            "{calls:?}"
        );
        // The metal tag (the aws artefact comes pinned) and the version's tag.
        assert_eq!(calls.len(), 2, "{calls:?}");
    }

    #[tokio::test]
    async fn a_moved_flavour_moves_the_resource_digest() {
        let (registry, inputs, _) = seeded();
        let engine = engine(&registry);
        let intent = intent(SPEC);
        let first = engine
            .publish_component(&intent, &inputs, Mode::Apply)
            .await
            .unwrap();
        let moved = seed_image(
            &registry,
            &repo("gardenlinux/gardenlinux"),
            "1877.5-metal",
            &["metal 2"],
        );
        let second = engine
            .publish_component(&intent, &inputs, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(second.version.outcome, Outcome::Updated);
        assert_ne!(first.version.digest, second.version.digest);
        let (_, descriptor) = stored_descriptor(&registry, "1877.5").await;
        assert_eq!(
            descriptor.component.resources[1]
                .digest
                .as_ref()
                .unwrap()
                .value,
            moved.digest.trim_start_matches("sha256:")
        );
    }

    #[tokio::test]
    async fn a_missing_tag_fails_naming_the_field_and_writes_nothing() {
        let (registry, inputs, _) = seeded();
        let engine = engine(&registry);
        let spec = SPEC.replace("1877.5-metal", "1877.5-gone");
        let error = engine
            .publish_component(&intent(&spec), &inputs, Mode::Apply)
            .await
            .unwrap_err();
        assert!(error.is_permanent());
        assert!(
            error
                .to_string()
                .starts_with("spec.resources[1].reference:")
                && error.to_string().contains("1877.5-gone does not exist"),
            "{error}"
        );
        let unknown = engine
            .publish_component(&intent(SPEC), &ComponentInputs::default(), Mode::Apply)
            .await
            .unwrap_err();
        assert!(
            unknown
                .to_string()
                .starts_with("spec.resources[0].artifactRef:"),
            "{unknown}"
        );
        assert!(
            registry
                .calls()
                .iter()
                .all(|c| c.operation == Operation::HeadManifest)
        );
        assert!(registry.tags(&version_repo()).is_empty());
    }

    #[tokio::test]
    async fn both_formats_write_their_media_types_and_the_same_spec_the_same_bytes() {
        let (registry, inputs, _) = seeded();
        let engine = engine(&registry);
        let legacy = SPEC.replace("version: \"1877.5\"", "version: \"1877.5\"\nformat: cnudie");
        let cnudie = engine
            .publish_component(&intent(&legacy), &inputs, Mode::Apply)
            .await
            .unwrap();
        let (manifest, _) = stored_descriptor(&registry, "1877.5").await;
        assert_eq!(manifest["config"]["mediaType"], ocm::CNUDIE_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], ocm::CNUDIE_DESCRIPTOR);
        let again = engine
            .publish_component(&intent(&legacy), &inputs, Mode::DryRun)
            .await
            .unwrap();
        assert_eq!(cnudie.version.digest, again.version.digest);
        let current = engine
            .publish_component(&intent(SPEC), &inputs, Mode::DryRun)
            .await
            .unwrap();
        assert_ne!(current.version.digest, cnudie.version.digest);
    }

    #[tokio::test]
    async fn ownership_referrers_name_the_component_and_the_resource() {
        let (registry, inputs, aws) = seeded();
        let engine = engine(&registry);
        let spec = format!("{SPEC}ownershipReferrers: true\n");
        let report = engine
            .publish_component(&intent(&spec), &inputs, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(report.ownership.len(), 2);
        let referrer = registry
            .manifest(
                &repo("gardenlinux/gardenlinux"),
                &report.ownership[0].digest,
            )
            .expect("the referrer is stored next to its subject");
        let referrer: serde_json::Value = serde_json::from_slice(&referrer.bytes).unwrap();
        assert_eq!(referrer["artifactType"], ocm::OWNERSHIP_ARTIFACT_TYPE);
        assert_eq!(referrer["subject"]["digest"], aws.as_str());
        assert_eq!(referrer["annotations"][ocm::VERSION_ANNOTATION], "1877.5");
        let artifact: serde_json::Value = serde_json::from_str(
            referrer["annotations"][ocm::ARTIFACT_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(artifact["kind"], "resource");
        assert_eq!(artifact["identity"]["platform"], "aws");
        assert_eq!(artifact["identity"]["name"], "gardenlinux");
    }
}
