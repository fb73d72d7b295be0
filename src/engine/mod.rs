//! The core: intent → desired state → plan → execution. No kube and no CLI in here; the front
//! ends (`apply`, the verbs, the controller) read their input into an [`ArtifactIntent`], gather
//! its inputs, and call [`Engine::reconcile`].

pub mod claims;
pub mod component;
pub mod desired;
mod dropped;
mod execute;
pub mod links;

mod mirror;
pub mod order;
pub mod plan;
mod remove;
mod repository_mirror;
mod resolve;
mod source_listing;
mod tag_listing;
#[cfg(test)]
mod test_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::intent::{ArtifactIntent, Content, FieldPath, KeyRef};
use crate::oci::{ImageReference, RegistryId, Repository, media_types};
use crate::registry::{self, Registry};
use crate::sources::{FetchError, UrlFetcher};
pub use component::{ComponentInputs, ComponentReport, ResourcePin};
pub use dropped::{Dropped, Earlier, OnDrop, WrittenTag};
pub use links::{LinkVia, Pin};
pub use mirror::MirroredReferrers;
pub use plan::{Outcome, Plan};
pub use remove::{Retirement, RetirementReport, TagRemoval};
pub use repository_mirror::{MirrorInputs, MirrorProgress, MirrorReport, TagResult};
pub use source_listing::SourceListing;

/// What a front end supplies besides the spec.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Folder that `path` sources are relative to (`apply`: the manifest file's folder).
    pub base_dir: Option<PathBuf>,
    /// Values of `configMapKeyRef` sources, read by the controller from the object's namespace.
    pub config_map_keys: BTreeMap<KeyRef, Bytes>,
    /// Values of `secretKeyRef` sources.
    pub secret_keys: BTreeMap<KeyRef, Bytes>,
    /// Where each `artifactRef` (by object name) points, preferably by digest.
    pub artifacts: BTreeMap<String, ImageReference>,
    /// The tags the object wrote in earlier rounds (the controller's memory; none for the CLI).
    pub earlier: Earlier,
    /// The round must prove that the credentials may write the repository even when nothing
    /// needs writing (the controller's tag ownership is earned that way).
    pub prove_push: bool,
    /// A repository mirror's knowledge of the source this round (a copy's `referrers`).
    pub source_listing: Option<Arc<SourceListing>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read the registry, write what is missing.
    Apply,
    /// Read the registry, write nothing.
    DryRun,
}

/// What one reconciliation found and did (or, in a dry run, would do).
#[derive(Clone, Debug)]
pub struct Report {
    pub repository: Repository,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub tags: Vec<String>,
    pub outcome: Outcome,
    pub plan: Plan,
    /// The subject and how the link is made.
    pub subject: Option<(String, Option<LinkVia>)>,
    /// Every reference of the spec, resolved.
    pub pins: Vec<Pin>,
    /// Referrers and cosign tags copied along (`source.image.referrers`).
    pub mirrored: MirroredReferrers,
    /// Earlier tags the intent no longer wants, removed or released.
    pub dropped: Dropped,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The content a spec names cannot be had as specified: a missing file, a URL whose bytes
    /// do not match their digest, a source image that does not exist.
    #[error("{field}: {detail}")]
    Source { field: FieldPath, detail: String },
    /// A URL source could not be read while the plan ran; a network failure may pass.
    #[error("{field}: {error}")]
    Fetch {
        field: FieldPath,
        #[source]
        error: FetchError,
    },
    #[error("{0}")]
    Registry(#[from] registry::Error),
}

impl EngineError {
    fn source(field: &FieldPath, detail: impl Into<String>) -> Self {
        EngineError::Source {
            field: field.clone(),
            detail: detail.into(),
        }
    }

    pub fn class(&self) -> registry::ErrorClass {
        match self {
            EngineError::Source { .. } => {
                registry::ErrorClass::NeedsPerson(registry::NeedsPerson::Invalid)
            }
            EngineError::Fetch { error, .. } => match error {
                FetchError::Transport { .. } => registry::ErrorClass::Transient,
                FetchError::Status { status, .. } => registry::ErrorClass::of_status(*status),
                FetchError::Refused(_) | FetchError::NotAllowed(_) => {
                    registry::ErrorClass::NeedsPerson(registry::NeedsPerson::Invalid)
                }
            },
            EngineError::Registry(e) => e.class(),
        }
    }

    /// True when trying again without a change of the spec or its inputs cannot help.
    pub fn is_permanent(&self) -> bool {
        self.class().needs_person()
    }
}

/// A repository and a digest in it (a blob being uploaded, a subject's fallback index).
type RepositoryDigest = (Repository, String);

/// The most blob digests the engine remembers as known to be in their repositories.
const KNOWN_BLOBS_MAX: usize = 65_536;

type KeyedLocks = Mutex<HashMap<RepositoryDigest, Arc<tokio::sync::Mutex<()>>>>;

/// The lock of one (repository, digest) in `locks`. Finished work leaves its lock unused;
/// those are dropped now and then, so a long-running controller does not collect them.
fn keyed_lock(locks: &KeyedLocks, repo: &Repository, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = locks.lock().expect("not poisoned");
    if locks.len() > 1024 {
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    }
    Arc::clone(locks.entry((repo.clone(), digest.to_string())).or_default())
}

/// What a look at a copy's source and tags found.
enum CopyCheck {
    /// Every tag already names the source's manifest.
    Unchanged(Box<Report>),
    /// The copy must be made (or the spec is not a plain copy); the tags already HEADed.
    Changed {
        tags_seen: BTreeMap<String, Option<String>>,
    },
}

pub struct Engine {
    registry: Arc<dyn Registry>,
    urls: UrlFetcher,
    /// Blob transfers running at once for one object.
    blob_concurrency: usize,
    /// Registries known to have (or lack) the referrers API.
    referrers_api: Arc<Mutex<HashMap<RegistryId, bool>>>,
    /// Blobs this process saw or stored in a repository, so they are not asked for again.
    known_blobs: Arc<Mutex<HashMap<Repository, HashSet<String>>>>,
    /// One lock per blob upload (repository, digest), so a blob is uploaded once at a time.
    upload_locks: Arc<KeyedLocks>,
    /// One lock per fallback index, so writers in this process take turns.
    subject_locks: Arc<KeyedLocks>,
    /// Recent tag listings of repositories where many tags were missing.
    tag_listings: Arc<Mutex<tag_listing::TagListings>>,
    /// Sizes of URL contents by digest, verified once (content-addressed: they never change).
    url_sizes: Arc<Mutex<HashMap<String, u64>>>,
}

impl Engine {
    pub fn new(registry: Arc<dyn Registry>, urls: UrlFetcher, blob_concurrency: usize) -> Self {
        Self {
            registry,
            urls,
            blob_concurrency: blob_concurrency.max(1),
            referrers_api: Arc::default(),
            known_blobs: Arc::default(),
            upload_locks: Arc::default(),
            subject_locks: Arc::default(),
            tag_listings: Arc::default(),
            url_sizes: Arc::default(),
        }
    }

    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    /// The same engine speaking through another registry (a client with other credentials).
    pub fn with_registry(&self, registry: Arc<dyn Registry>) -> Self {
        Self {
            registry,
            urls: self.urls.clone(),
            blob_concurrency: self.blob_concurrency,
            referrers_api: Arc::clone(&self.referrers_api),
            known_blobs: Arc::clone(&self.known_blobs),
            upload_locks: Arc::clone(&self.upload_locks),
            subject_locks: Arc::clone(&self.subject_locks),
            tag_listings: Arc::clone(&self.tag_listings),
            url_sizes: Arc::clone(&self.url_sizes),
        }
    }

    /// Which of `digests` this process knows to be in `repo`. Asks about given digests rather
    /// than copying the set out: in a fan-out into one repository the set holds every blob
    /// pushed so far, and copying it per object made the run quadratic.
    fn known_blobs<'a>(
        &self,
        repo: &Repository,
        digests: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        let known = self.known_blobs.lock().expect("not poisoned");
        let Some(known) = known.get(repo) else {
            return Vec::new();
        };
        digests
            .into_iter()
            .filter(|digest| known.contains(*digest))
            .cloned()
            .collect()
    }

    /// Remembered for as long as the process runs, which for a controller is long: past
    /// [`KNOWN_BLOBS_MAX`] digests all are forgotten at once (the next round of each object
    /// asks the registry once more), so the set grows with the objects of a while, not with
    /// every blob ever pushed.
    fn remember_blobs(&self, repo: &Repository, digests: impl IntoIterator<Item = String>) {
        let mut known = self.known_blobs.lock().expect("not poisoned");
        if known.values().map(HashSet::len).sum::<usize>() >= KNOWN_BLOBS_MAX {
            known.clear();
        }
        known.entry(repo.clone()).or_default().extend(digests);
    }

    fn upload_lock(&self, repo: &Repository, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        keyed_lock(&self.upload_locks, repo, digest)
    }

    /// The lock writers of one subject's fallback index take turns on.
    fn subject_lock(&self, repo: &Repository, subject: &str) -> Arc<tokio::sync::Mutex<()>> {
        keyed_lock(&self.subject_locks, repo, subject)
    }

    fn known_size(&self, digest: &str) -> Option<u64> {
        self.url_sizes
            .lock()
            .expect("not poisoned")
            .get(digest)
            .copied()
    }

    fn remember_size(&self, digest: &str, size: u64) {
        let mut sizes = self.url_sizes.lock().expect("not poisoned");
        // Bounded: a long-running controller sees many URLs over time.
        if sizes.len() >= 100_000 {
            sizes.clear();
        }
        sizes.insert(digest.to_string(), size);
    }

    /// A tag this process wrote, so a tag listing taken before does not call it absent.
    fn tag_written(&self, repo: &Repository, tag: &str) {
        self.tag_listings
            .lock()
            .expect("not poisoned")
            .written(repo, tag);
    }

    fn forget_blobs(&self, repo: &Repository) {
        self.known_blobs.lock().expect("not poisoned").remove(repo);
    }

    /// Makes the registry hold what `intent` describes; then, the artefact in place, removes
    /// or releases the earlier tags it no longer wants.
    pub async fn reconcile(
        &self,
        intent: &ArtifactIntent,
        inputs: &Inputs,
        mode: Mode,
    ) -> Result<Report, EngineError> {
        let mut report = self.converge(intent, inputs, mode).await?;
        report.dropped = self.drop_tags(intent, &inputs.earlier, mode).await?;
        Ok(report)
    }

    async fn converge(
        &self,
        intent: &ArtifactIntent,
        inputs: &Inputs,
        mode: Mode,
    ) -> Result<Report, EngineError> {
        let repository = intent.repository.clone();
        let tags_seen = match self.unchanged_copy(intent, inputs).await? {
            CopyCheck::Unchanged(mut report) => {
                if inputs.prove_push {
                    report.plan.prove_push();
                    if mode == Mode::Apply {
                        self.execute_probe(&repository).await?;
                    }
                }
                return Ok(*report);
            }
            CopyCheck::Changed { tags_seen } => tags_seen,
        };
        let resolved = self.resolve(intent, inputs, mode).await?;
        let observed = self
            .observe(
                &resolved.desired,
                tags_seen,
                resolved.blobs_present,
                resolved.manifests_present,
            )
            .await?;
        let mut plan = plan::plan(&resolved.desired, &observed);
        // Written already, and so part of what this run wrote.
        plan.blobs
            .splice(0..0, resolved.stored_while_resolving.iter().cloned());
        let manifest = &resolved.desired.manifest;
        if let Content::Image(copy) = &intent.content
            && copy.referrers
        {
            plan.referrers = self
                .plan_mirror(
                    &copy.source_field,
                    copy.source.repository(),
                    &repository,
                    manifest,
                    inputs.source_listing.as_deref(),
                )
                .await?;
        }
        let mut subject = None;
        if let Some(pin) = &resolved.subject {
            let descriptor = desired::referrer_descriptor(manifest);
            let (via, update) = self
                .plan_link(&repository, &pin.head.digest, &descriptor)
                .await?;
            plan.fallback_indexes.extend(update);
            subject = Some((pin.head.digest.clone(), via));
        }
        if inputs.prove_push {
            plan.prove_push();
        }
        if mode == Mode::Apply && !plan.is_empty() {
            let executed = self.execute(&resolved.desired, &plan).await?;
            if executed.subject_processed
                && let Some((_, via)) = &mut subject
            {
                *via = LinkVia::ReferrersApi;
            }
        }
        let mirrored = MirroredReferrers::planned(&plan.referrers);
        Ok(Report {
            repository,
            digest: manifest.digest.clone(),
            media_type: manifest.media_type.clone(),
            size: manifest.size(),
            tags: resolved
                .desired
                .tags
                .iter()
                .map(ToString::to_string)
                .collect(),
            outcome: plan.outcome,
            plan,
            subject: subject.map(|(digest, via)| (digest, Some(via))),
            pins: resolved.pins,
            mirrored,
            dropped: Dropped::default(),
        })
    }

    /// Proves that the credentials may write `repository`, and writes nothing else: the plan
    /// of one probe.
    pub async fn probe(&self, repository: &Repository, mode: Mode) -> Result<Plan, EngineError> {
        let mut plan = Plan::unchanged();
        plan.prove_push();
        if mode == Mode::Apply {
            self.execute_probe(repository).await?;
        }
        Ok(plan)
    }

    /// A converged copy costs a HEAD of the source (none when pinned by digest) and one HEAD
    /// per tag; without this, deciding would need the source manifest and its children. The
    /// tags it saw are handed on, so a copy that must be made does not HEAD them twice.
    async fn unchanged_copy(
        &self,
        intent: &ArtifactIntent,
        inputs: &Inputs,
    ) -> Result<CopyCheck, EngineError> {
        let changed = |tags_seen| Ok(CopyCheck::Changed { tags_seen });
        let repository = &intent.repository;
        let Content::Image(copy) = &intent.content else {
            return changed(BTreeMap::new());
        };
        if copy.platform.is_some() {
            return changed(BTreeMap::new());
        }
        // Referrers are checked on every run, so a copy with them takes the full path, unless
        // a repository mirror's listing shows that nothing hangs off the source.
        let listing = match (&inputs.source_listing, copy.referrers) {
            (_, false) => None,
            (Some(listing), true) if !listing.referrers_api() => Some(listing),
            (_, true) => return changed(BTreeMap::new()),
        };
        let source = &copy.source;
        // The source and the tags are looked at together: a converged mirror of many tags
        // waits for one round trip per tag, not two.
        // The digest, and whether it is an index when the HEAD said so.
        let source_digest = async {
            match source.digest() {
                Some(digest) => Ok(Some((digest.to_string(), None))),
                None => self
                    .registry
                    .head_manifest(source.repository(), source.reference())
                    .await
                    .map(|head| {
                        head.map(|h| (h.digest, Some(media_types::is_index(&h.media_type))))
                    }),
            }
        };
        let tag_heads = async {
            let mut tags_seen = BTreeMap::new();
            let mut last = None;
            for tag in &intent.tags {
                let head = self.head_tag(repository, tag.as_str()).await?;
                tags_seen.insert(tag.to_string(), head.as_ref().map(|h| h.digest.clone()));
                last = head;
            }
            Ok::<_, EngineError>((tags_seen, last))
        };
        let (wanted, (tags_seen, last)) =
            futures::try_join!(async { Ok(source_digest.await?) }, tag_heads)?;
        // A source that is not there: the full path says so, with the tags already seen.
        let Some((wanted, is_index)) = wanted else {
            return changed(tags_seen);
        };
        if let Some(listing) = listing
            && !listing.nothing_hangs_off(&wanted, is_index.unwrap_or(true))
        {
            return changed(tags_seen);
        }
        let all_there = tags_seen
            .values()
            .all(|digest| digest.as_deref() == Some(wanted.as_str()));
        let Some(head) = last.filter(|_| all_there) else {
            return changed(tags_seen);
        };
        Ok(CopyCheck::Unchanged(Box::new(Report {
            repository: repository.clone(),
            digest: head.digest,
            media_type: head.media_type,
            size: head.size,
            tags: intent.tags.iter().map(ToString::to_string).collect(),
            outcome: Outcome::Unchanged,
            plan: Plan::unchanged(),
            subject: None,
            pins: Vec::new(),
            mirrored: MirroredReferrers::default(),
            dropped: Dropped::default(),
        })))
    }
}

#[cfg(test)]
mod known_blobs_tests {
    use std::sync::Arc;

    use super::test_support::{engine, repo};
    use super::*;
    use crate::registry::memory::MemoryRegistry;

    #[test]
    fn the_blobs_remembered_are_bounded() {
        let engine = engine(&Arc::new(MemoryRegistry::default()));
        let (a, b) = (repo("a"), repo("b"));
        let digest = |i: usize| format!("sha256:{i:064x}");
        engine.remember_blobs(&a, (0..KNOWN_BLOBS_MAX - 1).map(digest));
        engine.remember_blobs(&b, [digest(0)]);
        assert_eq!(engine.known_blobs(&a, &[digest(7)]), [digest(7)]);
        engine.remember_blobs(&b, [digest(1)]);
        let known = engine.known_blobs.lock().expect("not poisoned");
        let total: usize = known.values().map(HashSet::len).sum();
        assert_eq!(
            total, 1,
            "forgotten at the bound, then the new one remembered"
        );
        assert!(known.get(&b).is_some_and(|b| b.contains(&digest(1))));
    }
}
