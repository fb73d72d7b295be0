//! `GardenComponent`s reconciled: each round pins every resource (an `artifactRef` to the
//! digest its GardenArtifact's status reports, a reference by tag to what the tag names now),
//! renders the descriptor and publishes it through the engine, and writes the status only when
//! it changed. A GardenArtifact's change wakes the components that name it, so a rebuilt
//! flavour is relinked in the next round (event `Relinked`), not after `spec.interval`.
//!
//! Deleting a component leaves its version in the registry (`deletionPolicy: Retain`, the
//! only policy validation accepts for now).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::apply::now;
use super::context::Context;
use super::events::publish;
use super::index::ObjectKey;
use super::reconcile::FIELD_MANAGER;
use super::status::{READY, RECONCILING, STALLED, set_condition};
use super::watched::Watched;
use crate::api::component::COMPONENT_KIND;
use crate::api::validate::validate_component;
use crate::api::{
    API_VERSION, ConditionStatus, GardenComponent, GardenComponentStatus, PinnedReference,
};
use crate::engine::{ComponentInputs, ComponentReport, EngineError, Mode};
use crate::intent::ComponentIntent;
use crate::oci::ocm::{ComponentName, component_repository, version_tag};
use crate::oci::{ImageReference, Repository};

/// How often a component without `spec.interval` resolves its references again.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
}

/// What the component rounds share: the controller's context, and the GardenArtifacts as this
/// controller's own watch last saw them (updated before the event that wakes a component, so
/// a round never reads a status older than the change that started it).
pub struct Components {
    ctx: Arc<Context>,
    artifacts: Store<Watched>,
    /// Every GardenComponent watched: two that publish one version settle who owns it here.
    components: Store<GardenComponent>,
}

/// What a round came to.
enum Observation<'a> {
    Published(&'a ComponentReport, String),
    Retrying { reason: &'a str, message: String },
    Stalled { reason: &'a str, message: String },
    Suspended,
}

/// Runs the GardenComponent controller until `shutdown` resolves and its rounds are done.
/// Runs the GardenComponent controller until `shutdown` resolves. `artifact_changes` names
/// each GardenArtifact the controller's one watch of them saw change, after its cache (the
/// context's store, where rounds read the pins) took the change: the components naming it
/// are woken, so a rebuilt flavour is relinked in the next round, not after `interval`.
pub async fn run(
    components: Api<GardenComponent>,
    artifact_changes: impl futures::Stream<Item = ObjectKey> + Send + 'static,
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(components, watcher::Config::default());
    let known = controller.store();
    let shared = Arc::new(Components {
        artifacts: ctx.store.clone(),
        ctx,
        components: known.clone(),
    });
    let wakes = artifact_changes
        .flat_map(move |changed| stream::iter(naming(&known, &changed.namespace, &changed.name)));
    controller
        .reconcile_on(wakes)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(component = %object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "component round"),
            }
        })
        .await;
}

/// The components of `namespace` with a resource whose `artifactRef` is `name`.
fn naming(
    components: &Store<GardenComponent>,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<GardenComponent>> {
    components
        .state()
        .into_iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace))
        .filter(|c| {
            c.spec
                .resources
                .iter()
                .any(|r| r.artifact_ref.as_ref().is_some_and(|a| a.name == name))
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

pub async fn reconcile(
    component: Arc<GardenComponent>,
    shared: Arc<Components>,
) -> Result<Action, Error> {
    let ctx = &shared.ctx;
    let namespace = component.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<GardenComponent> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = format!("{COMPONENT_KIND}/{namespace}/{}", component.name_any());
    if component.spec.suspend {
        write_status(&api, &component, &Observation::Suspended).await?;
        return Ok(Action::await_change());
    }
    let stalled = |reason, message| Observation::Stalled { reason, message };
    let intent = match validate_component(&component.spec) {
        Ok(intent) => intent,
        Err(invalid) => {
            settle(
                &api,
                &component,
                ctx,
                stalled("InvalidSpec", invalid.to_string()),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let target = component_repository(&intent.repository, &intent.name)
        .expect("validation checked the component's repository");
    // Before any request: the operator's policy decides where this namespace may write.
    if let Err(message) = ctx.policy.check(&namespace, "spec.repository", &target) {
        settle(&api, &component, ctx, stalled("PolicyViolation", message)).await?;
        return Ok(Action::await_change());
    }
    if let Some(owner) = older_claim(&shared.components, &component, &target, &intent) {
        let message = format!(
            "{}:{} is published by GardenComponent {owner}, which is older; a version has one publisher",
            target,
            intent.version.tag()
        );
        settle(&api, &component, ctx, stalled("TagClaimed", message)).await?;
        // The owner's deletion or change wakes no one here: look again after a while.
        return Ok(Action::requeue(DEFAULT_INTERVAL));
    }
    let secrets: Vec<(&str, &str)> = component
        .spec
        .credentials
        .iter()
        .map(|c| ("spec.credentials.secretRef", c.secret_ref.name.as_str()))
        .collect();
    let engine = match ctx.engine_with_secrets(&namespace, &secrets).await {
        Ok((engine, _)) => engine,
        Err(e) => {
            let observation = if e.is_permanent() {
                stalled("CredentialsUnusable", e.to_string())
            } else {
                Observation::Retrying {
                    reason: "InputsPending",
                    message: e.to_string(),
                }
            };
            settle(&api, &component, ctx, observation).await?;
            return Ok(Action::requeue(ctx.retries.failed(&key, None)));
        }
    };
    let inputs = match pinned_artifacts(&shared.artifacts, &namespace, &intent) {
        Ok(inputs) => inputs,
        Err(message) => {
            // The artefact's status change wakes this component again.
            let observation = Observation::Retrying {
                reason: "InputsPending",
                message,
            };
            settle(&api, &component, ctx, observation).await?;
            return Ok(Action::requeue(ctx.retries.failed(&key, None)));
        }
    };
    match engine
        .publish_component(&intent, &inputs, Mode::Apply)
        .await
    {
        Ok(report) => {
            let observation =
                Observation::Published(&report, target.with_tag(&intent.version.tag()).to_string());
            settle(&api, &component, ctx, observation).await?;
            publish_relinks(&component, ctx, &report).await;
            ctx.retries.succeeded(&key);
            Ok(Action::requeue(intent.interval.unwrap_or(DEFAULT_INTERVAL)))
        }
        Err(e) => {
            settle(&api, &component, ctx, engine_failure(&e)).await?;
            Ok(Action::requeue(ctx.retries.failed(&key, None)))
        }
    }
}

/// The older GardenComponent (`namespace/name`) that publishes the same version to the same
/// repository, if any: the oldest keeps it, as with GardenArtifacts' tags, so two objects
/// never overwrite each other's descriptor round after round.
fn older_claim(
    components: &Store<GardenComponent>,
    me: &GardenComponent,
    target: &Repository,
    intent: &ComponentIntent,
) -> Option<String> {
    let tag = intent.version.tag();
    let rank = |c: &GardenComponent| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.namespace().unwrap_or_default(),
            c.name_any(),
        )
    };
    let mine = rank(me);
    components
        .state()
        .into_iter()
        .filter(|other| other.metadata.uid != me.metadata.uid)
        .filter(|other| {
            let Ok(name) = ComponentName::parse(&other.spec.name) else {
                return false;
            };
            let (Ok(base), Ok(tag_of_other)) = (
                Repository::parse(&other.spec.repository),
                version_tag(&other.spec.version),
            ) else {
                return false;
            };
            tag_of_other == tag
                && component_repository(&base, &name).is_ok_and(|repo| repo == *target)
        })
        .filter(|other| rank(other) < mine)
        .min_by_key(|other| rank(other))
        .map(|owner| {
            format!(
                "{}/{}",
                owner.namespace().unwrap_or_default(),
                owner.name_any()
            )
        })
}

/// Where each `artifactRef` points: the GardenArtifact's first tag at the digest its status
/// reports for its current generation.
fn pinned_artifacts(
    artifacts: &Store<Watched>,
    namespace: &str,
    intent: &ComponentIntent,
) -> Result<ComponentInputs, String> {
    let mut inputs = ComponentInputs::default();
    for (field, name) in intent.objects() {
        let field = field.child("artifactRef");
        let watched = artifacts
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| format!("{field}: GardenArtifact {namespace}/{name} does not exist"))?;
        let artifact = watched
            .valid()
            .ok_or_else(|| format!("{field}: GardenArtifact {namespace}/{name} cannot be read"))?;
        let digest = artifact
            .status
            .as_ref()
            .filter(|s| s.observed_generation == artifact.metadata.generation)
            .and_then(|s| s.digest.clone())
            .ok_or_else(|| {
                format!("{field}: GardenArtifact {namespace}/{name} has no digest yet")
            })?;
        let text = match artifact.spec.tags.first() {
            Some(tag) => format!("{}:{tag}@{digest}", artifact.spec.repository),
            None => format!("{}@{digest}", artifact.spec.repository),
        };
        let reference = ImageReference::parse(&text).map_err(|e| format!("{field}: {e}"))?;
        inputs.artifacts.insert(name.to_string(), reference);
    }
    Ok(inputs)
}

/// A `Relinked` event for each resource whose digest moved since the status last said.
async fn publish_relinks(component: &GardenComponent, ctx: &Context, report: &ComponentReport) {
    let before: BTreeMap<&str, &str> = component
        .status
        .iter()
        .flat_map(|s| &s.resources)
        .map(|r| (r.field.as_str(), r.digest.as_str()))
        .collect();
    for pin in &report.resources {
        if let Some(old) = before.get(pin.field.as_str())
            && *old != pin.digest
        {
            let note = format!(
                "{} {} moved from {old} to {}; component version re-published",
                pin.field, pin.shown, pin.digest
            );
            publish(ctx, component, EventType::Normal, "Relinked", "Link", &note).await;
        }
    }
}

fn engine_failure(e: &EngineError) -> Observation<'static> {
    let message = e.to_string();
    if e.is_permanent() {
        Observation::Stalled {
            reason: "RegistryRefused",
            message,
        }
    } else {
        Observation::Retrying {
            reason: "RegistryUnavailable",
            message,
        }
    }
}

pub fn error_policy(
    component: Arc<GardenComponent>,
    error: &Error,
    shared: Arc<Components>,
) -> Action {
    let key = format!(
        "{COMPONENT_KIND}/{}/{}",
        component.namespace().unwrap_or_default(),
        component.name_any()
    );
    let wait = shared.ctx.retries.failed(&key, None);
    tracing::warn!(component = %key, %error, retry_in = ?wait, "component round failed, retrying");
    Action::requeue(wait)
}

/// Writes the status when it changed, and a Warning event when a round newly fails.
async fn settle(
    api: &Api<GardenComponent>,
    component: &GardenComponent,
    ctx: &Context,
    observation: Observation<'_>,
) -> Result<bool, Error> {
    let changed = write_status(api, component, &observation).await?;
    if changed
        && let Observation::Stalled { reason, message } | Observation::Retrying { reason, message } =
            &observation
    {
        publish(
            ctx,
            component,
            EventType::Warning,
            reason,
            "Publish",
            message,
        )
        .await;
    }
    Ok(changed)
}

async fn write_status(
    api: &Api<GardenComponent>,
    component: &GardenComponent,
    observation: &Observation<'_>,
) -> Result<bool, Error> {
    let next = next_status(
        component.status.as_ref(),
        component.meta().generation,
        observation,
        &now(),
    );
    if component.status.as_ref() == Some(&next) {
        return Ok(false);
    }
    let patch = json!({ "apiVersion": API_VERSION, "kind": COMPONENT_KIND, "status": next });
    api.patch_status(
        &component.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(true)
}

/// Pure: the next status from the current one and what a round found. A converged round
/// yields the current status, so it is not written.
fn next_status(
    current: Option<&GardenComponentStatus>,
    generation: Option<i64>,
    observation: &Observation<'_>,
    now: &str,
) -> GardenComponentStatus {
    let mut next = current.cloned().unwrap_or_default();
    next.observed_generation = generation;
    use ConditionStatus::{False, True};
    let mut set = |type_: &str, status: ConditionStatus, reason: &str, message: &str| {
        set_condition(
            &mut next.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    };
    match observation {
        Observation::Published(report, reference) => {
            let message = format!(
                "published with {} resource(s) pinned",
                report.resources.len()
            );
            set(READY, True, "Converged", &message);
            set(RECONCILING, False, "Converged", "");
            set(STALLED, False, "Converged", "");
            next.reference = Some(reference.clone());
            next.digest = Some(report.version.digest.clone());
            next.resources = report
                .resources
                .iter()
                .map(|pin| PinnedReference {
                    field: pin.field.clone(),
                    reference: pin.shown.clone(),
                    digest: pin.digest.clone(),
                })
                .collect();
        }
        Observation::Retrying { reason, message } => {
            set(READY, False, reason, message);
            set(RECONCILING, True, reason, message);
            set(STALLED, False, reason, "");
        }
        Observation::Stalled { reason, message } => {
            set(READY, False, reason, message);
            set(RECONCILING, False, reason, "");
            set(STALLED, True, reason, message);
        }
        Observation::Suspended => {
            set(RECONCILING, False, "Suspended", "spec.suspend is true");
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Outcome, Plan, Report, ResourcePin};
    use crate::oci::Repository;

    fn report(digest: &str, pins: &[(&str, &str)]) -> ComponentReport {
        ComponentReport {
            version: Report {
                repository: Repository::parse("r.io/ocm/component-descriptors/x.io/a").unwrap(),
                digest: digest.into(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1,
                tags: vec!["1.0".into()],
                outcome: Outcome::Created,
                plan: Plan::unchanged(),
                subject: None,
                pins: Vec::new(),
                mirrored: Default::default(),
                dropped: Default::default(),
            },
            resources: pins
                .iter()
                .map(|(field, digest)| ResourcePin {
                    field: field.to_string(),
                    shown: "artifactRef:a".into(),
                    image_reference: format!("r.io/a:1@{digest}"),
                    digest: digest.to_string(),
                })
                .collect(),
            ownership: Vec::new(),
        }
    }

    fn object(namespace: &str, name: &str, created: i64, version: &str) -> GardenComponent {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION,
            "kind": COMPONENT_KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("{namespace}-{name}"),
                "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(created).unwrap().to_string(),
            },
            "spec": {
                "repository": "r.io/ocm",
                "name": "github.com/gardenlinux/gardenlinux",
                "version": version,
                "provider": { "name": "SAP SE" },
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_oldest_component_keeps_a_version_and_the_others_are_told_who_has_it() {
        let (store, mut writer) = kube::runtime::reflector::store();
        let older = object("a", "first", 100, "1.0");
        let newer = object("b", "second", 200, "1.0");
        let other_version = object("c", "third", 50, "2.0");
        for c in [&older, &newer, &other_version] {
            writer.apply_watcher_event(&watcher::Event::Apply(c.clone()));
        }
        let claim = |me: &GardenComponent| {
            let intent = validate_component(&me.spec).unwrap();
            let target = component_repository(&intent.repository, &intent.name).unwrap();
            older_claim(&store, me, &target, &intent)
        };
        assert_eq!(claim(&newer).as_deref(), Some("a/first"));
        assert_eq!(claim(&older), None);
        assert_eq!(claim(&other_version), None);
    }

    #[test]
    fn a_converged_round_writes_nothing_and_a_moved_resource_does() {
        let reference = "r.io/ocm/component-descriptors/x.io/a:1.0".to_string();
        let first_round = report("sha256:v1", &[("spec.resources[0]", "sha256:a")]);
        let first = next_status(
            None,
            Some(1),
            &Observation::Published(&first_round, reference.clone()),
            "t1",
        );
        assert_eq!(first.digest.as_deref(), Some("sha256:v1"));
        assert_eq!(first.resources[0].digest, "sha256:a");
        let again = next_status(
            Some(&first),
            Some(1),
            &Observation::Published(&first_round, reference.clone()),
            "t2",
        );
        assert_eq!(again, first, "a converged resync writes no status");
        let moved_round = report("sha256:v2", &[("spec.resources[0]", "sha256:b")]);
        let moved = next_status(
            Some(&first),
            Some(1),
            &Observation::Published(&moved_round, reference),
            "t3",
        );
        assert_eq!(moved.resources[0].digest, "sha256:b");
        assert_eq!(moved.digest.as_deref(), Some("sha256:v2"));
        let ready = moved.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.last_transition_time, "t1", "still Ready since t1");
    }
}
