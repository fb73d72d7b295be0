//! `/v2/<name>/blobs/`: HEAD and GET of a blob, and uploads: a session opened with `POST`
//! (or a cross-repository mount) and finished with one `PUT`.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};

use super::auth::Access;
use super::client::RegistryClient;
use super::error::Error;
use super::headers::{content_length, location, retry_after, strip_query};
use super::transport::check;
use crate::http_client::describe_transport;
use crate::oci::Repository;

pub enum UploadStart {
    /// Cross-repository mount succeeded: the blob is in place.
    Mounted,
    /// An upload session to finish with a `PUT`.
    Session(reqwest::Url),
}

impl RegistryClient {
    /// `HEAD` a blob: its size, or `None` when absent.
    pub async fn head_blob(&self, repo: &Repository, digest: &str) -> Result<Option<u64>, Error> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let response = self
            .read(Method::HEAD, &url, repo, HeaderMap::new())
            .await?;
        Ok(response.and_then(|r| content_length(r.headers())))
    }

    /// `GET` a blob as a byte stream; the caller verifies what it reads.
    pub async fn get_blob(
        &self,
        repo: &Repository,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static + use<>, Error> {
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
        let location = location(response.headers()).ok_or_else(|| Error::Invalid {
            what: format!("POST {}", strip_query(&url)),
            detail: "the registry opened an upload without a Location".into(),
        })?;
        let base = reqwest::Url::parse(&url).expect("our URLs parse");
        let session = base.join(&location).map_err(|_| Error::Invalid {
            what: format!("POST {}", strip_query(&url)),
            detail: "the upload Location is not a URL".into(),
        })?;
        Ok(UploadStart::Session(session))
    }

    /// Proves that the credentials may write `repo` while changing nothing in it: an upload
    /// session opened and cancelled. Reading proves nothing (many registries serve anyone);
    /// the registry's answer to a write does. A registry that cannot cancel a session lets
    /// the empty one expire, so a failed cancel is only logged.
    pub async fn probe_push(&self, repo: &Repository) -> Result<(), Error> {
        let UploadStart::Session(session) = self.start_upload(repo, "", None).await? else {
            return Ok(());
        };
        let cancelled = self
            .send(
                Method::DELETE,
                session.as_str(),
                repo.registry(),
                Access::Push(repo),
                HeaderMap::new(),
                None,
            )
            .await;
        match cancelled {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::debug!(repository = %repo, status = %response.status(), "an upload session opened to prove write access could not be cancelled; it expires")
            }
            Err(e) => {
                tracing::debug!(repository = %repo, error = %e, "an upload session opened to prove write access could not be cancelled; it expires")
            }
        }
        Ok(())
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
        let body = body.inspect_ok(move |chunk| stats.add_sent(chunk.len() as u64));
        let mut request = self
            .http
            .put(session)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(size) = size {
            request = request.header(header::CONTENT_LENGTH, size);
        }
        let authorization = self
            .authorization(repo.registry(), &Access::Push(repo))
            .await?;
        let sent_bearer = authorization
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
        if let Some(value) = authorization {
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
        if response.status() == StatusCode::UNAUTHORIZED && sent_bearer {
            // The token lapsed (or was revoked) before the registry took the upload. The body
            // is gone, so the engine's blob retry starts the upload over with a new token.
            self.forget_token(repo.registry(), &Access::Push(repo));
            return Err(Error::TokenExpired {
                method: "PUT".into(),
                url: shown,
            });
        }
        check(Method::PUT, &shown, response).await?;
        if let Some(size) = size {
            self.stats.add_uploaded(size);
        }
        Ok(())
    }
}
