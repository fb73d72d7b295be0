//! Sending requests: the budget slot, answering a 401 challenge once, retries of transport
//! errors and 429/5xx honouring `Retry-After`, and the request counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::auth::Access;
use super::client::RegistryClient;
use super::error::Error;
use super::headers::{retry_after, strip_query};
use crate::http_client::describe_transport;
use crate::oci::Repository;

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

    pub(super) fn count(&self, method: &str, status: u16) {
        *self
            .requests
            .lock()
            .expect("not poisoned")
            .entry((method.to_string(), status))
            .or_default() += 1;
    }

    pub(super) fn add_sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn add_uploaded(&self, bytes: u64) {
        self.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl RegistryClient {
    pub(super) fn count(&self, method: &Method, status: u16) {
        self.stats.count(method.as_str(), status);
    }

    /// A read with pull access of something that may not exist: `None` when the registry
    /// answers 404, the checked answer otherwise.
    pub(super) async fn read(
        &self,
        method: Method,
        url: &str,
        repo: &Repository,
        headers: HeaderMap,
    ) -> Result<Option<reqwest::Response>, Error> {
        let response = self
            .send(
                method.clone(),
                url,
                repo.registry(),
                Access::Pull(repo),
                headers,
                None,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(method, url, response).await.map(Some)
    }

    /// Sends a replayable request: answers 401 challenges once, retries transport errors and
    /// 429/5xx with exponential backoff, honouring `Retry-After`.
    pub(super) async fn send(
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
                    self.forget_token(registry, &access);
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

    pub(super) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.retry.base_delay * 2u32.saturating_pow(attempt.saturating_sub(1));
        retry_after.unwrap_or(exponential).min(self.retry.max_delay)
    }
}

/// Turns an error status into [`Error::Status`] with the registry's error code and message.
pub(super) async fn check(
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
