//! The syntax of every string field, written once: the CRD schema embeds these patterns (the API
//! server enforces them with Go's RE2) and [`super::validate`] compiles the same text with the
//! `regex` crate, so both front ends accept exactly the same strings. The OCI grammar (hosts,
//! paths, tags, digests, references) is [`crate::oci::grammar`]'s.

use std::sync::LazyLock;

use regex::Regex;
use schemars::Schema;
use serde_json::json;

/// What `reference` fields of links accept: a full reference, a bare tag, or a bare digest.
pub use crate::oci::grammar::RELATIVE_REFERENCE as ARTIFACT_REFERENCE;
pub use crate::oci::grammar::{DIGEST, IMAGE_REFERENCE, REPOSITORY, RESERVED_TAG, TAG};
/// OCM's grammar: component names, relaxed SemVer versions, identity keys, label names.
pub use crate::oci::ocm::{
    COMPONENT_NAME, COMPONENT_NAME_RE, IDENTITY_KEY, IDENTITY_KEY_RE, LABEL_NAME, LABEL_NAME_RE,
    RELAXED_SEMVER,
};
pub const SHA256_DIGEST: &str = r"^sha256:[a-f0-9]{64}$";
/// The `rel` of a link; it becomes part of an annotation key.
pub const LINK_REL: &str = r"^[a-z0-9][a-z0-9._-]{0,62}$";
/// RFC 6838 `type/subtype`.
pub const MEDIA_TYPE: &str =
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$";
/// One word of an index entry's platform (`os`, `architecture`, `variant`).
pub const PLATFORM_PART: &str = r"^[a-z0-9_.-]{1,64}$";
pub const PLATFORM: &str = r"^[a-z0-9_.-]+/[a-z0-9_.-]+(?:/[a-z0-9_.-]+)?$";
/// A plain file name: no directory part, so `pull` can never write outside its output folder.
pub const FILE_NAME: &str = r"^[A-Za-z0-9._+@=,~-]+$";
/// A Kubernetes object name (DNS subdomain).
pub const OBJECT_NAME: &str =
    r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$";
/// A ConfigMap or Secret key.
pub const CONFIG_KEY: &str = r"^[-._a-zA-Z0-9]+$";
pub const HTTP_URL: &str = r"^https?://[^\s/?#@]+(?:[/?#][^\s]*)?$";
/// A Go-style duration: `10m`, `1h30m`, `45s`.
pub const DURATION: &str = r"^(?:[0-9]+(?:ms|s|m|h))+$";

fn compiled(pattern: &'static str) -> Regex {
    Regex::new(pattern).expect("the patterns in this module are valid regular expressions")
}

pub use crate::oci::grammar::{
    DIGEST_RE, IMAGE_REFERENCE_RE, RELATIVE_REFERENCE_RE as ARTIFACT_REFERENCE_RE, REPOSITORY_RE,
    TAG_RE,
};
pub static SHA256_DIGEST_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SHA256_DIGEST));
pub static LINK_REL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(LINK_REL));
pub static MEDIA_TYPE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(MEDIA_TYPE));
pub static PLATFORM_PART_RE: LazyLock<Regex> = LazyLock::new(|| compiled(PLATFORM_PART));
pub static PLATFORM_RE: LazyLock<Regex> = LazyLock::new(|| compiled(PLATFORM));
pub static FILE_NAME_RE: LazyLock<Regex> = LazyLock::new(|| compiled(FILE_NAME));
pub static OBJECT_NAME_RE: LazyLock<Regex> = LazyLock::new(|| compiled(OBJECT_NAME));
pub static CONFIG_KEY_RE: LazyLock<Regex> = LazyLock::new(|| compiled(CONFIG_KEY));
pub static HTTP_URL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(HTTP_URL));
pub static DURATION_RE: LazyLock<Regex> = LazyLock::new(|| compiled(DURATION));

/// `oneOf` over `required` lists: the structural-schema way (no CEL, so Kubernetes 1.20 accepts
/// it) of saying "exactly one of these fields".
fn exactly_one_of(schema: &mut Schema, fields: &[&str]) {
    let alternatives: Vec<_> = fields.iter().map(|f| json!({ "required": [f] })).collect();
    schema.insert("oneOf".into(), json!(alternatives));
}

/// `spec.tags` items also must not match [`RESERVED_TAG`]: RE2 has no lookahead, so the
/// refusal is a `not` beside the tag pattern (a value validation that structural schemas allow).
pub fn tags_to_write(schema: &mut Schema) {
    let items = schema
        .get_mut("items")
        .and_then(|items| items.as_object_mut())
        .expect("spec.tags is a list with an item schema");
    items.insert("not".into(), json!({ "pattern": RESERVED_TAG }));
}

/// A layer's annotations leave its title to the engine, which writes the file name there.
pub fn without_title(schema: &mut Schema) {
    schema.insert(
        "not".into(),
        json!({ "required": [crate::oci::media_types::TITLE_ANNOTATION] }),
    );
}

pub fn exactly_one_of_files_image_index(schema: &mut Schema) {
    exactly_one_of(schema, &["files", "image", "index"]);
}

pub fn exactly_one_artifact_reference(schema: &mut Schema) {
    exactly_one_of(schema, &["artifactRef", "reference"]);
}

pub fn exactly_one_file_origin(schema: &mut Schema) {
    exactly_one_of(
        schema,
        &["content", "path", "url", "configMapKeyRef", "secretKeyRef"],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_needs_a_registry_host() {
        for ok in [
            "127.0.0.1:5000/gardenlinux/gardenlinux",
            "localhost/a",
            "localhost:5000/a/b-c",
            "ghcr.io/gardenlinux/gardenlinux",
            "registry:5000/x",
            "[::1]:5000/x",
        ] {
            assert!(REPOSITORY_RE.is_match(ok), "{ok} should be accepted");
        }
        for bad in [
            "gardenlinux/gardenlinux",
            "ghcr.io/GardenLinux",
            "ghcr.io/a//b",
            "ghcr.io/a:tag",
            "ghcr.io/",
            "ghcr.io/a-",
        ] {
            assert!(!REPOSITORY_RE.is_match(bad), "{bad} should be refused");
        }
    }

    #[test]
    fn image_reference_needs_tag_or_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(IMAGE_REFERENCE_RE.is_match("ghcr.io/gardenlinux/gardenlinux:1877.5"));
        assert!(IMAGE_REFERENCE_RE.is_match(&format!("127.0.0.1:5000/a@{d}")));
        assert!(IMAGE_REFERENCE_RE.is_match(&format!("127.0.0.1:5000/a:t@{d}")));
        assert!(!IMAGE_REFERENCE_RE.is_match("127.0.0.1:5000/a"));
        assert!(!IMAGE_REFERENCE_RE.is_match("127.0.0.1:5000/a@sha256:abc"));
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        assert!(TAG_RE.is_match("1877.5-aws-gardener_prod-amd64"));
        assert!(TAG_RE.is_match(&"a".repeat(128)));
        assert!(!TAG_RE.is_match(&"a".repeat(129)));
        assert!(!TAG_RE.is_match("-leading-dash"));
        assert!(!TAG_RE.is_match("has space"));
    }

    #[test]
    fn durations_and_urls() {
        assert!(DURATION_RE.is_match("1h30m"));
        assert!(!DURATION_RE.is_match("10 minutes"));
        assert!(HTTP_URL_RE.is_match("https://example.com/a/b?c=d"));
        assert!(!HTTP_URL_RE.is_match("ftp://example.com/a"));
        assert!(!HTTP_URL_RE.is_match("https://user:pw@example.com/a"));
    }
}
