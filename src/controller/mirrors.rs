//! `GardenMirror`s reconciled: each round lists the source, copies the selected tags the
//! target lacks (the engine's `mirror_repository`), prunes when asked, and writes the status
//! only when it changed, so a converged resync costs the listing and a HEAD per tag on each
//! side and no API write.
//!
//! Ownership: a tag a GardenArtifact claims in the target is never written by a mirror (it is
//! reported among the failed tags, as a conflict); the tags a mirror wrote are listed in its
//! status (`written`), and only those may be pruned. Deleting a mirror leaves the target as
//! it is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::apply::now;
use super::context::Context;
use super::events::publish;
use super::index::ObjectKey;
use super::mirror_claims;
use super::reconcile::FIELD_MANAGER;
use super::status::{READY, RECONCILING, STALLED, set_condition};
use crate::api::mirror::{FailedTag, MIRROR_KIND};
use crate::api::validate::validate_mirror;
use crate::api::{API_VERSION, ConditionStatus, GardenMirror, GardenMirrorStatus, TagStatus};
use crate::engine::{EngineError, MirrorInputs, MirrorReport, Mode, TagResult};
use crate::intent::MirrorIntent;
use crate::oci::repository_identity;

/// How often a mirror without `spec.interval` lists its source again.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Failed tags named in the status; the counts hold all of them.
pub const MAX_FAILED_TAGS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
}

/// What a round came to.
enum Observation<'a> {
    Mirrored(&'a MirrorReport, &'a BTreeMap<String, String>),
    Retrying { reason: &'a str, message: String },
    Stalled { reason: &'a str, message: String },
    Suspended,
}

/// Runs the GardenMirror controller on the changes of `mirrors` (the watch that fills
/// `cache`) until `shutdown` resolves and its rounds are done.
pub async fn run(
    mirrors: impl futures::Stream<Item = Result<GardenMirror, watcher::Error>> + Send + 'static,
    cache: Store<GardenMirror>,
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::for_stream(mirrors, cache)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(mirror = %object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "mirror round"),
            }
        })
        .await;
}

pub async fn reconcile(mirror: Arc<GardenMirror>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = mirror.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<GardenMirror> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = format!("{MIRROR_KIND}/{namespace}/{}", mirror.name_any());
    if mirror.spec.suspend {
        write_status(&api, &mirror, &Observation::Suspended).await?;
        return Ok(Action::await_change());
    }
    let intent = match validate_mirror(&mirror.spec) {
        Ok(intent) => intent,
        Err(invalid) => {
            let message = invalid.to_string();
            settle(
                &api,
                &mirror,
                &ctx,
                Observation::Stalled {
                    reason: "InvalidSpec",
                    message,
                },
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    // Before any request: the operator's policy decides where this namespace may write.
    if let Err(message) = ctx
        .policy
        .check(&namespace, "spec.repository", &intent.target)
    {
        let observation = Observation::Stalled {
            reason: "PolicyViolation",
            message,
        };
        settle(&api, &mirror, &ctx, observation).await?;
        return Ok(Action::await_change());
    }
    let mut secrets = Vec::new();
    if let Some(credentials) = &mirror.spec.credentials {
        secrets.push((
            "spec.credentials.secretRef",
            credentials.secret_ref.name.as_str(),
        ));
    }
    if let Some(credentials) = &mirror.spec.source.credentials {
        secrets.push((
            "spec.source.credentials.secretRef",
            credentials.secret_ref.name.as_str(),
        ));
    }
    let engine = match ctx.engine_with_secrets(&namespace, &secrets).await {
        Ok((engine, _)) => engine,
        Err(e) => {
            let permanent = e.is_permanent();
            let message = e.to_string();
            let observation = if permanent {
                Observation::Stalled {
                    reason: "CredentialsUnusable",
                    message,
                }
            } else {
                Observation::Retrying {
                    reason: "InputsPending",
                    message,
                }
            };
            settle(&api, &mirror, &ctx, observation).await?;
            return Ok(Action::requeue(ctx.retries.failed(&key, None)));
        }
    };
    let written_before = written_before(&mirror, &intent);
    let inputs = MirrorInputs {
        owned_elsewhere: owned_elsewhere(&ctx, &mirror, &intent, &written_before).await,
        written_before: written_before.clone(),
    };
    let interval = intent.interval.unwrap_or(DEFAULT_INTERVAL);
    match engine
        .mirror_repository(&intent, &inputs, Mode::Apply, &|_| {})
        .await
    {
        Ok(report) => {
            let changed = settle(
                &api,
                &mirror,
                &ctx,
                Observation::Mirrored(&report, &written_before),
            )
            .await?;
            if changed && report.copied() > 0 {
                let note = format!(
                    "copied {} of {} selected tags from {} to {}",
                    report.copied(),
                    report.tags.len(),
                    intent.source,
                    intent.target
                );
                publish(
                    &ctx,
                    mirror.as_ref(),
                    EventType::Normal,
                    "Mirrored",
                    "Mirror",
                    &note,
                )
                .await;
            }
            let transient = report.tags.iter().any(
                |(_, r)| matches!(r, TagResult::Failed { class, .. } if !class.needs_person()),
            );
            if transient {
                return Ok(Action::requeue(ctx.retries.failed(&key, None)));
            }
            ctx.retries.succeeded(&key);
            Ok(Action::requeue(interval))
        }
        Err(e) => {
            let observation = engine_failure(&e);
            settle(&api, &mirror, &ctx, observation).await?;
            Ok(Action::requeue(ctx.retries.failed(&key, None)))
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

pub fn error_policy(mirror: Arc<GardenMirror>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{MIRROR_KIND}/{}/{}",
        mirror.namespace().unwrap_or_default(),
        mirror.name_any()
    );
    let wait = ctx.retries.failed(&key, None);
    tracing::warn!(mirror = %key, %error, retry_in = ?wait, "mirror round failed, retrying");
    Action::requeue(wait)
}

/// The target tags the mirror wrote in earlier rounds, as its status lists them; none when the
/// target has changed since (those tags are in another repository, not the mirror's now).
fn written_before(mirror: &GardenMirror, intent: &MirrorIntent) -> BTreeMap<String, String> {
    let Some(status) = &mirror.status else {
        return BTreeMap::new();
    };
    if status.repository.as_deref() != Some(intent.target.identity().as_str()) {
        return BTreeMap::new();
    }
    status
        .written
        .iter()
        .map(|t| (t.name.clone(), t.digest.clone()))
        .collect()
}

/// The tags of the mirror's target that are not its to write, with their owners: those
/// GardenArtifacts claim (from the claims index), unless this mirror wrote them first, and
/// those an older mirror wrote.
async fn owned_elsewhere(
    ctx: &Context,
    mirror: &GardenMirror,
    intent: &MirrorIntent,
    written_before: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    ctx.index.wait_until_ready().await;
    ctx.mirrors.wait_until_listed().await;
    let target = intent.target.identity();
    let me = ObjectKey::of(mirror);
    let mut owned: BTreeMap<String, String> = ctx.index.read(|index| {
        index
            .claims_in(&target)
            .filter(|(tag, _)| !written_before.contains_key(*tag))
            .map(|(tag, owner)| (tag.to_string(), format!("GardenArtifact {owner}")))
            .collect()
    });
    for (tag, owner) in mirror_claims::owners(&ctx.mirrors.state(), &target) {
        if owner != me {
            owned.insert(tag, format!("GardenMirror {owner}"));
        }
    }
    owned
}

/// Writes the status when it changed, and a Warning event when the mirror turns unready.
async fn settle(
    api: &Api<GardenMirror>,
    mirror: &GardenMirror,
    ctx: &Context,
    observation: Observation<'_>,
) -> Result<bool, Error> {
    let was_ready = ready(mirror.status.as_ref());
    let changed = write_status(api, mirror, &observation).await?;
    let warning = match &observation {
        Observation::Stalled { reason, message } | Observation::Retrying { reason, message } => {
            Some((*reason, message.clone()))
        }
        Observation::Mirrored(report, _) if report.failed() > 0 => Some((
            "TagsFailed",
            format!(
                "{} of {} selected tags not mirrored",
                report.failed(),
                report.tags.len()
            ),
        )),
        _ => None,
    };
    if changed
        && let Some((reason, note)) = warning
        && (was_ready || mirror.status.is_none() || reason != "TagsFailed")
    {
        publish(ctx, mirror, EventType::Warning, reason, "Mirror", &note).await;
    }
    Ok(changed)
}

fn ready(status: Option<&GardenMirrorStatus>) -> bool {
    status
        .into_iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == READY && c.status == ConditionStatus::True)
}

async fn write_status(
    api: &Api<GardenMirror>,
    mirror: &GardenMirror,
    observation: &Observation<'_>,
) -> Result<bool, Error> {
    let next = next_status(
        mirror.status.as_ref(),
        mirror.meta().generation,
        mirror.spec.repository.as_str(),
        observation,
        &now(),
    );
    if mirror.status.as_ref() == Some(&next) {
        return Ok(false);
    }
    let patch = json!({ "apiVersion": API_VERSION, "kind": MIRROR_KIND, "status": next });
    api.patch_status(
        &mirror.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(true)
}

/// Pure: the next status from the current one and what a round found. A round that found
/// everything in place yields the current status, so it is not written.
fn next_status(
    current: Option<&GardenMirrorStatus>,
    generation: Option<i64>,
    target: &str,
    observation: &Observation<'_>,
    now: &str,
) -> GardenMirrorStatus {
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
        Observation::Mirrored(report, before) => {
            let failed: Vec<FailedTag> = report
                .tags
                .iter()
                .filter_map(|(tag, result)| {
                    let reason = match result {
                        TagResult::Conflict { owner } => format!("owned by {owner}"),
                        TagResult::Failed { message, .. } => message.clone(),
                        TagResult::Copied { .. } | TagResult::Unchanged { .. } => return None,
                    };
                    Some(FailedTag {
                        tag: tag.to_string(),
                        reason,
                    })
                })
                .take(MAX_FAILED_TAGS)
                .collect();
            let (copied, failed_count) = (report.copied(), report.failed());
            if failed_count == 0 {
                let message = format!("{} tag(s) mirrored", report.tags.len());
                set(READY, True, "Converged", &message);
                set(RECONCILING, False, "Converged", "");
                set(STALLED, False, "Converged", "");
            } else {
                let message = format!(
                    "{failed_count} of {} selected tags not mirrored (first: {}: {})",
                    report.tags.len(),
                    failed[0].tag,
                    failed[0].reason
                );
                set(READY, False, "TagsFailed", &message);
                set(RECONCILING, True, "TagsFailed", &message);
                set(STALLED, False, "TagsFailed", "");
            }
            let counts = (
                report.tags.len() as u32,
                copied as u32,
                report.unchanged() as u32,
                failed_count as u32,
            );
            let changed = copied > 0 || !report.pruned.is_empty() || next.last_sync_time.is_none();
            // A resync that copies nothing keeps the counts of the round that did, so it
            // writes nothing; `unchanged` then means "in place".
            if changed || (next.selected, next.failed) != (counts.0, counts.3) {
                (next.selected, next.copied, next.unchanged, next.failed) = counts;
            }
            next.failed_tags = failed;
            next.repository = Some(repository_identity(target));
            next.written = report
                .written(before)
                .into_iter()
                .map(|(name, digest)| TagStatus { name, digest })
                .collect();
            if changed {
                next.last_sync_time = Some(now.to_string());
            }
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
    use crate::engine::TagRemoval;
    use crate::oci::Tag;

    fn report(results: &[(&str, TagResult)]) -> MirrorReport {
        MirrorReport {
            tags: results
                .iter()
                .map(|(tag, result)| (Tag::parse(tag).unwrap(), result.clone()))
                .collect(),
            pruned: Vec::new(),
        }
    }

    fn copied(digest: &str) -> TagResult {
        TagResult::Copied {
            digest: digest.into(),
        }
    }

    fn unchanged(digest: &str) -> TagResult {
        TagResult::Unchanged {
            digest: digest.into(),
        }
    }

    fn condition<'a>(status: &'a GardenMirrorStatus, type_: &str) -> &'a crate::api::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    const TARGET: &str = "127.0.0.1:5000/mirror/gl";

    #[test]
    fn a_converged_resync_writes_nothing() {
        let none = BTreeMap::new();
        let first_round = report(&[("1", copied("sha256:a")), ("2", copied("sha256:b"))]);
        let first = next_status(
            None,
            Some(1),
            TARGET,
            &Observation::Mirrored(&first_round, &none),
            "t1",
        );
        assert_eq!((first.selected, first.copied, first.failed), (2, 2, 0));
        assert_eq!(condition(&first, READY).status, ConditionStatus::True);
        assert_eq!(first.written.len(), 2);
        let before: BTreeMap<String, String> = first
            .written
            .iter()
            .map(|t| (t.name.clone(), t.digest.clone()))
            .collect();
        let resync = report(&[("1", unchanged("sha256:a")), ("2", unchanged("sha256:b"))]);
        let again = next_status(
            Some(&first),
            Some(1),
            TARGET,
            &Observation::Mirrored(&resync, &before),
            "t2",
        );
        assert_eq!(again, first);
    }

    #[test]
    fn failed_and_conflicting_tags_are_named_and_bounded() {
        let mut results: Vec<(String, TagResult)> = (0..30)
            .map(|i| {
                (
                    format!("t{i}"),
                    TagResult::Failed {
                        class: crate::registry::ErrorClass::Transient,
                        message: "503".into(),
                    },
                )
            })
            .collect();
        results.push((
            "owned".into(),
            TagResult::Conflict {
                owner: "GardenArtifact ns/a".into(),
            },
        ));
        let borrowed: Vec<(&str, TagResult)> = results
            .iter()
            .map(|(t, r)| (t.as_str(), r.clone()))
            .collect();
        let round = report(&borrowed);
        let status = next_status(
            None,
            Some(1),
            TARGET,
            &Observation::Mirrored(&round, &BTreeMap::new()),
            "t1",
        );
        assert_eq!(status.failed, 31);
        assert_eq!(status.failed_tags.len(), MAX_FAILED_TAGS);
        assert_eq!(condition(&status, READY).status, ConditionStatus::False);
        assert_eq!(condition(&status, READY).reason, "TagsFailed");
        assert!(status.written.is_empty());
    }

    #[test]
    fn pruned_tags_leave_the_written_list() {
        let before: BTreeMap<String, String> = [("old".to_string(), "sha256:o".to_string())].into();
        let mut round = report(&[("new", copied("sha256:n"))]);
        round.pruned = vec![("old".into(), TagRemoval::Removed)];
        let status = next_status(
            None,
            Some(1),
            TARGET,
            &Observation::Mirrored(&round, &before),
            "t1",
        );
        let names: Vec<&str> = status.written.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["new"]);
        // Kept as the repository's identity: another spelling of it is the same target.
        assert_eq!(status.repository, Some(repository_identity(TARGET)));
    }
}
