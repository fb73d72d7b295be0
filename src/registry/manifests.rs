//! `/v2/<name>/manifests/<reference>`: HEAD, GET (digest verified), PUT and DELETE.

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::auth::Access;
use super::client::RegistryClient;
use super::error::Error;
use super::headers::{OCI_SUBJECT, accept_manifests, content_digest, content_length, content_type};
use super::transport::check;
use crate::http_client::describe_transport;
use crate::oci::Repository;
use crate::oci::digest::sha256_digest;

/// Manifests larger than this are refused; registries themselves stop at 4 MiB.
pub(super) const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

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

impl RegistryClient {
    /// `HEAD /v2/<name>/manifests/<reference>`: `None` when absent.
    pub async fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let Some(response) = self
            .read(Method::HEAD, &url, repo, accept_manifests())
            .await?
        else {
            return Ok(None);
        };
        let headers = response.headers();
        let digest = content_digest(headers);
        let media_type = content_type(headers);
        let size = content_length(headers);
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
        let Some(response) = self
            .read(Method::GET, &url, repo, accept_manifests())
            .await?
        else {
            return Ok(None);
        };
        let media_type = content_type(response.headers());
        let header_digest = content_digest(response.headers());
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
        if let Some(digest) = content_digest(response.headers())
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
            subject_processed: response.headers().contains_key(OCI_SUBJECT),
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
}

/// A manifest's media type from its own `mediaType`, or from its shape when it has none.
pub(super) fn media_type_from_body(bytes: &[u8]) -> Option<String> {
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
