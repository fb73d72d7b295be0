//! The apply half of a round: the spec validated, its tags' ownership checked, its inputs
//! gathered, the engine run, and what came of it written to the status.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::context::{Context, Credentials, InputError};
use super::earlier::earlier;
use super::events::{self, Failure};
use super::index::{self, ObjectKey, Rank};
use super::mirror_claims;
use super::reconcile::{Error, FIELD_MANAGER};
use super::resync::jittered;
use super::retries::Basis;
use super::status::{Observation, next_status, standing};
use super::watched::Watched;
use crate::api::validate::{Frontend, parse_duration, validate};
use crate::api::{
    API_VERSION, AccessResult, GardenArtifact, GardenArtifactStatus, KIND, WriteAccess,
};
use crate::engine::{Engine, EngineError, Inputs, Mode, Report};
use crate::oci::{Repository, repository_identity};
use crate::registry::{ErrorClass, NeedsPerson};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// How an apply round ended when nothing failed: done (converged, or suspended), or stalled on
/// something only a person can fix (the `Stalled` condition was set; no retry helps).
pub enum Settled {
    Done(Action),
    /// Stalled on something only a person can fix, of a class as the failure metric names it
    /// (`invalid`, `conflict`, `input`, `policy`, or the registry's `ErrorClass` label).
    Stalled(Action, &'static str),
    /// Stalled because the registry refused these credentials (`unauthorized`, `forbidden`):
    /// retried with a backoff.
    Refused(Basis, &'static str),
}

/// `10m`, `1h30m`, `45s`, `500ms` through the one duration parser of the API; `None` for zero
/// or anything else (the schema already refused it).
pub fn parse_interval(text: &str) -> Option<Duration> {
    parse_duration(text).filter(|d| !d.is_zero())
}

/// The object's `spec.interval`, with its own jitter (resync.rs).
fn interval(object: &GardenArtifact) -> Duration {
    let every = object
        .spec
        .interval
        .as_deref()
        .and_then(parse_interval)
        .unwrap_or(DEFAULT_INTERVAL);
    jittered(every, object.metadata.uid.as_deref().unwrap_or_default())
}

pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub async fn apply(
    api: &Api<Watched>,
    namespace: &str,
    object: &GardenArtifact,
    ctx: &Context,
) -> Result<Settled, Error> {
    if object.spec.suspend {
        write_status(api, object, ctx, &Observation::Suspended).await?;
        return Ok(Settled::Done(Action::await_change()));
    }
    validate_and_reconcile(api, namespace, object, ctx).await
}

/// The spec validated, then (once its prerequisites hold) the engine run on it: the one place
/// that hands a spec to the engine.
async fn validate_and_reconcile(
    api: &Api<Watched>,
    namespace: &str,
    object: &GardenArtifact,
    ctx: &Context,
) -> Result<Settled, Error> {
    let intent = match validate(&object.spec, Frontend::Controller) {
        Ok(intent) => intent,
        Err(invalid) => {
            let message = invalid.to_string();
            // Unable to write, it keeps no tag from an object that can.
            let access = write_access(object, AccessResult::Unable);
            stall_with(api, object, ctx, "InvalidSpec", &message, Some(access)).await?;
            return Ok(Settled::Stalled(Action::await_change(), "invalid"));
        }
    };
    // Before any request to a registry: the operator's policy decides where this namespace
    // may write at all.
    if let Err(message) = ctx
        .policy
        .check(namespace, "spec.repository", &intent.repository)
    {
        stall(api, object, ctx, "PolicyViolation", &message).await?;
        return Ok(Settled::Stalled(Action::await_change(), "policy"));
    }
    let (engine, credentials, inputs) =
        match prerequisites(api, namespace, object, &intent.repository, ctx).await? {
            ControlFlow::Continue(ready) => ready,
            ControlFlow::Break(settled) => return Ok(settled),
        };
    let result = engine.reconcile(&intent, &inputs, Mode::Apply).await;
    conclude(api, object, ctx, &credentials, result).await
}

/// The tags are this object's to write and its inputs can be read: the engine for its
/// credentials, whose they are, and the inputs; or how the round settled without them.
async fn prerequisites(
    api: &Api<Watched>,
    namespace: &str,
    object: &GardenArtifact,
    repository: &Repository,
    ctx: &Context,
) -> Result<ControlFlow<Settled, (Arc<Engine>, Credentials, Inputs)>, Error> {
    let every = interval(object);
    // Ownership is decided over all objects; an index still filling would let a newer object
    // take a tag for one round.
    ctx.index.wait_until_ready().await;
    let (lost, contested, takeable) = ctx.index.read(|index| {
        (
            index.lost_tags(object),
            index.contested(object),
            index.takeable(object),
        )
    });
    // A tag a mirror wrote is the mirror's (mirror_claims.rs): not earned by a write probe.
    ctx.mirrors.wait_until_listed().await;
    let to_mirrors = mirror_claims::lost_to_mirrors(
        &ctx.mirrors.state(),
        &repository.identity(),
        &object.spec.tags,
    );
    if !to_mirrors.is_empty() {
        let conflict = to_mirrors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        stall(api, object, ctx, "TagConflict", &conflict).await?;
        return Ok(ControlFlow::Break(Settled::Stalled(
            Action::requeue(every),
            "conflict",
        )));
    }
    let earned = index::rank(object) == Rank::Earned;
    if !lost.is_empty() {
        let conflict = lost
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if earned || !takeable {
            stall(api, object, ctx, "TagConflict", &conflict).await?;
            return Ok(ControlFlow::Break(Settled::Stalled(
                Action::requeue(every),
                "conflict",
            )));
        }
        // The owner was refused, or earned its tags but is younger: earning the claim takes
        // them.
        let settled = earn_claim(api, namespace, object, repository, ctx, &conflict).await?;
        return Ok(ControlFlow::Break(settled));
    }

    let gathered = async {
        let (engine, credentials) = ctx.engine_for(namespace, object).await?;
        let mut inputs = ctx.inputs_for(namespace, object).await?;
        inputs.artifacts = ctx.artifacts_for(namespace, object)?;
        let me = ObjectKey::of(object);
        inputs.earlier = ctx.index.read(|index| {
            earlier(object, |repository, tag| {
                index.claimed_by_another(repository, tag, &me)
            })
        });
        // Another object claims a tag too: this one keeps it only by proving it may write,
        // even when nothing needs writing.
        inputs.prove_push = contested && !earned;
        Ok::<_, InputError>((engine, credentials, inputs))
    }
    .await;
    match gathered {
        Ok(gathered) => Ok(ControlFlow::Continue(gathered)),
        Err(e) if e.is_permanent() => {
            let access = write_access(object, AccessResult::Unable);
            let message = e.to_string();
            stall_with(api, object, ctx, "InputUnavailable", &message, Some(access)).await?;
            Ok(ControlFlow::Break(Settled::Stalled(
                Action::requeue(every),
                "input",
            )))
        }
        Err(e) => {
            retrying(api, object, ctx, "InputUnavailable", &e.to_string()).await?;
            Err(e.into())
        }
    }
}

/// A claimant that has not earned its tags and does not own them proves write access (an
/// upload session opened and cancelled, nothing else written). Granted, the claim is earned
/// and the index hands it the tags if it outranks their owner; refused, it ranks behind every
/// claimant that may write, and is retried on the backoff of refused credentials.
async fn earn_claim(
    api: &Api<Watched>,
    namespace: &str,
    object: &GardenArtifact,
    repository: &Repository,
    ctx: &Context,
    conflict: &str,
) -> Result<Settled, Error> {
    let every = interval(object);
    let conflicted = || Settled::Stalled(Action::requeue(every), "conflict");
    let (engine, credentials) = match ctx.engine_for(namespace, object).await {
        Ok(found) => found,
        Err(e) if e.is_permanent() => {
            let message = format!("{conflict}; {e}");
            stall(api, object, ctx, "TagConflict", &message).await?;
            return Ok(conflicted());
        }
        Err(e) => {
            retrying(api, object, ctx, "InputUnavailable", &e.to_string()).await?;
            return Err(e.into());
        }
    };
    match engine.probe(repository, Mode::Apply).await {
        Ok(_) => {
            let access = write_access(object, AccessResult::Granted);
            stall_with(api, object, ctx, "TagConflict", conflict, Some(access)).await?;
            Ok(conflicted())
        }
        Err(e) if refusal(&e).is_some() => {
            let (reason, refused) = refusal(&e).expect("a refusal");
            let who = match &credentials {
                Credentials::Anonymous => "anonymous access".to_string(),
                secret => format!("the credentials of {secret}"),
            };
            let message =
                format!("{conflict}, and this object may not take it: {refused} {who}: {e}");
            let access = write_access(object, AccessResult::Denied);
            stall_with(api, object, ctx, reason, &message, Some(access)).await?;
            Ok(Settled::Refused(
                Basis {
                    generation: object.metadata.generation,
                    credentials: credentials.version(),
                },
                e.class().label(),
            ))
        }
        Err(e) => {
            retrying(api, object, ctx, "RegistryError", &e.to_string()).await?;
            Err(e.into())
        }
    }
}

/// What the registry answered to this object's credentials, for the repository its spec
/// names now.
fn write_access(object: &GardenArtifact, result: AccessResult) -> WriteAccess {
    WriteAccess {
        repository: repository_identity(&object.spec.repository),
        result,
    }
}

/// What the engine's round comes to: events and status.
async fn conclude(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    credentials: &Credentials,
    result: Result<Report, EngineError>,
) -> Result<Settled, Error> {
    let every = interval(object);
    match result {
        Ok(report) => {
            events::publish_changes(object, ctx, &report).await;
            events::publish_dropped(object, ctx, &report).await;
            // A write the registry accepted (or the probe of one) earns the claim.
            let access =
                (!report.plan.is_empty()).then(|| write_access(object, AccessResult::Granted));
            write_status_with(api, object, ctx, &Observation::Converged(&report), access).await?;
            Ok(Settled::Done(Action::requeue(every)))
        }
        Err(e) if refusal(&e).is_some() => {
            let (reason, message) = refusal(&e).expect("a refusal");
            let message = match credentials {
                Credentials::Anonymous => format!("{message} anonymous access: {e}"),
                secret => format!("{message} the credentials of {secret}: {e}"),
            };
            // Refused, it does not keep its tags from an object the registry lets write.
            let access = write_access(object, AccessResult::Denied);
            stall_with(api, object, ctx, reason, &message, Some(access)).await?;
            Ok(Settled::Refused(
                Basis {
                    generation: object.metadata.generation,
                    credentials: credentials.version(),
                },
                e.class().label(),
            ))
        }
        Err(e) if e.is_permanent() => {
            stall(api, object, ctx, permanent_reason(&e), &e.to_string()).await?;
            Ok(Settled::Stalled(Action::requeue(every), e.class().label()))
        }
        Err(e) => {
            retrying(api, object, ctx, "RegistryError", &e.to_string()).await?;
            Err(e.into())
        }
    }
}

/// The condition reason, and the start of its message, when the registry refused the
/// credentials (or their absence).
fn refusal(error: &EngineError) -> Option<(&'static str, &'static str)> {
    match error.class() {
        ErrorClass::NeedsPerson(NeedsPerson::Unauthorized) => {
            Some(("Unauthorized", "the registry refused"))
        }
        ErrorClass::NeedsPerson(NeedsPerson::Forbidden) => {
            Some(("Forbidden", "the registry denies this to"))
        }
        _ => None,
    }
}

/// The condition reason of a failure no retry fixes, naming whom to ask: the operator (its URL
/// policy), the source (a URL or file that cannot be had as specified), or the registry.
fn permanent_reason(error: &EngineError) -> &'static str {
    use crate::sources::FetchError;
    match error {
        EngineError::Fetch {
            error: FetchError::NotAllowed(_),
            ..
        } => "SourceNotAllowed",
        EngineError::Fetch { .. } | EngineError::Source { .. } => "SourceUnusable",
        EngineError::Registry(_) => "RegistryRefused",
    }
}

async fn stall(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    stall_with(api, object, ctx, reason, message, None).await
}

/// A stall, and what it showed of the object's access to its repository.
async fn stall_with(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    reason: &str,
    message: &str,
    access: Option<WriteAccess>,
) -> Result<(), Error> {
    let observation = Observation::Stalled { reason, message };
    let changed = write_status_with(api, object, ctx, &observation, access).await?;
    events::failure(ctx, object, Failure::Stalled, changed, reason, message).await;
    Ok(())
}

async fn retrying(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let changed =
        write_status(api, object, ctx, &Observation::Retrying { reason, message }).await?;
    events::failure(ctx, object, Failure::Retrying, changed, reason, message).await;
    Ok(())
}

pub(super) async fn write_status(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    observation: &Observation<'_>,
) -> Result<bool, Error> {
    write_status_with(api, object, ctx, observation, None).await
}

/// The status for `observation`, and `access` when the round learnt what the registry lets
/// these credentials do.
async fn write_status_with(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    observation: &Observation<'_>,
    access: Option<WriteAccess>,
) -> Result<bool, Error> {
    let mut next: GardenArtifactStatus = next_status(
        object.status.as_ref(),
        object.metadata.generation,
        observation,
        &now(),
    );
    if access.is_some() {
        next.write_access = access;
    }
    let key = super::watches::key(object);
    if object.status.as_ref() == Some(&next) {
        ctx.metrics.object_condition(&key, standing(&next));
        return Ok(false);
    }
    let patch = json!({ "apiVersion": API_VERSION, "kind": KIND, "status": next });
    let written = api
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Status)?;
    ctx.metrics.status_written();
    ctx.metrics.object_condition(&key, standing(&next));
    match written.0 {
        Ok(_) => Ok(true),
        // The object on the server no longer parses, though the cache's copy did (written
        // by a newer CRD version while the watch still served the older one, which prunes
        // what it does not know).
        Err(invalid) => Err(Error::Unreadable(Box::new(invalid))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> EngineError {
        EngineError::Registry(crate::registry::Error::Status {
            method: "HEAD".into(),
            url: "http://registry.example.com/v2/a/manifests/v1".into(),
            status,
            code: None,
            message: None,
        })
    }

    #[test]
    fn only_refused_credentials_are_refusals() {
        assert_eq!(refusal(&answered(401)).map(|r| r.0), Some("Unauthorized"));
        assert_eq!(refusal(&answered(403)).map(|r| r.0), Some("Forbidden"));
        for other in [404, 400, 409, 503] {
            assert_eq!(refusal(&answered(other)), None, "{other}");
        }
    }

    #[test]
    fn a_url_the_policy_refuses_is_not_the_registrys_refusal() {
        use crate::sources::FetchError;
        let field = crate::intent::FieldPath::root("spec.source.files[0].url");
        let fetch = |error| EngineError::Fetch {
            field: field.clone(),
            error,
        };
        let not_allowed = fetch(FetchError::NotAllowed("host h is not allowed".into()));
        assert!(not_allowed.is_permanent());
        assert_eq!(permanent_reason(&not_allowed), "SourceNotAllowed");
        assert_eq!(refusal(&not_allowed), None);
        assert_eq!(
            permanent_reason(&fetch(FetchError::Refused("no host".into()))),
            "SourceUnusable"
        );
        assert_eq!(permanent_reason(&answered(404)), "RegistryRefused");
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
