/// A failed registry operation. Messages name the request and the registry's own answer, and
/// never carry an `Authorization` header, a token or a password: what a registry sends back is
/// untrusted, so it is shown through [`untrusted`], and URLs through [`shown_url`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{method} {}: {status}{}", shown_url(.url), registry_detail(.code, .message))]
    Status {
        method: String,
        url: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("{method} {}: {}", shown_url(.url), untrusted(.detail))]
    Transport {
        method: String,
        url: String,
        detail: String,
    },
    /// A bearer token was refused (401) for a request whose streamed body cannot be sent
    /// again; the token is forgotten, so trying the operation again fetches a new one.
    #[error(
        "{method} {}: the registry no longer accepts its token; a new one is fetched on the next try",
        shown_url(.url)
    )]
    TokenExpired { method: String, url: String },
    #[error("authentication with {registry} failed: {}", untrusted(.detail))]
    Auth { registry: String, detail: String },
    #[error("{what}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{}: {}", untrusted(.what), untrusted(.detail))]
    Invalid { what: String, detail: String },
}

fn registry_detail(code: &Option<String>, message: &Option<String>) -> String {
    let (code, message) = (
        code.as_deref().map(untrusted),
        message.as_deref().map(untrusted),
    );
    match (code, message) {
        (Some(code), Some(message)) => format!(" {code}: {message}"),
        (Some(code), None) => format!(" {code}"),
        (None, Some(message)) => format!(" {message}"),
        (None, None) => String::new(),
    }
}

/// The most characters of a registry's text a message shows.
const MAX_UNTRUSTED_CHARS: usize = 300;

/// Text a registry or URL host sent back, made fit for a terminal, a log line and `-o json`:
/// credentials it echoes (an `Authorization` value, a `token`/`password` field, anything that
/// looks like a JWT) are replaced by `[redacted]`, control characters (C0, DEL, C1) are escaped
/// so they cannot move the cursor or rewrite a line, URLs lose query and user-info, and the
/// text is cut at a length a person reads.
pub fn untrusted(text: &str) -> String {
    static SECRETS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(concat!(
            r"(?i)\b(bearer|basic|negotiate|digest)(\s+)[A-Za-z0-9._~+/=:,\x22-]{4,}",
            r"|(?i)\b([a-z_]*(?:token|password|passwd|secret|credential|signature|authorization))(\x22?\s*[:=]\s*\x22?)(?:(?:bearer|basic|negotiate|digest)\s+)?[^\s\x22&,;]+",
            r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        ))
        .expect("the pattern is valid")
    });
    static URL_USER_INFO: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)\b(https?://)[^\s/@?#]*@").expect("the pattern is valid")
    });
    static URL_QUERY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)(\bhttps?://[^\s?#]*)[?#]\S*").expect("the pattern is valid")
    });
    let without_user_info = URL_USER_INFO.replace_all(text, "$1");
    let without_urls = URL_QUERY.replace_all(&without_user_info, "$1");
    let redacted = SECRETS.replace_all(&without_urls, |c: &regex::Captures| {
        if let (Some(scheme), Some(space)) = (c.get(1), c.get(2)) {
            format!("{}{}[redacted]", scheme.as_str(), space.as_str())
        } else if let (Some(key), Some(separator)) = (c.get(3), c.get(4)) {
            format!("{}{}[redacted]", key.as_str(), separator.as_str())
        } else {
            "[redacted]".to_string()
        }
    });
    let mut shown = String::new();
    for (count, c) in redacted.chars().enumerate() {
        if count == MAX_UNTRUSTED_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// A URL as a message shows it: no query (pre-signed URLs carry signatures there), no
/// user-info, no control characters.
pub fn shown_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let without_query = &url[..cut];
    let without_user = match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority_end..]),
                None => without_query.to_string(),
            }
        }
        None => without_query.to_string(),
    };
    without_user
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// What a failure asks of whoever runs the operation: the one classification that the engine,
/// the CLI and the controller all act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Worth trying again as it is, after a backoff: the network, a timeout, a 5xx, a 429.
    Transient,
    /// Someone else's write got in the way (409, 412): trying again soon is expected to work.
    Conflict,
    /// Only a person can fix it; trying again only helps once something changed.
    NeedsPerson(NeedsPerson),
}

/// Why a person is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NeedsPerson {
    /// The registry does not accept the credentials used (401, or a failed token exchange).
    Unauthorized,
    /// The credentials are accepted but lack the permission (403).
    Forbidden,
    /// What the spec names does not exist (404).
    NotFound,
    /// The request or its content is wrong: a refused manifest, content not matching its
    /// digest, an operation the registry does not support.
    Invalid,
}

impl ErrorClass {
    /// A short name for metrics labels and condition reasons: `transient`, `conflict`,
    /// `unauthorized`, `forbidden`, `not_found`, `invalid`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Conflict => "conflict",
            ErrorClass::NeedsPerson(NeedsPerson::Unauthorized) => "unauthorized",
            ErrorClass::NeedsPerson(NeedsPerson::Forbidden) => "forbidden",
            ErrorClass::NeedsPerson(NeedsPerson::NotFound) => "not_found",
            ErrorClass::NeedsPerson(NeedsPerson::Invalid) => "invalid",
        }
    }

    pub fn needs_person(self) -> bool {
        matches!(self, ErrorClass::NeedsPerson(_))
    }

    /// The class of an HTTP status a registry answered with.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 => ErrorClass::NeedsPerson(NeedsPerson::Unauthorized),
            403 => ErrorClass::NeedsPerson(NeedsPerson::Forbidden),
            404 => ErrorClass::NeedsPerson(NeedsPerson::NotFound),
            409 | 412 => ErrorClass::Conflict,
            408 | 429 | 500..=599 => ErrorClass::Transient,
            _ => ErrorClass::NeedsPerson(NeedsPerson::Invalid),
        }
    }
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Status { status, .. } => ErrorClass::of_status(*status),
            Error::Transport { .. } | Error::TokenExpired { .. } => ErrorClass::Transient,
            Error::Auth { .. } => ErrorClass::NeedsPerson(NeedsPerson::Unauthorized),
            Error::DigestMismatch { .. } | Error::Invalid { .. } => {
                ErrorClass::NeedsPerson(NeedsPerson::Invalid)
            }
        }
    }

    /// The registry refused uploaded content because it did not hash to the declared digest.
    pub fn is_digest_invalid(&self) -> bool {
        matches!(self, Error::Status { code: Some(code), .. } if code == "DIGEST_INVALID")
    }

    /// The registry (`host[:port]`) the failed request went to, when known.
    pub fn registry(&self) -> Option<String> {
        let url = match self {
            Error::Status { url, .. } | Error::Transport { url, .. } => url,
            Error::Auth { registry, .. } => return Some(registry.clone()),
            _ => return None,
        };
        let parsed = reqwest::Url::parse(url).ok()?;
        let host = parsed.host_str()?;
        Some(match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        })
    }

    /// The HTTP status, when the registry answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Error {
        Error::Status {
            method: "GET".into(),
            url: "http://r/v2/".into(),
            status,
            code: None,
            message: None,
        }
    }

    #[test]
    fn one_classification_of_every_failure() {
        use ErrorClass::{Conflict, Transient};
        use NeedsPerson::{Forbidden, Invalid, NotFound, Unauthorized};
        let person = ErrorClass::NeedsPerson;
        for (code, class) in [
            (401, person(Unauthorized)),
            (403, person(Forbidden)),
            (404, person(NotFound)),
            (400, person(Invalid)),
            (405, person(Invalid)),
            (409, Conflict),
            (412, Conflict),
            (408, Transient),
            (429, Transient),
            (500, Transient),
            (503, Transient),
        ] {
            assert_eq!(status(code).class(), class, "status {code}");
        }
        let transport = Error::Transport {
            method: "GET".into(),
            url: "u".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(transport.class(), Transient);
        let auth = Error::Auth {
            registry: "r".into(),
            detail: "token endpoint answered 401".into(),
        };
        assert_eq!(auth.class(), person(Unauthorized));
        assert_eq!(auth.class().label(), "unauthorized");
    }

    #[test]
    fn registry_text_loses_echoed_credentials_and_control_characters() {
        let echoed = Error::Status {
            method: "GET".into(),
            url: "https://r.example/v2/a/blobs/sha256:1?X-Amz-Signature=sig123&X-Amz-Credential=cred456"
                .into(),
            status: 401,
            code: Some("UNAUTHORIZED\u{1b}[2J".into()),
            message: Some(
                "header Authorization: Bearer tok.en-value-789 and Basic dXNlcjpzM2NyM3Q= and \
                 eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl {\"token\":\"opaque-abc\"} \
                 see https://user:pw1@host.example/p?sig=q987\nfake line\r\u{9b}31m\u{7f}"
                    .into(),
            ),
        }
        .to_string();
        for secret in [
            "sig123",
            "cred456",
            "tok.en-value-789",
            "dXNlcjpzM2NyM3Q",
            "eyJhbGci",
            "opaque-abc",
            "pw1",
            "q987",
        ] {
            assert!(!echoed.contains(secret), "{secret} in {echoed}");
        }
        assert!(
            !echoed.chars().any(char::is_control),
            "control characters in {echoed:?}"
        );
        assert!(echoed.contains("Authorization: [redacted]"), "{echoed}");
        assert!(echoed.contains("\\u{1b}[2J"), "{echoed}");
        assert!(
            echoed.contains("https://r.example/v2/a/blobs/sha256:1: 401"),
            "{echoed}"
        );

        let long = untrusted(&"x".repeat(10_000));
        assert!(
            long.chars().count() <= MAX_UNTRUSTED_CHARS + 1,
            "{}",
            long.len()
        );
        let transport = Error::Transport {
            method: "PUT".into(),
            url: "https://r/v2/a/blobs/uploads/1?_state=abc".into(),
            detail: "connection reset\u{1b}]0;title\u{7}".into(),
        }
        .to_string();
        assert!(!transport.contains("_state=abc"), "{transport}");
        assert!(!transport.chars().any(char::is_control), "{transport:?}");
    }
}
