//! The distribution spec's grammar of registry hosts, repository paths, tags and digests,
//! written once. The CRD schema embeds these patterns (the API server enforces them with Go's
//! RE2) and the parsers in this module's siblings compile the same text with the `regex` crate,
//! so every front end accepts exactly the same strings.

use std::sync::LazyLock;

use regex::Regex;

/// A registry host: `localhost`, a bracketed IPv6 address, a dotted name, or any name with a port.
macro_rules! host {
    () => {
        r"(?:localhost(?::[0-9]{1,5})?|\[[0-9a-fA-F:.]+\](?::[0-9]{1,5})?|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)+(?::[0-9]{1,5})?|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9]{1,5})"
    };
}
/// Repository path components as the distribution spec defines them.
macro_rules! path {
    () => {
        r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    };
}
macro_rules! tag {
    () => {
        r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
    };
}
macro_rules! digest {
    () => {
        r"(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})"
    };
}

pub const REPOSITORY: &str = concat!("^", host!(), "/", path!(), "$");
pub const TAG: &str = concat!("^", tag!(), "$");
/// Tags that registries and cosign derive from a subject's digest: the referrers fallback index
/// (`sha256-<hex>`) and cosign's signature, attestation and SBOM tags. Writing one by hand
/// replaces what tools keep there, so no front end accepts one as a tag to write.
pub const RESERVED_TAG: &str = r"^sha256-[a-f0-9]{64}(?:\.(?:sig|att|sbom))?$";
pub const DIGEST: &str = concat!("^", digest!(), "$");
/// A tag, a digest, or both; the registry host is required.
pub const IMAGE_REFERENCE: &str = concat!(
    "^",
    host!(),
    "/",
    path!(),
    "(?::",
    tag!(),
    "(?:@",
    digest!(),
    ")?|@",
    digest!(),
    ")$"
);
/// A full reference, a bare tag, or a bare digest (the last two relative to a repository the
/// context names).
pub const RELATIVE_REFERENCE: &str = concat!(
    "^(?:",
    host!(),
    "/",
    path!(),
    "(?::",
    tag!(),
    "(?:@",
    digest!(),
    ")?|@",
    digest!(),
    ")|",
    tag!(),
    "|",
    digest!(),
    ")$"
);

fn compiled(pattern: &'static str) -> Regex {
    Regex::new(pattern).expect("the patterns in this module are valid regular expressions")
}

pub static REPOSITORY_RE: LazyLock<Regex> = LazyLock::new(|| compiled(REPOSITORY));
pub static TAG_RE: LazyLock<Regex> = LazyLock::new(|| compiled(TAG));
pub static RESERVED_TAG_RE: LazyLock<Regex> = LazyLock::new(|| compiled(RESERVED_TAG));
pub static DIGEST_RE: LazyLock<Regex> = LazyLock::new(|| compiled(DIGEST));
pub static IMAGE_REFERENCE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(IMAGE_REFERENCE));
pub static RELATIVE_REFERENCE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(RELATIVE_REFERENCE));
