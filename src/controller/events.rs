//! Events on GardenArtifacts: what the engine changed, and failures, with the rule of when a
//! failure is worth one.

use std::collections::BTreeMap;

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::context::Context;
use super::watches;
use crate::api::GardenArtifact;
use crate::engine::{Outcome, Report, WrittenTag};

/// How a failure shows in the status: stalled until a person acts, or retried on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Stalled,
    Retrying,
}

/// Whether a failure gets a Warning event, given whether this round changed the status. A
/// stall is told once, when it starts or changes, not at each resync that finds it again; a
/// retried failure at each round.
pub fn warns(failure: Failure, status_changed: bool) -> bool {
    match failure {
        Failure::Stalled => status_changed,
        Failure::Retrying => true,
    }
}

/// A Warning for a failure of reconciling, when [`warns`] says so.
pub async fn failure(
    ctx: &Context,
    object: &impl Resource<DynamicType = ()>,
    failure: Failure,
    status_changed: bool,
    reason: &str,
    message: &str,
) {
    if warns(failure, status_changed) {
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
}

/// Events for what the engine wrote: a push, a retag, or a repaired drift (a tag someone moved
/// or deleted after this object had set it).
pub async fn publish_changes(object: &GardenArtifact, ctx: &Context, report: &Report) {
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
    let pushed = !report.plan.blobs.is_empty() || report.outcome == Outcome::Created;
    // A tag set for the first time with a push is named in the push's event: one event per new
    // object, not two (at 10,000 new objects the API server has enough to do).
    let is_new_tag = |write: &&crate::engine::plan::TagWrite| {
        write.previous.is_none() && !(was_converged_here && had_tag(&write.tag))
    };
    if pushed {
        let new_tags: Vec<&str> = report
            .plan
            .tags
            .iter()
            .filter(is_new_tag)
            .map(|write| write.tag.as_str())
            .collect();
        let tags = match new_tags.as_slice() {
            [] => String::new(),
            tags => format!("; tag(s) {} set", tags.join(", ")),
        };
        let note = format!(
            "pushed {} to {} ({} blob(s) uploaded){tags}",
            report.digest,
            report.repository,
            report.plan.blobs.len()
        );
        publish(ctx, object, EventType::Normal, "Pushed", "Push", &note).await;
    }
    // One event per reason and round: tags written together are named together.
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for write in report
        .plan
        .tags
        .iter()
        .filter(|w| !(pushed && is_new_tag(w)))
    {
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

/// Events for the earlier tags the object no longer wants: removed, left because someone
/// moved them, or released.
pub async fn publish_dropped(object: &GardenArtifact, ctx: &Context, report: &Report) {
    let dropped = &report.dropped;
    if !dropped.removed.is_empty() {
        let tags = by_repository(&dropped.removed);
        let note = format!("deleted tags {tags}, no longer wanted (deletionPolicy: Delete)");
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
    if !dropped.moved.is_empty() {
        let tags = dropped
            .moved
            .iter()
            .map(|(written, now)| {
                format!(
                    "{}:{} (points at {now}, not {})",
                    written.repository, written.tag, written.digest
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!("tags {tags} no longer wanted, moved by someone else: left in place");
        publish(ctx, object, EventType::Warning, "TagLeft", "Delete", &note).await;
    }
    if !dropped.released.is_empty() {
        let tags = by_repository(&dropped.released);
        let note = format!(
            "released tags {tags}: no longer wanted, left in the registry (deletionPolicy: Retain); listed in status.releasedTags"
        );
        publish(
            ctx,
            object,
            EventType::Normal,
            "TagReleased",
            "Release",
            &note,
        )
        .await;
    }
}

/// `v1, v2 of REPO; v3 of OTHER`.
fn by_repository(tags: &[WrittenTag]) -> String {
    let mut grouped: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for written in tags {
        grouped
            .entry(written.repository.to_string())
            .or_default()
            .push(written.tag.as_str());
    }
    grouped
        .into_iter()
        .map(|(repository, tags)| format!("{} of {repository}", tags.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn publish(
    ctx: &Context,
    object: &impl Resource<DynamicType = ()>,
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
        // Refused in a namespace being deleted, for one: what it said is then in the log only.
        tracing::warn!(object = %watches::key(object), error = %e, reason, note, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_warns_once_and_a_retried_failure_each_round() {
        assert!(warns(Failure::Stalled, true));
        assert!(!warns(Failure::Stalled, false));
        assert!(warns(Failure::Retrying, true));
        assert!(warns(Failure::Retrying, false));
    }
}
