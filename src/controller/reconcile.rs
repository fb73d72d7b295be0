//! One reconciliation of one GardenArtifact, as kube calls it: the first finalizer set (only
//! `deletionPolicy: Delete` has work to do on deletion), then apply (apply.rs) or, on
//! deletion, cleanup (cleanup.rs); and what kube does after an error.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::apply::{Settled, apply};
use super::cleanup::cleanup;
use super::context::{Context, InputError};
use super::retries::Basis;
use super::watched::{Invalid, Watched, report_invalid, skip_cleanup};
use super::watches;
use crate::api::DeletionPolicy;
use crate::engine::EngineError;

pub const FINALIZER: &str = "oci.gardenlinux.io/cleanup";
pub const FIELD_MANAGER: &str = "garden-artifacts";
/// The next try after another writer changed a new object before its finalizer was added.
const FINALIZER_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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
    #[error("the object cannot be read: {}", .0.error)]
    Unreadable(Box<Invalid>),
    /// Deletion could not remove what the object owns; the finalizer stays until it can.
    #[error("{left} not removed yet (deletionPolicy: Delete): {source}")]
    Cleanup {
        /// What is left, as `tags v1, v2 of REPOSITORY`.
        left: String,
        #[source]
        source: Box<Error>,
    },
}

pub async fn reconcile(object: Arc<Watched>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Another shard's object, triggered through what it reads: that shard reconciles it.
    if !ctx.shard.selects(object.as_ref()) {
        return Ok(Action::await_change());
    }
    ctx.recorder.renew_if_old();
    let started = Instant::now();
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let key = watches::key(object.as_ref());
    if let Some(valid) = object.valid()
        && valid.metadata.deletion_timestamp.is_none()
        && ctx.retries.refused(&key)
    {
        let basis = Basis {
            generation: valid.metadata.generation,
            credentials: ctx.credentials_version(&namespace, valid).await,
        };
        // Not a round: a trigger (such as its own status write) that came before the retry
        // is due, with nothing changed that could fix the credentials.
        if let Some(wait) = ctx.retries.wait(&key, &basis) {
            return Ok(Action::requeue(wait));
        }
    }
    let api: Api<Watched> = Api::namespaced(ctx.client.clone(), &namespace);
    let stalled_by: OnceLock<&'static str> = OnceLock::new();
    // With `deletionPolicy: Retain` a deletion leaves the registry as it is, so there is
    // nothing for a finalizer to wait for: a new object costs one API write (its status),
    // and its deletion none. One that has our finalizer (it was `Delete` once) keeps it until
    // it is deleted, when kube's helper below takes it off.
    let retained = object
        .valid()
        .is_some_and(|o| o.spec.deletion_policy == DeletionPolicy::Retain);
    if retained && !object.finalizers().iter().any(|f| f == FINALIZER) {
        let result = if object.meta().deletion_timestamp.is_some() {
            Ok(Action::await_change())
        } else {
            round(&api, &namespace, &object, &ctx, &key, &stalled_by).await
        };
        return counted(&ctx, started, result, stalled_by.get().copied());
    }
    // The first round goes on with the object as the finalizer patch returned it: a new
    // object with `deletionPolicy: Delete` costs two API writes (this patch and its status)
    // and one round.
    let object = if object.finalizers().is_empty() && object.meta().deletion_timestamp.is_none() {
        match add_first_finalizer(&api, &object).await? {
            Some(patched) => Arc::new(patched),
            // Someone changed the object first; a change of theirs that triggers nothing
            // (another finalizer, say) must not leave it without ours: soon again.
            None => return Ok(Action::requeue(FINALIZER_RETRY)),
        }
    } else {
        object
    };
    // kube's finalizer helper wants a bare `Action` back; whether the round stalled, and on
    // what class of failure, comes out beside it.
    let result = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            FinalizerEvent::Apply(watched) => {
                round(&api, &namespace, &watched, &ctx, &key, &stalled_by).await
            }
            FinalizerEvent::Cleanup(watched) => {
                let cleaned = match &watched.0 {
                    Ok(object) => cleanup(&api, &namespace, object, &ctx).await,
                    Err(invalid) => Ok(skip_cleanup(&watched, invalid, &ctx).await),
                };
                if cleaned.is_ok() {
                    ctx.retries.succeeded(&key);
                }
                cleaned
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    counted(&ctx, started, result, stalled_by.get().copied())
}

/// One round of an object that is not being deleted: apply, or the report of a spec that
/// cannot be read. Whether it stalled, and on what class of failure, goes to `stalled_by`.
async fn round(
    api: &Api<Watched>,
    namespace: &str,
    watched: &Watched,
    ctx: &Context,
    key: &str,
    stalled_by: &OnceLock<&'static str>,
) -> Result<Action, Error> {
    let settled = match &watched.0 {
        Ok(object) => match apply(api, namespace, object, ctx).await {
            Err(Error::Unreadable(invalid)) => report_invalid(api, &invalid, ctx).await?,
            applied => applied?,
        },
        Err(invalid) => report_invalid(api, invalid, ctx).await?,
    };
    match settled {
        Settled::Done(action) => {
            ctx.retries.succeeded(key);
            Ok(action)
        }
        Settled::Stalled(action, class) => {
            let _ = stalled_by.set(class);
            Ok(action)
        }
        Settled::Refused(basis, class) => {
            let _ = stalled_by.set(class);
            Ok(Action::requeue(ctx.retries.failed(key, Some(basis))))
        }
    }
}

/// The round in the metrics: its result, its time, and the class of a failure.
fn counted(
    ctx: &Context,
    started: Instant,
    result: Result<Action, Error>,
    stalled_by: Option<&'static str>,
) -> Result<Action, Error> {
    let label = round_result(&result, stalled_by.is_some());
    ctx.metrics.reconciled(label, started.elapsed());
    match (&result, stalled_by) {
        (Err(e), _) => ctx.metrics.reconcile_failed(e.class()),
        (Ok(_), Some(class)) => ctx.metrics.reconcile_failed(class),
        (Ok(_), None) => {}
    }
    result
}

impl Error {
    /// The `class` label of the failure in `garden_artifacts_reconcile_failures_total`: the
    /// registry's classification of an engine failure, else `input` (reading the Secrets,
    /// ConfigMaps and objects the spec names) or `kube` (the controller's own API requests).
    pub fn class(&self) -> &'static str {
        use kube::runtime::finalizer::Error as FinalizerError;
        match self {
            Error::Engine(e) => e.class().label(),
            Error::Input(_) => "input",
            Error::Finalizer(e) => match e.as_ref() {
                FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.class(),
                _ => "kube",
            },
            Error::Unreadable(_) => "invalid",
            Error::Cleanup { source, .. } => source.class(),
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
/// the same race and every supported version accepts it. Returns the object as patched;
/// `None` when someone else changed it first.
async fn add_first_finalizer(
    api: &Api<Watched>,
    object: &Watched,
) -> Result<Option<Watched>, Error> {
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
        Ok(patched) => Ok(Some(patched)),
        // Someone changed the object first: the change triggers another round.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => Ok(None),
        Err(e) => Err(Error::Finalizer(Box::new(
            kube::runtime::finalizer::Error::AddFinalizer(e),
        ))),
    }
}

/// Every failed round is retried after the object's own backoff.
pub fn error_policy(object: Arc<Watched>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = watches::key(object.as_ref());
    let wait = ctx.retries.failed(&key, None);
    tracing::warn!(object = %key, %error, retry_in = ?wait, "reconcile failed, retrying");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake_api::{self, FakeApi};
    use crate::controller::test_support::{
        context, context_with_unfilled_caches, deleted_with_credentials, events, object,
    };
    use crate::registry::RequestStats;

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

        let action = reconcile(Arc::new(Watched(Ok(object))), Arc::clone(&ctx)).await;

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

    /// A new object with `deletionPolicy: Delete`: the finalizer patch, then in the same
    /// round its status (here an invalid spec's). Neither triggers another round (triggers.rs).
    #[tokio::test]
    async fn a_new_object_costs_one_round_and_two_writes_that_trigger_nothing() {
        let stalled = object(
            json!({ "repository": "registry.example.com/e2e/a", "tags": ["v1"], "source": {},
                    "deletionPolicy": "Delete" }),
            json!(null),
        );
        let mut new = stalled.clone();
        new.metadata.finalizers = None;
        let with_finalizer = {
            let mut o = stalled.clone();
            o.metadata.resource_version = Some("8".into());
            serde_json::to_string(&o).expect("JSON")
        };
        let with_status = {
            let mut o = stalled.clone();
            o.metadata.resource_version = Some("9".into());
            serde_json::to_string(&o).expect("JSON")
        };
        let api = FakeApi::start(move |request| match request.method.as_str() {
            "PATCH" if request.path.contains("/gardenartifacts/a/status?") => {
                (200, with_status.clone())
            }
            "PATCH" if request.path.contains("/gardenartifacts/a?") => {
                (200, with_finalizer.clone())
            }
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(404, "NotFound", "not here"),
        })
        .await;
        let ctx = context(api.client.clone());

        let action = reconcile(Arc::new(Watched(Ok(new))), Arc::clone(&ctx)).await;

        assert_eq!(action.expect("the round settles"), Action::await_change());
        let patches: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect();
        assert_eq!(patches.len(), 2, "{patches:?}");
        assert!(
            patches[0].body.contains("/metadata/finalizers"),
            "{}",
            patches[0].body
        );
        assert!(
            patches[1].body.contains("InvalidSpec"),
            "{}",
            patches[1].body
        );
        let text = ctx.metrics.render(&RequestStats::default());
        assert!(
            text.contains("garden_artifacts_status_writes_total 1"),
            "{text}"
        );
    }

    /// A new object with `deletionPolicy: Retain` (the default) has nothing to do on
    /// deletion: no finalizer, one write (its status).
    #[tokio::test]
    async fn a_new_retained_object_costs_one_write_and_no_finalizer() {
        let mut new = object(
            json!({ "repository": "registry.example.com/e2e/a", "tags": ["v1"], "source": {} }),
            json!(null),
        );
        new.metadata.finalizers = None;
        let with_status = serde_json::to_string(&new).expect("JSON");
        let api = FakeApi::start(move |request| match request.method.as_str() {
            "PATCH" if request.path.contains("/gardenartifacts/a/status?") => {
                (200, with_status.clone())
            }
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(404, "NotFound", "not here"),
        })
        .await;
        let ctx = context(api.client.clone());

        let action = reconcile(Arc::new(Watched(Ok(new))), Arc::clone(&ctx)).await;

        assert_eq!(action.expect("the round settles"), Action::await_change());
        let patches: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect();
        assert_eq!(patches.len(), 1, "{patches:?}");
        assert!(
            patches[0].body.contains("InvalidSpec"),
            "{}",
            patches[0].body
        );
    }

    /// Someone else wrote a new object first (here another finalizer, which triggers no
    /// round): ours is tried again soon, not left to a change that may never come.
    #[tokio::test]
    async fn a_finalizer_that_lost_a_race_is_tried_again_soon() {
        let api = FakeApi::start(|request| match request.method.as_str() {
            "PATCH" => fake_api::status(409, "Conflict", "the object has been modified"),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let ctx = context(api.client.clone());
        let mut new = object(
            json!({ "repository": "h:1/a", "tags": ["v1"], "source": {}, "deletionPolicy": "Delete" }),
            json!(null),
        );
        new.metadata.finalizers = None;

        let action = reconcile(Arc::new(Watched(Ok(new))), Arc::clone(&ctx)).await;

        assert_eq!(
            action.expect("no failure"),
            Action::requeue(FINALIZER_RETRY)
        );
    }

    /// Another shard's object, reached through what it reads, is left to that shard.
    #[tokio::test]
    async fn another_shards_object_is_not_touched() {
        let api = FakeApi::start(|_| fake_api::status(500, "InternalError", "unexpected")).await;
        let ctx = context(api.client.clone());
        let ctx =
            Arc::new(Arc::into_inner(ctx).expect("one owner").with_shard(
                crate::controller::shard::Shard::parse("shard=b").expect("a selector"),
            ));
        let mut theirs = object(
            json!({ "repository": "h:1/a", "tags": ["v1"], "source": {} }),
            json!(null),
        );
        theirs.metadata.finalizers = None;
        theirs.metadata.labels = Some([("shard".to_string(), "a".to_string())].into());

        let action = reconcile(Arc::new(Watched(Ok(theirs))), Arc::clone(&ctx)).await;

        assert_eq!(action.expect("nothing to do"), Action::await_change());
        assert!(api.requests().is_empty(), "{:?}", api.requests());
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

        let action = reconcile(Arc::new(Watched(Ok(stalled))), Arc::clone(&ctx)).await;

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

    /// A round that fails (here: the Secret cache is still listing during cleanup) is an
    /// `error` round, counted as a failure of its class.
    #[tokio::test]
    async fn a_failed_round_counts_as_a_failure_of_its_class() {
        let api = FakeApi::start(|request| match request.method.as_str() {
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let (ctx, _listing) = context_with_unfilled_caches(api.client.clone());
        let object = Watched(Ok(deleted_with_credentials(false)));

        let result = reconcile(Arc::new(object), Arc::clone(&ctx)).await;

        assert!(result.is_err(), "{result:?}");
        let text = ctx.metrics.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"error\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total{class=\"input\"} 1"));
    }
}
