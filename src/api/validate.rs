//! Everything that can be said about a spec without touching a registry. Both front ends call
//! [`validate`] before any write, so a bad object never half-writes anything.

use std::collections::BTreeSet;
use std::fmt;

use super::patterns::*;
use super::{FileSource, GardenArtifactSpec, ImageSource, IndexSource};
use crate::oci::media_types;

/// Which front end reads the spec: some sources only make sense in one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// `garden-artifacts apply`: local files, no cluster.
    Apply,
    /// The Kubernetes controller: ConfigMaps and Secrets, no local files.
    Controller,
}

/// One problem with one field, e.g. `spec.source.files[1].digest: required with url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All the problems of one spec, joined for a one-line condition message or CLI error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec(pub Vec<FieldError>);

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for InvalidSpec {}

/// Largest annotation key or value we accept; registries limit a manifest to 4 MiB in all.
const MAX_ANNOTATION_KEY: usize = 253;
const MAX_ANNOTATION_VALUE: usize = 16 * 1024;
const MAX_INLINE_CONTENT: usize = 1024 * 1024;
/// The `maxItems` / `maxLength` of the CRD schema (src/api/mod.rs), checked here too so that
/// `apply` refuses what the API server refuses.
const MAX_TAGS: usize = 64;
const MAX_REPOSITORY: usize = 255;
const MAX_FILE_NAME: usize = 255;
const MAX_REFERENCE: usize = 512;
const MAX_LINK_URL: usize = 2048;
/// The shortest `spec.interval`.
const MIN_INTERVAL_MS: u128 = 1_000;

struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn pattern(&mut self, field: &str, value: &str, re: &regex::Regex, expected: &str) {
        if !re.is_match(value) {
            let shown = without_userinfo(value);
            self.fail(field, format!("{shown:?} is not {expected}"));
        }
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.fail(
                field,
                format!("is {} characters long, at most {max} allowed", value.len()),
            );
        }
    }

    /// The port of a registry host, when there is one, must be a TCP port: the pattern allows
    /// five digits, which is up to 99999.
    fn registry_port(&mut self, field: &str, reference: &str) {
        let Some((host, _)) = reference.split_once('/') else {
            return;
        };
        if host.ends_with(']') {
            return;
        }
        if let Some((_, port)) = host.rsplit_once(':')
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            self.fail(field, format!("port {port} is not a TCP port (1 to 65535)"));
        }
    }

    fn annotations(
        &mut self,
        field: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) {
        for (key, value) in annotations {
            if key.is_empty() || key.len() > MAX_ANNOTATION_KEY {
                self.fail(
                    format!("{field}[{key:?}]"),
                    format!("annotation keys must be 1 to {MAX_ANNOTATION_KEY} characters"),
                );
            }
            if value.len() > MAX_ANNOTATION_VALUE {
                self.fail(
                    format!("{field}[{key:?}]"),
                    format!(
                        "annotation value is {} bytes, at most {MAX_ANNOTATION_VALUE} allowed",
                        value.len()
                    ),
                );
            }
        }
    }
}

/// Checks a spec completely; the error lists every bad field, not only the first.
pub fn validate(spec: &GardenArtifactSpec, frontend: Frontend) -> Result<(), InvalidSpec> {
    let mut c = Checker { errors: Vec::new() };

    c.pattern(
        "spec.repository",
        &spec.repository,
        &REPOSITORY_RE,
        "a repository with its registry host (e.g. registry.example.com/gardenlinux/gardenlinux; lowercase path)",
    );
    c.max_len("spec.repository", &spec.repository, MAX_REPOSITORY);
    if REPOSITORY_RE.is_match(&spec.repository) {
        c.registry_port("spec.repository", &spec.repository);
    }

    let mut seen_tags = BTreeSet::new();
    for (i, tag) in spec.tags.iter().enumerate() {
        let field = format!("spec.tags[{i}]");
        c.pattern(
            &field,
            tag,
            &TAG_RE,
            "a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})",
        );
        if !seen_tags.insert(tag) {
            c.fail(field, format!("tag {tag:?} is listed twice"));
        }
    }
    if spec.tags.len() > MAX_TAGS {
        c.fail(
            "spec.tags",
            format!("{} tags, at most {MAX_TAGS} allowed", spec.tags.len()),
        );
    }
    if spec.tags.is_empty() && spec.subject.is_none() {
        c.fail(
            "spec.tags",
            "at least one tag is required (only an artefact with a subject may have none)",
        );
    }

    c.annotations("spec.annotations", &spec.annotations);
    if let Some(artifact_type) = &spec.artifact_type {
        c.pattern(
            "spec.artifactType",
            artifact_type,
            &MEDIA_TYPE_RE,
            "a media type (type/subtype)",
        );
    }
    if let Some(config) = &spec.config {
        if let Some(media_type) = &config.media_type {
            c.pattern(
                "spec.config.mediaType",
                media_type,
                &MEDIA_TYPE_RE,
                "a media type (type/subtype)",
            );
        }
        c.annotations("spec.config.annotations", &config.annotations);
        if config
            .content
            .as_ref()
            .is_some_and(|s| s.len() > MAX_INLINE_CONTENT)
        {
            c.fail(
                "spec.config.content",
                format!("inline content is limited to {MAX_INLINE_CONTENT} bytes"),
            );
        }
    }

    let source = &spec.source;
    let sources_set = [
        source.files.is_some(),
        source.image.is_some(),
        source.index.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if sources_set != 1 {
        c.fail(
            "spec.source",
            format!("exactly one of files, image, index must be set, found {sources_set}"),
        );
    }
    if let Some(files) = &source.files {
        check_files(&mut c, files, frontend);
    }
    if let Some(image) = &source.image {
        check_image(&mut c, spec, image);
    }
    if let Some(index) = &source.index {
        check_index(&mut c, spec, index);
    }
    if let Some(subject) = &spec.subject {
        check_reference(
            &mut c,
            "spec.subject",
            subject.artifact_ref.as_ref().map(|r| r.name.as_str()),
            subject.reference.as_deref(),
        );
    }
    for (i, link) in spec.links.iter().enumerate() {
        let field = format!("spec.links[{i}]");
        c.pattern(
            &format!("{field}.url"),
            &link.url,
            &HTTP_URL_RE,
            "an http or https URL without credentials",
        );
        c.max_len(&format!("{field}.url"), &link.url, MAX_LINK_URL);
        c.pattern(
            &format!("{field}.rel"),
            &link.rel,
            &LINK_REL_RE,
            "a link relation such as release-notes (lowercase letters, digits, ._-)",
        );
    }
    if let Some(credentials) = &spec.credentials {
        c.pattern(
            "spec.credentials.secretRef.name",
            &credentials.secret_ref.name,
            &OBJECT_NAME_RE,
            "a Kubernetes object name",
        );
    }
    if let Some(interval) = &spec.interval {
        c.pattern(
            "spec.interval",
            interval,
            &DURATION_RE,
            "a duration such as 10m, 1h30m or 45s",
        );
        if DURATION_RE.is_match(interval) && duration_ms(interval) < MIN_INTERVAL_MS {
            // `1ms` would have the controller re-check the registry a thousand times a second.
            c.fail("spec.interval", format!("{interval:?} is shorter than 1s"));
        }
    }

    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec(c.errors))
    }
}

/// A duration that matches [`DURATION_RE`] in milliseconds (saturating).
fn duration_ms(text: &str) -> u128 {
    let mut total: u128 = 0;
    let mut number: u128 = 0;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if let Some(digit) = ch.to_digit(10) {
            number = number.saturating_mul(10).saturating_add(u128::from(digit));
            continue;
        }
        let unit: u128 = match ch {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 0,
        };
        total = total.saturating_add(number.saturating_mul(unit));
        number = 0;
    }
    total
}

/// A value as it may be shown in an error: the user info of a URL (`https://user:password@host`)
/// replaced, so a refused URL does not put its password into logs.
fn without_userinfo(value: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]).into(),
        None => value.into(),
    }
}

fn check_files(c: &mut Checker, files: &[FileSource], frontend: Frontend) {
    if files.is_empty() {
        c.fail("spec.source.files", "must list at least one file");
    }
    let mut names = BTreeSet::new();
    for (i, file) in files.iter().enumerate() {
        let field = format!("spec.source.files[{i}]");
        c.pattern(
            &format!("{field}.name"),
            &file.name,
            &FILE_NAME_RE,
            "a plain file name (letters, digits, ._+@=,~-; no directory)",
        );
        c.max_len(&format!("{field}.name"), &file.name, MAX_FILE_NAME);
        if file.name == "." || file.name == ".." {
            c.fail(format!("{field}.name"), "must not be . or ..");
        }
        if !names.insert(&file.name) {
            c.fail(
                format!("{field}.name"),
                format!("file name {:?} is listed twice", file.name),
            );
        }

        let origins: Vec<&str> = [
            ("content", file.content.is_some()),
            ("path", file.path.is_some()),
            ("url", file.url.is_some()),
            ("configMapKeyRef", file.config_map_key_ref.is_some()),
            ("secretKeyRef", file.secret_key_ref.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if origins.len() != 1 {
            c.fail(
                field.clone(),
                format!(
                    "exactly one of content, path, url, configMapKeyRef, secretKeyRef must be set, found {}",
                    if origins.is_empty() {
                        "none".to_string()
                    } else {
                        origins.join(", ")
                    }
                ),
            );
        }

        if let Some(content) = &file.content
            && content.len() > MAX_INLINE_CONTENT
        {
            c.fail(
                format!("{field}.content"),
                format!("inline content is limited to {MAX_INLINE_CONTENT} bytes; use path or url"),
            );
        }
        if let Some(path) = &file.path {
            if frontend == Frontend::Controller {
                c.fail(
                    format!("{field}.path"),
                    "local paths are only available to `garden-artifacts apply`; use configMapKeyRef, secretKeyRef or url",
                );
            }
            if path.is_empty() {
                c.fail(format!("{field}.path"), "must not be empty");
            }
        }
        match (&file.url, &file.digest) {
            (Some(url), digest) => {
                c.pattern(
                    &format!("{field}.url"),
                    url,
                    &HTTP_URL_RE,
                    "an http or https URL without credentials",
                );
                match digest {
                    None => c.fail(
                        format!("{field}.digest"),
                        "required with url (sha256:<64 hex digits>), so the content is pinned",
                    ),
                    Some(d) => c.pattern(
                        &format!("{field}.digest"),
                        d,
                        &SHA256_DIGEST_RE,
                        "a sha256 digest (sha256:<64 lowercase hex digits>)",
                    ),
                }
            }
            (None, Some(_)) => c.fail(format!("{field}.digest"), "only used together with url"),
            (None, None) => {}
        }
        for (key_field, key_ref) in [
            ("configMapKeyRef", &file.config_map_key_ref),
            ("secretKeyRef", &file.secret_key_ref),
        ] {
            let Some(key_ref) = key_ref else { continue };
            if frontend == Frontend::Apply {
                c.fail(
                    format!("{field}.{key_field}"),
                    "only available in the controller; use content, path or url with apply",
                );
            }
            c.pattern(
                &format!("{field}.{key_field}.name"),
                &key_ref.name,
                &OBJECT_NAME_RE,
                "a Kubernetes object name",
            );
            c.pattern(
                &format!("{field}.{key_field}.key"),
                &key_ref.key,
                &CONFIG_KEY_RE,
                "a ConfigMap or Secret key",
            );
        }

        match &file.media_type {
            Some(media_type) => c.pattern(
                &format!("{field}.mediaType"),
                media_type,
                &MEDIA_TYPE_RE,
                "a media type (type/subtype)",
            ),
            None => {
                if media_types::for_file_name(&file.name).is_none() {
                    c.fail(
                        format!("{field}.mediaType"),
                        format!(
                            "required: {:?} has no suffix in the Garden Linux media type table ({})",
                            file.name,
                            media_types::known_suffixes().join(" ")
                        ),
                    );
                }
            }
        }
        c.annotations(&format!("{field}.annotations"), &file.annotations);
    }
}

/// `artifactRef` or `reference`, exactly one.
fn check_reference(
    c: &mut Checker,
    field: &str,
    artifact_ref: Option<&str>,
    reference: Option<&str>,
) {
    match (artifact_ref, reference) {
        (Some(name), None) => c.pattern(
            &format!("{field}.artifactRef.name"),
            name,
            &OBJECT_NAME_RE,
            "a GardenArtifact name",
        ),
        (None, Some(reference)) => {
            let field = format!("{field}.reference");
            c.pattern(
                &field,
                reference,
                &ARTIFACT_REFERENCE_RE,
                "a tag, a digest, or a reference host/repo:tag or host/repo@sha256:...",
            );
            c.max_len(&field, reference, MAX_REFERENCE);
            if ARTIFACT_REFERENCE_RE.is_match(reference) {
                c.registry_port(&field, reference);
            }
        }
        _ => c.fail(field, "exactly one of artifactRef, reference must be set"),
    }
}

fn check_index(c: &mut Checker, spec: &GardenArtifactSpec, index: &IndexSource) {
    if index.manifests.is_empty() {
        c.fail(
            "spec.source.index.manifests",
            "must list at least one manifest",
        );
    }
    for (i, entry) in index.manifests.iter().enumerate() {
        let field = format!("spec.source.index.manifests[{i}]");
        check_reference(
            c,
            &field,
            entry.artifact_ref.as_ref().map(|r| r.name.as_str()),
            entry.reference.as_deref(),
        );
        c.annotations(&format!("{field}.annotations"), &entry.annotations);
        if let Some(platform) = &entry.platform {
            for (name, value) in [
                ("os", &platform.os),
                ("architecture", &platform.architecture),
            ] {
                c.pattern(
                    &format!("{field}.platform.{name}"),
                    value,
                    &PLATFORM_PART_RE,
                    "a platform word (lowercase letters, digits, ._-)",
                );
            }
            if let Some(variant) = &platform.variant {
                c.pattern(
                    &format!("{field}.platform.variant"),
                    variant,
                    &PLATFORM_PART_RE,
                    "a platform word (lowercase letters, digits, ._-)",
                );
            }
        }
    }
    if spec.config.is_some() {
        c.fail("spec.config", "an index has no config");
    }
}

fn check_image(c: &mut Checker, spec: &GardenArtifactSpec, image: &ImageSource) {
    c.pattern(
        "spec.source.image.reference",
        &image.reference,
        &IMAGE_REFERENCE_RE,
        "an image reference with registry host and a tag or digest (host/repo:tag or host/repo@sha256:...)",
    );
    c.max_len(
        "spec.source.image.reference",
        &image.reference,
        MAX_REFERENCE,
    );
    if IMAGE_REFERENCE_RE.is_match(&image.reference) {
        c.registry_port("spec.source.image.reference", &image.reference);
    }
    if let Some(platform) = &image.platform {
        c.pattern(
            "spec.source.image.platform",
            platform,
            &PLATFORM_RE,
            "a platform os/arch[/variant]",
        );
    }
    let changes_bytes = "not allowed with source.image: the manifest is copied byte for byte, so digests and signatures stay valid";
    if !spec.annotations.is_empty() {
        c.fail("spec.annotations", changes_bytes);
    }
    if spec.artifact_type.is_some() {
        c.fail("spec.artifactType", changes_bytes);
    }
    if spec.config.is_some() {
        c.fail("spec.config", changes_bytes);
    }
    if spec.subject.is_some() {
        c.fail("spec.subject", changes_bytes);
    }
    if !spec.links.is_empty() {
        c.fail("spec.links", changes_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImageSource, Source};

    fn files_spec(files: Vec<FileSource>) -> GardenArtifactSpec {
        GardenArtifactSpec {
            repository: "127.0.0.1:5000/gardenlinux/gardenlinux".into(),
            tags: vec!["1877.5".into()],
            annotations: Default::default(),
            artifact_type: None,
            config: None,
            source: Source {
                files: Some(files),
                ..Default::default()
            },
            subject: None,
            links: vec![],
            credentials: None,
            deletion_policy: Default::default(),
            interval: None,
            suspend: false,
        }
    }

    fn fields(err: InvalidSpec) -> Vec<String> {
        err.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_flavour_built_from_inline_files_is_valid() {
        let spec = files_spec(vec![FileSource {
            name: "aws-gardener_prod-amd64-1877.5.release".into(),
            content: Some("ID=gardenlinux".into()),
            ..Default::default()
        }]);
        assert_eq!(validate(&spec, Frontend::Apply), Ok(()));
    }

    #[test]
    fn url_without_digest_names_the_field() {
        let spec = files_spec(vec![FileSource {
            name: "a.raw".into(),
            url: Some("http://127.0.0.1:1/a.raw".into()),
            ..Default::default()
        }]);
        let err = validate(&spec, Frontend::Apply).unwrap_err();
        assert_eq!(fields(err), ["spec.source.files[0].digest"]);
    }

    #[test]
    fn unknown_suffix_without_media_type_is_an_error_not_a_guess() {
        let spec = files_spec(vec![FileSource {
            name: "notes.docx".into(),
            content: Some("x".into()),
            ..Default::default()
        }]);
        let err = validate(&spec, Frontend::Apply).unwrap_err();
        assert_eq!(fields(err.clone()), ["spec.source.files[0].mediaType"]);
        assert!(err.to_string().contains(".raw"), "{err}");
    }

    #[test]
    fn two_sources_and_bad_tags_are_all_reported() {
        let mut spec = files_spec(vec![FileSource {
            name: "a.raw".into(),
            content: Some("x".into()),
            ..Default::default()
        }]);
        spec.tags = vec!["ok".into(), "-bad".into(), "ok".into()];
        spec.source.image = Some(ImageSource {
            reference: "127.0.0.1:5000/x:y".into(),
            platform: None,
            referrers: false,
        });
        let err = validate(&spec, Frontend::Apply).unwrap_err();
        assert_eq!(fields(err), ["spec.tags[1]", "spec.tags[2]", "spec.source"]);
    }

    #[test]
    fn each_frontend_refuses_the_other_ones_sources() {
        let path = files_spec(vec![FileSource {
            name: "a.raw".into(),
            path: Some("a.raw".into()),
            ..Default::default()
        }]);
        assert!(validate(&path, Frontend::Apply).is_ok());
        assert_eq!(
            fields(validate(&path, Frontend::Controller).unwrap_err()),
            ["spec.source.files[0].path"]
        );
        let key = files_spec(vec![FileSource {
            name: "a.raw".into(),
            config_map_key_ref: Some(crate::api::KeyRef {
                name: "cm".into(),
                key: "a.raw".into(),
            }),
            ..Default::default()
        }]);
        assert!(validate(&key, Frontend::Controller).is_ok());
        assert_eq!(
            fields(validate(&key, Frontend::Apply).unwrap_err()),
            ["spec.source.files[0].configMapKeyRef"]
        );
    }

    #[test]
    fn image_sources_refuse_changes_to_the_copied_bytes() {
        let mut spec = files_spec(vec![]);
        spec.source = Source {
            image: Some(ImageSource {
                reference: "127.0.0.1:5000/a:b".into(),
                platform: Some("linux/amd64".into()),
                referrers: false,
            }),
            ..Default::default()
        };
        assert!(validate(&spec, Frontend::Apply).is_ok());
        spec.annotations.insert("k".into(), "v".into());
        assert_eq!(
            fields(validate(&spec, Frontend::Apply).unwrap_err()),
            ["spec.annotations"]
        );
    }
    #[test]
    fn the_schema_limits_are_checked_here_too() {
        let mut spec = files_spec(vec![FileSource {
            name: format!("{}.release", "a".repeat(248)),
            content: Some("x".into()),
            ..Default::default()
        }]);
        spec.tags = (0..65).map(|i| format!("t{i}")).collect();
        spec.repository = format!("127.0.0.1:5000/{}", "a".repeat(241));
        spec.links = vec![crate::api::Link {
            url: format!("https://example.com/{}", "a".repeat(2029)),
            rel: "release-notes".into(),
        }];
        spec.credentials = Some(crate::api::Credentials {
            secret_ref: crate::api::LocalObjectRef {
                name: "Reg_Cred".into(),
            },
        });
        assert_eq!(
            fields(validate(&spec, Frontend::Apply).unwrap_err()),
            [
                "spec.repository",
                "spec.tags",
                "spec.source.files[0].name",
                "spec.links[0].url",
                "spec.credentials.secretRef.name",
            ]
        );
    }

    #[test]
    fn registry_ports_are_tcp_ports() {
        let mut spec = files_spec(vec![FileSource {
            name: "a.release".into(),
            content: Some("x".into()),
            ..Default::default()
        }]);
        for ok in ["127.0.0.1:65535/a", "[::1]:5000/a", "[::1]/a", "ghcr.io/a"] {
            spec.repository = ok.into();
            assert_eq!(validate(&spec, Frontend::Apply), Ok(()), "{ok}");
        }
        for bad in ["127.0.0.1:99999/a", "registry:0/a", "[::1]:65536/a"] {
            spec.repository = bad.into();
            assert_eq!(
                fields(validate(&spec, Frontend::Apply).unwrap_err()),
                ["spec.repository"],
                "{bad}"
            );
        }
        spec.repository = "127.0.0.1:5000/a".into();
        spec.source = Source {
            image: Some(ImageSource {
                reference: "127.0.0.1:70000/a:v1".into(),
                platform: None,
                referrers: false,
            }),
            ..Default::default()
        };
        let err = validate(&spec, Frontend::Apply).unwrap_err();
        assert_eq!(fields(err.clone()), ["spec.source.image.reference"]);
        assert!(err.to_string().contains("port 70000"), "{err}");
    }

    #[test]
    fn a_refused_url_does_not_show_its_password() {
        let spec = files_spec(vec![FileSource {
            name: "a.raw".into(),
            url: Some("https://alice:s3cr3t@example.com/a.raw".into()),
            digest: Some(format!("sha256:{}", "0".repeat(64))),
            ..Default::default()
        }]);
        let err = validate(&spec, Frontend::Apply).unwrap_err().to_string();
        assert!(err.contains("spec.source.files[0].url"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            err.contains("https://<redacted>@example.com/a.raw"),
            "{err}"
        );
    }
    #[test]
    fn an_interval_is_at_least_a_second() {
        let mut spec = files_spec(vec![FileSource {
            name: "a.release".into(),
            content: Some("x".into()),
            ..Default::default()
        }]);
        for ok in [
            "1s",
            "1000ms",
            "2s",
            "10m",
            "1h30m",
            "99999999999999999999999h",
        ] {
            spec.interval = Some(ok.into());
            assert_eq!(validate(&spec, Frontend::Apply), Ok(()), "{ok}");
        }
        for bad in ["0s", "1ms", "999ms", "0h0m"] {
            spec.interval = Some(bad.into());
            assert_eq!(
                fields(validate(&spec, Frontend::Apply).unwrap_err()),
                ["spec.interval"],
                "{bad}"
            );
        }
    }
}
