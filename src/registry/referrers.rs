//! `GET /v2/<name>/referrers/<digest>` (OCI 1.1), pages merged into one index.

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use super::auth::Access;
use super::client::RegistryClient;
use super::error::Error;
use super::headers::{content_type, next_link_of, next_page, strip_query};
use super::transport::check;
use crate::oci::Repository;
use crate::oci::media_types::OCI_INDEX;

/// Pages of referrers read for one subject before giving up: a registry that pages forever
/// (or in a circle) is an error, not a hang.
pub(super) const MAX_REFERRER_PAGES: usize = 100;

impl RegistryClient {
    /// `GET /v2/<name>/referrers/<digest>`: the referrers index, or `None` when the registry has
    /// no referrers API (404 without an OCI index body). Follows `Link` pagination and merges
    /// the pages into one index, reading at most [`MAX_REFERRER_PAGES`].
    pub async fn referrers(&self, repo: &Repository, digest: &str) -> Result<Option<Bytes>, Error> {
        let mut url = self.url(repo, &format!("referrers/{digest}"));
        let mut merged: Option<serde_json::Value> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            if pages > MAX_REFERRER_PAGES {
                return Err(Error::Invalid {
                    what: format!("GET {}", strip_query(&url)),
                    detail: format!(
                        "the registry lists the referrers in more than {MAX_REFERRER_PAGES} pages"
                    ),
                });
            }
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
            let is_index = content_type(response.headers()).as_deref() == Some(OCI_INDEX);
            if !response.status().is_success() && !is_index {
                // Distribution 2.x answers 404 (route unknown): no referrers API.
                return match response.status() {
                    StatusCode::NOT_FOUND
                    | StatusCode::METHOD_NOT_ALLOWED
                    | StatusCode::BAD_REQUEST => Ok(None),
                    _ => check(Method::GET, &url, response).await.map(|_| None),
                };
            }
            let next = next_link_of(response.headers());
            let page: serde_json::Value = response.json().await.map_err(|_| Error::Invalid {
                what: format!("GET {}", strip_query(&url)),
                detail: "the referrers answer is not an image index".into(),
            })?;
            merged = Some(merge_page(merged, page));
            match next {
                Some(next) => url = next_page(&url, &next)?,
                None => break,
            }
        }
        Ok(merged.map(|m| Bytes::from(serde_json::to_vec(&m).expect("JSON serializes"))))
    }
}

/// The referrers pages read so far with one more page's descriptors appended.
pub(super) fn merge_page(
    merged: Option<serde_json::Value>,
    page: serde_json::Value,
) -> serde_json::Value {
    match merged {
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
    }
}
