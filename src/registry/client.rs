use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::budget::{BudgetOptions, Budgets};
use super::credentials::{Credential, CredentialSource};
use super::error::{Error, describe_transport};
use crate::oci::Repository;
use crate::oci::digest::sha256_digest;
use crate::oci::media_types::{MANIFEST_ACCEPT, OCI_INDEX};

/// Manifests larger than this are refused; registries themselves stop at 4 MiB.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts for one request, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host:port`) spoken to over plain HTTP although they are not on loopback.
    pub insecure_registries: Vec<String>,
    pub retry: RetryPolicy,
    /// Extra trusted CA certificates (PEM), e.g. for a registry with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    pub budget: BudgetOptions,
}

/// What a `HEAD` of a manifest tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct RawManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
}

#[derive(Clone, Debug, Default)]
pub struct PutManifestOutcome {
    /// The `OCI-Subject` header: the registry processed the manifest's subject itself.
    pub subject_processed: bool,
}

pub enum UploadStart {
    /// Cross-repository mount succeeded: the blob is in place.
    Mounted,
    /// An upload session to finish with a `PUT`.
    Session(reqwest::Url),
}

#[derive(Clone, Debug)]
enum AuthScheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct CachedToken {
    value: String,
    expires: Instant,
}

/// The distribution API client shared by every object of a run: one connection pool, one
/// token per registry and scope, one view of each registry's auth scheme.
pub struct RegistryClient {
    http: reqwest::Client,
    insecure: BTreeSet<String>,
    retry: RetryPolicy,
    credentials: Arc<dyn CredentialSource>,
    resolved_credentials: Mutex<HashMap<String, Option<Credential>>>,
    schemes: Mutex<HashMap<String, AuthScheme>>,
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
    stats: Arc<RequestStats>,
    budgets: Arc<Budgets>,
}

/// Counters shared by every client cloned from one root, for metrics and benchmarks.
#[derive(Default)]
pub struct RequestStats {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Bytes of blobs the registry confirmed (counted when an upload completes).
    bytes_uploaded: AtomicU64,
    /// Bytes of upload bodies handed to the connection so far (counted as they stream), for
    /// progress displays.
    bytes_sent: AtomicU64,
}

impl RequestStats {
    /// Requests sent so far, by method and status (0 for no answer).
    pub fn request_counts(&self) -> BTreeMap<(String, u16), u64> {
        self.requests.lock().expect("not poisoned").clone()
    }

    pub fn bytes_uploaded(&self) -> u64 {
        self.bytes_uploaded.load(Ordering::Relaxed)
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }
}

/// The access a request needs; it becomes the bearer token scope.
#[derive(Clone, Debug)]
enum Access<'a> {
    Pull(&'a Repository),
    Push(&'a Repository),
    /// Push to the first, pull from the second (cross-repository mount).
    PushMount(&'a Repository, &'a Repository),
}

impl Access<'_> {
    fn scope(&self) -> String {
        match self {
            Access::Pull(r) => format!("repository:{}:pull", r.name()),
            Access::Push(r) => format!("repository:{}:pull,push", r.name()),
            Access::PushMount(to, from) => {
                format!(
                    "repository:{}:pull,push repository:{}:pull",
                    to.name(),
                    from.name()
                )
            }
        }
    }
}

fn install_crypto_provider() {
    // Both kube and reqwest use rustls; whoever comes first installs ring, the rest is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `localhost`, `127.0.0.0/8` and `::1` speak plain HTTP; nothing else does unless named.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    pub fn new(
        options: ClientOptions,
        credentials: Arc<dyn CredentialSource>,
    ) -> Result<Self, Error> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("garden-artifacts/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = &options.ca_pem {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Invalid {
                    what: "--ca-file".into(),
                    detail: format!("not a PEM certificate bundle: {}", describe_transport(&e)),
                })?;
            if certificates.is_empty() {
                return Err(Error::Invalid {
                    what: "--ca-file".into(),
                    detail: "holds no PEM certificate".into(),
                });
            }
            builder = builder.tls_certs_merge(certificates);
        }
        let http = builder.build().map_err(|e| Error::Invalid {
            what: "HTTP client".into(),
            detail: describe_transport(&e),
        })?;
        Ok(Self {
            http,
            insecure: options.insecure_registries.into_iter().collect(),
            retry: options.retry,
            credentials,
            resolved_credentials: Mutex::default(),
            schemes: Mutex::default(),
            tokens: Mutex::default(),
            stats: Arc::default(),
            budgets: Arc::new(Budgets::new(options.budget)),
        })
    }

    /// A client with other credentials that shares this one's connection pool and counters
    /// (the controller makes one per registry Secret).
    pub fn with_credentials(&self, credentials: Arc<dyn CredentialSource>) -> Self {
        Self {
            http: self.http.clone(),
            insecure: self.insecure.clone(),
            retry: self.retry.clone(),
            credentials,
            resolved_credentials: Mutex::default(),
            schemes: Mutex::new(self.schemes.lock().expect("not poisoned").clone()),
            tokens: Mutex::default(),
            stats: Arc::clone(&self.stats),
            budgets: Arc::clone(&self.budgets),
        }
    }

    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    fn base(&self, registry: &str) -> String {
        let scheme = if is_loopback(registry) || self.insecure.contains(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{registry}/v2/")
    }

    fn url(&self, repo: &Repository, tail: &str) -> String {
        format!("{}{}/{}", self.base(repo.registry()), repo.name(), tail)
    }

    fn count(&self, method: &Method, status: u16) {
        *self
            .stats
            .requests
            .lock()
            .expect("not poisoned")
            .entry((method.to_string(), status))
            .or_default() += 1;
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>, Error> {
        if let Some(known) = self
            .resolved_credentials
            .lock()
            .expect("not poisoned")
            .get(registry)
        {
            return Ok(known.clone());
        }
        let source = Arc::clone(&self.credentials);
        let host = registry.to_string();
        let found = tokio::task::spawn_blocking(move || source.lookup(&host))
            .await
            .map_err(|e| Error::Auth {
                registry: registry.into(),
                detail: e.to_string(),
            })?
            .map_err(|detail| Error::Auth {
                registry: registry.into(),
                detail,
            })?;
        self.resolved_credentials
            .lock()
            .expect("not poisoned")
            .insert(registry.to_string(), found.clone());
        Ok(found)
    }

    /// The `Authorization` value for a request, if the registry is known to want one.
    async fn authorization(
        &self,
        registry: &str,
        access: &Access<'_>,
    ) -> Result<Option<HeaderValue>, Error> {
        let scheme = self
            .schemes
            .lock()
            .expect("not poisoned")
            .get(registry)
            .cloned();
        match scheme {
            None => Ok(None),
            Some(AuthScheme::Basic) => match self.credential(registry).await? {
                Some(Credential::Basic { username, password }) => {
                    Ok(Some(basic_header(&username, &password)))
                }
                Some(Credential::IdentityToken(_)) => Err(Error::Auth {
                    registry: registry.into(),
                    detail:
                        "the registry asks for basic auth but only an identity token is configured"
                            .into(),
                }),
                None => Ok(None),
            },
            Some(AuthScheme::Bearer { realm, service }) => {
                let scope = access.scope();
                let key = (registry.to_string(), scope.clone());
                if let Some(token) = self.tokens.lock().expect("not poisoned").get(&key)
                    && token.expires > Instant::now()
                {
                    return Ok(Some(bearer_header(&token.value)));
                }
                let token = self
                    .fetch_token(registry, &realm, service.as_deref(), &scope)
                    .await?;
                let value = bearer_header(&token.value);
                self.tokens.lock().expect("not poisoned").insert(key, token);
                Ok(Some(value))
            }
        }
    }

    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<CachedToken, Error> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let auth_error = |detail: String| Error::Auth {
            registry: registry.into(),
            detail,
        };
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        let request = match self.credential(registry).await? {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "garden-artifacts"),
                ];
                form.extend(query.iter().copied());
                let body = serde_urlencoded_form(&form);
                self.http
                    .post(realm)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            Some(Credential::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&query)
                .header(header::AUTHORIZATION, basic_header(&username, &password)),
            None => self.http.get(realm).query(&query),
        };
        let answer = request.send().await.map_err(|e| {
            auth_error(format!(
                "token request to {realm}: {}",
                describe_transport(&e)
            ))
        })?;
        let status = answer.status();
        self.count(&Method::GET, status.as_u16());
        if !status.is_success() {
            return Err(auth_error(format!(
                "token endpoint {realm} answered {status}"
            )));
        }
        let parsed: TokenAnswer = answer.json().await.map_err(|_| {
            auth_error(format!(
                "token endpoint {realm} answered something that is not a token"
            ))
        })?;
        let value = parsed.token.or(parsed.access_token).ok_or_else(|| {
            auth_error(format!("token endpoint {realm} answered without a token"))
        })?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(CachedToken {
            value,
            // Renew a little early so a token never expires mid-request.
            expires: Instant::now() + lifetime.saturating_sub(Duration::from_secs(10)),
        })
    }

    /// Learns the auth scheme from a 401; false when the challenge is one we cannot answer.
    async fn learn_challenge(&self, registry: &str, headers: &HeaderMap) -> Result<bool, Error> {
        let Some(challenge) = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(false);
        };
        let scheme = parse_challenge(challenge);
        let Some(scheme) = scheme else {
            return Ok(false);
        };
        if matches!(scheme, AuthScheme::Basic) && self.credential(registry).await?.is_none() {
            return Ok(false);
        }
        self.schemes
            .lock()
            .expect("not poisoned")
            .insert(registry.to_string(), scheme);
        // Worth one more try: this request may have gone out before the scheme was known (a
        // concurrent request learned it first), or with a bearer token that just lapsed. The
        // caller tries once, so wrong credentials cost one extra request, not a loop.
        Ok(true)
    }

    /// Sends a replayable request: answers 401 challenges once, retries transport errors and
    /// 429/5xx with exponential backoff, honouring `Retry-After`.
    async fn send(
        &self,
        method: Method,
        url: &str,
        registry: &str,
        access: Access<'_>,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, Error> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(value) = self.authorization(registry, &access).await? {
                request = request.header(header::AUTHORIZATION, value);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let slot = self.budgets.acquire(registry).await;
            let answer = request.send().await;
            drop(slot);
            let response = match answer {
                Ok(response) => response,
                Err(e) => {
                    self.count(&method, 0);
                    if attempt < self.retry.attempts {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        method: method.to_string(),
                        url: strip_query(url),
                        detail: describe_transport(&e),
                    });
                }
            };
            let status = response.status();
            self.count(&method, status.as_u16());
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                if self.learn_challenge(registry, response.headers()).await? {
                    self.tokens
                        .lock()
                        .expect("not poisoned")
                        .remove(&(registry.to_string(), access.scope()));
                    continue;
                }
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::BAD_GATEWAY
                || status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::GATEWAY_TIMEOUT
                || (status == StatusCode::INTERNAL_SERVER_ERROR
                    && (method == Method::GET || method == Method::HEAD));
            if retryable && attempt < self.retry.attempts {
                let retry_after = retry_after(response.headers());
                if status == StatusCode::TOO_MANY_REQUESTS {
                    // Rate limits are per client: everyone here waits, not only this request.
                    self.budgets
                        .pause(registry, self.backoff(attempt, retry_after));
                }
                tracing::debug!(%status, url = %strip_query(url), attempt, "registry asked us to retry");
                tokio::time::sleep(self.backoff(attempt, retry_after)).await;
                continue;
            }
            return Ok(response);
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.retry.base_delay * 2u32.saturating_pow(attempt.saturating_sub(1));
        retry_after.unwrap_or(exponential).min(self.retry.max_delay)
    }

    /// `HEAD /v2/<name>/manifests/<reference>`: `None` when absent.
    pub async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let response = self
            .send(
                Method::HEAD,
                &url,
                repo.registry(),
                Access::Pull(repo),
                accept_manifests(),
                None,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check(Method::HEAD, &url, response).await?;
        let headers = response.headers();
        let digest = header_str(headers, "docker-content-digest");
        let media_type = header_str(headers, header::CONTENT_TYPE.as_str());
        let size = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match (digest, media_type, size) {
            (Some(digest), Some(media_type), Some(size)) => Ok(Some(ManifestHead {
                digest,
                media_type,
                size,
            })),
            // A registry that leaves out a header costs us one GET, not a wrong answer.
            _ => Ok(self
                .get_manifest(repo, reference)
                .await?
                .map(|m| ManifestHead {
                    size: m.bytes.len() as u64,
                    digest: m.digest,
                    media_type: m.media_type,
                })),
        }
    }

    /// `GET` a manifest, verifying its digest: `None` when absent.
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, Error> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let response = self
            .send(
                Method::GET,
                &url,
                repo.registry(),
                Access::Pull(repo),
                accept_manifests(),
                None,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check(Method::GET, &url, response).await?;
        let media_type = header_str(response.headers(), header::CONTENT_TYPE.as_str());
        let header_digest = header_str(response.headers(), "docker-content-digest");
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_MANIFEST_BYTES)
        {
            return Err(Error::Invalid {
                what: format!("manifest {repo}:{reference}"),
                detail: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        let bytes = response.bytes().await.map_err(|e| Error::Transport {
            method: "GET".into(),
            url: url.clone(),
            detail: describe_transport(&e),
        })?;
        let digest = sha256_digest(&bytes);
        let expected = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            header_digest.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest {repo}:{reference}"),
                expected,
                actual: digest,
            });
        }
        let media_type = match media_type {
            Some(m) if m != "application/json" && m != "text/plain" => m,
            _ => media_type_from_body(&bytes).ok_or_else(|| Error::Invalid {
                what: format!("manifest {repo}:{reference}"),
                detail: "no media type in the response or the document".into(),
            })?,
        };
        Ok(Some(RawManifest {
            media_type,
            digest,
            bytes,
        }))
    }

    /// `PUT` a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifestOutcome, Error> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| Error::Invalid {
                what: format!("manifest for {repo}:{reference}"),
                detail: format!("media type {media_type:?} is not a valid header value"),
            })?,
        );
        let expected = sha256_digest(&bytes);
        let response = self
            .send(
                Method::PUT,
                &url,
                repo.registry(),
                Access::Push(repo),
                headers,
                Some(bytes),
            )
            .await?;
        let response = check(Method::PUT, &url, response).await?;
        if let Some(digest) = header_str(response.headers(), "docker-content-digest")
            && digest.starts_with("sha256:")
            && digest != expected
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest stored at {repo}:{reference}"),
                expected,
                actual: digest,
            });
        }
        Ok(PutManifestOutcome {
            subject_processed: response.headers().contains_key("oci-subject"),
        })
    }

    /// `DELETE` a manifest by digest: true when it was there.
    pub async fn delete_manifest(&self, repo: &Repository, digest: &str) -> Result<bool, Error> {
        let url = self.url(repo, &format!("manifests/{digest}"));
        let response = self
            .send(
                Method::DELETE,
                &url,
                repo.registry(),
                Access::Push(repo),
                HeaderMap::new(),
                None,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(Method::DELETE, &url, response).await?;
        Ok(true)
    }

    /// `HEAD` a blob: its size, or `None` when absent.
    pub async fn head_blob(&self, repo: &Repository, digest: &str) -> Result<Option<u64>, Error> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let response = self
            .send(
                Method::HEAD,
                &url,
                repo.registry(),
                Access::Pull(repo),
                HeaderMap::new(),
                None,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check(Method::HEAD, &url, response).await?;
        Ok(response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// `GET` a blob as a byte stream; the caller verifies what it reads.
    pub async fn get_blob(
        &self,
        repo: &Repository,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static + use<>, Error> {
        use futures::TryStreamExt;
        let url = self.url(repo, &format!("blobs/{digest}"));
        let response = self
            .send(
                Method::GET,
                &url,
                repo.registry(),
                Access::Pull(repo),
                HeaderMap::new(),
                None,
            )
            .await?;
        let response = check(Method::GET, &url, response).await?;
        Ok(response.bytes_stream().map_err(move |e| Error::Transport {
            method: "GET".into(),
            url: url.clone(),
            detail: describe_transport(&e),
        }))
    }

    /// Opens an upload, mounting from `mount_from` when given. A registry that cannot mount
    /// answers 202 with a session, as if no mount had been asked.
    pub async fn start_upload(
        &self,
        repo: &Repository,
        digest: &str,
        mount_from: Option<&Repository>,
    ) -> Result<UploadStart, Error> {
        let (url, access) = match mount_from {
            Some(from) => (
                self.url(
                    repo,
                    &format!("blobs/uploads/?mount={digest}&from={}", from.name()),
                ),
                Access::PushMount(repo, from),
            ),
            None => (self.url(repo, "blobs/uploads/"), Access::Push(repo)),
        };
        let response = self
            .send(
                Method::POST,
                &url,
                repo.registry(),
                access,
                HeaderMap::new(),
                Some(Bytes::new()),
            )
            .await?;
        let response = check(Method::POST, &url, response).await?;
        if response.status() == StatusCode::CREATED && mount_from.is_some() {
            return Ok(UploadStart::Mounted);
        }
        let location =
            header_str(response.headers(), header::LOCATION.as_str()).ok_or_else(|| {
                Error::Invalid {
                    what: format!("POST {}", strip_query(&url)),
                    detail: "the registry opened an upload without a Location".into(),
                }
            })?;
        let base = reqwest::Url::parse(&url).expect("our URLs parse");
        let session = base.join(&location).map_err(|_| Error::Invalid {
            what: format!("POST {}", strip_query(&url)),
            detail: "the upload Location is not a URL".into(),
        })?;
        Ok(UploadStart::Session(session))
    }

    /// Finishes an upload session with the whole blob in one `PUT` (monolithic upload): two
    /// requests per blob, the fewest the distribution API allows for a new blob.
    pub async fn finish_upload<S>(
        &self,
        repo: &Repository,
        mut session: reqwest::Url,
        digest: &str,
        size: Option<u64>,
        body: S,
    ) -> Result<(), Error>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        session.query_pairs_mut().append_pair("digest", digest);
        let shown = format!(
            "{}{}",
            self.base(repo.registry()).trim_end_matches("/v2/"),
            session.path()
        );
        let stats = Arc::clone(&self.stats);
        let body = body.inspect_ok(move |chunk| {
            stats
                .bytes_sent
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        });
        let mut request = self
            .http
            .put(session)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(size) = size {
            request = request.header(header::CONTENT_LENGTH, size);
        }
        if let Some(value) = self
            .authorization(repo.registry(), &Access::Push(repo))
            .await?
        {
            request = request.header(header::AUTHORIZATION, value);
        }
        let _in_flight = self.budgets.acquire(repo.registry()).await;
        let response = request.send().await.map_err(|e| {
            self.count(&Method::PUT, 0);
            Error::Transport {
                method: "PUT".into(),
                url: shown.clone(),
                detail: describe_transport(&e),
            }
        })?;
        self.count(&Method::PUT, response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            // A streamed body is not replayed here: the engine starts the upload over. Until
            // Retry-After has passed, that and every other request to the registry waits.
            let wait = self.backoff(1, retry_after(response.headers()));
            self.budgets.pause(repo.registry(), wait);
        }
        check(Method::PUT, &shown, response).await?;
        if let Some(size) = size {
            self.stats.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// All tags of a repository, following `Link` pagination for at most `max_pages` pages of
    /// 1000; `None` when the repository has more.
    pub async fn list_tags(
        &self,
        repo: &Repository,
        max_pages: usize,
    ) -> Result<Option<Vec<String>>, Error> {
        #[derive(Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut url = self.url(repo, "tags/list?n=1000");
        for _ in 0..max_pages {
            let response = self
                .send(
                    Method::GET,
                    &url,
                    repo.registry(),
                    Access::Pull(repo),
                    HeaderMap::new(),
                    None,
                )
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(Some(tags));
            }
            let response = check(Method::GET, &url, response).await?;
            let next = header_str(response.headers(), header::LINK.as_str())
                .and_then(|link| next_link(&link));
            let page: TagList = response.json().await.map_err(|_| Error::Invalid {
                what: format!("GET {url}"),
                detail: "not a tag list".into(),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => url = next_page(&url, &next)?,
                None => return Ok(Some(tags)),
            }
        }
        Ok(None)
    }

    /// `GET /v2/<name>/referrers/<digest>`: the referrers index, or `None` when the registry has
    /// no referrers API (404 without an OCI index body). Follows `Link` pagination and merges
    /// the pages into one index.
    pub async fn referrers(&self, repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error> {
        let mut url = self.url(repo, &format!("referrers/{digest}"));
        let mut merged: Option<serde_json::Value> = None;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(OCI_INDEX));
            let response = self
                .send(
                    Method::GET,
                    &url,
                    repo.registry(),
                    Access::Pull(repo),
                    headers,
                    None,
                )
                .await?;
            let is_index = header_str(response.headers(), header::CONTENT_TYPE.as_str()).as_deref()
                == Some(OCI_INDEX);
            if !response.status().is_success() && !is_index {
                // Distribution 2.x answers 404 (route unknown): no referrers API.
                return match response.status() {
                    StatusCode::NOT_FOUND
                    | StatusCode::METHOD_NOT_ALLOWED
                    | StatusCode::BAD_REQUEST => Ok(None),
                    _ => check(Method::GET, &url, response).await.map(|_| None),
                };
            }
            let next = header_str(response.headers(), header::LINK.as_str())
                .and_then(|link| next_link(&link));
            let page: serde_json::Value = response.json().await.map_err(|_| Error::Invalid {
                what: format!("GET {}", strip_query(&url)),
                detail: "the referrers answer is not an image index".into(),
            })?;
            merged = Some(match merged {
                None => page,
                Some(mut all) => {
                    if let (Some(all_entries), Some(more)) = (
                        all.get_mut("manifests").and_then(|m| m.as_array_mut()),
                        page.get("manifests").and_then(|m| m.as_array()),
                    ) {
                        all_entries.extend(more.iter().cloned());
                    }
                    all
                }
            });
            match next {
                Some(next) => url = next_page(&url, &next)?,
                None => break,
            }
        }
        Ok(merged.map(|m| Bytes::from(serde_json::to_vec(&m).expect("JSON serializes"))))
    }
}

fn accept_manifests() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_str(&MANIFEST_ACCEPT.join(", ")).expect("media types are header-safe"),
    );
    headers
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`)
/// read against our clock; a date in the past means now.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    retry_after_at(value, jiff::Timestamp::now())
}

fn retry_after_at(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::civil::DateTime::strptime("%a, %d %b %Y %H:%M:%S GMT", value).ok()?;
    let at = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    let wait = at.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Turns an error status into [`Error::Status`] with the registry's error code and message.
async fn check(
    method: Method,
    url: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    let body = response.bytes().await.unwrap_or_default();
    let first = serde_json::from_slice::<Errors>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next());
    let (code, message) = match first {
        Some(entry) => (entry.code, entry.message.map(|m| truncate(&m, 300))),
        None => (None, None),
    };
    Err(Error::Status {
        method: method.to_string(),
        url: strip_query(url),
        status: status.as_u16(),
        code,
        message,
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn media_type_from_body(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe.media_type.or_else(|| {
        Some(if probe.manifests.is_some() {
            crate::oci::media_types::OCI_INDEX.to_string()
        } else {
            crate::oci::media_types::OCI_MANIFEST.to_string()
        })
    })
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    use base64::Engine;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is header-safe");
    value.set_sensitive(true);
    value
}

fn bearer_header(token: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    value.set_sensitive(true);
    value
}

fn serde_urlencoded_form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

/// `Bearer realm="...",service="..."` or `Basic realm="..."`.
fn parse_challenge(value: &str) -> Option<AuthScheme> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(AuthScheme::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = remaining;
    }
    Some(AuthScheme::Bearer {
        realm: realm?,
        service,
    })
}

/// The URL of the next page: a `Link` target resolved against the current page.
fn next_page(current: &str, target: &str) -> Result<String, Error> {
    reqwest::Url::parse(current)
        .and_then(|base| base.join(target))
        .map(String::from)
        .map_err(|_| Error::Invalid {
            what: format!("GET {}", strip_query(current)),
            detail: "the Link header is not a URL".into(),
        })
}

/// The `rel="next"` target of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now: jiff::Timestamp = "1994-11-06T08:49:30Z".parse().unwrap();
        assert_eq!(retry_after_at(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after_at("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        assert_eq!(retry_after_at("soon", now), None);
        assert_eq!(retry_after_at("-3", now), None);
    }

    #[test]
    fn loopback_registries_speak_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("ghcr.io"));
    }

    #[test]
    fn parses_bearer_challenges() {
        let parsed = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#,
        );
        match parsed {
            Some(AuthScheme::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.example.com/token");
                assert_eq!(service.as_deref(), Some("registry.example.com"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_challenge(r#"Basic realm="x""#),
            Some(AuthScheme::Basic)
        ));
        assert!(parse_challenge("Negotiate").is_none());
    }

    #[test]
    fn follows_link_pagination() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}
