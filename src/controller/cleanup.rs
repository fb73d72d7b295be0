//! Deletion with `deletionPolicy: Delete`: the tags this object owns, and its referrer link,
//! removed from the registry before the finalizer goes.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::apply::write_status;
use super::context::{Context, InputError};
use super::events::publish;
use super::reconcile::Error;
use super::status::{CLEANUP_FAILED, Observation, READY};
use super::watched::Watched;
use super::watches;
use crate::api::{DeletionPolicy, GardenArtifact, GardenArtifactStatus};
use crate::engine::{Mode, Retirement, TagRemoval};
use crate::oci::Repository;

/// With `deletionPolicy: Delete`, removes the tags this object owns and that still point at
/// its artefact; a tag another object owns, or that someone moved elsewhere, stays.
pub async fn cleanup(
    api: &Api<Watched>,
    namespace: &str,
    object: &GardenArtifact,
    ctx: &Context,
) -> Result<Action, Error> {
    if object.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let Some(status) = &object.status else {
        return Ok(Action::await_change());
    };
    let Some(digest) = &status.digest else {
        return Ok(Action::await_change());
    };
    // Where the tags were written: the spec may name another repository since.
    let written_in = status
        .repository
        .as_deref()
        .unwrap_or(&object.spec.repository);
    let Ok(repository) = Repository::parse(written_in) else {
        return Ok(Action::await_change());
    };
    // Where the namespace may not write, deletion does not write either.
    if let Err(message) = ctx.policy.check(namespace, "spec.repository", &repository) {
        let note = format!("{message}: the registry is left as it is (deletionPolicy: Delete)");
        publish(
            ctx,
            object,
            EventType::Warning,
            "CleanupSkipped",
            "Delete",
            &note,
        )
        .await;
        return Ok(Action::await_change());
    }
    let lost: Vec<String> = ctx
        .index
        .read(|index| index.lost_tags(object))
        .into_iter()
        .map(|c| c.tag)
        .collect();
    let engine = match ctx.engine_for(namespace, object).await {
        Ok((engine, _)) => engine,
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
        // A cache still filling passes on its own; anything else needs a person to see it.
        Err(e) if !e.is_permanent() => return Err(e.into()),
        Err(e) => {
            let left = left_behind(&repository, &owned_by(status, &lost), status, digest);
            return Err(failed(api, object, ctx, left, e.into()).await);
        }
    };
    let owned = owned_by(status, &lost);
    if owned.is_empty() && status.subject.is_none() {
        return Ok(Action::await_change());
    }
    let left = left_behind(&repository, &owned, status, digest);
    mark_deleting(api, object, ctx, &left).await;
    let retirement = Retirement {
        repository: &repository,
        digest,
        tags: &owned,
        subject: status.subject.as_ref().map(|s| s.digest.as_str()),
        untagged: status.tags.is_empty(),
    };
    let retired = match engine.retire(retirement, Mode::Apply).await {
        Ok(retired) => retired,
        Err(e) => return Err(failed(api, object, ctx, left, e.into()).await),
    };
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

/// The tags of `status` this object owns (those it lost to an older claimant are not).
fn owned_by(status: &GardenArtifactStatus, lost: &[String]) -> Vec<String> {
    status
        .tags
        .iter()
        .map(|t| t.name.clone())
        .filter(|t| !lost.contains(t))
        .collect()
}

/// What a cleanup that fails leaves in the registry: `tags v1, v2 of REPO`, and the referrer.
fn left_behind(
    repository: &Repository,
    owned: &[String],
    status: &GardenArtifactStatus,
    digest: &str,
) -> String {
    let mut left = Vec::new();
    if !owned.is_empty() {
        left.push(format!("tags {} of {repository}", owned.join(", ")));
    }
    if status.subject.is_some() {
        left.push(format!("referrer {repository}@{digest}"));
    }
    left.join(" and ")
}

/// While tags are being removed, the status no longer says Ready=True. Once: a failed cleanup
/// keeps saying CleanupFailed while it is retried, rather than flip back and forth.
async fn mark_deleting(api: &Api<Watched>, object: &GardenArtifact, ctx: &Context, left: &str) {
    let failing = object
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == READY && c.reason == CLEANUP_FAILED);
    if failing {
        return;
    }
    let message = format!("removing {left} (deletionPolicy: Delete)");
    let deleting = Observation::Retrying {
        reason: "Deleting",
        message: &message,
    };
    if let Err(e) = write_status(api, object, ctx, &deleting).await {
        tracing::warn!(object = %watches::key(object), error = %e, "could not mark the object as being deleted");
    }
}

/// A cleanup that failed, told everywhere it can be: the status (Ready=False, CleanupFailed,
/// the registry's answer), a Warning event, and the log, since a namespace being deleted
/// refuses events. The error goes back to kube, which retries on the object's backoff; the
/// finalizer stays until the cleanup succeeds.
async fn failed(
    api: &Api<Watched>,
    object: &GardenArtifact,
    ctx: &Context,
    left: String,
    error: Error,
) -> Error {
    let error = Error::Cleanup {
        left,
        source: Box::new(error),
    };
    let message = error.to_string();
    let observation = Observation::Retrying {
        reason: CLEANUP_FAILED,
        message: &message,
    };
    if let Err(e) = write_status(api, object, ctx, &observation).await {
        tracing::warn!(object = %watches::key(object), error = %e, "could not write the status of a failed cleanup");
    }
    tracing::warn!(object = %watches::key(object), "cleanup failed: {message}");
    publish(
        ctx,
        object,
        EventType::Warning,
        CLEANUP_FAILED,
        "Delete",
        &message,
    )
    .await;
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake_api::{self, FakeApi};
    use crate::controller::test_support::{
        context, context_with_unfilled_caches, deleted_with_credentials, events, object,
    };
    use serde_json::json;

    /// An object whose namespace may not write to its repository deletes nothing there on
    /// deletion (`registry.example.com` would not even resolve: any request fails the round),
    /// and says so.
    #[tokio::test]
    async fn deletion_does_not_write_where_the_namespace_may_not() {
        use crate::controller::policy::{NamespacePolicy, Unlisted};
        let api = FakeApi::start(|request| match request.method.as_str() {
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let policy = NamespacePolicy::new(
            ["ns=registry.example.com/allowed".parse().expect("a rule")],
            Unlisted::Allow,
        );
        let ctx = std::sync::Arc::try_unwrap(context(api.client.clone()))
            .ok()
            .expect("the only reference")
            .with_policy(policy);
        let mut object = deleted_with_credentials(false);
        object.spec.credentials = None;

        let watched: Api<Watched> = Api::namespaced(api.client.clone(), "ns");
        let action = cleanup(&watched, "ns", &object, &ctx).await;

        assert_eq!(action.expect("the round succeeds"), Action::await_change());
        let warnings = events(&api);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (kind, reason, note) = &warnings[0];
        assert_eq!(
            (kind.as_str(), reason.as_str()),
            ("Warning", "CleanupSkipped")
        );
        assert!(
            note.contains("namespace ns may not write to registry.example.com/e2e/a")
                && note.contains("left as it is"),
            "{note}"
        );
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

            let action = cleanup(
                &Api::namespaced(api.client.clone(), "ns"),
                "ns",
                &object,
                &ctx,
            )
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

    /// The registry refuses the removal, in a namespace being deleted (events refused): the
    /// status says Ready=False CleanupFailed with the registry's answer and what is left, and
    /// the round fails, so kube retries it on the object's backoff and the finalizer stays.
    /// A round after that keeps CleanupFailed (no flip to Deleting and back).
    #[tokio::test]
    async fn a_failed_cleanup_says_so_in_the_status_and_fails_the_round() {
        let api = FakeApi::start(|request| match request.method.as_str() {
            _ if request.path.starts_with("/v2/") => (
                403,
                r#"{"errors":[{"code":"DENIED","message":"deletes are not allowed here"}]}"#
                    .to_string(),
            ),
            "PATCH" if request.path.contains("/namespaces/ns/gardenartifacts/a/status?") => {
                let echo = deleted_from(&format!("{}/e2e/a", "127.0.0.1:1"), json!([]));
                (200, serde_json::to_string(&echo).expect("JSON"))
            }
            "POST" if request.path.contains("/events") => fake_api::status(
                403,
                "Forbidden",
                "events is forbidden: unable to create new content in namespace ns because it is being terminated",
            ),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let ctx = context(api.client.clone());
        let repository = format!("{}/e2e/a", api.addr);
        let watched = Api::namespaced(api.client.clone(), "ns");
        let ready = json!([{ "type": "Ready", "status": "True", "reason": "Converged",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z" }]);
        let object = deleted_from(&repository, ready);

        let result = cleanup(&watched, "ns", &object, &ctx).await;

        let error = result.expect_err("the round fails");
        assert!(matches!(error, Error::Cleanup { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("tags v1, latest of {repository} not removed yet"))
                && message.contains("403"),
            "{message}"
        );
        let patches: Vec<String> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.body)
            .collect();
        assert_eq!(patches.len(), 2, "{patches:?}");
        assert!(patches[0].contains("\"Deleting\""), "{}", patches[0]);
        let failed: serde_json::Value = serde_json::from_str(&patches[1]).expect("JSON");
        let conditions = failed["status"]["conditions"]
            .as_array()
            .expect("conditions");
        let ready = conditions
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "CleanupFailed");
        assert_eq!(ready["message"], message.as_str());
        let warnings = events(&api);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            (warnings[0].0.as_str(), warnings[0].1.as_str()),
            ("Warning", "CleanupFailed")
        );

        let mut again = object.clone();
        again.status = serde_json::from_value(failed["status"].clone()).expect("a status");
        let result = cleanup(&watched, "ns", &again, &ctx).await;
        assert!(matches!(result, Err(Error::Cleanup { .. })), "{result:?}");
        let patches = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .count();
        assert_eq!(patches, 2, "an unchanged failure writes nothing");
    }

    /// Deleted (deletionPolicy Delete, anonymous) after writing v1 and latest in `repository`.
    fn deleted_from(repository: &str, conditions: serde_json::Value) -> GardenArtifact {
        let digest = format!("sha256:{}", "1".repeat(64));
        let mut object = object(
            json!({
                "repository": repository,
                "tags": ["v1", "latest"],
                "source": { "files": [{ "name": "a.txt", "content": "a", "mediaType": "text/plain" }] },
                "deletionPolicy": "Delete",
            }),
            json!({
                "observedGeneration": 1,
                "digest": digest,
                "repository": repository,
                "tags": [{ "name": "v1", "digest": digest }, { "name": "latest", "digest": digest }],
                "conditions": conditions,
            }),
        );
        object.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        object
    }

    /// Only a missing Secret lets the finalizer go: a Secret the controller cannot know about
    /// yet (its cache of Secrets still listing) is retried.
    #[tokio::test(start_paused = true)]
    async fn cleanup_retries_while_the_secrets_cache_is_not_filled() {
        let api = FakeApi::start(|request| match request.method.as_str() {
            "POST" if request.path.contains("/events") => (201, request.body.clone()),
            _ => fake_api::status(500, "InternalError", "unexpected"),
        })
        .await;
        let (ctx, _listing) = context_with_unfilled_caches(api.client.clone());

        let watched = Api::namespaced(api.client.clone(), "ns");
        let result = cleanup(&watched, "ns", &deleted_with_credentials(false), &ctx).await;

        assert!(
            matches!(result, Err(Error::Input(InputError::Uncached { .. }))),
            "{result:?}"
        );
        assert!(events(&api).is_empty());
    }
}
