//! Reading and writing the headers of the distribution API: `Link` paging, `Retry-After`,
//! `Docker-Content-Digest`, `Content-Type` and `Content-Length`, `Accept` for manifests.

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};

use super::error::Error;
use crate::oci::media_types::MANIFEST_ACCEPT;

/// The header a registry names a manifest's or blob's digest in.
pub(super) const CONTENT_DIGEST: &str = "docker-content-digest";
/// The header an OCI 1.1 registry answers a manifest `PUT` with when it processed the subject.
pub(super) const OCI_SUBJECT: &str = "oci-subject";

/// `Accept` listing every manifest media type we read.
pub(super) fn accept_manifests() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_str(&MANIFEST_ACCEPT.join(", ")).expect("media types are header-safe"),
    );
    headers
}

/// A header's value without parameters (`; charset=...`); `None` when absent or empty.
pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Docker-Content-Digest`.
pub(super) fn content_digest(headers: &HeaderMap) -> Option<String> {
    header_str(headers, CONTENT_DIGEST)
}

/// `Content-Type`, without parameters.
pub(super) fn content_type(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::CONTENT_TYPE.as_str())
}

/// `Content-Length`.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`)
/// read against our clock; a date in the past means now.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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

/// A URL as error messages show it: upload locations carry state tokens in their query.
pub(super) fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// The `rel="next"` target of the `Link` header of a page, if there is a next page.
pub(super) fn next_link_of(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::LINK.as_str()).and_then(|link| next_link(&link))
}

/// The URL of the next page: a `Link` target resolved against the current page.
pub(super) fn next_page(current: &str, target: &str) -> Result<String, Error> {
    reqwest::Url::parse(current)
        .and_then(|base| base.join(target))
        .map(String::from)
        .map_err(|_| Error::Invalid {
            what: format!("GET {}", strip_query(current)),
            detail: "the Link header is not a URL".into(),
        })
}

/// The `rel="next"` target of a `Link` header.
pub(super) fn next_link(link: &str) -> Option<String> {
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

/// The `Link` header of a page with more after it, as Distribution writes it.
pub(super) fn next_link_header(target: &str) -> String {
    format!("<{target}>; rel=\"next\"")
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
    fn follows_link_pagination() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn the_next_page_resolves_against_the_current_one() {
        let link = next_link_header("/v2/a/tags/list?n=2&last=b");
        assert_eq!(
            next_page(
                "http://r:5000/v2/a/tags/list?n=2",
                &next_link(&link).unwrap()
            )
            .unwrap(),
            "http://r:5000/v2/a/tags/list?n=2&last=b"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(CONTENT_DIGEST, HeaderValue::from_static("sha256:abc"));
        assert_eq!(content_type(&headers).as_deref(), Some("application/json"));
        assert_eq!(content_digest(&headers).as_deref(), Some("sha256:abc"));
        assert_eq!(content_length(&headers), None);
    }
}
