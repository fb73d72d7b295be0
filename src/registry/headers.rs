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

/// The `rel="next"` target of a page's `Link` headers (every `Link` header, every link in
/// each), if there is a next page.
pub(super) fn next_link_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(next_link)
}

/// `Location`, whole: a pre-signed URL may carry `;` in its path or query, so unlike the
/// other headers it has no parameters to cut off.
pub(super) fn location(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The URL of the next page: a `Link` target resolved against the current page. The target
/// must stay on the registry the current page came from: the request carries its credentials.
pub(super) fn next_page(current: &str, target: &str) -> Result<String, Error> {
    let invalid = |detail: &str| Error::Invalid {
        what: format!("GET {}", strip_query(current)),
        detail: detail.into(),
    };
    let base = reqwest::Url::parse(current).map_err(|_| invalid("the page URL is not a URL"))?;
    let next = base
        .join(target)
        .map_err(|_| invalid("the Link header is not a URL"))?;
    if next.origin() != base.origin() {
        return Err(invalid(
            "the Link header sends the next page to another host; not followed",
        ));
    }
    Ok(next.into())
}

/// One link of a `Link` header (RFC 8288 section 3): its target, as written, and its relation
/// types, lower-cased.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Link {
    pub target: String,
    pub relations: Vec<String>,
}

/// Every link of one `Link` header value: `<target>; param=value; param="quoted", <...>`.
/// Targets may hold `,` and `;`; `rel` may sit among other parameters and list several
/// space-separated types. A link that does not parse is skipped up to the next `,`.
pub(super) fn parse_links(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return links;
        }
        let Some(after_open) = rest.strip_prefix('<') else {
            rest = rest.split_once(',').map_or("", |(_, after)| after);
            continue;
        };
        let Some((target, after_target)) = after_open.split_once('>') else {
            return links;
        };
        rest = after_target;
        let mut relations = Vec::new();
        // Parameters until the `,` that ends this link.
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            let Some(after_semicolon) = rest.strip_prefix(';') else {
                break;
            };
            let name_end = after_semicolon
                .find(['=', ';', ','])
                .unwrap_or(after_semicolon.len());
            let name = after_semicolon[..name_end].trim().to_ascii_lowercase();
            rest = &after_semicolon[name_end..];
            let value = match rest.strip_prefix('=') {
                Some(after_equals) => {
                    let (value, after_value) = param_value(after_equals.trim_start());
                    rest = after_value;
                    value
                }
                None => String::new(),
            };
            // RFC 8288 3.3: only the first `rel` counts.
            if name == "rel" && relations.is_empty() {
                relations = value
                    .split_ascii_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
        }
        links.push(Link {
            target: target.trim().to_string(),
            relations,
        });
        // Anything up to the next `,` that is not a parameter is not ours to guess at.
        rest = match rest.trim_start().strip_prefix(',') {
            Some(after) => after,
            None => rest.split_once(',').map_or("", |(_, after)| after),
        };
    }
}

/// A parameter value, a token or a quoted-string (with `\` escapes), and what follows it.
fn param_value(text: &str) -> (String, &str) {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = text.find([';', ',']).unwrap_or(text.len());
        (text[..end].trim().to_string(), &text[end..])
    }
}

/// The `rel="next"` target of one `Link` header value.
pub(super) fn next_link(link: &str) -> Option<String> {
    parse_links(link)
        .into_iter()
        .find(|l| l.relations.iter().any(|r| r == "next"))
        .map(|l| l.target)
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

    fn next_of(values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::LINK, HeaderValue::from_str(value).unwrap());
        }
        next_link_of(&headers)
    }

    #[test]
    fn reads_the_link_headers_registries_send() {
        // ghcr.io, Distribution 3 and Harbor: a relative target, `rel="next"`.
        assert_eq!(
            next_of(&[r#"</v2/o/r/tags/list?last=v1.2&n=100>; rel="next""#]).as_deref(),
            Some("/v2/o/r/tags/list?last=v1.2&n=100")
        );
        // Quay: an absolute target with an opaque page token.
        assert_eq!(
            next_of(&[
                r#"<https://quay.io/v2/o/r/tags/list?n=50&next_page=gAAAAB%3D%3D>;rel="next""#
            ])
            .as_deref(),
            Some("https://quay.io/v2/o/r/tags/list?n=50&next_page=gAAAAB%3D%3D")
        );
        // Unquoted, upper case, among other parameters, one of several relation types.
        assert_eq!(
            next_of(&[r#"</p2>; type="application/json"; rel=NEXT"#]).as_deref(),
            Some("/p2")
        );
        assert_eq!(
            next_of(&[r#"</p2>; title="a; b, c"; rel="prev next""#]).as_deref(),
            Some("/p2")
        );
        // Several links in one header, the next one second; a target holding `;` and `,`.
        assert_eq!(
            next_of(&[r#"</p0>; rel="prev", </p2;x=1,y>; rel="next""#]).as_deref(),
            Some("/p2;x=1,y")
        );
        // Several headers.
        assert_eq!(
            next_of(&[r#"</p0>; rel="prev""#, r#"</p2>; rel="next""#]).as_deref(),
            Some("/p2")
        );
        // No next page; `rel` only counts once; a quoted escape does not end the value.
        assert_eq!(next_of(&[r#"</p0>; rel="prev""#]), None);
        assert_eq!(next_of(&[r#"</p0>; rel="prev"; rel="next""#]), None);
        assert_eq!(
            next_of(&[r#"</p2>; title="say \"hi\"; rel=next"; rel="next""#]).as_deref(),
            Some("/p2")
        );
        assert_eq!(
            next_of(&["garbage, </p2>; rel=next"]).as_deref(),
            Some("/p2")
        );
        assert_eq!(next_of(&[]), None);
    }

    #[test]
    fn a_next_page_on_another_host_is_refused() {
        let current = "http://r:5000/v2/a/tags/list?n=2";
        assert_eq!(
            next_page(current, "http://r:5000/v2/a/tags/list?last=b").unwrap(),
            "http://r:5000/v2/a/tags/list?last=b"
        );
        assert!(next_page(current, "http://elsewhere:5000/v2/a/tags/list").is_err());
        assert!(next_page(current, "https://r:5000/v2/a/tags/list").is_err());
    }

    #[test]
    fn a_location_keeps_its_semicolons() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static(
                "https://cdn.example/b/sha256:ab;v=1?X-Amz-Signature=a%3Bb;c&X-Amz-Expires=60",
            ),
        );
        assert_eq!(
            location(&headers).as_deref(),
            Some("https://cdn.example/b/sha256:ab;v=1?X-Amz-Signature=a%3Bb;c&X-Amz-Expires=60")
        );
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
