//! Pure: the next status from the current one and what a reconciliation found. Conditions keep
//! their `lastTransitionTime` while their status stays, and a converged resync yields a status
//! equal to the current one, so it is not written.

use crate::api::{
    Condition, ConditionStatus, GardenArtifactStatus, PinnedReference, ReleasedTag, SubjectStatus,
    TagStatus,
};
use crate::engine::{Outcome, Report};
use crate::metrics::ObjectCondition;
use crate::oci::repository_identity;

/// Released tags the status keeps; the oldest go first.
pub const RELEASED_TAGS_KEPT: usize = 32;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// The reason of `Ready=False` while a deletion cannot remove what the object owns.
pub const CLEANUP_FAILED: &str = "CleanupFailed";

/// What one reconciliation came to.
#[derive(Clone, Debug)]
pub enum Observation<'a> {
    Converged(&'a Report),
    /// Will be retried on its own (registry unreachable, 5xx, rate limited).
    Retrying {
        reason: &'a str,
        message: &'a str,
    },
    /// Needs a change of the spec or its inputs (invalid spec, tag conflict, missing Secret).
    Stalled {
        reason: &'a str,
        message: &'a str,
    },
    Suspended,
}

pub fn next_status(
    current: Option<&GardenArtifactStatus>,
    generation: Option<i64>,
    observation: &Observation<'_>,
    now: &str,
) -> GardenArtifactStatus {
    let mut next = current.cloned().unwrap_or_default();
    next.observed_generation = generation;
    let set = |next: &mut GardenArtifactStatus,
               type_: &str,
               status: ConditionStatus,
               reason: &str,
               message: &str| {
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
    use ConditionStatus::{False, True};
    match observation {
        Observation::Converged(report) => {
            let changed = report.outcome != Outcome::Unchanged
                || !report.dropped.removed.is_empty()
                || next.digest.as_deref() != Some(report.digest.as_str())
                || next.last_sync_time.is_none();
            next.repository = Some(report.repository.to_string());
            next.released_tags = released_tags(&next.released_tags, report);
            next.digest = Some(report.digest.clone());
            next.media_type = Some(report.media_type.clone());
            next.size = Some(report.size as i64);
            next.tags = report
                .tags
                .iter()
                .map(|tag| TagStatus {
                    name: tag.clone(),
                    digest: report.digest.clone(),
                })
                .collect();
            next.subject = report.subject.as_ref().map(|(digest, via)| SubjectStatus {
                digest: digest.clone(),
                via: via.map_or_else(|| "pending".to_string(), |v| v.to_string()),
            });
            next.references = report
                .pins
                .iter()
                .map(|pin| PinnedReference {
                    field: pin.field.to_string(),
                    reference: pin.reference.clone(),
                    digest: pin.head.digest.clone(),
                })
                .collect();
            // The last time the registry was brought in line; a resync that finds it in line
            // changes nothing, so it writes nothing.
            if changed {
                next.last_sync_time = Some(now.to_string());
            }
            let message = format!("{} tag(s) at {}", report.tags.len(), report.digest);
            set(&mut next, READY, True, "Converged", &message);
            set(&mut next, RECONCILING, False, "Converged", "");
            set(&mut next, STALLED, False, "Converged", "");
        }
        Observation::Retrying { reason, message } => {
            set(&mut next, READY, False, reason, message);
            set(&mut next, RECONCILING, True, reason, message);
            set(&mut next, STALLED, False, reason, "");
        }
        Observation::Stalled { reason, message } => {
            set(&mut next, READY, False, reason, message);
            set(&mut next, RECONCILING, False, reason, "");
            set(&mut next, STALLED, True, reason, message);
        }
        Observation::Suspended => {
            set(
                &mut next,
                RECONCILING,
                False,
                "Suspended",
                "spec.suspend is true",
            );
        }
    }
    next
}

/// The released tags after `report`: those it released added (newest last), those it wants
/// again taken out, at most [`RELEASED_TAGS_KEPT`].
fn released_tags(current: &[ReleasedTag], report: &Report) -> Vec<ReleasedTag> {
    let wanted = report.repository.identity();
    let newly: Vec<ReleasedTag> = report
        .dropped
        .released
        .iter()
        .map(|written| ReleasedTag {
            repository: written.repository.to_string(),
            name: written.tag.to_string(),
            digest: written.digest.to_string(),
        })
        .collect();
    let same = |a: &ReleasedTag, b: &ReleasedTag| {
        a.name == b.name && repository_identity(&a.repository) == repository_identity(&b.repository)
    };
    let mut next: Vec<ReleasedTag> = current
        .iter()
        .filter(|kept| !newly.iter().any(|new| same(kept, new)))
        .cloned()
        .chain(newly.iter().cloned())
        .filter(|released| {
            repository_identity(&released.repository) != wanted
                || !report.tags.contains(&released.name)
        })
        .collect();
    next.drain(..next.len().saturating_sub(RELEASED_TAGS_KEPT));
    next
}

/// Where a status says its object stands, for the gauge of objects by condition: Stalled over
/// Ready over Reconciling; `None` before any of them is true (not yet reconciled, suspended
/// before its first round).
pub fn standing(status: &GardenArtifactStatus) -> Option<ObjectCondition> {
    let holds = |type_: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
    };
    [
        (STALLED, ObjectCondition::Stalled),
        (READY, ObjectCondition::Ready),
        (RECONCILING, ObjectCondition::Reconciling),
    ]
    .into_iter()
    .find_map(|(type_, condition)| holds(type_).then_some(condition))
}

/// Sets condition `type_`, keeping its transition time while its status stays: the one
/// condition writer of every kind's status (artefacts, mirrors, components).
pub(super) fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) {
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time,
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Plan;
    use crate::oci::Repository;

    fn report(outcome: Outcome, digest: &str) -> Report {
        Report {
            repository: Repository::parse("127.0.0.1:5000/a").unwrap(),
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 100,
            tags: vec!["v1".into()],
            outcome,
            plan: Plan {
                outcome,
                ..Plan::unchanged()
            },
            subject: None,
            pins: vec![],
            mirrored: Default::default(),
            dropped: Default::default(),
        }
    }

    fn released(repository: &str, tags: &[&str]) -> crate::engine::Dropped {
        let digest = format!("sha256:{}", "1".repeat(64));
        crate::engine::Dropped {
            released: tags
                .iter()
                .map(|tag| crate::engine::WrittenTag {
                    repository: Repository::parse(repository).unwrap(),
                    tag: crate::oci::Tag::parse(tag).unwrap(),
                    digest: crate::oci::Digest::parse(&digest).unwrap(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Released tags are listed (newest last, bounded), leave the list when wanted again,
    /// and a resync that releases nothing keeps the list as it is (no write).
    #[test]
    fn released_tags_are_listed_until_wanted_again() {
        let mut dropping = report(Outcome::Unchanged, "sha256:a");
        dropping.dropped = released("127.0.0.1:5000/old", &["v1", "v2"]);
        let first = next_status(None, Some(2), &Observation::Converged(&dropping), "t1");
        assert_eq!(first.repository.as_deref(), Some("127.0.0.1:5000/a"));
        let names: Vec<&str> = first
            .released_tags
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["v1", "v2"]);
        assert_eq!(first.released_tags[0].repository, "127.0.0.1:5000/old");

        let resync = report(Outcome::Unchanged, "sha256:a");
        let again = next_status(
            Some(&first),
            Some(2),
            &Observation::Converged(&resync),
            "t2",
        );
        assert_eq!(again, first, "nothing released, nothing changed");

        // `v1` of the old repository (another spelling of it) is wanted again.
        let mut back = report(Outcome::Updated, "sha256:a");
        back.repository = Repository::parse("localhost:5000/old").unwrap();
        back.tags = vec!["v1".into()];
        let wanted = next_status(Some(&first), Some(3), &Observation::Converged(&back), "t3");
        let names: Vec<&str> = wanted
            .released_tags
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["v2"]);

        let many: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let mut flood = report(Outcome::Unchanged, "sha256:a");
        flood.dropped = released(
            "127.0.0.1:5000/old",
            &many.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let bounded = next_status(Some(&first), Some(4), &Observation::Converged(&flood), "t4");
        assert_eq!(bounded.released_tags.len(), RELEASED_TAGS_KEPT);
        assert_eq!(bounded.released_tags.last().unwrap().name, "t39");
    }

    fn condition<'a>(status: &'a GardenArtifactStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_converged_resync_changes_nothing() {
        let first = next_status(
            None,
            Some(1),
            &Observation::Converged(&report(Outcome::Created, "sha256:a")),
            "t1",
        );
        assert_eq!(condition(&first, READY).status, ConditionStatus::True);
        assert_eq!(first.last_sync_time.as_deref(), Some("t1"));
        let again = next_status(
            Some(&first),
            Some(1),
            &Observation::Converged(&report(Outcome::Unchanged, "sha256:a")),
            "t2",
        );
        assert_eq!(again, first, "no status write for a converged resync");
    }

    #[test]
    fn transition_times_move_only_when_the_status_flips() {
        let ready = next_status(
            None,
            Some(1),
            &Observation::Converged(&report(Outcome::Created, "sha256:a")),
            "t1",
        );
        let failing = next_status(
            Some(&ready),
            Some(1),
            &Observation::Retrying {
                reason: "RegistryError",
                message: "503",
            },
            "t2",
        );
        assert_eq!(condition(&failing, READY).status, ConditionStatus::False);
        assert_eq!(condition(&failing, READY).last_transition_time, "t2");
        assert_eq!(
            condition(&failing, STALLED).last_transition_time,
            "t1",
            "Stalled stayed False"
        );
        assert_eq!(
            failing.digest.as_deref(),
            Some("sha256:a"),
            "the last known digest stays"
        );
        let stalled = next_status(
            Some(&failing),
            Some(2),
            &Observation::Stalled {
                reason: "InvalidSpec",
                message: "spec.tags[0]: bad",
            },
            "t3",
        );
        assert_eq!(condition(&stalled, STALLED).status, ConditionStatus::True);
        assert_eq!(condition(&stalled, READY).last_transition_time, "t2");
        assert_eq!(condition(&stalled, READY).observed_generation, Some(2));
    }

    /// What the gauge of objects by condition counts each observation as.
    #[test]
    fn an_object_stands_where_its_conditions_say() {
        let at = |current: Option<&GardenArtifactStatus>, observation: &Observation<'_>| {
            next_status(current, Some(1), observation, "2030-01-01T00:00:00Z")
        };
        let converged = report(Outcome::Unchanged, "sha256:aa");
        let ready = at(None, &Observation::Converged(&converged));
        assert_eq!(standing(&ready), Some(ObjectCondition::Ready));
        let retrying = Observation::Retrying {
            reason: "RegistryError",
            message: "503",
        };
        assert_eq!(
            standing(&at(Some(&ready), &retrying)),
            Some(ObjectCondition::Reconciling)
        );
        let stalled = Observation::Stalled {
            reason: "PolicyViolation",
            message: "no",
        };
        assert_eq!(
            standing(&at(Some(&ready), &stalled)),
            Some(ObjectCondition::Stalled)
        );
        assert_eq!(standing(&at(None, &Observation::Suspended)), None);
        assert_eq!(
            standing(&at(Some(&ready), &Observation::Suspended)),
            Some(ObjectCondition::Ready),
            "suspended keeps what it was"
        );
    }
}
