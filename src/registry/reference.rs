//! Repository and image references, parsed once at the edge so the engine works with values
//! whose syntax is already known to be right.

use std::fmt;

use crate::api::patterns::{IMAGE_REFERENCE_RE, REPOSITORY_RE};

/// `registry-host[:port]/path`, e.g. `127.0.0.1:5000/gardenlinux/gardenlinux`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    pub registry: String,
    pub name: String,
}

impl Repository {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !REPOSITORY_RE.is_match(s) {
            return Err(format!(
                "{s:?} is not a repository with its registry host (host[:port]/path)"
            ));
        }
        let (registry, name) = s.split_once('/').expect("the pattern requires a slash");
        Ok(Self {
            registry: registry.to_string(),
            name: name.to_string(),
        })
    }

    pub fn with_tag(&self, tag: &str) -> ImageReference {
        ImageReference {
            repository: self.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    pub fn with_digest(&self, digest: &str) -> ImageReference {
        ImageReference {
            repository: self.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// A repository plus a tag, a digest, or both (the digest then wins).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageReference {
    pub repository: Repository,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageReference {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !IMAGE_REFERENCE_RE.is_match(s) {
            return Err(format!(
                "{s:?} is not an image reference (host[:port]/path:tag or host[:port]/path@sha256:...)"
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').expect("the pattern requires a slash");
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => (
                &rest[..last_slash + colon],
                Some(rest[last_slash + colon + 1..].to_string()),
            ),
            None => (rest, None),
        };
        Ok(Self {
            repository: Repository::parse(repository)?,
            tag,
            digest,
        })
    }

    /// What goes into `/v2/<name>/manifests/<reference>`.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .expect("a parsed reference has a tag or a digest")
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_registry_port_path_tag_and_digest() {
        let d = format!("sha256:{}", "0".repeat(64));
        let r =
            ImageReference::parse(&format!("127.0.0.1:5000/gl/gardenlinux:1877.5@{d}")).unwrap();
        assert_eq!(r.repository.registry, "127.0.0.1:5000");
        assert_eq!(r.repository.name, "gl/gardenlinux");
        assert_eq!(r.tag.as_deref(), Some("1877.5"));
        assert_eq!(r.reference(), d);
        let r = ImageReference::parse("localhost:5000/a:latest").unwrap();
        assert_eq!(r.repository.to_string(), "localhost:5000/a");
        assert_eq!(r.reference(), "latest");
        assert!(ImageReference::parse("localhost:5000/a").is_err());
    }
}
