//! The GardenMirrors of an `apply` run. They run after the artefacts, since a mirror may read
//! what an artefact of the run writes, and among themselves so that a mirror reading another
//! one's target comes after it. Tags an artefact of the run claims in a mirror's target are
//! not the mirror's to write.

use std::collections::{BTreeMap, BTreeSet};

use super::ObjectResult;
use crate::cli::mirror::mirror_tags_in_target;
use crate::engine::{Engine, MirrorInputs, Mode, TagRemoval, TagResult};
use crate::intent::{ArtifactIntent, MirrorIntent};
use crate::manifests::LoadedMirror;

/// An artefact of the run, as the mirrors see it.
pub struct Artefact<'a> {
    pub key: String,
    pub intent: &'a ArtifactIntent,
    pub failed: bool,
}

/// The mirrors in an order where each comes after the mirrors whose target it reads; the
/// members of a cycle when there is none.
pub fn order(intents: &[MirrorIntent]) -> Result<Vec<usize>, Vec<usize>> {
    let reads_from = |reader: usize, writer: usize| {
        reader != writer && intents[reader].source == intents[writer].target
    };
    let mut placed = Vec::with_capacity(intents.len());
    let mut left: BTreeSet<usize> = (0..intents.len()).collect();
    while !left.is_empty() {
        let ready: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| !left.iter().any(|&j| reads_from(i, j)))
            .collect();
        if ready.is_empty() {
            return Err(left.into_iter().collect());
        }
        for i in ready {
            left.remove(&i);
            placed.push(i);
        }
    }
    Ok(placed)
}

pub async fn run(
    engine: &Engine,
    mirrors: &[LoadedMirror],
    intents: &[MirrorIntent],
    order: &[usize],
    artefacts: &[Artefact<'_>],
    mode: Mode,
) -> Vec<ObjectResult> {
    let mut results: BTreeMap<usize, ObjectResult> = BTreeMap::new();
    // Tags written into each target by the mirrors run so far, with the writer.
    let mut mirrored: Vec<(usize, BTreeSet<String>)> = Vec::new();
    for &i in order {
        let (mirror, intent) = (&mirrors[i], &intents[i]);
        let failed_producer = artefacts
            .iter()
            .filter(|a| a.failed && a.intent.repository == intent.source)
            .map(|a| a.key.clone())
            .chain(order.iter().filter_map(|&j| {
                let failed = results.get(&j)?.error.is_some();
                (failed && intents[j].target == intent.source).then(|| mirrors[j].key())
            }))
            .next();
        if let Some(producer) = failed_producer {
            results.insert(
                i,
                result(
                    mirror,
                    intent,
                    Vec::new(),
                    "failed",
                    Some(format!("depends on {producer}, which failed")),
                ),
            );
            continue;
        }
        let mut inputs = MirrorInputs::default();
        for artefact in artefacts
            .iter()
            .filter(|a| a.intent.repository == intent.target)
        {
            for tag in &artefact.intent.tags {
                inputs
                    .owned_elsewhere
                    .insert(tag.to_string(), artefact.key.clone());
            }
        }
        for (writer, tags) in &mirrored {
            if intents[*writer].target == intent.target {
                for tag in tags {
                    inputs
                        .owned_elsewhere
                        .entry(tag.clone())
                        .or_insert_with(|| mirrors[*writer].key());
                }
            }
        }
        if intent.prune {
            match mirror_tags_in_target(engine, intent).await {
                Ok(written) => {
                    inputs.written_before = written
                        .into_iter()
                        .filter(|(tag, _)| !inputs.owned_elsewhere.contains_key(tag))
                        .collect();
                }
                Err(failure) => {
                    results.insert(
                        i,
                        result(mirror, intent, Vec::new(), "failed", Some(failure.message)),
                    );
                    continue;
                }
            }
        }
        let report = match engine
            .mirror_repository(intent, &inputs, mode, &|_| {})
            .await
        {
            Ok(report) => report,
            Err(e) => {
                let message = crate::cli::common::engine_failure(e).message;
                results.insert(
                    i,
                    result(mirror, intent, Vec::new(), "failed", Some(message)),
                );
                continue;
            }
        };
        mirrored.push((
            i,
            report
                .tags
                .iter()
                .filter(|(_, r)| r.digest().is_some())
                .map(|(tag, _)| tag.to_string())
                .collect(),
        ));
        let tags: Vec<String> = report.tags.iter().map(|(t, _)| t.to_string()).collect();
        let pruned = report
            .pruned
            .iter()
            .filter(|(_, removal)| *removal == TagRemoval::Removed)
            .count();
        let verb = if mode == Mode::DryRun {
            "would copy"
        } else {
            "copied"
        };
        let summary = format!(
            "{verb} {}, unchanged {}, pruned {pruned}",
            report.copied(),
            report.unchanged()
        );
        let problems: Vec<String> = report
            .tags
            .iter()
            .filter_map(|(tag, r)| match r {
                TagResult::Conflict { owner } => Some(format!("{tag}: owned by {owner}")),
                TagResult::Failed { message, .. } => Some(format!("{tag}: {message}")),
                _ => None,
            })
            .collect();
        let error = (!problems.is_empty()).then(|| {
            format!(
                "{} of {} selected tags not mirrored: {}",
                problems.len(),
                tags.len(),
                problems.join("; ")
            )
        });
        results.insert(i, result(mirror, intent, tags, &summary, error));
    }
    results.into_values().collect()
}

fn result(
    mirror: &LoadedMirror,
    intent: &MirrorIntent,
    tags: Vec<String>,
    summary: &str,
    error: Option<String>,
) -> ObjectResult {
    ObjectResult {
        kind: Some(crate::api::mirror::MIRROR_KIND),
        name: mirror.name.clone(),
        namespace: mirror.namespace.clone(),
        repository: intent.target.to_string(),
        digest: None,
        tags,
        result: summary.to_string(),
        error,
        plan: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{FieldPath, TagSelection};
    use crate::oci::Repository;

    fn mirror(source: &str, target: &str) -> MirrorIntent {
        MirrorIntent {
            source_field: FieldPath::root("spec.source.repository"),
            source: Repository::parse(source).unwrap(),
            target: Repository::parse(target).unwrap(),
            tags: TagSelection::default(),
            referrers: false,
            prune: false,
            interval: None,
        }
    }

    #[test]
    fn a_mirror_of_a_mirror_comes_after_it() {
        let chain = [
            mirror("r.io/b", "r.io/c"),
            mirror("r.io/a", "r.io/b"),
            mirror("r.io/x", "r.io/y"),
        ];
        let placed = order(&chain).unwrap();
        let at = |i: usize| placed.iter().position(|&p| p == i).unwrap();
        assert!(at(1) < at(0), "{placed:?}");
        assert_eq!(placed.len(), 3);
    }

    #[test]
    fn mirrors_reading_each_other_are_a_cycle() {
        let cycle = [
            mirror("r.io/a", "r.io/b"),
            mirror("localhost:5000/x", "r.io/z"),
            mirror("r.io/b", "R.io/a"),
        ];
        assert_eq!(order(&cycle).unwrap_err(), [0, 2]);
    }
}
