//! The GardenComponents of an `apply` run. They run last: a component version pins the
//! digests the run's GardenArtifacts published, so it waits for them (and for the mirrors,
//! whose targets it may reference).

use std::collections::BTreeSet;

use super::{ObjectResult, describe_plan};
use crate::api::component::COMPONENT_KIND;
use crate::engine::{ComponentInputs, ComponentReport, Engine, Mode};
use crate::intent::ComponentIntent;
use crate::manifests::LoadedComponent;
use crate::oci::ImageReference;
use crate::oci::ocm::component_repository;

/// A GardenArtifact of the run, as the components see it.
pub struct Published {
    pub namespace: String,
    pub name: String,
    /// `repo:first-tag@digest` once written (or found unchanged); `None` when it failed, or
    /// in a dry run when it would change.
    pub reference: Option<ImageReference>,
    /// Why there is no reference: `failed` or `pending`.
    pub missing_because: &'static str,
}

pub async fn run(
    engine: &Engine,
    components: &[LoadedComponent],
    intents: &[ComponentIntent],
    published: &[Published],
    mode: Mode,
) -> Vec<ObjectResult> {
    let mut results = Vec::with_capacity(components.len());
    for (component, intent) in components.iter().zip(intents) {
        let in_namespace = |name: &str| {
            published
                .iter()
                .find(|p| p.namespace == component.namespace && p.name == name)
        };
        let mut inputs = ComponentInputs::default();
        let mut blocked = None;
        for (_, name) in intent.objects() {
            let artefact = in_namespace(name).expect("apply checked every artifactRef");
            match &artefact.reference {
                Some(reference) => {
                    inputs.artifacts.insert(name.to_string(), reference.clone());
                }
                None => {
                    blocked = Some((
                        artefact.missing_because,
                        format!("{}/{name}", component.namespace),
                    ));
                    break;
                }
            }
        }
        let result = match blocked {
            Some(("pending", key)) => ObjectResult {
                plan: Some(vec![format!(
                    "(planned after {key}, which this run would write first)"
                )]),
                ..result(component, intent, "pending", None)
            },
            Some((_, key)) => result(
                component,
                intent,
                "failed",
                Some(format!("depends on {key}, which failed")),
            ),
            None => match engine.publish_component(intent, &inputs, mode).await {
                Ok(report) => published_result(component, intent, &report, mode),
                Err(e) => result(
                    component,
                    intent,
                    "failed",
                    Some(crate::cli::common::engine_failure(e).message),
                ),
            },
        };
        results.push(result);
    }
    results
}

fn published_result(
    component: &LoadedComponent,
    intent: &ComponentIntent,
    report: &ComponentReport,
    mode: Mode,
) -> ObjectResult {
    let mut plan = describe_plan(&report.version);
    for referrer in &report.ownership {
        plan.extend(describe_plan(referrer));
    }
    // The resources are part of what a dry run shows: where each one points.
    for pin in &report.resources {
        plan.push(format!(
            "{}: {} -> {}",
            pin.field, pin.shown, pin.image_reference
        ));
    }
    let referrers_written = report
        .ownership
        .iter()
        .any(|r| r.outcome != crate::engine::Outcome::Unchanged);
    let outcome =
        if report.version.outcome == crate::engine::Outcome::Unchanged && referrers_written {
            "updated".to_string()
        } else {
            report.version.outcome.to_string()
        };
    ObjectResult {
        digest: Some(report.version.digest.clone()),
        plan: (mode == Mode::DryRun).then_some(plan),
        ..result(component, intent, &outcome, None)
    }
}

fn result(
    component: &LoadedComponent,
    intent: &ComponentIntent,
    summary: &str,
    error: Option<String>,
) -> ObjectResult {
    let repository = component_repository(&intent.repository, &intent.name)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| intent.repository.to_string());
    ObjectResult {
        kind: Some(COMPONENT_KIND),
        name: component.name.clone(),
        namespace: component.namespace.clone(),
        repository,
        digest: None,
        tags: vec![intent.version.tag().to_string()],
        result: summary.to_string(),
        error,
        plan: None,
    }
}

/// The reference a published GardenArtifact gives its components: its first tag at the
/// digest it published (the digest alone for an untagged referrer).
pub fn published_reference(
    repository: &crate::oci::Repository,
    tags: &[crate::oci::Tag],
    digest: &str,
) -> Option<ImageReference> {
    let text = match tags.first() {
        Some(tag) => format!("{repository}:{tag}@{digest}"),
        None => format!("{repository}@{digest}"),
    };
    ImageReference::parse(&text).ok()
}

/// Two components of one run that publish one version: the second is refused (exit 2), as
/// two GardenArtifacts claiming one tag are, so a run never writes one descriptor twice.
pub fn same_version_twice(
    components: &[LoadedComponent],
    intents: &[ComponentIntent],
) -> Vec<String> {
    let mut first: std::collections::BTreeMap<(String, String), String> = Default::default();
    let mut errors = Vec::new();
    for (component, intent) in components.iter().zip(intents) {
        let Ok(repository) = component_repository(&intent.repository, &intent.name) else {
            continue;
        };
        let key = (repository.identity(), intent.version.tag().to_string());
        match first.get(&key) {
            Some(owner) => errors.push(format!(
                "{}: {}: {repository}:{} is published by {owner}, listed earlier; a version has one publisher",
                component.origin,
                component.key(),
                key.1
            )),
            None => {
                first.insert(key, component.key());
            }
        }
    }
    errors
}

/// For messages: the components' artifactRefs that name no GardenArtifact of the input.
pub fn unknown_artifact_refs(
    component: &LoadedComponent,
    intent: &ComponentIntent,
    known: &BTreeSet<(String, String)>,
) -> Vec<String> {
    intent
        .objects()
        .filter(|(_, name)| !known.contains(&(component.namespace.clone(), name.to_string())))
        .map(|(field, name)| {
            format!(
                "{}: {}: {field}.artifactRef: no GardenArtifact {name:?} in namespace {} among the input",
                component.origin,
                component.key(),
                component.namespace
            )
        })
        .collect()
}
