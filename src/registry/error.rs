/// A failed registry operation. Messages name the request and the registry's own answer, and
/// never carry an `Authorization` header, a token or a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{method} {url}: {status}{}", registry_detail(.code, .message))]
    Status {
        method: String,
        url: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("{method} {url}: {detail}")]
    Transport {
        method: String,
        url: String,
        detail: String,
    },
    #[error("authentication with {registry} failed: {detail}")]
    Auth { registry: String, detail: String },
    #[error("{what}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

fn registry_detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!(" {code}: {message}"),
        (Some(code), None) => format!(" {code}"),
        (None, Some(message)) => format!(" {message}"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// The registry refused uploaded content because it did not hash to the declared digest.
    pub fn is_digest_invalid(&self) -> bool {
        matches!(self, Error::Status { code: Some(code), .. } if code == "DIGEST_INVALID")
    }

    /// The HTTP status, when the registry answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Renders a reqwest error without its URL's query (upload locations carry state tokens) and
/// with the chain of causes, which is where "connection refused" lives.
pub(crate) fn describe_transport(err: &reqwest::Error) -> String {
    let mut text = match err.url() {
        Some(url) => err.to_string().replace(url.as_str(), url.path()),
        None => err.to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
