//! A whole repository mirrored: the source's tags listed, selected, and each selected tag
//! copied byte for byte into the target under its own name, as `source.image` copies one
//! artefact (same digests; referrers and cosign tags along when asked). A converged tag costs
//! a HEAD on each side, so a no-op resync is the source listing plus two HEADs per tag.
//!
//! Pruning deletes target tags the mirror wrote before (the caller says which, and at which
//! digest) that are no longer selected, and only while they still point at what was written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, stream};

use super::remove::{Retirement, TagRemoval};
use super::source_listing::SourceListing;
use super::{Engine, EngineError, Inputs, Mode, Outcome};
use crate::intent::{ArtifactIntent, Content, ImageCopy, MirrorIntent};
use crate::oci::Tag;
use crate::registry::ErrorClass;

/// Tags copied at once. A converged tag is two HEADs (one per side, at once), a new one a
/// handful of round trips; sixteen keep both registries busy without looking like a flood to
/// their rate limits (the client's own in-flight bound still applies).
const TAGS_AT_ONCE: usize = 16;
/// Pages of 1000 tags read from a source before giving up (Docker Hub's library repositories
/// have a few thousand; this is far past any Garden Linux repository).
const MAX_SOURCE_PAGES: usize = 100;

/// What the caller knows besides the intent.
#[derive(Clone, Debug, Default)]
pub struct MirrorInputs {
    /// Target tags the mirror wrote in earlier rounds, with the digest each was given:
    /// the only tags `prune` may delete.
    pub written_before: BTreeMap<String, String>,
    /// Target tags someone else owns (a GardenArtifact), with the owner: never written.
    pub owned_elsewhere: BTreeMap<String, String>,
}

/// How far a mirror is, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorProgress {
    pub done: usize,
    pub selected: usize,
}

/// What became of one selected tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagResult {
    Copied {
        digest: String,
    },
    Unchanged {
        digest: String,
    },
    /// Someone else owns the tag in the target.
    Conflict {
        owner: String,
    },
    Failed {
        class: ErrorClass,
        message: String,
    },
}

impl TagResult {
    /// The digest the target tag holds after this round, when the mirror wrote or verified it.
    pub fn digest(&self) -> Option<&str> {
        match self {
            TagResult::Copied { digest } | TagResult::Unchanged { digest } => Some(digest),
            TagResult::Conflict { .. } | TagResult::Failed { .. } => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct MirrorReport {
    /// Each selected tag in the source's order, and what became of it.
    pub tags: Vec<(Tag, TagResult)>,
    /// Tags pruned (or, in a dry run, that would be), and what became of each.
    pub pruned: Vec<(String, TagRemoval)>,
}

impl MirrorReport {
    pub fn count(&self, wanted: impl Fn(&TagResult) -> bool) -> usize {
        self.tags
            .iter()
            .filter(|(_, result)| wanted(result))
            .count()
    }

    pub fn copied(&self) -> usize {
        self.count(|r| matches!(r, TagResult::Copied { .. }))
    }

    pub fn unchanged(&self) -> usize {
        self.count(|r| matches!(r, TagResult::Unchanged { .. }))
    }

    /// Tags that failed or conflict: the mirror has not converged while there are any.
    pub fn failed(&self) -> usize {
        self.tags.len() - self.copied() - self.unchanged()
    }

    /// What the target holds of the mirror after this round, for the next round's
    /// `written_before`: what it wrote or verified now, and what it wrote before and neither
    /// pruned nor lost since (a tag that failed this round is still the mirror's).
    pub fn written(&self, before: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        // A pruned tag is gone, or someone moved it: either way no longer the mirror's.
        let pruned: BTreeSet<&str> = self.pruned.iter().map(|(tag, _)| tag.as_str()).collect();
        let mut written: BTreeMap<String, String> = before
            .iter()
            .filter(|(tag, _)| !pruned.contains(tag.as_str()))
            .map(|(tag, digest)| (tag.clone(), digest.clone()))
            .collect();
        for (tag, result) in &self.tags {
            match result {
                // Someone else owns it now: never the mirror's to prune.
                TagResult::Conflict { .. } => {
                    written.remove(tag.as_str());
                }
                _ => {
                    if let Some(digest) = result.digest() {
                        written.insert(tag.to_string(), digest.to_string());
                    }
                }
            }
        }
        written
    }
}

impl Engine {
    /// Lists the source, copies every selected tag, and prunes when asked.
    pub async fn mirror_repository(
        &self,
        intent: &MirrorIntent,
        inputs: &MirrorInputs,
        mode: Mode,
        on_progress: &(dyn Fn(MirrorProgress) + Sync),
    ) -> Result<MirrorReport, EngineError> {
        let listed = self
            .registry
            .list_tags(&intent.source, MAX_SOURCE_PAGES)
            .await?
            .ok_or_else(|| {
                EngineError::source(
                    &intent.source_field,
                    format!(
                        "{} has more than {} tags; narrow the mirror with a tag selection \
                         the registry can page through",
                        intent.source,
                        MAX_SOURCE_PAGES * 1000
                    ),
                )
            })?;
        // A registry may list a tag twice across pages, or list names no tag may have. Fallback
        // and cosign tags belong to their digest: `referrers` carries them with it.
        let mut seen = BTreeSet::new();
        let available: Vec<Tag> = listed
            .iter()
            .filter(|t| seen.insert(t.as_str()))
            .filter_map(|t| Tag::parse(t).ok())
            .filter(|t| t.reserved_for().is_none())
            .collect();
        let selected = intent.tags.select(&available);
        let listing = self
            .source_listing(intent, &listed, selected.first().copied())
            .await?;
        let copy_inputs = Inputs {
            source_listing: listing.map(Arc::new),
            ..Inputs::default()
        };
        let count = selected.len();
        let done = &std::sync::atomic::AtomicUsize::new(0);
        on_progress(MirrorProgress {
            done: 0,
            selected: count,
        });
        // The copies are made by a loop rather than a closure over `selected`: a closure's
        // future borrowing the intent is not `Send` for every lifetime (rust-lang/rust#102211),
        // and the controller spawns this future.
        let mut copies = Vec::with_capacity(count);
        for tag in selected {
            copies.push(self.mirror_counted(
                intent,
                inputs,
                &copy_inputs,
                tag,
                mode,
                done,
                count,
                on_progress,
            ));
        }
        let tags: Vec<(Tag, TagResult)> =
            stream::iter(copies).buffered(TAGS_AT_ONCE).collect().await;
        let mut report = MirrorReport {
            tags,
            pruned: Vec::new(),
        };
        if intent.prune {
            let kept: BTreeSet<&str> = report.tags.iter().map(|(t, _)| t.as_str()).collect();
            for (tag, digest) in &inputs.written_before {
                if kept.contains(tag.as_str()) {
                    continue;
                }
                let retired = self
                    .retire(
                        Retirement {
                            repository: &intent.target,
                            digest,
                            tags: std::slice::from_ref(tag),
                            subject: None,
                            untagged: false,
                        },
                        mode,
                    )
                    .await?;
                report.pruned.extend(retired.tags);
            }
        }
        Ok(report)
    }

    /// One selected tag: a conflict when someone else owns it, else its copy; counted done.
    #[allow(clippy::too_many_arguments)]
    async fn mirror_counted(
        &self,
        intent: &MirrorIntent,
        inputs: &MirrorInputs,
        copy_inputs: &Inputs,
        tag: &Tag,
        mode: Mode,
        done: &std::sync::atomic::AtomicUsize,
        selected: usize,
        on_progress: &(dyn Fn(MirrorProgress) + Sync),
    ) -> (Tag, TagResult) {
        let result = match inputs.owned_elsewhere.get(tag.as_str()) {
            Some(owner) => TagResult::Conflict {
                owner: owner.clone(),
            },
            None => match self.mirror_tag(intent, copy_inputs, tag, mode).await {
                // A failure the next try may not meet (a token that expired between an
                // upload's start and its end, a 5xx): the copy is tried once more, from the
                // start, so one tag of a long round does not wait for the next round.
                TagResult::Failed { class, .. } if !class.needs_person() => {
                    self.mirror_tag(intent, copy_inputs, tag, mode).await
                }
                result => result,
            },
        };
        let done = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        on_progress(MirrorProgress { done, selected });
        (tag.clone(), result)
    }

    /// What the copies of this round may take from the source's listing: with `referrers`,
    /// which fallback and cosign tags exist, and whether the source has the referrers API
    /// (asked once, of `first`, a tag the round copies anyway).
    async fn source_listing(
        &self,
        intent: &MirrorIntent,
        listed: &[String],
        first: Option<&Tag>,
    ) -> Result<Option<SourceListing>, EngineError> {
        let Some(first) = first.filter(|_| intent.referrers) else {
            return Ok(None);
        };
        let Some(head) = self
            .registry
            .head_manifest(&intent.source, first.as_str())
            .await?
        else {
            // Gone since the listing: the copies find out for themselves.
            return Ok(None);
        };
        let api = self
            .registry
            .referrers(&intent.source, &head.digest)
            .await?
            .is_some();
        Ok(Some(SourceListing::new(
            listed.iter().map(String::as_str),
            api,
        )))
    }

    async fn mirror_tag(
        &self,
        intent: &MirrorIntent,
        copy_inputs: &Inputs,
        tag: &Tag,
        mode: Mode,
    ) -> TagResult {
        let copy = ArtifactIntent {
            repository: intent.target.clone(),
            tags: vec![tag.clone()],
            content: Content::Image(ImageCopy {
                source_field: intent.source_field.key(tag.as_str()),
                source: intent.source.with_tag(tag),
                platform_field: intent.source_field.clone(),
                platform: None,
                referrers: intent.referrers,
            }),
            subject: None,
            interval: None,
        };
        match self.reconcile(&copy, copy_inputs, mode).await {
            Ok(report) if report.outcome == Outcome::Unchanged => TagResult::Unchanged {
                digest: report.digest,
            },
            Ok(report) => TagResult::Copied {
                digest: report.digest,
            },
            Err(error) => TagResult::Failed {
                class: error.class(),
                message: error.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use regex::Regex;

    use super::*;
    use crate::engine::test_support::{engine, repo, seed_image};
    use crate::intent::FieldPath;
    use crate::intent::{Latest, TagSelection, VersionOrder};
    use crate::registry::memory::{MemoryOptions, MemoryRegistry, Operation};

    fn intent(include: &[&str], prune: bool) -> MirrorIntent {
        MirrorIntent {
            source_field: FieldPath::root("SRC_REPO"),
            source: repo("upstream/gl"),
            target: repo("mirror/gl"),
            tags: TagSelection {
                include: include.iter().map(|r| Regex::new(r).unwrap()).collect(),
                ..Default::default()
            },
            referrers: false,
            prune,
            interval: None,
        }
    }

    fn seeded(registry: &MemoryRegistry, tags: &[&str]) -> BTreeMap<String, String> {
        tags.iter()
            .map(|tag| {
                let layer = format!("layer of {tag}");
                let seeded = seed_image(registry, &repo("upstream/gl"), tag, &[&layer, "shared"]);
                (tag.to_string(), seeded.digest)
            })
            .collect()
    }

    #[tokio::test]
    async fn selected_tags_are_copied_byte_for_byte_and_others_are_not() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        let digests = seeded(&registry, &["1877.9", "1877.10", "1592.4", "latest"]);
        let engine = engine(&registry);
        let report = engine
            .mirror_repository(
                &intent(&[r"^1877\."], false),
                &MirrorInputs::default(),
                Mode::Apply,
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(report.copied(), 2);
        let target = registry.tags(&repo("mirror/gl"));
        assert_eq!(
            target.keys().map(String::as_str).collect::<Vec<_>>(),
            ["1877.10", "1877.9"]
        );
        for (tag, digest) in &target {
            assert_eq!(digest, &digests[tag], "{tag} keeps its digest");
        }
    }

    #[tokio::test]
    async fn a_converged_mirror_lists_once_and_heads_each_tag_on_each_side() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1", "2", "3"]);
        let engine = engine(&registry);
        let mirror = intent(&[], false);
        engine
            .mirror_repository(&mirror, &MirrorInputs::default(), Mode::Apply, &|_| {})
            .await
            .unwrap();
        registry.clear_calls();
        let report = engine
            .mirror_repository(&mirror, &MirrorInputs::default(), Mode::Apply, &|_| {})
            .await
            .unwrap();
        assert_eq!((report.unchanged(), report.copied()), (3, 0));
        assert_eq!(registry.count(Operation::ListTags), 1);
        assert_eq!(registry.count(Operation::HeadManifest), 6);
        assert_eq!(registry.calls().len(), 7, "{:?}", registry.calls());
    }

    /// With `referrers`, a converged tag that nothing hangs off costs its two HEADs, as
    /// without: the listing shows no fallback or cosign tag of it and the source was found
    /// without the referrers API once, up front.
    #[tokio::test]
    async fn a_converged_mirror_with_referrers_asks_only_what_its_listing_cannot_answer() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        let digests = seeded(&registry, &["1", "2", "3"]);
        let engine = engine(&registry);
        let mut mirror = intent(&[], false);
        mirror.referrers = true;
        let none = MirrorInputs::default();
        let run = || engine.mirror_repository(&mirror, &none, Mode::Apply, &|_| {});
        assert_eq!(run().await.unwrap().copied(), 3);
        registry.clear_calls();
        let report = run().await.unwrap();
        assert_eq!((report.unchanged(), report.copied()), (3, 0));
        assert_eq!(registry.count(Operation::ListTags), 1);
        // The first tag's HEAD and its referrers, asked once; then two HEADs per tag.
        assert_eq!(registry.count(Operation::Referrers), 1);
        assert_eq!(registry.count(Operation::HeadManifest), 7);
        assert_eq!(registry.calls().len(), 9, "{:?}", registry.calls());

        // A signature appears upstream on "2": the listing shows it, so that tag takes the
        // full path and the signature arrives; the others stay at their HEADs.
        let source = repo("upstream/gl");
        let signature = seed_image(&registry, &source, "signature", &["cosign signature"]);
        let sig_tag = format!("{}.sig", crate::engine::links::fallback_tag(&digests["2"]));
        let bytes = registry.manifest(&source, &signature.digest).unwrap().bytes;
        registry.insert_manifest(
            &source,
            Some(&sig_tag),
            crate::oci::media_types::OCI_MANIFEST,
            bytes,
        );
        mirror.tags.exclude = vec![Regex::new("^signature$").unwrap()];
        let run = || engine.mirror_repository(&mirror, &none, Mode::Apply, &|_| {});
        registry.clear_calls();
        run().await.unwrap();
        assert_eq!(
            registry.tag(&repo("mirror/gl"), &sig_tag),
            Some(signature.digest.clone()),
            "the new signature is carried"
        );
        let gets: Vec<String> = registry
            .calls()
            .iter()
            .filter(|c| c.operation == Operation::GetManifest)
            .map(|c| c.reference.clone())
            .collect();
        assert!(
            gets.iter().all(|r| r == "2" || r.starts_with("sha256")),
            "only the signed tag is read in full: {gets:?}"
        );
    }

    /// A source with the referrers API: a referrer may appear on any digest at any time, so
    /// every tag is asked, and a referrer added after convergence arrives.
    #[tokio::test]
    async fn with_the_referrers_api_a_new_referrer_arrives_after_convergence() {
        let registry = Arc::new(MemoryRegistry::default());
        let digests = seeded(&registry, &["1", "2"]);
        let engine = engine(&registry);
        let mut mirror = intent(&[], false);
        mirror.referrers = true;
        let none = MirrorInputs::default();
        let run = || engine.mirror_repository(&mirror, &none, Mode::Apply, &|_| {});
        run().await.unwrap();
        let note = crate::engine::test_support::seed_referrer(
            &registry,
            &repo("upstream/gl"),
            &digests["1"],
            "late",
        );
        run().await.unwrap();
        assert!(
            registry.manifest(&repo("mirror/gl"), &note).is_some(),
            "the late referrer is in the target"
        );
    }

    #[tokio::test]
    async fn latest_keeps_the_newest_versions_by_number() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1877.9", "1877.10", "1877.2"]);
        let engine = engine(&registry);
        let mut mirror = intent(&[], false);
        mirror.tags.latest = Some(Latest {
            count: 1,
            extract: None,
            order: VersionOrder::Version,
        });
        engine
            .mirror_repository(&mirror, &MirrorInputs::default(), Mode::Apply, &|_| {})
            .await
            .unwrap();
        assert_eq!(
            registry
                .tags(&repo("mirror/gl"))
                .into_keys()
                .collect::<Vec<_>>(),
            ["1877.10"]
        );
    }

    #[tokio::test]
    async fn tags_owned_elsewhere_are_conflicts_and_untouched() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1", "2"]);
        let theirs = seed_image(&registry, &repo("mirror/gl"), "2", &["someone else's"]);
        let engine = engine(&registry);
        let inputs = MirrorInputs {
            owned_elsewhere: [("2".to_string(), "ns/owner".to_string())].into(),
            ..Default::default()
        };
        let report = engine
            .mirror_repository(&intent(&[], false), &inputs, Mode::Apply, &|_| {})
            .await
            .unwrap();
        assert_eq!(report.failed(), 1);
        assert!(report.tags.iter().any(|(tag, result)| tag.as_str() == "2"
            && *result
                == TagResult::Conflict {
                    owner: "ns/owner".into()
                }));
        assert_eq!(registry.tag(&repo("mirror/gl"), "2"), Some(theirs.digest));
    }

    #[tokio::test]
    async fn prune_deletes_only_what_the_mirror_wrote_and_still_holds() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1877.1", "1877.2", "1592.1"]);
        let engine = engine(&registry);
        let everything = intent(&[], true);
        let first = engine
            .mirror_repository(&everything, &MirrorInputs::default(), Mode::Apply, &|_| {})
            .await
            .unwrap();
        let written = first.written(&BTreeMap::new());
        assert_eq!(written.len(), 3);
        // Someone moves 1877.1 in the target; a tag the mirror never wrote is there too.
        let moved = seed_image(
            &registry,
            &repo("mirror/gl"),
            "1877.1",
            &["moved by a person"],
        );
        seed_image(
            &registry,
            &repo("mirror/gl"),
            "1592.9",
            &["not the mirror's"],
        );
        let narrower = intent(&[r"^1592\."], true);
        let inputs = MirrorInputs {
            written_before: written.clone(),
            ..Default::default()
        };
        let second = engine
            .mirror_repository(&narrower, &inputs, Mode::Apply, &|_| {})
            .await
            .unwrap();
        let target = registry.tags(&repo("mirror/gl"));
        assert!(!target.contains_key("1877.2"), "pruned: {target:?}");
        assert_eq!(
            target.get("1877.1"),
            Some(&moved.digest),
            "moved: left alone"
        );
        assert!(
            target.contains_key("1592.9"),
            "never the mirror's: left alone"
        );
        assert!(target.contains_key("1592.1"));
        let after = second.written(&written);
        assert_eq!(
            after.keys().map(String::as_str).collect::<Vec<_>>(),
            ["1592.1"]
        );
    }

    #[tokio::test]
    async fn a_dry_run_writes_nothing() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1", "2"]);
        let engine = engine(&registry);
        let report = engine
            .mirror_repository(
                &intent(&[], false),
                &MirrorInputs::default(),
                Mode::DryRun,
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(report.copied(), 2);
        assert!(registry.tags(&repo("mirror/gl")).is_empty());
    }

    #[tokio::test]
    async fn fallback_and_cosign_tags_are_not_selected_as_tags() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        let digests = seeded(&registry, &["1"]);
        let hex = digests["1"].trim_start_matches("sha256:").to_string();
        seed_image(
            &registry,
            &repo("upstream/gl"),
            &format!("sha256-{hex}.sig"),
            &["sig"],
        );
        let engine = engine(&registry);
        let report = engine
            .mirror_repository(
                &intent(&[], false),
                &MirrorInputs::default(),
                Mode::Apply,
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(report.tags.len(), 1);
    }

    #[tokio::test]
    async fn a_failing_tag_does_not_stop_the_others() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1", "2", "3"]);
        let engine = engine(&registry);
        // The first manifest PUT is refused.
        registry.fail(Operation::PutManifest, 1, 403);
        let report = engine
            .mirror_repository(
                &intent(&[], false),
                &MirrorInputs::default(),
                Mode::Apply,
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!((report.copied(), report.failed()), (2, 1));
        let failed = report
            .tags
            .iter()
            .find_map(|(_, r)| match r {
                TagResult::Failed { class, .. } => Some(*class),
                _ => None,
            })
            .unwrap();
        assert!(failed.needs_person());
    }

    /// A transient failure (here a 503 on one manifest PUT; through a registry client, a token
    /// that expired mid-upload) costs the tag a second try in the same round, not the round.
    #[tokio::test]
    async fn a_tag_that_failed_for_a_transient_reason_is_tried_once_more() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        seeded(&registry, &["1", "2", "3"]);
        let engine = engine(&registry);
        registry.fail(Operation::PutManifest, 1, 503);
        let report = engine
            .mirror_repository(
                &intent(&[], false),
                &MirrorInputs::default(),
                Mode::Apply,
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!((report.copied(), report.failed()), (3, 0), "{report:?}");
        assert_eq!(registry.tags(&repo("mirror/gl")).len(), 3);
    }
}
