//! The imperative shell of the engine: looks at the registry, then carries a plan out in the
//! order the plan gives (blobs, child manifests, tags).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream};

use super::desired::{Blob, BlobOrigin, Desired};
use super::plan::{self, Deletion, IndexChange, Observed, Plan};
use super::tag_listing;
use super::{Engine, EngineError};
use crate::intent::FieldPath;
use crate::oci::Repository;
use crate::oci::digest::VerifyingStream;
use crate::registry::{Error as RegistryError, ErrorClass, ManifestHead, UploadStart};

/// What carrying out a plan did besides what the plan says.
pub(super) struct Executed {
    /// The registry processed the manifest's subject itself (it answered `OCI-Subject`).
    pub subject_processed: bool,
}

/// How often one blob transfer is tried before the object fails.
const BLOB_ATTEMPTS: u32 = 3;
/// Pause before the second transfer of a blob (doubled before the third).
const BLOB_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);
/// Pause before a manifest PUT refused as DIGEST_INVALID is sent again.
const MANIFEST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);
/// HEAD requests in flight at once for one object.
const HEAD_CONCURRENCY: usize = 8;

impl Engine {
    /// Reads the least that decides the plan: one HEAD per tag, and only when that shows drift,
    /// HEADs of the manifests and blobs that may be missing.
    /// `tags_seen`: tags already HEADed in this reconciliation, not asked again.
    pub(super) async fn observe(
        &self,
        desired: &Desired,
        mut tags_seen: BTreeMap<String, Option<String>>,
        blobs_present: BTreeSet<String>,
        manifests_present: BTreeSet<String>,
    ) -> Result<Observed, EngineError> {
        let repo = &desired.repository;
        let root = &desired.manifest;
        // Futures are built eagerly (not in a stream combinator's closure) so the whole
        // reconciliation stays `Send` for the controller's spawned tasks.
        let heads: Vec<_> = desired
            .tags
            .iter()
            .filter(|tag| !tags_seen.contains_key(*tag))
            .map(|tag| async move {
                let head = self.head_tag(repo, tag).await?;
                Ok::<_, RegistryError>((tag.clone(), head.map(|h| h.digest)))
            })
            .collect();
        let heads: Vec<_> = stream::iter(heads)
            .buffered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut tags: BTreeMap<String, Option<String>> = heads.into_iter().collect();
        for tag in &desired.tags {
            if let Some(seen) = tags_seen.remove(tag) {
                tags.insert(tag.clone(), seen);
            }
        }
        let mut observed = Observed {
            tags,
            blobs: blobs_present,
            manifests: manifests_present,
        };
        if observed.tags.values().flatten().any(|d| d == &root.digest)
            || (desired.tags.is_empty()
                && self
                    .registry
                    .head_manifest(repo, &root.digest)
                    .await?
                    .is_some())
        {
            observed.manifests.insert(root.digest.clone());
        }
        if plan::converged(desired, &observed) || observed.manifests.contains(&root.digest) {
            return Ok(observed);
        }

        // Each manifest not known to be stored: is it there by digest? Not worth asking for the
        // root of a first push (no tag exists yet): its blobs are checked anyway.
        let first_push = !desired.tags.is_empty() && observed.tags.values().all(Option::is_none);
        let candidates: BTreeSet<String> = plan::manifests_to_inspect(desired, &observed)
            .into_iter()
            .filter(|m| !(first_push && m.digest == root.digest))
            .map(|m| m.digest.clone())
            .collect();
        let heads: Vec<_> = candidates
            .into_iter()
            .map(|digest| async move {
                let head = self.registry.head_manifest(repo, &digest).await?;
                Ok::<_, RegistryError>(head.map(|_| digest))
            })
            .collect();
        let stored: Vec<Option<String>> = stream::iter(heads)
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        observed.manifests.extend(stored.into_iter().flatten());

        // The blobs of the manifests still missing: known ones from this process, small local
        // ones uploaded without asking (a HEAD costs as much as the upload it would save).
        let wanted: BTreeSet<&String> = plan::manifests_to_inspect(desired, &observed)
            .into_iter()
            .flat_map(|m| m.blobs.iter().map(|b| &b.digest))
            .collect();
        observed.blobs.extend(self.known_blobs(repo, wanted));
        let blobs: BTreeSet<String> = plan::manifests_to_inspect(desired, &observed)
            .into_iter()
            .flat_map(|m| m.blobs.iter())
            .filter(|b| !observed.blobs.contains(&b.digest) && !uploads_without_asking(b))
            .map(|b| b.digest.clone())
            .collect();
        let heads: Vec<_> = blobs
            .into_iter()
            .map(|digest| async move {
                let size = self.registry.head_blob(repo, &digest).await?;
                Ok::<_, RegistryError>(size.map(|_| digest))
            })
            .collect();
        let present: Vec<Option<String>> = stream::iter(heads)
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        let present: Vec<String> = present.into_iter().flatten().collect();
        self.remember_blobs(repo, present.iter().cloned());
        observed.blobs.extend(present);
        Ok(observed)
    }

    /// The digest a tag points to. After many missing tags in a repository, one tag listing
    /// stands in for the HEADs of tags it lacks (see `tag_listing`).
    pub(super) async fn head_tag(
        &self,
        repo: &Repository,
        tag: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        if self
            .tag_listings
            .lock()
            .expect("not poisoned")
            .known_absent(repo, tag, Instant::now())
        {
            return Ok(None);
        }
        let head = self.registry.head_manifest(repo, tag).await?;
        if head.is_none() {
            let list_now = self
                .tag_listings
                .lock()
                .expect("not poisoned")
                .missed(repo, Instant::now());
            if list_now {
                let taken = Instant::now();
                let listed = self
                    .registry
                    .list_tags(repo, tag_listing::MAX_LISTING_PAGES)
                    .await;
                let mut listings = self.tag_listings.lock().expect("not poisoned");
                match listed {
                    Ok(Some(tags)) => listings.listed(repo, tags, taken),
                    Ok(None) => {
                        tracing::debug!(repository = %repo, "too many tags to list, HEADing tags one by one");
                        listings.listing_failed(repo);
                    }
                    Err(e) => {
                        tracing::debug!(repository = %repo, error = %e, "tag listing failed, HEADing tags one by one");
                        listings.listing_failed(repo);
                    }
                }
            }
        }
        Ok(head)
    }

    /// Carries the plan out, stage by stage; the only function of the engine that writes.
    pub(super) async fn execute(
        &self,
        desired: &Desired,
        plan: &Plan,
    ) -> Result<Executed, EngineError> {
        if plan.probe_push {
            self.execute_probe(&desired.repository).await?;
        }
        let subject_processed = self.store(desired, plan).await?;
        let linked_by_registry = subject_processed.then_some(desired.manifest.digest.as_str());
        self.execute_after_store(&desired.repository, linked_by_registry, plan)
            .await?;
        Ok(Executed { subject_processed })
    }

    /// A plan's `probe_push`: an upload session opened and cancelled.
    pub(super) async fn execute_probe(&self, repo: &Repository) -> Result<(), EngineError> {
        self.registry.probe_push(repo).await?;
        Ok(())
    }

    /// The stages after the artefact is stored: copied referrers, fallback indexes (except the
    /// link of `linked_by_registry`, which the registry made itself), deletions. Returns the
    /// deletions that found something to delete.
    pub(super) async fn execute_after_store(
        &self,
        repo: &Repository,
        linked_by_registry: Option<&str>,
        plan: &Plan,
    ) -> Result<Vec<Deletion>, EngineError> {
        for copy in &plan.referrers {
            if !copy.plan.is_empty() {
                Box::pin(self.execute(&copy.desired, &copy.plan)).await?;
            }
        }
        for update in &plan.fallback_indexes {
            let linked = matches!(&update.change, IndexChange::Add(entry)
                if linked_by_registry.is_some()
                    && entry.get("digest").and_then(|d| d.as_str()) == linked_by_registry);
            if !linked {
                self.apply_fallback_update(update).await?;
            }
        }
        let mut deleted = Vec::new();
        for deletion in &plan.deletions {
            if self.delete(repo, deletion).await? {
                deleted.push(deletion.clone());
            }
        }
        Ok(deleted)
    }

    /// Blobs, child manifests, tags: true when the registry said (`OCI-Subject`) that it
    /// processed the manifest's subject itself.
    async fn store(&self, desired: &Desired, plan: &Plan) -> Result<bool, EngineError> {
        let repo = &desired.repository;
        let pushes: Vec<_> = plan
            .blobs
            .iter()
            .map(|blob| self.push_blob(repo, blob))
            .collect();
        stream::iter(pushes)
            .buffer_unordered(self.blob_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let root = &desired.manifest;
        let mut subject_processed = false;
        for manifest in &plan.manifests {
            let outcome = self
                .put_manifest(
                    repo,
                    &manifest.digest,
                    &manifest.media_type,
                    manifest.bytes.clone(),
                )
                .await?;
            subject_processed |= manifest.digest == root.digest && outcome.subject_processed;
        }
        for write in &plan.tags {
            let outcome = self
                .put_manifest(repo, &write.tag, &root.media_type, root.bytes.clone())
                .await?;
            subject_processed |= outcome.subject_processed;
            match &write.previous {
                Some(previous) => {
                    tracing::info!(repository = %repo, tag = %write.tag, from = %previous, to = %root.digest, "moved tag")
                }
                None => {
                    tracing::info!(repository = %repo, tag = %write.tag, digest = %root.digest, "created tag")
                }
            }
        }
        Ok(subject_processed)
    }

    /// Stores a manifest; a registry that says a blob is unknown makes us forget what we
    /// believed present in that repository (garbage collection may have run meanwhile).
    async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<crate::registry::PutManifestOutcome, RegistryError> {
        let mut result = self
            .registry
            .put_manifest(repo, reference, media_type, bytes.clone())
            .await;
        // Distribution 2.8 rewrites a repository's blob link in place when a second process
        // commits the same blob, and a manifest PUT reading the link at that moment is refused
        // as DIGEST_INVALID although the manifest is sound. Our own uploads take turns
        // (`upload_lock`); another process's do not, so the refusal is worth one more try.
        if result.as_ref().is_err_and(RegistryError::is_digest_invalid) {
            tokio::time::sleep(MANIFEST_RETRY_PAUSE).await;
            tracing::warn!(repository = %repo, reference, "manifest refused as DIGEST_INVALID, trying once more");
            result = self
                .registry
                .put_manifest(repo, reference, media_type, bytes)
                .await;
        }
        if result.is_ok() && !reference.contains(':') {
            self.tag_written(repo, reference);
        }
        if let Err(RegistryError::Status {
            code: Some(code), ..
        }) = &result
            && (code == "MANIFEST_BLOB_UNKNOWN" || code == "BLOB_UNKNOWN")
        {
            self.forget_blobs(repo);
        }
        result
    }

    async fn push_blob(&self, repo: &Repository, blob: &Blob) -> Result<(), EngineError> {
        // One upload of a digest per repository at a time: Distribution answers manifest PUTs
        // that race with a second commit of the same blob with 400 DIGEST_INVALID. Whoever
        // waited finds the blob known and skips it.
        let lock = self.upload_lock(repo, &blob.digest);
        let _single = lock.lock().await;
        if !self.known_blobs(repo, [&blob.digest]).is_empty() {
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            match self.push_blob_once(repo, blob).await {
                Ok(()) => {
                    self.remember_blobs(repo, [blob.digest.clone()]);
                    return Ok(());
                }
                Err(e) if attempt < BLOB_ATTEMPTS && e.class() == ErrorClass::Transient => {
                    // A pause of our own; a 429's Retry-After already paused the registry's budget.
                    tokio::time::sleep(BLOB_RETRY_PAUSE * attempt).await;
                    tracing::warn!(repository = %repo, digest = %blob.digest, error = %e, attempt, "blob transfer failed, trying again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn push_blob_once(&self, repo: &Repository, blob: &Blob) -> Result<(), EngineError> {
        match &blob.origin {
            BlobOrigin::Inline(bytes) => {
                let body = stream::once(std::future::ready(Ok::<Bytes, std::io::Error>(
                    bytes.clone(),
                )));
                self.upload(repo, &blob.digest, Some(blob.size), body)
                    .await?;
            }
            BlobOrigin::File(path) => {
                let file = crate::sources::file_stream(path).await.map_err(|e| {
                    EngineError::source(
                        &FieldPath::root("spec").child("source").child("files"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let body = VerifyingStream::new(file, &blob.digest, Some(blob.size));
                self.upload(repo, &blob.digest, Some(blob.size), body)
                    .await?;
            }
            BlobOrigin::Url { url, field } => {
                let (_, body) = self
                    .urls
                    .open(url)
                    .await
                    .map_err(|error| EngineError::Fetch {
                        field: field.clone(),
                        error,
                    })?;
                let body = VerifyingStream::new(body, &blob.digest, Some(blob.size));
                let refused = |e: &dyn std::fmt::Display| {
                    EngineError::source(field, format!("content of {url} was refused: {e}"))
                };
                // The stream ends in an error when the bytes do not match their digest or
                // size: the upload is abandoned, and the registry never completes the blob.
                self.upload(repo, &blob.digest, Some(blob.size), body)
                    .await
                    .map_err(|e| match e {
                        RegistryError::Transport { detail, .. } => refused(&detail),
                        e @ RegistryError::Status { .. } if e.is_digest_invalid() => refused(&e),
                        other => EngineError::Registry(other),
                    })?;
            }
            BlobOrigin::Repository(source) => {
                let mount_from = source.same_registry(repo).then_some(source);
                let session = match self
                    .registry
                    .start_upload(repo, &blob.digest, mount_from)
                    .await?
                {
                    UploadStart::Mounted => return Ok(()),
                    UploadStart::Session(session) => session,
                };
                let body = self.registry.get_blob(source, &blob.digest).await?;
                // No hashing here: the upload is committed with `?digest=`, which the target
                // registry verifies itself (a mismatch is never committed), and the source is
                // content-addressed. Hashing would be a third of our CPU for a large copy.
                let body = VerifyingStream::size_only(body, blob.size);
                self.registry
                    .finish_upload(repo, session, &blob.digest, Some(blob.size), body.boxed())
                    .await?;
            }
        }
        Ok(())
    }

    /// A new upload session, finished with the whole content in one PUT.
    pub(super) async fn upload<S>(
        &self,
        repo: &Repository,
        digest: &str,
        size: Option<u64>,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        match self.registry.start_upload(repo, digest, None).await? {
            UploadStart::Session(session) => {
                self.registry
                    .finish_upload(repo, session, digest, size, body.boxed())
                    .await
            }
            UploadStart::Mounted => Ok(()),
        }
    }
}

/// Blobs at most this large are uploaded without a HEAD first.
const SMALL_BLOB: u64 = 64 * 1024;

fn uploads_without_asking(blob: &Blob) -> bool {
    blob.size <= SMALL_BLOB && matches!(blob.origin, BlobOrigin::Inline(_) | BlobOrigin::File(_))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::test_support::{engine, reconcile_yaml, repo};
    use super::super::{Mode, Outcome};
    use crate::registry::ErrorClass;
    use crate::registry::memory::{Call, MemoryRegistry, Operation};

    fn files_spec(tag: &str, own: &str) -> String {
        format!(
            r#"
repository: memory.test/a
tags: [{tag}]
source:
  files:
    - name: shared.txt
      content: shared content
      mediaType: application/vnd.test.file
    - name: own.txt
      content: {own}
      mediaType: application/vnd.test.file
"#
        )
    }

    fn position(calls: &[Call], wanted: impl Fn(&Call) -> bool) -> Vec<usize> {
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| wanted(c))
            .map(|(i, _)| i)
            .collect()
    }

    fn uploads_by_digest(registry: &MemoryRegistry) -> BTreeMap<String, usize> {
        let mut uploads = BTreeMap::new();
        for call in registry.calls() {
            if call.operation == Operation::FinishUpload {
                *uploads.entry(call.reference).or_default() += 1;
            }
        }
        uploads
    }

    fn intent(yaml: &str) -> crate::intent::ArtifactIntent {
        let spec: crate::api::GardenArtifactSpec = serde_yaml::from_str(yaml).expect("a spec");
        crate::api::validate::validate(&spec, crate::api::validate::Frontend::Apply)
            .expect("a valid spec")
    }

    /// Write access is proven (for the controller's tag ownership) by an upload session
    /// opened and cancelled, as a write of the plan: only when the plan writes nothing else,
    /// never in a dry run; a registry refusing it answers 401.
    #[tokio::test]
    async fn write_access_is_proven_by_a_probe_only_when_nothing_else_is_written() {
        use super::super::Inputs;
        use crate::registry::NeedsPerson;
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let prove = Inputs {
            prove_push: true,
            ..Inputs::default()
        };
        let files = intent(&files_spec("v1", "first"));
        let first = engine.reconcile(&files, &prove, Mode::Apply).await.unwrap();
        assert_eq!(first.outcome, Outcome::Created);
        assert!(!first.plan.probe_push, "its writes prove it");
        let dry = engine
            .reconcile(&files, &prove, Mode::DryRun)
            .await
            .unwrap();
        assert!(
            dry.plan.probe_push && !dry.plan.is_empty(),
            "{:?}",
            dry.plan
        );
        assert_eq!(
            registry.count(Operation::ProbePush),
            0,
            "a dry run writes nothing"
        );
        let converged = engine.reconcile(&files, &prove, Mode::Apply).await.unwrap();
        assert_eq!(converged.outcome, Outcome::Unchanged);
        assert!(converged.plan.probe_push);
        assert_eq!(registry.count(Operation::ProbePush), 1);
        let unasked = engine
            .reconcile(&files, &Inputs::default(), Mode::Apply)
            .await
            .unwrap();
        assert!(unasked.plan.is_empty());
        assert_eq!(registry.count(Operation::ProbePush), 1);

        // A converged copy takes the short path, and proves it too.
        let copy = intent(
            "{repository: memory.test/mirror, tags: [c], source: {image: {reference: 'memory.test/a:v1'}}}",
        );
        engine.reconcile(&copy, &prove, Mode::Apply).await.unwrap();
        assert_eq!(
            registry.count(Operation::ProbePush),
            1,
            "the copy's writes prove it"
        );
        let copied = engine.reconcile(&copy, &prove, Mode::Apply).await.unwrap();
        assert!(copied.plan.probe_push && copied.outcome == Outcome::Unchanged);
        assert_eq!(registry.count(Operation::ProbePush), 2);

        registry.fail(Operation::ProbePush, 1, 401);
        let refused = engine
            .reconcile(&files, &prove, Mode::Apply)
            .await
            .unwrap_err();
        assert_eq!(
            refused.class(),
            ErrorClass::NeedsPerson(NeedsPerson::Unauthorized)
        );
        let plan = engine.probe(&repo("a"), Mode::Apply).await.unwrap();
        assert!(plan.probe_push && plan.stores_nothing() && plan.deletions.is_empty());
        assert_eq!(registry.count(Operation::ProbePush), 4);
        assert_eq!(registry.tag(&repo("a"), "v1"), Some(first.digest));
    }

    #[tokio::test]
    async fn blobs_are_uploaded_once_and_the_tag_moves_last() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let report = reconcile_yaml(&engine, &files_spec("v1", "first"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(report.outcome, Outcome::Created);
        let calls = registry.calls();
        let uploads = position(&calls, |c| c.operation == Operation::FinishUpload);
        let puts = position(&calls, |c| c.operation == Operation::PutManifest);
        assert_eq!(uploads.len(), 3, "config and two layers: {calls:?}");
        assert!(
            uploads.iter().all(|u| *u < puts[0]),
            "blobs before manifests"
        );
        let last_put = &calls[*puts.last().unwrap()];
        assert_eq!(last_put.reference, "v1", "the tag is written last");
        assert_eq!(registry.tag(&repo("a"), "v1"), Some(report.digest.clone()));

        // A second artefact in the repository shares a layer and the empty config.
        reconcile_yaml(&engine, &files_spec("v2", "second"), Mode::Apply)
            .await
            .unwrap();
        let uploads = uploads_by_digest(&registry);
        assert_eq!(uploads.len(), 4, "one new layer: {uploads:?}");
        assert!(
            uploads.values().all(|n| *n == 1),
            "each blob once: {uploads:?}"
        );

        registry.clear_calls();
        let again = reconcile_yaml(&engine, &files_spec("v1", "first"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(again.outcome, Outcome::Unchanged);
        assert_eq!(registry.count(Operation::PutManifest), 0);
        assert_eq!(registry.count(Operation::StartUpload), 0);
    }

    #[tokio::test]
    async fn a_failure_mid_plan_moves_no_tag() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let a = repo("a");
        let old = reconcile_yaml(&engine, &files_spec("v1", "old"), Mode::Apply)
            .await
            .unwrap();
        registry.clear_calls();
        // The one new layer's upload is refused for good.
        registry.fail(Operation::FinishUpload, 1, 400);
        let failed = reconcile_yaml(&engine, &files_spec("v1", "new"), Mode::Apply)
            .await
            .unwrap_err();
        assert!(failed.is_permanent(), "{failed}");
        assert_eq!(
            registry.count(Operation::PutManifest),
            0,
            "{:?}",
            registry.calls()
        );
        assert_eq!(
            registry.tag(&a, "v1"),
            Some(old.digest.clone()),
            "the tag still names complete content"
        );

        let new = reconcile_yaml(&engine, &files_spec("v1", "new"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(new.outcome, Outcome::Updated);
        assert_eq!(registry.tag(&a, "v1"), Some(new.digest));
    }

    #[test]
    fn a_url_that_does_not_answer_may_pass_one_that_is_refused_does_not() {
        use crate::engine::EngineError;
        use crate::sources::FetchError;
        let fetch = |error| EngineError::Fetch {
            field: crate::intent::FieldPath::root("spec")
                .child("source")
                .child("files"),
            error,
        };
        let unreachable = fetch(FetchError::Transport {
            method: "GET",
            url: "https://example.com/a".into(),
            detail: "connection refused".into(),
        });
        assert_eq!(unreachable.class(), ErrorClass::Transient);
        assert_eq!(
            unreachable.to_string(),
            "spec.source.files: GET https://example.com/a: connection refused"
        );
        let unavailable = fetch(FetchError::Status {
            method: "GET",
            url: "https://example.com/a".into(),
            status: 503,
        });
        assert!(!unavailable.is_permanent());
        let gone = fetch(FetchError::Status {
            method: "GET",
            url: "https://example.com/a".into(),
            status: 404,
        });
        assert!(gone.is_permanent());
        assert!(fetch(FetchError::Refused("not allowed".into())).is_permanent());
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_upload_failure_is_tried_again() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        registry.fail(Operation::FinishUpload, 2, 503);
        let report = reconcile_yaml(&engine, &files_spec("v1", "first"), Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            registry.count(Operation::FinishUpload),
            4,
            "three blobs, one twice"
        );
        assert_eq!(registry.tag(&repo("a"), "v1"), Some(report.digest));
    }
}
