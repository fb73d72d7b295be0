//! One reconciliation of one GardenArtifact: validate, check tag ownership, gather inputs, run
//! the engine, then report (status by server-side apply, events, metrics).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::{Context, InputError};
use super::status::{Observation, next_status};
use super::watches;
use crate::api::validate::{Frontend, parse_duration, validate};
use crate::api::{API_VERSION, DeletionPolicy, GardenArtifact, GardenArtifactStatus, KIND};
use crate::engine::{EngineError, Mode, Outcome, Report, Retirement, TagRemoval};
use crate::oci::Repository;

pub const FINALIZER: &str = "oci.gardenlinux.io/cleanup";
pub const FIELD_MANAGER: &str = "garden-artifacts";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("object has no namespace")]
    NoNamespace,
}

pub async fn reconcile(object: Arc<GardenArtifact>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<GardenArtifact> = Api::namespaced(ctx.client.clone(), &namespace);
    if object.finalizers().is_empty() && object.metadata.deletion_timestamp.is_none() {
        add_first_finalizer(&api, &object).await?;
        // The patch is itself a change the controller sees; reconcile then.
        return Ok(Action::await_change());
    }
    // kube's finalizer helper wants a bare `Action` back; the class of what stalled the round,
    // if anything did, comes out beside it.
    let stalled_by = OnceLock::<&'static str>::new();
    let result = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            FinalizerEvent::Apply(object) => match apply(&api, &namespace, &object, &ctx).await? {
                Settled::Done(action) => Ok(action),
                Settled::Stalled(action, class) => {
                    let _ = stalled_by.set(class);
                    Ok(action)
                }
            },
            FinalizerEvent::Cleanup(object) => cleanup(&namespace, &object, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let label = round_result(&result, stalled_by.get().is_some());
    ctx.metrics.reconciled(label, started.elapsed());
    match (&result, stalled_by.get()) {
        (Err(e), _) => ctx.metrics.reconcile_failed(e.class()),
        (Ok(_), Some(class)) => ctx.metrics.reconcile_failed(class),
        (Ok(_), None) => {}
    }
    result
}

/// How an apply round ended when nothing failed: done (converged, or suspended), or stalled on
/// something only a person can fix (the `Stalled` condition was set; no retry helps), of a
/// class as [`Error::class`] names it.
enum Settled {
    Done(Action),
    Stalled(Action, &'static str),
}

impl Error {
    /// The `class` label of the failure in `garden_artifacts_reconcile_failures_total`: the
    /// registry's classification of an engine failure, else `input` (reading the Secrets,
    /// ConfigMaps and objects the spec names) or `kube` (the controller's own API requests).
    fn class(&self) -> &'static str {
        use kube::runtime::finalizer::Error as FinalizerError;
        match self {
            Error::Engine(e) => e.class().label(),
            Error::Input(_) => "input",
            Error::Finalizer(e) => match e.as_ref() {
                FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.class(),
                _ => "kube",
            },
            Error::Status(_) | Error::NoNamespace => "kube",
        }
    }
}

/// The `result` label of a round in `garden_artifacts_reconciles_total`. A stalled round
/// returns `Ok` to kube (retrying would not help) yet did not converge: it is `stalled`, and so
/// counts in `garden_artifacts_reconcile_failures_total`.
fn round_result<T, E>(result: &Result<T, E>, stalled: bool) -> &'static str {
    match result {
        Err(_) => "error",
        Ok(_) if stalled => "stalled",
        Ok(_) => "success",
    }
}

/// kube's finalizer helper guards its first finalizer with a JSON-patch `test` of a null
/// `/metadata/finalizers`, which Kubernetes 1.20 rejects (422). The resourceVersion guards
/// the same race and every supported version accepts it.
async fn add_first_finalizer(
    api: &Api<GardenArtifact>,
    object: &GardenArtifact,
) -> Result<(), Error> {
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version() },
        { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
    ]))
    .expect("a valid JSON patch");
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Someone changed the object first: the change triggers another round.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => Ok(()),
        Err(e) => Err(Error::Finalizer(Box::new(
            kube::runtime::finalizer::Error::AddFinalizer(e),
        ))),
    }
}

pub fn error_policy(object: Arc<GardenArtifact>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(object = %watches::key(&object), %error, "reconcile failed, retrying");
    Action::requeue(RETRY_AFTER_ERROR)
}

/// `10m`, `1h30m`, `45s`, `500ms` through the one duration parser of the API; `None` for zero
/// or anything else (the schema already refused it).
pub fn parse_interval(text: &str) -> Option<Duration> {
    parse_duration(text).filter(|d| !d.is_zero())
}

fn interval(object: &GardenArtifact) -> Duration {
    object
        .spec
        .interval
        .as_deref()
        .and_then(parse_interval)
        .unwrap_or(DEFAULT_INTERVAL)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn apply(
    api: &Api<GardenArtifact>,
    namespace: &str,
    object: &GardenArtifact,
    ctx: &Context,
) -> Result<Settled, Error> {
    let every = interval(object);
    if object.spec.suspend {
        write_status(api, object, ctx, &Observation::Suspended).await?;
        return Ok(Settled::Done(Action::await_change()));
    }
    let intent = match validate(&object.spec, Frontend::Controller) {
        Ok(intent) => intent,
        Err(invalid) => {
            let message = invalid.to_string();
            stall(api, object, ctx, "InvalidSpec", &message).await?;
            return Ok(Settled::Stalled(Action::await_change(), "invalid"));
        }
    };
    // Ownership is decided over all objects; a cache still filling would let a newer object
    // take a tag for one round.
    let _ = ctx.store.wait_until_ready().await;
    let lost = watches::lost_tags(&ctx.store.state(), object);
    if !lost.is_empty() {
        let message = lost
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        stall(api, object, ctx, "TagConflict", &message).await?;
        return Ok(Settled::Stalled(Action::requeue(every), "conflict"));
    }

    let gathered = async {
        let engine = ctx.engine_for(namespace, object).await?;
        let mut inputs = ctx.inputs_for(namespace, object).await?;
        inputs.artifacts = ctx.artifacts_for(namespace, object)?;
        Ok::<_, InputError>((engine, inputs))
    }
    .await;
    let (engine, inputs) = match gathered {
        Ok(gathered) => gathered,
        Err(e) if e.is_permanent() => {
            stall(api, object, ctx, "InputUnavailable", &e.to_string()).await?;
            return Ok(Settled::Stalled(Action::requeue(every), "input"));
        }
        Err(e) => {
            retrying(api, object, ctx, "InputUnavailable", &e.to_string()).await?;
            return Err(e.into());
        }
    };

    match engine.reconcile(&intent, &inputs, Mode::Apply).await {
        Ok(report) => {
            publish_changes(object, ctx, &report).await;
            write_status(api, object, ctx, &Observation::Converged(&report)).await?;
            Ok(Settled::Done(Action::requeue(every)))
        }
        Err(e) if e.is_permanent() => {
            stall(api, object, ctx, "RegistryRefused", &e.to_string()).await?;
            Ok(Settled::Stalled(Action::requeue(every), e.class().label()))
        }
        Err(e) => {
            retrying(api, object, ctx, "RegistryError", &e.to_string()).await?;
            Err(e.into())
        }
    }
}

async fn stall(
    api: &Api<GardenArtifact>,
    object: &GardenArtifact,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let changed = write_status(api, object, ctx, &Observation::Stalled { reason, message }).await?;
    if changed {
        publish(
            ctx,
            object,
            EventType::Warning,
            reason,
            "Reconcile",
            message,
        )
        .await;
    }
    Ok(())
}

async fn retrying(
    api: &Api<GardenArtifact>,
    object: &GardenArtifact,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    write_status(api, object, ctx, &Observation::Retrying { reason, message }).await?;
    publish(
        ctx,
        object,
        EventType::Warning,
        reason,
        "Reconcile",
        message,
    )
    .await;
    Ok(())
}

/// Writes the status when it differs from the current one; true when it wrote.
async fn write_status(
    api: &Api<GardenArtifact>,
    object: &GardenArtifact,
    ctx: &Context,
    observation: &Observation<'_>,
) -> Result<bool, Error> {
    let next: GardenArtifactStatus = next_status(
        object.status.as_ref(),
        object.metadata.generation,
        observation,
        &now(),
    );
    if object.status.as_ref() == Some(&next) {
        return Ok(false);
    }
    let patch = json!({ "apiVersion": API_VERSION, "kind": KIND, "status": next });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    ctx.metrics.status_written();
    Ok(true)
}

/// Events for what the engine wrote: a push, a retag, or a repaired drift (a tag someone moved
/// or deleted after this object had set it).
async fn publish_changes(object: &GardenArtifact, ctx: &Context, report: &Report) {
    let status = object.status.as_ref();
    for pin in &report.pins {
        let before = status
            .into_iter()
            .flat_map(|s| &s.references)
            .find(|r| r.field == pin.field.as_str() && r.reference == pin.reference);
        if let Some(before) = before
            && before.digest != pin.head.digest
        {
            let note = format!(
                "{} {} moved from {} to {}; relinked",
                pin.field, pin.reference, before.digest, pin.head.digest
            );
            publish(ctx, object, EventType::Normal, "Relinked", "Link", &note).await;
        }
    }
    if report.outcome == Outcome::Unchanged {
        return;
    }
    let was_converged_here =
        status.and_then(|s| s.digest.as_deref()) == Some(report.digest.as_str());
    let had_tag = |tag: &str| status.is_some_and(|s| s.tags.iter().any(|t| t.name == tag));
    if !report.plan.blobs.is_empty() || report.outcome == Outcome::Created {
        let note = format!(
            "pushed {} to {} ({} blob(s) uploaded)",
            report.digest,
            report.repository,
            report.plan.blobs.len()
        );
        publish(ctx, object, EventType::Normal, "Pushed", "Push", &note).await;
    }
    // One event per reason and round: the event recorder folds repeats of a reason into the
    // first event's note, so tags written together are named together.
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for write in &report.plan.tags {
        let (reason, note) = match &write.previous {
            Some(previous) if was_converged_here => (
                "DriftRepaired",
                format!("tag {} had been moved to {previous}; put back", write.tag),
            ),
            None if was_converged_here && had_tag(&write.tag) => (
                "DriftRepaired",
                format!("tag {} had been deleted; recreated", write.tag),
            ),
            Some(previous) => (
                "Retagged",
                format!("tag {} moved from {previous}", write.tag),
            ),
            None => ("Tagged", format!("tag {} set", write.tag)),
        };
        by_reason.entry(reason).or_default().push(note);
    }
    for (reason, notes) in by_reason {
        let note = format!("{} (now {})", notes.join("; "), report.digest);
        publish(ctx, object, EventType::Normal, reason, "Tag", &note).await;
    }
}

async fn publish(
    ctx: &Context,
    object: &GardenArtifact,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(object = %watches::key(object), error = %e, "could not publish an event");
    }
}

/// With `deletionPolicy: Delete`, removes the tags this object owns and that still point at
/// its artefact; a tag another object owns, or that someone moved elsewhere, stays.
async fn cleanup(namespace: &str, object: &GardenArtifact, ctx: &Context) -> Result<Action, Error> {
    if object.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let Some(status) = &object.status else {
        return Ok(Action::await_change());
    };
    let Some(digest) = &status.digest else {
        return Ok(Action::await_change());
    };
    let Ok(repository) = Repository::parse(&object.spec.repository) else {
        return Ok(Action::await_change());
    };
    let lost: Vec<String> = watches::lost_tags(&ctx.store.state(), object)
        .into_iter()
        .map(|c| c.tag)
        .collect();
    let engine = match ctx.engine_for(namespace, object).await {
        Ok(engine) => engine,
        // The credentials Secret is gone (engine_for reads no other Secret), as when the
        // whole namespace is deleted. No one can bring it back for this object, so waiting
        // would only keep the finalizer forever: leave the registry as it is and say so.
        // Any other error (an API error, a Secret of the wrong shape) is retried.
        Err(InputError::Missing {
            kind: "Secret",
            name,
            ..
        }) => {
            let mut left: Vec<String> = status
                .tags
                .iter()
                .map(|t| t.name.clone())
                .filter(|t| !lost.contains(t))
                .collect();
            if status.subject.is_some() {
                left.push(format!("referrer {digest}"));
            }
            if !left.is_empty() {
                let note = format!(
                    "credentials Secret {namespace}/{name} does not exist: {} of {repository} left in the registry (deletionPolicy: Delete)",
                    left.join(", ")
                );
                // The event may be refused too, in a namespace being deleted.
                tracing::warn!(object = %watches::key(object), "{note}");
                publish(
                    ctx,
                    object,
                    EventType::Warning,
                    "CleanupSkipped",
                    "Delete",
                    &note,
                )
                .await;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let owned: Vec<String> = status
        .tags
        .iter()
        .map(|t| t.name.clone())
        .filter(|t| !lost.contains(t))
        .collect();
    let retirement = Retirement {
        repository: &repository,
        digest,
        tags: &owned,
        subject: status.subject.as_ref().map(|s| s.digest.as_str()),
        untagged: status.tags.is_empty(),
    };
    let retired = engine.retire(retirement, Mode::Apply).await?;
    if let Some(subject) = status.subject.as_ref().filter(|_| retired.referrer_deleted) {
        let note = format!(
            "deleted referrer {repository}@{digest} of {}",
            subject.digest
        );
        publish(
            ctx,
            object,
            EventType::Normal,
            "ReferrerDeleted",
            "Delete",
            &note,
        )
        .await;
    }
    let mut deleted = Vec::new();
    let mut left = Vec::new();
    for (tag, removal) in retired.tags {
        match removal {
            TagRemoval::Removed => deleted.push(tag),
            TagRemoval::Elsewhere(other) => left.push(format!("{tag} (points at {other})")),
            TagRemoval::Absent => {}
        }
    }
    if !deleted.is_empty() {
        let note = format!(
            "deleted tags {} of {repository} (deletionPolicy: Delete)",
            deleted.join(", ")
        );
        publish(
            ctx,
            object,
            EventType::Normal,
            "TagDeleted",
            "Delete",
            &note,
        )
        .await;
    }
    if !left.is_empty() {
        let note = format!(
            "tags {} of {repository} do not point at {digest}: left in place",
            left.join(", ")
        );
        publish(ctx, object, EventType::Warning, "TagLeft", "Delete", &note).await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake_api::{self, FakeApi};
    use crate::engine::Engine;
    use crate::metrics::Metrics;
    use crate::registry::{ClientOptions, NoCredentials, RegistryClient, RequestStats};
    use crate::sources::{UrlFetcher, UrlPolicy};
    use kube::runtime::events::{Recorder, Reporter};
    use kube::runtime::reflector;

    fn context(client: kube::Client) -> Arc<Context> {
        let registry = Arc::new(
            RegistryClient::new(ClientOptions::default(), Arc::new(NoCredentials))
                .expect("a registry client"),
        );
        let urls = UrlFetcher::new(UrlPolicy::default()).expect("a URL fetcher");
        let engine = Arc::new(Engine::new(registry.clone(), urls, 1));
        let (store, _writer) = reflector::store();
        let recorder = Recorder::new(client.clone(), Reporter::from("garden-artifacts"));
        Arc::new(Context::new(
            client,
            registry,
            engine,
            recorder,
            Arc::new(Metrics::default()),
            store,
        ))
    }

    /// `e2e/a` in namespace `ns`, with the finalizer already set.
    fn object(spec: serde_json::Value, status: serde_json::Value) -> GardenArtifact {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": "a", "namespace": "ns", "uid": "0000-a", "resourceVersion": "7",
                "generation": 1, "finalizers": [FINALIZER],
            },
            "spec": spec,
            "status": status,
        }))
        .expect("a GardenArtifact")
    }

    /// Events the fake API server was asked to create: (type, reason, note).
    fn events(api: &FakeApi) -> Vec<(String, String, String)> {
        api.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("/events"))
            .map(|r| {
                let event: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
                let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
                (field("type"), field("reason"), field("note"))
            })
            .collect()
    }

    /// Deleted (deletionPolicy Delete) after its credentials Secret `gone`.
    fn deleted_with_credentials(subject: bool) -> GardenArtifact {
        let digest = format!("sha256:{}", "1".repeat(64));
        let mut status = json!({
            "observedGeneration": 1,
            "digest": digest,
            "tags": [{ "name": "v1", "digest": digest }, { "name": "latest", "digest": digest }],
        });
        if subject {
            status["subject"] =
                json!({ "digest": format!("sha256:{}", "2".repeat(64)), "via": "referrers" });
        }
        let mut object = object(
            json!({
                "repository": "registry.example.com/e2e/a",
                "tags": ["v1", "latest"],
                "source": { "files": [{ "name": "a.txt", "content": "a", "mediaType": "text/plain" }] },
                "credentials": { "secretRef": { "name": "gone" } },
                "deletionPolicy": "Delete",
            }),
            status,
        );
        object.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        object
    }

    /// The namespace is being deleted: its Secrets are gone before the object. The tags stay,
    /// a Warning says so, and the finalizer goes; the registry is never asked.
    #[tokio::test]
    async fn cleanup_without_the_credentials_secret_lets_the_finalizer_go() {
        for subject in [false, true] {
            let api = FakeApi::start(|request| match request.method.as_str() {
                "GET" if request.path.contains("/namespaces/ns/secrets/gone") => {
                    fake_api::status(404, "NotFound", "secrets \"gone\" not found")
                }
                "POST" if request.path.contains("/events") => (201, request.body.clone()),
                _ => fake_api::status(500, "InternalError", "unexpected"),
            })
            .await;
            let ctx = context(api.client.clone());
            let object = deleted_with_credentials(subject);

            let action = cleanup("ns", &object, &ctx)
                .await
                .expect("cleanup succeeds");

            assert_eq!(action, Action::await_change());
            let warnings = events(&api);
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            let (type_, reason, note) = &warnings[0];
            assert_eq!(
                (type_.as_str(), reason.as_str()),
                ("Warning", "CleanupSkipped")
            );
            assert!(note.contains("Secret ns/gone does not exist"), "{note}");
            assert!(note.contains("v1, latest"), "{note}");
            assert_eq!(note.contains("referrer sha256:1111"), subject, "{note}");
            assert_eq!(ctx.engine.registry().stats().request_counts().len(), 0);
        }
    }

    /// Only a missing Secret lets the finalizer go: an API error reading it is retried.
    #[tokio::test]
    async fn cleanup_retries_when_the_credentials_secret_cannot_be_read() {
        let api = FakeApi::start(|request| match request.method.as_str() {
            "GET" => fake_api::status(403, "Forbidden", "secrets is forbidden"),
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let ctx = context(api.client.clone());

        let result = cleanup("ns", &deleted_with_credentials(false), &ctx).await;

        assert!(
            matches!(result, Err(Error::Input(InputError::Api { .. }))),
            "{result:?}"
        );
        assert!(events(&api).is_empty());
    }

    /// A failed round counts as an error, and as a failure of the class of what failed: here
    /// reading the Secret the spec names, inside kube's finalizer helper.
    #[tokio::test]
    async fn a_failed_round_counts_as_a_failure_of_its_class() {
        let api = FakeApi::start(|request| match request.method.as_str() {
            "GET" => fake_api::status(403, "Forbidden", "secrets is forbidden"),
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let ctx = context(api.client.clone());

        let result = reconcile(Arc::new(deleted_with_credentials(false)), Arc::clone(&ctx)).await;

        assert!(result.is_err(), "{result:?}");
        let text = ctx.metrics.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"error\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total{class=\"input\"} 1"));
    }

    /// Through kube's finalizer helper: the finalizer is removed (a JSON patch of
    /// metadata.finalizers), and the round is a success.
    #[tokio::test]
    async fn the_finalizer_goes_when_the_credentials_secret_is_gone() {
        let object = deleted_with_credentials(false);
        let mut without = object.clone();
        without.metadata.finalizers = None;
        let echo = serde_json::to_string(&without).expect("JSON");
        let api = FakeApi::start(move |request| match request.method.as_str() {
            "GET" if request.path.contains("/secrets/gone") => {
                fake_api::status(404, "NotFound", "secrets \"gone\" not found")
            }
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            "PATCH" if request.path.contains("/namespaces/ns/gardenartifacts/a?") => {
                (200, echo.clone())
            }
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let ctx = context(api.client.clone());

        let action = reconcile(Arc::new(object), Arc::clone(&ctx)).await;

        assert_eq!(action.expect("the round succeeds"), Action::await_change());
        let patch = api
            .requests()
            .into_iter()
            .find(|r| r.method == "PATCH")
            .expect("the finalizer was removed");
        assert!(
            patch.body.contains("/metadata/finalizers"),
            "{}",
            patch.body
        );
        let text = ctx.metrics.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"success\"} 1"));
    }

    #[test]
    fn a_round_is_labelled_by_how_it_ended() {
        let ok: Result<Action, Error> = Ok(Action::await_change());
        let failed: Result<Action, Error> = Err(Error::NoNamespace);
        assert_eq!(round_result(&ok, false), "success");
        assert_eq!(round_result(&ok, true), "stalled");
        assert_eq!(round_result(&failed, false), "error");
        assert_eq!(round_result(&failed, true), "error");
    }

    /// An invalid spec stalls the object; kube sees `Ok` (no retry), the metrics a failure.
    #[tokio::test]
    async fn a_stalled_round_counts_as_a_failure() {
        let stalled = object(
            json!({ "repository": "registry.example.com/e2e/a", "tags": ["v1"], "source": {} }),
            json!(null),
        );
        let echo = serde_json::to_string(&stalled).expect("JSON");
        let api = FakeApi::start(move |request| match request.method.as_str() {
            "PATCH"
                if request
                    .path
                    .contains("/namespaces/ns/gardenartifacts/a/status?") =>
            {
                (200, echo.clone())
            }
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(404, "NotFound", "not here"),
        })
        .await;
        let ctx = context(api.client.clone());

        let action = reconcile(Arc::new(stalled), Arc::clone(&ctx)).await;

        assert_eq!(
            action.expect("a stalled round is Ok"),
            Action::await_change()
        );
        let status_patch = api
            .requests()
            .into_iter()
            .find(|r| r.method == "PATCH")
            .expect("the status was written");
        assert!(
            status_patch.body.contains("InvalidSpec"),
            "{}",
            status_patch.body
        );
        let text = ctx.metrics.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"stalled\"} 1"));
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"success\"} 0"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total{class=\"invalid\"} 1"));
        let warnings = events(&api);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            (warnings[0].0.as_str(), warnings[0].1.as_str()),
            ("Warning", "InvalidSpec")
        );
    }

    #[test]
    fn intervals_parse_like_go_durations() {
        assert_eq!(parse_interval("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_interval("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_interval("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_interval("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("10"), None);
        assert_eq!(parse_interval("m"), None);
    }
}
