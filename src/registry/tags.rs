//! `GET /v2/<name>/tags/list`, following `Link` pages.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::auth::Access;
use super::client::RegistryClient;
use super::error::Error;
use super::headers::{next_link_of, next_page};
use super::transport::check;
use crate::oci::Repository;

/// Tags asked for per page.
pub(super) const TAG_PAGE_SIZE: usize = 1000;

impl RegistryClient {
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
        let mut url = self.url(repo, &format!("tags/list?n={TAG_PAGE_SIZE}"));
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
            let next = next_link_of(response.headers());
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
}
