//! Deletion with `deletionPolicy: Delete`: the tags this object owns, and its referrer link,
//! removed from the registry before the finalizer goes.

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::context::{Context, InputError};
use super::events::publish;
use super::reconcile::Error;
use super::watches;
use crate::api::{DeletionPolicy, GardenArtifact};
use crate::engine::{Mode, Retirement, TagRemoval};
use crate::oci::Repository;

/// With `deletionPolicy: Delete`, removes the tags this object owns and that still point at
/// its artefact; a tag another object owns, or that someone moved elsewhere, stays.
pub async fn cleanup(
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
    let Ok(repository) = Repository::parse(&object.spec.repository) else {
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
    let lost: Vec<String> = watches::lost_tags(&ctx.valid_objects(), object)
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
    use crate::controller::test_support::{
        context, context_with_unfilled_caches, deleted_with_credentials, events,
    };

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

        let action = cleanup("ns", &object, &ctx).await;

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

        let result = cleanup("ns", &deleted_with_credentials(false), &ctx).await;

        assert!(
            matches!(result, Err(Error::Input(InputError::Uncached { .. }))),
            "{result:?}"
        );
        assert!(events(&api).is_empty());
    }
}
