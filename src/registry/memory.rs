//! [`MemoryRegistry`]: the [`Registry`] operations over an in-memory store, for engine unit
//! tests and integration tests that need no server. It behaves like the registries the engine
//! meets, chosen by [`MemoryOptions`]: an OCI 1.1 registry (referrers API, `OCI-Subject`, tag
//! deletion, mounts) or Distribution 2.8 (none of those), with paged tag and referrer lists.
//!
//! Answers are what [`RegistryClient`](super::RegistryClient) makes of a registry's answer:
//! absent things are `None` (or `false`), refusals are [`Error::Status`] with Distribution's
//! error code. The client's own retries are not simulated: an injected 503 is what the
//! engine sees once the client's retries ran out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use super::api::{BlobStream, Registry, UploadBody};
use super::blobs::UploadStart;
use super::error::Error;
use super::headers::{next_link, next_link_header, next_page};
use super::manifests::{ManifestHead, PutManifestOutcome, RawManifest, media_type_from_body};
use super::referrers::merge_page;
use super::transport::RequestStats;
use crate::oci::Repository;
use crate::oci::digest::sha256_digest;
use crate::oci::media_types::{OCI_INDEX, is_index};

/// How the registry behaves; change it any time with [`MemoryRegistry::configure`].
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// OCI 1.1: `GET /referrers/<digest>` answers, and a manifest PUT with a subject is
    /// answered with `OCI-Subject`. Off: Distribution 2.8, the endpoint is a 404.
    pub referrers_api: bool,
    /// A mount from another repository of the registry succeeds (201). Off: answered with 202
    /// and an upload session, as registries that cannot mount do.
    pub cross_repository_mount: bool,
    /// Tags per page of a tag list.
    pub tag_page_size: usize,
    /// Descriptors per page of a referrers list.
    pub referrers_page_size: usize,
    /// `DELETE /manifests/<tag>` removes the tag. Off: refused with 400 DIGEST_INVALID, as
    /// Distribution 2.x does.
    pub tag_deletion: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            referrers_api: true,
            cross_repository_mount: true,
            tag_page_size: 1000,
            referrers_page_size: 1000,
            tag_deletion: true,
        }
    }
}

impl MemoryOptions {
    /// Distribution 2.8: no referrers API, no tag deletion; mounts work.
    pub fn distribution_2() -> Self {
        Self {
            referrers_api: false,
            tag_deletion: false,
            ..Self::default()
        }
    }
}

/// The operations of [`Registry`], as the call log and injected failures name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    HeadManifest,
    GetManifest,
    PutManifest,
    DeleteManifest,
    HeadBlob,
    GetBlob,
    StartUpload,
    FinishUpload,
    /// An upload session opened and cancelled to prove write access.
    ProbePush,
    /// One page of a tag list.
    ListTags,
    /// One page of a referrers list.
    Referrers,
}

impl Operation {
    fn method(self) -> &'static str {
        match self {
            Operation::HeadManifest | Operation::HeadBlob => "HEAD",
            Operation::GetManifest
            | Operation::GetBlob
            | Operation::ListTags
            | Operation::Referrers => "GET",
            Operation::PutManifest | Operation::FinishUpload => "PUT",
            Operation::DeleteManifest => "DELETE",
            Operation::StartUpload | Operation::ProbePush => "POST",
        }
    }
}

/// One call, as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub operation: Operation,
    /// `registry/name`.
    pub repository: String,
    /// The tag or digest; for uploads the blob's digest, for lists the page's URL query.
    pub reference: String,
}

type Hook = Box<dyn FnOnce(&MemoryRegistry) + Send>;

enum Action {
    /// Calls `nth..nth + times` answer this status.
    Fail { status: u16, times: usize },
    /// Runs once the `nth` call has had its effect.
    After(Option<Hook>),
}

struct Trigger {
    operation: Operation,
    reference: Option<String>,
    nth: usize,
    seen: usize,
    action: Action,
}

#[derive(Clone)]
struct StoredManifest {
    media_type: String,
    bytes: Bytes,
}

#[derive(Default)]
struct Store {
    blobs: HashMap<Repository, HashMap<String, Bytes>>,
    manifests: HashMap<Repository, HashMap<String, StoredManifest>>,
    tags: HashMap<Repository, BTreeMap<String, String>>,
    /// Open upload sessions by URL path.
    sessions: HashMap<String, Repository>,
    next_session: u64,
}

impl Store {
    fn digest_of(&self, repo: &Repository, reference: &str) -> Option<String> {
        if is_digest(reference) {
            self.manifests
                .get(repo)
                .filter(|m| m.contains_key(reference))
                .map(|_| reference.to_string())
        } else {
            self.tags.get(repo).and_then(|t| t.get(reference)).cloned()
        }
    }

    fn manifest(&self, repo: &Repository, reference: &str) -> Option<(String, StoredManifest)> {
        let digest = self.digest_of(repo, reference)?;
        let stored = self.manifests.get(repo)?.get(&digest)?.clone();
        Some((digest, stored))
    }

    fn has_blob(&self, repo: &Repository, digest: &str) -> bool {
        self.blobs.get(repo).is_some_and(|b| b.contains_key(digest))
    }

    fn has_manifest(&self, repo: &Repository, digest: &str) -> bool {
        self.manifests
            .get(repo)
            .is_some_and(|m| m.contains_key(digest))
    }

    /// The descriptors of the manifests of `repo` whose subject is `digest`, by digest.
    fn referrers(&self, repo: &Repository, digest: &str) -> Vec<Value> {
        let Some(manifests) = self.manifests.get(repo) else {
            return Vec::new();
        };
        let mut found: Vec<(String, Value)> = manifests
            .iter()
            .filter_map(|(stored_digest, stored)| {
                let document: Value = serde_json::from_slice(&stored.bytes).ok()?;
                let subject = document.get("subject")?.get("digest")?.as_str()?;
                (subject == digest).then(|| {
                    (
                        stored_digest.clone(),
                        referrer_descriptor(stored_digest, stored, &document),
                    )
                })
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.into_iter().map(|(_, d)| d).collect()
    }
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

/// The descriptor the referrers API lists for a manifest: its artifact type is its own
/// `artifactType`, or else its config's media type (OCI distribution spec 1.1).
fn referrer_descriptor(digest: &str, stored: &StoredManifest, document: &Value) -> Value {
    let mut descriptor = json!({
        "mediaType": stored.media_type,
        "digest": digest,
        "size": stored.bytes.len(),
    });
    let artifact_type = document
        .get("artifactType")
        .or_else(|| document.get("config").and_then(|c| c.get("mediaType")))
        .cloned();
    if let Some(artifact_type) = artifact_type {
        descriptor["artifactType"] = artifact_type;
    }
    if let Some(annotations) = document.get("annotations") {
        descriptor["annotations"] = annotations.clone();
    }
    descriptor
}

/// What a stored manifest needs to be there first: blobs (config and layers, foreign layers
/// excepted) and child manifests of an index.
fn references_of(media_type: &str, document: &Value) -> (Vec<String>, Vec<String>) {
    let digests = |list: Option<&Value>| -> Vec<String> {
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|d| d.get("urls").is_none())
            .filter_map(|d| d.get("digest").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    if is_index(media_type) {
        (Vec::new(), digests(document.get("manifests")))
    } else {
        let mut blobs = digests(document.get("layers"));
        blobs.extend(
            document
                .get("config")
                .and_then(|c| c.get("digest"))
                .and_then(Value::as_str)
                .map(str::to_string),
        );
        (blobs, Vec::new())
    }
}

/// An in-memory registry (see the module documentation).
pub struct MemoryRegistry {
    options: Mutex<MemoryOptions>,
    store: Mutex<Store>,
    calls: Mutex<Vec<Call>>,
    triggers: Mutex<Vec<Trigger>>,
    stats: RequestStats,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new(MemoryOptions::default())
    }
}

impl MemoryRegistry {
    pub fn new(options: MemoryOptions) -> Self {
        Self {
            options: Mutex::new(options),
            store: Mutex::default(),
            calls: Mutex::default(),
            triggers: Mutex::default(),
            stats: RequestStats::default(),
        }
    }

    pub fn configure(&self, change: impl FnOnce(&mut MemoryOptions)) {
        change(&mut self.options.lock().expect("not poisoned"));
    }

    fn options(&self) -> MemoryOptions {
        self.options.lock().expect("not poisoned").clone()
    }

    /// The `nth` call (counted from now, 1 for the next) of `operation` answers `status`.
    pub fn fail(&self, operation: Operation, nth: usize, status: u16) {
        self.fail_times(operation, None, nth, 1, status);
    }

    /// `times` calls of `operation` (on `reference` only, when given), from the `nth` on,
    /// answer `status`.
    pub fn fail_times(
        &self,
        operation: Operation,
        reference: Option<&str>,
        nth: usize,
        times: usize,
        status: u16,
    ) {
        self.trigger(operation, reference, nth, Action::Fail { status, times });
    }

    /// Runs `hook` once the `nth` call (counted from now) of `operation` (on `reference` only,
    /// when given) has had its effect: another writer acting between two of the engine's calls.
    pub fn after(
        &self,
        operation: Operation,
        reference: Option<&str>,
        nth: usize,
        hook: impl FnOnce(&MemoryRegistry) + Send + 'static,
    ) {
        self.trigger(
            operation,
            reference,
            nth,
            Action::After(Some(Box::new(hook))),
        );
    }

    fn trigger(&self, operation: Operation, reference: Option<&str>, nth: usize, action: Action) {
        self.triggers.lock().expect("not poisoned").push(Trigger {
            operation,
            reference: reference.map(str::to_string),
            nth: nth.max(1),
            seen: 0,
            action,
        });
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// Calls of `operation` so far.
    pub fn count(&self, operation: Operation) -> usize {
        self.calls
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    pub fn clear_calls(&self) {
        self.calls.lock().expect("not poisoned").clear();
    }

    // Direct access to the store, for setting a test up and for hooks; none of it is logged.

    /// Stores a blob; returns its digest.
    pub fn insert_blob(&self, repo: &Repository, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        self.store
            .lock()
            .expect("not poisoned")
            .blobs
            .entry(repo.clone())
            .or_default()
            .insert(digest.clone(), bytes);
        digest
    }

    /// Stores a manifest by digest and under `tag` when given, without checking what it
    /// references; returns its digest.
    pub fn insert_manifest(
        &self,
        repo: &Repository,
        tag: Option<&str>,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> String {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        let mut store = self.store.lock().expect("not poisoned");
        store.manifests.entry(repo.clone()).or_default().insert(
            digest.clone(),
            StoredManifest {
                media_type: media_type.to_string(),
                bytes,
            },
        );
        if let Some(tag) = tag {
            store
                .tags
                .entry(repo.clone())
                .or_default()
                .insert(tag.to_string(), digest.clone());
        }
        digest
    }

    /// The digest `tag` points at.
    pub fn tag(&self, repo: &Repository, tag: &str) -> Option<String> {
        self.store
            .lock()
            .expect("not poisoned")
            .tags
            .get(repo)
            .and_then(|t| t.get(tag))
            .cloned()
    }

    /// Every tag of `repo` and its digest.
    pub fn tags(&self, repo: &Repository) -> BTreeMap<String, String> {
        self.store
            .lock()
            .expect("not poisoned")
            .tags
            .get(repo)
            .cloned()
            .unwrap_or_default()
    }

    /// A stored manifest, by tag or digest.
    pub fn manifest(&self, repo: &Repository, reference: &str) -> Option<RawManifest> {
        let store = self.store.lock().expect("not poisoned");
        store
            .manifest(repo, reference)
            .map(|(digest, stored)| RawManifest {
                media_type: stored.media_type,
                digest,
                bytes: stored.bytes,
            })
    }

    pub fn has_blob(&self, repo: &Repository, digest: &str) -> bool {
        self.store
            .lock()
            .expect("not poisoned")
            .has_blob(repo, digest)
    }

    /// Logs the call, counts it for the triggers, and answers an injected failure. Returns the
    /// hooks to run after the call's effect.
    fn begin(
        &self,
        operation: Operation,
        repo: &Repository,
        reference: &str,
    ) -> Result<Vec<Hook>, Error> {
        self.calls.lock().expect("not poisoned").push(Call {
            operation,
            repository: repo.to_string(),
            reference: reference.to_string(),
        });
        let mut hooks = Vec::new();
        let mut failure = None;
        let mut triggers = self.triggers.lock().expect("not poisoned");
        for trigger in triggers.iter_mut().filter(|t| {
            t.operation == operation && t.reference.as_deref().is_none_or(|r| r == reference)
        }) {
            trigger.seen += 1;
            match &mut trigger.action {
                Action::Fail { status, times }
                    if trigger.seen >= trigger.nth && trigger.seen < trigger.nth + *times =>
                {
                    failure.get_or_insert(*status);
                }
                Action::After(hook) if trigger.seen == trigger.nth => hooks.extend(hook.take()),
                _ => {}
            }
        }
        triggers.retain(|t| match &t.action {
            Action::Fail { times, .. } => t.seen < t.nth + times - 1,
            Action::After(hook) => hook.is_some(),
        });
        drop(triggers);
        if let Some(status) = failure {
            self.stats.count(operation.method(), status);
            return Err(status_error(operation, repo, reference, status, None));
        }
        Ok(hooks)
    }

    /// Counts the answer and runs the hooks of the call.
    fn end<T>(
        &self,
        operation: Operation,
        hooks: Vec<Hook>,
        result: Result<T, Error>,
        status: impl FnOnce(&T) -> u16,
    ) -> Result<T, Error> {
        let answered = match &result {
            Ok(value) => status(value),
            Err(e) => e.status().unwrap_or(0),
        };
        self.stats.count(operation.method(), answered);
        for hook in hooks {
            hook(self);
        }
        result
    }

    fn put_manifest_now(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error> {
        let refuse = |code: &str, message: String| {
            Err(status_error(
                Operation::PutManifest,
                repo,
                reference,
                400,
                Some((code, message)),
            ))
        };
        let digest = sha256_digest(&bytes);
        if is_digest(reference) && reference != digest {
            return refuse("DIGEST_INVALID", format!("the content is {digest}"));
        }
        let Ok(document) = serde_json::from_slice::<Value>(&bytes) else {
            return refuse("MANIFEST_INVALID", "not JSON".into());
        };
        let mut store = self.store.lock().expect("not poisoned");
        let (blobs, children) = references_of(media_type, &document);
        if let Some(missing) = blobs.iter().find(|b| !store.has_blob(repo, b)) {
            return refuse("MANIFEST_BLOB_UNKNOWN", format!("blob unknown: {missing}"));
        }
        if let Some(missing) = children.iter().find(|m| !store.has_manifest(repo, m)) {
            return refuse("MANIFEST_UNKNOWN", format!("manifest unknown: {missing}"));
        }
        store.manifests.entry(repo.clone()).or_default().insert(
            digest.clone(),
            StoredManifest {
                media_type: media_type.to_string(),
                bytes,
            },
        );
        if !is_digest(reference) {
            store
                .tags
                .entry(repo.clone())
                .or_default()
                .insert(reference.to_string(), digest);
        }
        Ok(PutManifestOutcome {
            subject_processed: self.options().referrers_api && document.get("subject").is_some(),
        })
    }

    fn delete_manifest_now(&self, repo: &Repository, reference: &str) -> Result<bool, Error> {
        let mut store = self.store.lock().expect("not poisoned");
        if !is_digest(reference) {
            if !self.options().tag_deletion {
                return Err(status_error(
                    Operation::DeleteManifest,
                    repo,
                    reference,
                    400,
                    Some(("DIGEST_INVALID", "provided digest did not match".into())),
                ));
            }
            return Ok(store
                .tags
                .get_mut(repo)
                .and_then(|t| t.remove(reference))
                .is_some());
        }
        let removed = store
            .manifests
            .get_mut(repo)
            .and_then(|m| m.remove(reference))
            .is_some();
        // Deleting a manifest deletes the tags that point at it.
        if let Some(tags) = store.tags.get_mut(repo) {
            tags.retain(|_, digest| digest != reference);
        }
        Ok(removed)
    }

    /// One page of a list, and the `Link` header of the next page when there is one, paged
    /// the way Distribution pages tag lists (`?n=<size>&last=<position>`).
    fn page<T: Clone>(
        items: &[T],
        url: &str,
        size: usize,
        position: impl Fn(&T) -> String,
    ) -> (Vec<T>, Option<String>) {
        let query: HashMap<String, String> = reqwest::Url::parse(url)
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let start = match query.get("last") {
            Some(last) => items
                .iter()
                .position(|i| position(i) == *last)
                .map_or(items.len(), |p| p + 1),
            None => 0,
        };
        let size = size.max(1);
        let page: Vec<T> = items.iter().skip(start).take(size).cloned().collect();
        let link = (start + size < items.len()).then(|| {
            let path = url.split('?').next().unwrap_or(url);
            let path = path.split_once("/v2/").map_or(path, |(_, p)| p);
            next_link_header(&format!(
                "/v2/{path}?n={size}&last={}",
                position(&page[page.len() - 1])
            ))
        });
        (page, link)
    }

    fn url(repo: &Repository, tail: &str) -> String {
        format!("http://{}/v2/{}/{tail}", repo.registry(), repo.name())
    }

    fn query_of(url: &str) -> String {
        url.split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .to_string()
    }
}

fn status_error(
    operation: Operation,
    repo: &Repository,
    reference: &str,
    status: u16,
    code: Option<(&str, String)>,
) -> Error {
    let (code, message) = match code {
        Some((code, message)) => (Some(code.to_string()), Some(message)),
        None => (None, None),
    };
    Error::Status {
        method: operation.method().into(),
        url: format!("memory://{repo}/{reference}"),
        status,
        code,
        message,
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        let op = Operation::HeadManifest;
        let hooks = self.begin(op, repo, reference)?;
        let found = self.manifest(repo, reference).map(|m| ManifestHead {
            size: m.bytes.len() as u64,
            digest: m.digest,
            media_type: m.media_type,
        });
        self.end(op, hooks, Ok(found), found_status)
    }

    async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, Error> {
        let op = Operation::GetManifest;
        let hooks = self.begin(op, repo, reference)?;
        let found = self.manifest(repo, reference).map(|mut m| {
            // As the client does for a registry that serves manifests as plain JSON.
            if m.media_type.is_empty() {
                m.media_type = media_type_from_body(&m.bytes).unwrap_or_default();
            }
            m
        });
        self.end(op, hooks, Ok(found), found_status)
    }

    async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error> {
        let op = Operation::PutManifest;
        let hooks = self.begin(op, repo, reference)?;
        let result = self.put_manifest_now(repo, reference, media_type, bytes);
        self.end(op, hooks, result, |_| 201)
    }

    async fn delete_manifest(&self, repo: &Repository, reference: &str) -> Result<bool, Error> {
        let op = Operation::DeleteManifest;
        let hooks = self.begin(op, repo, reference)?;
        let result = self.delete_manifest_now(repo, reference);
        self.end(
            op,
            hooks,
            result,
            |removed| if *removed { 202 } else { 404 },
        )
    }

    async fn head_blob(&self, repo: &Repository, digest: &str) -> Result<Option<u64>, Error> {
        let op = Operation::HeadBlob;
        let hooks = self.begin(op, repo, digest)?;
        let size = self
            .store
            .lock()
            .expect("not poisoned")
            .blobs
            .get(repo)
            .and_then(|b| b.get(digest))
            .map(|b| b.len() as u64);
        self.end(op, hooks, Ok(size), found_status)
    }

    async fn get_blob(&self, repo: &Repository, digest: &str) -> Result<BlobStream, Error> {
        let op = Operation::GetBlob;
        let hooks = self.begin(op, repo, digest)?;
        let blob = self
            .store
            .lock()
            .expect("not poisoned")
            .blobs
            .get(repo)
            .and_then(|b| b.get(digest))
            .cloned()
            .ok_or_else(|| {
                status_error(
                    op,
                    repo,
                    digest,
                    404,
                    Some(("BLOB_UNKNOWN", "blob unknown to registry".into())),
                )
            });
        let blob = self.end(op, hooks, blob, |_| 200)?;
        Ok(stream::once(std::future::ready(Ok(blob))).boxed())
    }

    async fn start_upload(
        &self,
        repo: &Repository,
        digest: &str,
        mount_from: Option<&Repository>,
    ) -> Result<UploadStart, Error> {
        let op = Operation::StartUpload;
        let hooks = self.begin(op, repo, digest)?;
        let mut store = self.store.lock().expect("not poisoned");
        let mountable = mount_from
            .filter(|from| from.same_registry(repo))
            .filter(|_| self.options().cross_repository_mount)
            .and_then(|from| store.blobs.get(from).and_then(|b| b.get(digest)).cloned());
        let start = match mountable {
            Some(blob) => {
                store
                    .blobs
                    .entry(repo.clone())
                    .or_default()
                    .insert(digest.to_string(), blob);
                UploadStart::Mounted
            }
            None => {
                store.next_session += 1;
                let url = Self::url(repo, &format!("blobs/uploads/{}", store.next_session));
                let session = reqwest::Url::parse(&url).map_err(|_| Error::Invalid {
                    what: format!("POST {url}"),
                    detail: "not a URL".into(),
                })?;
                store
                    .sessions
                    .insert(session.path().to_string(), repo.clone());
                UploadStart::Session(session)
            }
        };
        drop(store);
        self.end(op, hooks, Ok(start), |start| match start {
            UploadStart::Mounted => 201,
            UploadStart::Session(_) => 202,
        })
    }

    async fn finish_upload(
        &self,
        repo: &Repository,
        session: reqwest::Url,
        digest: &str,
        size: Option<u64>,
        body: UploadBody,
    ) -> Result<(), Error> {
        let op = Operation::FinishUpload;
        let hooks = self.begin(op, repo, digest)?;
        let read: Result<Vec<Bytes>, std::io::Error> = body.try_collect().await;
        let result = match read {
            Err(e) => Err(Error::Transport {
                method: "PUT".into(),
                url: session.path().to_string(),
                detail: e.to_string(),
            }),
            Ok(chunks) => {
                let bytes: Bytes = chunks.concat().into();
                self.stats.add_sent(bytes.len() as u64);
                let mut store = self.store.lock().expect("not poisoned");
                let refuse = |code: &str, message: &str| {
                    Err(status_error(
                        op,
                        repo,
                        digest,
                        400,
                        Some((code, message.into())),
                    ))
                };
                if store.sessions.get(session.path()) != Some(repo) {
                    Err(status_error(
                        op,
                        repo,
                        digest,
                        404,
                        Some(("BLOB_UPLOAD_UNKNOWN", "blob upload unknown".into())),
                    ))
                } else if sha256_digest(&bytes) != digest {
                    refuse("DIGEST_INVALID", "provided digest did not match")
                } else if size.is_some_and(|s| s != bytes.len() as u64) {
                    refuse(
                        "SIZE_INVALID",
                        "provided length did not match content length",
                    )
                } else {
                    store.sessions.remove(session.path());
                    let length = bytes.len() as u64;
                    store
                        .blobs
                        .entry(repo.clone())
                        .or_default()
                        .insert(digest.to_string(), bytes);
                    self.stats.add_uploaded(length);
                    Ok(())
                }
            }
        };
        self.end(op, hooks, result, |_| 201)
    }

    async fn probe_push(&self, repo: &Repository) -> Result<(), Error> {
        let op = Operation::ProbePush;
        let hooks = self.begin(op, repo, "")?;
        self.end(op, hooks, Ok(()), |_| 202)
    }

    async fn list_tags(
        &self,
        repo: &Repository,
        max_pages: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        let op = Operation::ListTags;
        let size = self.options().tag_page_size;
        let mut url = Self::url(repo, &format!("tags/list?n={size}"));
        let mut tags = Vec::new();
        for _ in 0..max_pages {
            let hooks = self.begin(op, repo, &Self::query_of(&url))?;
            let all: Vec<String> = self.tags(repo).into_keys().collect();
            let (page, link) = Self::page(&all, &url, size, String::clone);
            self.end(op, hooks, Ok(()), |_| 200)?;
            tags.extend(page);
            match link.as_deref().and_then(next_link) {
                Some(next) => url = next_page(&url, &next)?,
                None => return Ok(Some(tags)),
            }
        }
        Ok(None)
    }

    async fn referrers(&self, repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error> {
        let op = Operation::Referrers;
        let options = self.options();
        let size = options.referrers_page_size;
        let mut url = Self::url(repo, &format!("referrers/{digest}?n={size}"));
        let mut merged = None;
        loop {
            let hooks = self.begin(op, repo, &Self::query_of(&url))?;
            if !options.referrers_api {
                // Distribution 2.8 does not know the route.
                self.end(op, hooks, Ok(()), |_| 404)?;
                return Ok(None);
            }
            let all = self
                .store
                .lock()
                .expect("not poisoned")
                .referrers(repo, digest);
            let (page, link) = Self::page(&all, &url, size, |d| {
                d["digest"].as_str().unwrap_or_default().to_string()
            });
            self.end(op, hooks, Ok(()), |_| 200)?;
            let page = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page });
            merged = Some(merge_page(merged, page));
            match link.as_deref().and_then(next_link) {
                Some(next) => url = next_page(&url, &next)?,
                None => break,
            }
        }
        Ok(merged.map(|m| Bytes::from(serde_json::to_vec(&m).expect("JSON serializes"))))
    }

    fn stats(&self) -> &RequestStats {
        &self.stats
    }
}

fn found_status<T>(found: &Option<T>) -> u16 {
    if found.is_some() { 200 } else { 404 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_types::{OCI_EMPTY, OCI_MANIFEST};

    fn repo(name: &str) -> Repository {
        Repository::parse(&format!("memory.test/{name}")).unwrap()
    }

    fn manifest(config: &str, subject: Option<&str>) -> Bytes {
        let mut document = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/x-test",
            "config": { "mediaType": OCI_EMPTY, "digest": config, "size": 2 },
            "layers": [],
        });
        if let Some(subject) = subject {
            document["subject"] =
                json!({ "mediaType": OCI_MANIFEST, "digest": subject, "size": 1 });
        }
        Bytes::from(serde_json::to_vec(&document).unwrap())
    }

    async fn upload(registry: &MemoryRegistry, repo: &Repository, bytes: &'static [u8]) -> String {
        let digest = sha256_digest(bytes);
        let UploadStart::Session(session) =
            registry.start_upload(repo, &digest, None).await.unwrap()
        else {
            panic!("no mount was asked for");
        };
        let body = stream::once(std::future::ready(Ok(Bytes::from_static(bytes)))).boxed();
        registry
            .finish_upload(repo, session, &digest, Some(bytes.len() as u64), body)
            .await
            .unwrap();
        digest
    }

    #[tokio::test]
    async fn manifests_need_their_blobs_and_tags_point_at_digests() {
        let registry = MemoryRegistry::default();
        let a = repo("a");
        let config = sha256_digest(b"{}");
        let bytes = manifest(&config, None);
        let refused = registry
            .put_manifest(&a, "v1", OCI_MANIFEST, bytes.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(400));
        assert!(
            refused.to_string().contains("MANIFEST_BLOB_UNKNOWN"),
            "{refused}"
        );
        upload(&registry, &a, b"{}").await;
        registry
            .put_manifest(&a, "v1", OCI_MANIFEST, bytes.clone())
            .await
            .unwrap();
        let head = registry.head_manifest(&a, "v1").await.unwrap().unwrap();
        assert_eq!(head.digest, sha256_digest(&bytes));
        assert_eq!(head.size, bytes.len() as u64);
        let got = registry
            .get_manifest(&a, &head.digest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, bytes);
        assert!(
            registry
                .head_manifest(&repo("b"), "v1")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(registry.count(Operation::PutManifest), 2);
        assert_eq!(
            registry.stats().request_counts()[&("PUT".to_string(), 400)],
            1
        );
    }

    #[tokio::test]
    async fn mounts_and_their_fallback_to_an_upload() {
        let registry = MemoryRegistry::default();
        let (a, b, c) = (repo("a"), repo("b"), repo("c"));
        let digest = upload(&registry, &a, b"layer").await;
        let mounted = registry.start_upload(&b, &digest, Some(&a)).await.unwrap();
        assert!(matches!(mounted, UploadStart::Mounted));
        assert!(registry.has_blob(&b, &digest));
        registry.configure(|o| o.cross_repository_mount = false);
        let fallback = registry.start_upload(&c, &digest, Some(&a)).await.unwrap();
        assert!(matches!(fallback, UploadStart::Session(_)));
        assert!(!registry.has_blob(&c, &digest));
    }

    #[tokio::test]
    async fn tags_come_in_pages() {
        let registry = MemoryRegistry::default();
        let a = repo("a");
        for tag in ["t1", "t2", "t3", "t4", "t5"] {
            registry.insert_manifest(&a, Some(tag), OCI_MANIFEST, format!("{{\"t\":\"{tag}\"}}"));
        }
        registry.configure(|o| o.tag_page_size = 2);
        let all = registry.list_tags(&a, 10).await.unwrap().unwrap();
        assert_eq!(all, ["t1", "t2", "t3", "t4", "t5"]);
        assert_eq!(registry.count(Operation::ListTags), 3);
        assert_eq!(registry.calls()[1].reference, "n=2&last=t2");
        assert_eq!(
            registry.list_tags(&a, 2).await.unwrap(),
            None,
            "more than two pages"
        );
    }

    #[tokio::test]
    async fn subjects_become_referrers_only_with_the_referrers_api() {
        let registry = MemoryRegistry::default();
        let a = repo("a");
        let subject = registry.insert_manifest(&a, Some("v1"), OCI_MANIFEST, "{}");
        let config = upload(&registry, &a, b"{}").await;
        registry.configure(|o| o.referrers_page_size = 1);
        let mut referrers = Vec::new();
        for n in 0..2 {
            let bytes = manifest(&config, Some(&subject));
            let mut document: Value = serde_json::from_slice(&bytes).unwrap();
            document["annotations"] = json!({ "n": n.to_string() });
            let bytes = Bytes::from(serde_json::to_vec(&document).unwrap());
            let digest = sha256_digest(&bytes);
            let outcome = registry
                .put_manifest(&a, &digest, OCI_MANIFEST, bytes)
                .await
                .unwrap();
            assert!(outcome.subject_processed, "OCI-Subject");
            referrers.push(digest);
        }
        referrers.sort();
        let index: Value =
            serde_json::from_slice(&registry.referrers(&a, &subject).await.unwrap().unwrap())
                .unwrap();
        let listed: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap())
            .collect();
        assert_eq!(listed, referrers, "both pages merged");
        assert_eq!(index["manifests"][0]["artifactType"], "application/x-test");
        assert_eq!(registry.count(Operation::Referrers), 2);

        registry.configure(|o| *o = MemoryOptions::distribution_2());
        assert_eq!(registry.referrers(&a, &subject).await.unwrap(), None);
        let bytes = manifest(&config, Some(&subject));
        let outcome = registry
            .put_manifest(&a, &sha256_digest(&bytes), OCI_MANIFEST, bytes)
            .await
            .unwrap();
        assert!(
            !outcome.subject_processed,
            "no OCI-Subject on Distribution 2.8"
        );
    }

    #[tokio::test]
    async fn tag_deletion_as_each_kind_of_registry_answers_it() {
        let registry = MemoryRegistry::new(MemoryOptions::distribution_2());
        let a = repo("a");
        let digest = registry.insert_manifest(&a, Some("v1"), OCI_MANIFEST, "{}");
        registry.insert_manifest(&a, Some("v2"), OCI_MANIFEST, "{}");
        let refused = registry.delete_manifest(&a, "v1").await.unwrap_err();
        assert_eq!(refused.status(), Some(400));
        registry.configure(|o| o.tag_deletion = true);
        assert!(registry.delete_manifest(&a, "v1").await.unwrap());
        assert!(!registry.delete_manifest(&a, "v1").await.unwrap());
        assert_eq!(registry.tag(&a, "v2"), Some(digest.clone()));
        assert!(registry.delete_manifest(&a, &digest).await.unwrap());
        assert_eq!(
            registry.tag(&a, "v2"),
            None,
            "the manifest's tags go with it"
        );
    }

    #[tokio::test]
    async fn injected_failures_and_hooks_hit_the_nth_call() {
        let registry = std::sync::Arc::new(MemoryRegistry::default());
        let a = repo("a");
        registry.insert_manifest(&a, Some("v1"), OCI_MANIFEST, "{}");
        registry.fail(Operation::HeadManifest, 2, 503);
        registry.after(Operation::HeadManifest, Some("v1"), 3, {
            let a = a.clone();
            move |r| {
                r.insert_manifest(&a, Some("v1"), OCI_MANIFEST, "{\"moved\":1}");
            }
        });
        let first = registry.head_manifest(&a, "v1").await.unwrap().unwrap();
        let failed = registry.head_manifest(&a, "v1").await.unwrap_err();
        assert_eq!(failed.status(), Some(503));
        let third = registry.head_manifest(&a, "v1").await.unwrap().unwrap();
        assert_eq!(third.digest, first.digest, "the hook runs after the call");
        let fourth = registry.head_manifest(&a, "v1").await.unwrap().unwrap();
        assert_ne!(fourth.digest, first.digest);
        assert_eq!(registry.count(Operation::HeadManifest), 4);
        registry.fail_times(Operation::GetBlob, None, 1, 2, 401);
        for _ in 0..2 {
            let e = registry.get_blob(&a, "sha256:x").await.err().unwrap();
            assert_eq!(e.status(), Some(401));
        }
        let e = registry.get_blob(&a, "sha256:x").await.err().unwrap();
        assert_eq!(e.status(), Some(404), "only twice");
    }
}
