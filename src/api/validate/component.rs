//! A GardenComponent's spec read into a [`ComponentIntent`], every bad field named.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, spec_field};
use crate::api::DeletionPolicy;
use crate::api::component::{self, ComponentFormat, GardenComponentSpec};
use crate::api::patterns::{IDENTITY_KEY_RE, IMAGE_REFERENCE_RE, LABEL_NAME_RE, OBJECT_NAME_RE};
use crate::intent::{
    ComponentIntent, ComponentReferenceIntent, FieldPath, InvalidSpec, Label, Relation,
    ResourceIntent, ResourceTarget,
};
use crate::oci::ImageReference;
use crate::oci::ocm::{ComponentName, ComponentVersion, Format, component_repository};

/// Identity attributes OCM sets itself; an extra identity must not repeat them.
const RESERVED_IDENTITY: [&str; 2] = ["name", "version"];
const MAX_REFERENCE: usize = 512;

/// Reads a spec into the intent the engine takes; the error lists every bad field.
pub fn validate_component(spec: &GardenComponentSpec) -> Result<ComponentIntent, InvalidSpec> {
    let mut c = Checker { errors: Vec::new() };
    let repository = c.repository(&spec_field("repository"), &spec.repository);
    let name_field = spec_field("name");
    let name = c.parsed(&name_field, ComponentName::parse(&spec.name));
    if let (Some(base), Some(name)) = (&repository, &name) {
        c.parsed(&name_field, component_repository(base, name));
    }
    let version = c.parsed(
        &spec_field("version"),
        ComponentVersion::parse(&spec.version),
    );
    let provider_field = spec_field("provider").child("name");
    if spec.provider.name.trim().is_empty() {
        c.fail(&provider_field, "must not be empty");
    }
    c.max_len(&provider_field, &spec.provider.name, 255);
    let component_labels = labels(&mut c, &spec_field("labels"), &spec.labels);

    let resources_field = spec_field("resources");
    let mut identities: BTreeMap<(String, BTreeMap<String, String>), usize> = BTreeMap::new();
    let mut resources = Vec::with_capacity(spec.resources.len());
    for (i, resource) in spec.resources.iter().enumerate() {
        let field = resources_field.index(i);
        let named = identity_key(&mut c, &field.child("name"), &resource.name);
        if resource.type_.trim().is_empty() {
            c.fail(&field.child("type"), "must not be empty");
        }
        let version = match &resource.version {
            Some(text) => c.parsed(&field.child("version"), ComponentVersion::parse(text)),
            None => version.clone(),
        };
        let extra_identity = extra_identity(
            &mut c,
            &field.child("extraIdentity"),
            &resource.extra_identity,
        );
        let key = (resource.name.clone(), resource.extra_identity.clone());
        if let Some(first) = identities.get(&key) {
            c.fail(
                &field.child("extraIdentity"),
                format!(
                    "the identity (name {:?} and this extraIdentity) is already spec.resources[{first}]'s; OCM needs each resource's identity unique",
                    resource.name
                ),
            );
        } else {
            identities.insert(key, i);
        }
        let resource_labels = labels(&mut c, &field.child("labels"), &resource.labels);
        let target = match (&resource.artifact_ref, &resource.reference) {
            (Some(object), None) => c
                .pattern(
                    &field.child("artifactRef").child("name"),
                    &object.name,
                    &OBJECT_NAME_RE,
                    "a Kubernetes object name",
                )
                .then(|| ResourceTarget::Object(object.name.clone())),
            (None, Some(text)) => reference(&mut c, &field.child("reference"), text),
            _ => {
                c.fail(&field, "set exactly one of artifactRef and reference");
                None
            }
        };
        if let (true, Some(version), Some(target)) = (named, version, target) {
            resources.push(ResourceIntent {
                field,
                name: resource.name.clone(),
                type_: resource.type_.clone(),
                version,
                relation: match resource.relation {
                    component::Relation::Local => Relation::Local,
                    component::Relation::External => Relation::External,
                },
                extra_identity,
                labels: resource_labels,
                target,
            });
        }
    }

    let references_field = spec_field("componentReferences");
    let mut reference_identities = BTreeSet::new();
    let mut component_references = Vec::with_capacity(spec.component_references.len());
    for (i, reference) in spec.component_references.iter().enumerate() {
        let field = references_field.index(i);
        let named = identity_key(&mut c, &field.child("name"), &reference.name);
        let component_name = c.parsed(
            &field.child("componentName"),
            ComponentName::parse(&reference.component_name),
        );
        let version = c.parsed(
            &field.child("version"),
            ComponentVersion::parse(&reference.version),
        );
        let extra_identity = extra_identity(
            &mut c,
            &field.child("extraIdentity"),
            &reference.extra_identity,
        );
        if !reference_identities.insert((reference.name.clone(), reference.extra_identity.clone()))
        {
            c.fail(
                &field.child("name"),
                format!(
                    "{:?} with this extraIdentity is listed twice",
                    reference.name
                ),
            );
        }
        let reference_labels = labels(&mut c, &field.child("labels"), &reference.labels);
        if let (true, Some(component_name), Some(version)) = (named, component_name, version) {
            component_references.push(ComponentReferenceIntent {
                name: reference.name.clone(),
                component_name,
                version,
                extra_identity,
                labels: reference_labels,
            });
        }
    }
    if let Some(credentials) = &spec.credentials {
        c.pattern(
            &spec_field("credentials").child("secretRef").child("name"),
            &credentials.secret_ref.name,
            &OBJECT_NAME_RE,
            "a Kubernetes object name",
        );
    }
    if spec.deletion_policy == DeletionPolicy::Delete {
        c.fail(
            &spec_field("deletionPolicy"),
            "Delete is not supported for components yet; a deleted GardenComponent leaves its version in place (Retain)",
        );
    }
    let interval = c.interval(spec.interval.as_deref());
    if !c.errors.is_empty() {
        return Err(InvalidSpec(c.errors));
    }
    Ok(ComponentIntent {
        repository: repository.expect("a repository without errors was parsed"),
        name: name.expect("a name without errors was parsed"),
        version: version.expect("a version without errors was parsed"),
        provider: spec.provider.name.clone(),
        labels: component_labels,
        format: match spec.format {
            ComponentFormat::Ocm => Format::Ocm,
            ComponentFormat::Cnudie => Format::Cnudie,
        },
        resources,
        component_references,
        ownership_referrers: spec.ownership_referrers,
        interval,
    })
}

fn identity_key(c: &mut Checker, field: &FieldPath, text: &str) -> bool {
    c.pattern(
        field,
        text,
        &IDENTITY_KEY_RE,
        "an OCM identity name (at least 2 of a-z 0-9 - _ +, starting and ending with a letter or digit)",
    )
}

fn extra_identity(
    c: &mut Checker,
    field: &FieldPath,
    attributes: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for key in attributes.keys() {
        if RESERVED_IDENTITY.contains(&key.as_str()) {
            c.fail(&field.key(key), "is set by OCM from the resource itself");
        } else {
            identity_key(c, &field.key(key), key);
        }
    }
    attributes.clone()
}

fn labels(c: &mut Checker, field: &FieldPath, labels: &[component::Label]) -> Vec<Label> {
    let mut seen = BTreeSet::new();
    for (i, label) in labels.iter().enumerate() {
        let name_field = field.index(i).child("name");
        c.pattern(
            &name_field,
            &label.name,
            &LABEL_NAME_RE,
            "an OCM label name (lowercase, optionally domain-prefixed: gardenlinux.io/cname)",
        );
        if !seen.insert(label.name.as_str()) {
            c.fail(
                &name_field,
                format!(
                    "{:?} is listed twice; OCM label names are unique",
                    label.name
                ),
            );
        }
    }
    labels
        .iter()
        .map(|l| Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// A resource's reference: a full image reference, by tag or digest, never a bare tag (a
/// component version has no repository of its own that a tag could be relative to).
fn reference(c: &mut Checker, field: &FieldPath, text: &str) -> Option<ResourceTarget> {
    let matches = c.pattern(
        field,
        text,
        &IMAGE_REFERENCE_RE,
        "a full image reference with its registry and a tag or digest (ghcr.io/gardenlinux/gardenlinux:1877.5)",
    );
    let short = c.max_len(field, text, MAX_REFERENCE);
    if matches && short && c.registry_port(field, text) {
        return c
            .parsed(field, ImageReference::parse(text))
            .map(ResourceTarget::Registry);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> GardenComponentSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const VALID: &str = r#"
repository: ghcr.io/gardenlinux/ocm
name: github.com/gardenlinux/gardenlinux
version: "1877.5"
provider: {name: SAP SE}
labels: [{name: gardenlinux.io/release-notes, value: "https://example.org"}]
resources:
  - name: gardenlinux
    type: virtual_machine_image
    extraIdentity: {feature-flags: "aws,gardener,_prod", architecture: amd64, platform: aws}
    artifactRef: {name: gl-aws}
  - name: gardenlinux
    type: virtual_machine_image
    version: "1877.5.0"
    extraIdentity: {feature-flags: "metal,gardener,_prod", architecture: arm64, platform: metal}
    reference: ghcr.io/gardenlinux/gardenlinux:1877.5-metal-gardener_prod-arm64
componentReferences:
  - {name: kernel, componentName: github.com/gardenlinux/kernel, version: "6.12.44"}
"#;

    fn fields(err: InvalidSpec) -> Vec<String> {
        err.0.into_iter().map(|e| e.field.to_string()).collect()
    }

    #[test]
    fn the_release_component_reads_into_typed_values() {
        let intent = validate_component(&spec(VALID)).unwrap();
        assert_eq!(intent.name.as_str(), "github.com/gardenlinux/gardenlinux");
        assert_eq!(intent.version.tag().as_str(), "1877.5");
        assert_eq!(intent.format, Format::Ocm);
        assert_eq!(intent.resources.len(), 2);
        assert_eq!(
            intent.resources[0].version.as_str(),
            "1877.5",
            "defaults to spec.version"
        );
        assert_eq!(intent.resources[0].relation, Relation::External);
        assert_eq!(
            intent.resources[0].target,
            ResourceTarget::Object("gl-aws".into())
        );
        assert!(matches!(
            intent.resources[1].target,
            ResourceTarget::Registry(_)
        ));
        assert_eq!(
            intent.component_references[0].component_name.as_str(),
            "github.com/gardenlinux/kernel"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = VALID
            .replace("github.com/gardenlinux/gardenlinux", "GardenLinux")
            .replace("\"1877.5\"", "\"latest\"")
            .replace("gardenlinux.io/release-notes", "Release Notes")
            .replace(
                "architecture: arm64, platform: metal",
                "architecture: amd64, platform: aws",
            )
            .replace("\"metal,gardener,_prod\"", "\"aws,gardener,_prod\"")
            .replace(
                "ghcr.io/gardenlinux/gardenlinux:1877.5-metal-gardener_prod-arm64",
                "1877.5-metal",
            )
            .replace("name: kernel", "name: K");
        let got = fields(validate_component(&spec(&bad)).unwrap_err());
        for field in [
            "spec.name",
            "spec.version",
            "spec.labels[0].name",
            "spec.resources[1].extraIdentity",
            "spec.resources[1].reference",
            "spec.componentReferences[0].name",
        ] {
            assert!(got.iter().any(|f| f == field), "{field} not in {got:?}");
        }
    }

    #[test]
    fn a_resource_names_exactly_one_target_and_no_reserved_identity() {
        let both = VALID.replace(
            "artifactRef: {name: gl-aws}",
            "artifactRef: {name: gl-aws}\n    reference: ghcr.io/a/b:1",
        );
        assert_eq!(
            fields(validate_component(&spec(&both)).unwrap_err()),
            ["spec.resources[0]"]
        );
        let delete = format!("{VALID}deletionPolicy: Delete\n");
        assert_eq!(
            fields(validate_component(&spec(&delete)).unwrap_err()),
            ["spec.deletionPolicy"]
        );
        let reserved = VALID.replace("platform: aws}", "platform: aws, version: \"1\"}");
        assert_eq!(
            fields(validate_component(&spec(&reserved)).unwrap_err()),
            [r#"spec.resources[0].extraIdentity["version"]"#]
        );
    }
}
