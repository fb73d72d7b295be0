//! Repository and image references, parsed once at the edge so everything after works with
//! values whose syntax is known to be right. Their fields are private: a reference always has a
//! tag, a digest or both, and its parts always satisfy [`super::grammar`].

use std::fmt;

use super::digest::Digest;
use super::grammar::{IMAGE_REFERENCE_RE, REPOSITORY_RE, RESERVED_TAG_RE, TAG_RE};

/// The one identity of a registry, whatever its spelling: host names compare without case; a
/// default port is the same registry as none (`:443` for a registry reached over HTTPS, `:80`
/// on loopback, which is reached over plain HTTP); the loopback names (`localhost`,
/// `127.0.0.1`, `::1`) with one port are one registry; Docker Hub's aliases (`docker.io`,
/// `index.docker.io`, `registry-1.docker.io`, `registry.hub.docker.com`) are `docker.io`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryId(String);

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

impl RegistryId {
    /// The identity of `host[:port]` as a reference spells it.
    pub fn of(registry: &str) -> Self {
        let registry = registry.to_ascii_lowercase();
        let (host, port) = match registry.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((host, tail)) => (host.to_string(), tail.strip_prefix(':')),
                None => (rest.to_string(), None),
            },
            None => match registry.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (registry.clone(), None),
            },
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let host = if loopback {
            "localhost".to_string()
        } else if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
            DOCKER_HUB.to_string()
        } else if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let default_port = if loopback { "80" } else { "443" };
        let port = port
            .map(|p| p.trim_start_matches('0'))
            .filter(|p| *p != default_port);
        Self(match port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB
    }
}

impl fmt::Display for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The registry's identity and the path as that registry knows it: Docker Hub's single-segment
/// names live under `library/`.
fn identity_parts(registry: &str, name: &str) -> (RegistryId, String) {
    let id = RegistryId::of(registry);
    let canonical_name = if id.is_docker_hub() && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_string()
    };
    (id, canonical_name)
}

/// [`Repository::identity`] of a repository written as text, without the grammar check (no
/// regex): for paths that go over every object of a cluster, whose repositories were checked
/// when the objects were admitted. Text without a `/` is its own identity.
pub fn repository_identity(text: &str) -> String {
    match text.split_once('/') {
        Some((registry, name)) => {
            let (id, name) = identity_parts(registry, name);
            format!("{id}/{name}")
        }
        None => text.to_string(),
    }
}

/// `registry-host[:port]/path`, e.g. `127.0.0.1:5000/gardenlinux/gardenlinux`. It keeps the
/// spelling it was given (requests go where the user said), and compares, orders and hashes by
/// its identity: two spellings of one repository are one repository.
#[derive(Clone, Debug)]
pub struct Repository {
    registry: String,
    name: String,
    id: RegistryId,
    /// The path as the registry knows it: Docker Hub's single-segment names live under
    /// `library/`.
    canonical_name: String,
}

impl PartialEq for Repository {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.canonical_name == other.canonical_name
    }
}

impl Eq for Repository {}

impl std::hash::Hash for Repository {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.canonical_name.hash(state);
    }
}

impl PartialOrd for Repository {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Repository {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.id, &self.canonical_name).cmp(&(&other.id, &other.canonical_name))
    }
}

impl Repository {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !REPOSITORY_RE.is_match(s) {
            return Err(format!(
                "{s:?} is not a repository with its registry host (host[:port]/path)"
            ));
        }
        let (registry, name) = s.split_once('/').expect("the pattern requires a slash");
        let (id, canonical_name) = identity_parts(registry, name);
        Ok(Self {
            registry: registry.to_string(),
            name: name.to_string(),
            id,
            canonical_name,
        })
    }

    /// The registry's identity, for every comparison of registries.
    pub fn registry_id(&self) -> &RegistryId {
        &self.id
    }

    /// True when both live in one registry (a blob can be mounted from one into the other).
    pub fn same_registry(&self, other: &Repository) -> bool {
        self.id == other.id
    }

    /// The repository's identity as text: `registry-id/canonical-path`.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.id, self.canonical_name)
    }

    /// The registry host, with its port when one was given.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The path within the registry (what goes into `/v2/<name>/...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn with_tag(&self, tag: &Tag) -> ImageReference {
        ImageReference {
            repository: self.clone(),
            tag: Some(tag.clone()),
            digest: None,
        }
    }

    pub fn with_digest(&self, digest: &Digest) -> ImageReference {
        ImageReference {
            repository: self.clone(),
            tag: None,
            digest: Some(digest.clone()),
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// A tag, as the distribution spec allows it (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, String> {
        if TAG_RE.is_match(s) {
            Ok(Self(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the tag is kept for when it has the shape of a tag that tools derive from a
    /// subject's digest (see [`super::grammar::RESERVED_TAG`]); such a tag is read, never
    /// written from user input.
    pub fn reserved_for(&self) -> Option<&'static str> {
        reserved_for(&self.0)
    }
}

/// [`Tag::reserved_for`] of a string not yet parsed.
pub fn reserved_for(tag: &str) -> Option<&'static str> {
    if !RESERVED_TAG_RE.is_match(tag) {
        return None;
    }
    Some(match tag.rsplit_once('.').map(|(_, suffix)| suffix) {
        Some("sig") => "cosign signatures",
        Some("att") => "cosign attestations",
        Some("sbom") => "cosign SBOMs",
        _ => "the referrers fallback index",
    })
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Tag {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Tag {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A repository plus a tag, a digest, or both (the digest then wins).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageReference {
    repository: Repository,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

impl ImageReference {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !IMAGE_REFERENCE_RE.is_match(s) {
            return Err(format!(
                "{s:?} is not an image reference (host[:port]/path:tag or host[:port]/path@sha256:...)"
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').expect("the pattern requires a slash");
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => (
                &rest[..last_slash + colon],
                Some(Tag::parse(&rest[last_slash + colon + 1..])?),
            ),
            None => (rest, None),
        };
        Ok(Self {
            repository: Repository::parse(repository)?,
            tag,
            digest,
        })
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn tag(&self) -> Option<&Tag> {
        self.tag.as_ref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes into `/v2/<name>/manifests/<reference>`.
    pub fn reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag.as_str(),
            (None, None) => unreachable!("every constructor sets a tag or a digest"),
        }
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

/// A reference as the `reference` fields of the API accept it: a full reference, or a tag or
/// digest of a repository the context names. [`RelativeReference::resolve_in`] is the one
/// place that turns it into an [`ImageReference`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RelativeReference {
    Absolute(ImageReference),
    Tag(Tag),
    Digest(Digest),
}

impl RelativeReference {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(digest) = Digest::parse(s) {
            return Ok(Self::Digest(digest));
        }
        if s.contains('/') {
            return ImageReference::parse(s).map(Self::Absolute);
        }
        Tag::parse(s).map(Self::Tag).map_err(|_| {
            format!(
                "{s:?} is not a tag, a digest, or a reference (host[:port]/path:tag or @sha256:...)"
            )
        })
    }

    /// The reference it makes in `repository` (an absolute one stays as it is).
    pub fn resolve_in(&self, repository: &Repository) -> ImageReference {
        match self {
            Self::Absolute(reference) => reference.clone(),
            Self::Tag(tag) => repository.with_tag(tag),
            Self::Digest(digest) => repository.with_digest(digest),
        }
    }
}

impl fmt::Display for RelativeReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absolute(reference) => reference.fmt(f),
            Self::Tag(tag) => tag.fmt(f),
            Self::Digest(digest) => digest.fmt(f),
        }
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
        assert_eq!(r.repository().registry(), "127.0.0.1:5000");
        assert_eq!(r.repository().name(), "gl/gardenlinux");
        assert_eq!(r.tag().map(Tag::as_str), Some("1877.5"));
        assert_eq!(r.reference(), d);
        let r = ImageReference::parse("localhost:5000/a:latest").unwrap();
        assert_eq!(r.repository().to_string(), "localhost:5000/a");
        assert_eq!(r.reference(), "latest");
        assert!(ImageReference::parse("localhost:5000/a").is_err());
    }

    #[test]
    fn spellings_of_one_registry_are_one_registry() {
        let same = |a: &str, b: &str| {
            let (a, b) = (Repository::parse(a).unwrap(), Repository::parse(b).unwrap());
            a == b && a.identity() == b.identity() && a.same_registry(&b)
        };
        assert!(same("Registry.Example.com/gl", "registry.example.com/gl"));
        assert!(same(
            "registry.example.com:443/gl",
            "registry.example.com/gl"
        ));
        assert!(same("localhost:5000/gl", "127.0.0.1:5000/gl"));
        assert!(same("[::1]:5000/gl", "localhost:5000/gl"));
        assert!(same("localhost:80/gl", "localhost/gl"));
        assert!(same("docker.io/ubuntu", "index.docker.io/library/ubuntu"));
        assert!(same(
            "registry-1.docker.io/library/ubuntu",
            "docker.io/ubuntu"
        ));
        // Different ports, paths (which are case-sensitive by grammar), or hosts stay apart.
        assert!(!same("localhost:5000/gl", "localhost:5001/gl"));
        assert!(!same(
            "registry.example.com:8443/gl",
            "registry.example.com/gl"
        ));
        assert!(!same("ghcr.io/ubuntu", "ghcr.io/library/ubuntu"));
        assert!(!same("127.0.0.2:5000/gl", "10.0.0.1:5000/gl"));
        let identity = |s: &str| Repository::parse(s).unwrap().identity();
        for spelling in ["LOCALHOST:5000/gl", "docker.io/ubuntu", "ghcr.io:443/a/b"] {
            assert_eq!(repository_identity(spelling), identity(spelling));
        }
        // The spelling is kept for requests and messages.
        let r = Repository::parse("LOCALHOST:5000/gl").unwrap();
        assert_eq!(r.to_string(), "LOCALHOST:5000/gl");
        assert_eq!(r.registry_id().as_str(), "localhost:5000");
    }

    #[test]
    fn a_relative_reference_is_a_digest_a_tag_or_a_full_reference() {
        let d = format!("sha256:{}", "a".repeat(64));
        let repo = Repository::parse("localhost:5000/gl").unwrap();
        let at = |s: &str| {
            RelativeReference::parse(s)
                .unwrap()
                .resolve_in(&repo)
                .to_string()
        };
        assert_eq!(at(&d), format!("localhost:5000/gl@{d}"));
        assert_eq!(at("1877.5"), "localhost:5000/gl:1877.5");
        assert_eq!(at("other.io/x/y:1"), "other.io/x/y:1");
        // "sha256:..." that is not a well-formed digest is neither a tag nor a digest.
        assert!(RelativeReference::parse("sha256:abc").is_err());
        assert!(RelativeReference::parse("sha512:abc").is_err());
        assert!(RelativeReference::parse("-x").is_err());
        assert!(RelativeReference::parse("localhost:5000/gl").is_err());
    }
}
