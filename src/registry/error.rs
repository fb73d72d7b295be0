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
    /// A bearer token was refused (401) for a request whose streamed body cannot be sent
    /// again; the token is forgotten, so trying the operation again fetches a new one.
    #[error(
        "{method} {url}: the registry no longer accepts its token; a new one is fetched on the next try"
    )]
    TokenExpired { method: String, url: String },
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
}
