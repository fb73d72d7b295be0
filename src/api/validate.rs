//! Everything that can be said about a spec without touching a registry, said once: [`validate`]
//! reads a [`GardenArtifactSpec`] into an [`ArtifactIntent`], the typed value the engine takes,
//! or lists every bad field. Both front ends call it before any write, so a bad object never
//! half-writes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

mod component;
pub use component::validate_component;

use super::patterns::*;
use super::{FileSource, GardenArtifactSpec, GardenMirrorSpec, ImageSource, IndexSource};
use crate::intent::{
    ArtifactIntent, Config, Content, File, FileOrigin, FilesContent, ImageCopy, IndexContent,
    IndexEntry, KeyRef, Latest, Link, ManifestFields, MirrorIntent, Platform, Reference,
    ReferenceTarget, TagSelection, VersionOrder, tag_pattern,
};
pub use crate::intent::{FieldError, FieldPath, InvalidSpec};
use crate::oci::media_types::{LINK_ANNOTATION_PREFIX, TITLE_ANNOTATION};
use crate::oci::{Digest, ImageReference, RelativeReference, Repository, Tag, media_types};

/// Which front end reads the spec: some sources only make sense in one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// `garden-artifacts apply`: local files, no cluster.
    Apply,
    /// The Kubernetes controller: ConfigMaps and Secrets, no local files.
    Controller,
}

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
/// Patterns per `spec.tags.include` / `exclude` of a mirror (the CRD's `maxItems`).
const MAX_TAG_PATTERNS: usize = 32;
/// The shortest `spec.interval`: `1ms` would have the controller re-check the registry a
/// thousand times a second.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Collects the problems of one spec while it is read, so the error lists every bad field.
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, field: &FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.clone(),
            message: message.into(),
        });
    }

    /// True when `value` matches; otherwise records why not.
    fn pattern(
        &mut self,
        field: &FieldPath,
        value: &str,
        re: &regex::Regex,
        expected: &str,
    ) -> bool {
        if re.is_match(value) {
            return true;
        }
        let shown = without_userinfo(value);
        self.fail(field, format!("{shown:?} is not {expected}"));
        false
    }

    fn max_len(&mut self, field: &FieldPath, value: &str, max: usize) -> bool {
        if value.len() > max {
            self.fail(
                field,
                format!("is {} characters long, at most {max} allowed", value.len()),
            );
            return false;
        }
        true
    }

    /// The port of a registry host, when there is one, must be a TCP port: the pattern allows
    /// five digits, which is up to 99999.
    fn registry_port(&mut self, field: &FieldPath, reference: &str) -> bool {
        let Some((host, _)) = reference.split_once('/') else {
            return true;
        };
        if host.ends_with(']') {
            return true;
        }
        if let Some((_, port)) = host.rsplit_once(':')
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            self.fail(field, format!("port {port} is not a TCP port (1 to 65535)"));
            return false;
        }
        true
    }

    fn annotations(&mut self, field: &FieldPath, annotations: &BTreeMap<String, String>) {
        for (key, value) in annotations {
            if key.is_empty() || key.len() > MAX_ANNOTATION_KEY {
                self.fail(
                    &field.key(key),
                    format!("annotation keys must be 1 to {MAX_ANNOTATION_KEY} characters"),
                );
            }
            if value.len() > MAX_ANNOTATION_VALUE {
                self.fail(
                    &field.key(key),
                    format!(
                        "annotation value is {} bytes, at most {MAX_ANNOTATION_VALUE} allowed",
                        value.len()
                    ),
                );
            }
        }
    }

    /// Manifest annotations must leave the keys of `spec.links` to the engine, which writes
    /// them last and would silently replace the user's value.
    fn manifest_annotation_keys(
        &mut self,
        field: &FieldPath,
        annotations: &BTreeMap<String, String>,
    ) {
        for key in annotations.keys() {
            if key.starts_with(LINK_ANNOTATION_PREFIX) {
                self.fail(
                    &field.key(key),
                    format!("{LINK_ANNOTATION_PREFIX}* annotations are written from spec.links; use a link instead"),
                );
            }
        }
    }

    /// A layer's title is its file name, written by the engine.
    fn layer_annotation_keys(&mut self, field: &FieldPath, annotations: &BTreeMap<String, String>) {
        if annotations.contains_key(TITLE_ANNOTATION) {
            self.fail(
                &field.key(TITLE_ANNOTATION),
                "is written from the file's name; set name instead",
            );
        }
    }

    /// A tag to write, refused in the shape of a tag that tools derive from a digest: writing
    /// it would replace the referrers or signatures of that digest.
    fn tag_to_write(&mut self, field: &FieldPath, tag: &Tag) -> bool {
        match tag.reserved_for() {
            Some(what) => {
                self.fail(
                    field,
                    format!(
                        "{:?} has the shape of the tag that holds {what} of a digest; writing it would replace them",
                        tag.as_str()
                    ),
                );
                false
            }
            None => true,
        }
    }

    /// A link of the manifest: an http(s) URL and a relation that becomes part of an
    /// annotation key.
    fn link(&mut self, field: &FieldPath, rel: &str, url: &str) -> Option<Link> {
        let url_ok = self.pattern(
            &field.child("url"),
            url,
            &HTTP_URL_RE,
            "an http or https URL without credentials",
        );
        let url_short = self.max_len(&field.child("url"), url, MAX_LINK_URL);
        let rel_ok = self.pattern(
            &field.child("rel"),
            rel,
            &LINK_REL_RE,
            "a link relation such as release-notes (lowercase letters, digits, ._-)",
        );
        (url_ok && url_short && rel_ok).then(|| Link {
            rel: rel.to_string(),
            url: url.to_string(),
        })
    }

    /// A value that passed its checks, parsed; a parser that still refuses it is recorded too
    /// (the checks and the parsers share one grammar, so that would be a bug, never a panic).
    /// A repository with its registry host, within the CRD's length.
    fn repository(&mut self, field: &FieldPath, text: &str) -> Option<Repository> {
        if !self.not_a_layout(field, text) {
            return None;
        }
        let matches = self.pattern(
            field,
            text,
            &REPOSITORY_RE,
            "a repository with its registry host (e.g. registry.example.com/gardenlinux/gardenlinux; lowercase path)",
        );
        let short = self.max_len(field, text, MAX_REPOSITORY);
        if matches && self.registry_port(field, text) && short {
            return self.parsed(field, Repository::parse(text));
        }
        None
    }

    /// `apply` replaces every `oci:PATH` it takes before validating, so one seen here is in an
    /// object of the cluster, which has no folders to read.
    fn not_a_layout(&mut self, field: &FieldPath, text: &str) -> bool {
        if text.starts_with("oci:") {
            self.fail(
                field,
                format!(
                    "{text:?} is an OCI image layout folder; `apply` and the CLI verbs read and write those, the controller only registries"
                ),
            );
            return false;
        }
        true
    }

    /// `spec.interval`: a duration of at least [`MIN_INTERVAL`].
    fn interval(&mut self, text: Option<&str>) -> Option<Duration> {
        let text = text?;
        let field = spec_field("interval");
        match parse_duration(text) {
            None => {
                self.fail(
                    &field,
                    format!("{text:?} is not a duration such as 10m, 1h30m or 45s"),
                );
                None
            }
            Some(duration) if duration < MIN_INTERVAL => {
                self.fail(&field, format!("{text:?} is shorter than 1s"));
                None
            }
            Some(duration) => Some(duration),
        }
    }

    fn parsed<T>(&mut self, field: &FieldPath, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|message| self.fail(field, message)).ok()
    }
}

fn spec_field(name: &str) -> FieldPath {
    FieldPath::root("spec").child(name)
}

/// Reads a spec into the intent the engine takes; the error lists every bad field, not only the
/// first.
pub fn validate(
    spec: &GardenArtifactSpec,
    frontend: Frontend,
) -> Result<ArtifactIntent, InvalidSpec> {
    let mut c = Checker { errors: Vec::new() };

    let repository = c.repository(&spec_field("repository"), &spec.repository);

    let mut tags = Vec::new();
    let mut seen_tags = BTreeSet::new();
    for (i, tag) in spec.tags.iter().enumerate() {
        let field = spec_field("tags").index(i);
        if c.pattern(
            &field,
            tag,
            &TAG_RE,
            "a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})",
        ) && let Some(tag) = c.parsed(&field, Tag::parse(tag))
            && c.tag_to_write(&field, &tag)
        {
            tags.push(tag);
        }
        if !seen_tags.insert(tag) {
            c.fail(&field, format!("tag {tag:?} is listed twice"));
        }
    }
    if spec.tags.len() > MAX_TAGS {
        c.fail(
            &spec_field("tags"),
            format!("{} tags, at most {MAX_TAGS} allowed", spec.tags.len()),
        );
    }
    if spec.tags.is_empty() && spec.subject.is_none() {
        c.fail(
            &spec_field("tags"),
            "at least one tag is required (only an artefact with a subject may have none)",
        );
    }

    c.annotations(&spec_field("annotations"), &spec.annotations);
    c.manifest_annotation_keys(&spec_field("annotations"), &spec.annotations);
    if let Some(artifact_type) = &spec.artifact_type {
        c.pattern(
            &spec_field("artifactType"),
            artifact_type,
            &MEDIA_TYPE_RE,
            "a media type (type/subtype)",
        );
    }
    if let Some(config) = &spec.config {
        let field = spec_field("config");
        if let Some(media_type) = &config.media_type {
            c.pattern(
                &field.child("mediaType"),
                media_type,
                &MEDIA_TYPE_RE,
                "a media type (type/subtype)",
            );
        }
        c.annotations(&field.child("annotations"), &config.annotations);
        if config
            .content
            .as_ref()
            .is_some_and(|s| s.len() > MAX_INLINE_CONTENT)
        {
            c.fail(
                &field.child("content"),
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
            &spec_field("source"),
            format!("exactly one of files, image, index must be set, found {sources_set}"),
        );
    }
    let files = source
        .files
        .as_ref()
        .map(|files| check_files(&mut c, files, frontend));
    let image = source
        .image
        .as_ref()
        .and_then(|image| check_image(&mut c, spec, image));
    let index = source
        .index
        .as_ref()
        .map(|index| check_index(&mut c, spec, index));
    let subject = spec.subject.as_ref().and_then(|subject| {
        check_reference(
            &mut c,
            &spec_field("subject"),
            subject.artifact_ref.as_ref().map(|r| r.name.as_str()),
            subject.reference.as_deref(),
        )
    });
    let mut links = Vec::new();
    for (i, link) in spec.links.iter().enumerate() {
        links.extend(c.link(&spec_field("links").index(i), &link.rel, &link.url));
    }
    if let Some(repository) = &repository {
        let own_tags = |reference: &Reference| match &reference.target {
            ReferenceTarget::Registry(relative) => {
                let resolved = relative.resolve_in(repository);
                resolved.digest().is_none()
                    && resolved.repository() == repository
                    && resolved.tag().is_some_and(|tag| tags.contains(tag))
            }
            ReferenceTarget::Object(_) => false,
        };
        for entry in index.iter().flatten() {
            if own_tags(&entry.reference) {
                c.fail(
                    &entry.reference.field.child("reference"),
                    format!(
                        "{} is a tag of this index itself: an index cannot list itself (a cycle)",
                        entry.reference.shown()
                    ),
                );
            }
        }
        if let Some(subject) = subject.as_ref().filter(|s| own_tags(s)) {
            c.fail(
                &subject.field.child("reference"),
                format!(
                    "{} is a tag of this artefact itself: an artefact cannot be its own subject (a cycle)",
                    subject.shown()
                ),
            );
        }
    }
    if let Some(credentials) = &spec.credentials {
        c.pattern(
            &spec_field("credentials").child("secretRef").child("name"),
            &credentials.secret_ref.name,
            &OBJECT_NAME_RE,
            "a Kubernetes object name",
        );
    }
    let interval = c.interval(spec.interval.as_deref());

    if !c.errors.is_empty() {
        return Err(InvalidSpec(c.errors));
    }
    let manifest = ManifestFields {
        annotations: spec.annotations.clone(),
        artifact_type: spec.artifact_type.clone(),
        links,
    };
    let content = match (files, image, index) {
        (Some(files), None, None) => Content::Files(FilesContent {
            files,
            config: spec.config.as_ref().map(|config| Config {
                media_type: config.media_type.clone(),
                annotations: config.annotations.clone(),
                content: config.content.clone(),
            }),
            manifest,
        }),
        (None, Some(image), None) => Content::Image(image),
        (None, None, Some(entries)) => Content::Index(IndexContent { entries, manifest }),
        _ => unreachable!("exactly one source was checked above"),
    };
    Ok(ArtifactIntent {
        repository: repository.expect("a repository without errors was parsed"),
        tags,
        content,
        subject,
        interval,
    })
}

/// Reads a GardenMirror's spec into the intent the engine takes, or lists every bad field.
pub fn validate_mirror(spec: &GardenMirrorSpec) -> Result<MirrorIntent, InvalidSpec> {
    let mut c = Checker { errors: Vec::new() };
    let source_field = spec_field("source").child("repository");
    let source = c.repository(&source_field, &spec.source.repository);
    let target_field = spec_field("repository");
    let target = c.repository(&target_field, &spec.repository);
    if let (Some(source), Some(target)) = (&source, &target)
        && source == target
    {
        c.fail(
            &target_field,
            format!(
                "is the source repository ({}); a mirror copies into another repository",
                target.identity()
            ),
        );
    }
    let rules = spec.tags.clone().unwrap_or_default();
    let tags_field = spec_field("tags");
    let patterns = |c: &mut Checker, name: &str, texts: &[String]| {
        let field = tags_field.child(name);
        if texts.len() > MAX_TAG_PATTERNS {
            c.fail(
                &field,
                format!(
                    "{} patterns, at most {MAX_TAG_PATTERNS} allowed",
                    texts.len()
                ),
            );
        }
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                tag_pattern(text)
                    .map_err(|e| c.fail(&field.index(i), e))
                    .ok()
            })
            .collect::<Vec<_>>()
    };
    let include = patterns(&mut c, "include", &rules.include);
    let exclude = patterns(&mut c, "exclude", &rules.exclude);
    let latest = rules.latest.as_ref().and_then(|latest| {
        let field = tags_field.child("latest");
        if latest.count == 0 {
            c.fail(&field.child("count"), "0 selects nothing; expected at least 1");
        }
        let extract = match &latest.extract {
            None => None,
            Some(text) => match tag_pattern(text) {
                Err(e) => {
                    c.fail(&field.child("extract"), e);
                    return None;
                }
                Ok(re) if re.captures_len() < 2 => {
                    c.fail(
                        &field.child("extract"),
                        format!(
                            "{text:?} has no group; the version is the first group, e.g. '^([0-9.]+)'"
                        ),
                    );
                    return None;
                }
                Ok(re) => Some(re),
            },
        };
        Some(Latest {
            count: latest.count as usize,
            extract,
            order: match latest.order {
                super::mirror::Order::Version => VersionOrder::Version,
                super::mirror::Order::Alphabetical => VersionOrder::Alphabetical,
            },
        })
    });
    for (field, credentials) in [
        (
            spec_field("source").child("credentials"),
            &spec.source.credentials,
        ),
        (spec_field("credentials"), &spec.credentials),
    ] {
        if let Some(credentials) = credentials {
            c.pattern(
                &field.child("secretRef").child("name"),
                &credentials.secret_ref.name,
                &OBJECT_NAME_RE,
                "a Kubernetes object name",
            );
        }
    }
    let interval = c.interval(spec.interval.as_deref());
    if !c.errors.is_empty() {
        return Err(InvalidSpec(c.errors));
    }
    Ok(MirrorIntent {
        source_field,
        source: source.expect("a repository without errors was parsed"),
        target: target.expect("a repository without errors was parsed"),
        tags: TagSelection {
            include,
            exclude,
            latest,
        },
        referrers: spec.referrers,
        prune: spec.prune,
        interval,
    })
}

/// The checks of manifest fields, for front ends that build an intent from something other
/// than a spec (the `push` verb): annotations, artifactType and links, each named by `field`.
pub fn manifest_fields(
    annotations: (&FieldPath, &BTreeMap<String, String>),
    artifact_type: Option<(&FieldPath, &str)>,
    links: &[(FieldPath, &str, &str)],
) -> Result<ManifestFields, InvalidSpec> {
    let mut c = Checker { errors: Vec::new() };
    c.annotations(annotations.0, annotations.1);
    c.manifest_annotation_keys(annotations.0, annotations.1);
    if let Some((field, artifact_type)) = artifact_type {
        c.pattern(
            field,
            artifact_type,
            &MEDIA_TYPE_RE,
            "a media type (type/subtype)",
        );
    }
    let mut parsed = Vec::new();
    for (field, rel, url) in links {
        parsed.extend(c.link(field, rel, url));
    }
    if !c.errors.is_empty() {
        return Err(InvalidSpec(c.errors));
    }
    Ok(ManifestFields {
        annotations: annotations.1.clone(),
        artifact_type: artifact_type.map(|(_, t)| t.to_string()),
        links: parsed,
    })
}

/// A Go-style duration (`10m`, `1h30m`, `45s`, `1500ms`), the one parser of `spec.interval`;
/// `None` for anything else. Saturates instead of overflowing.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if !DURATION_RE.is_match(text) {
        return None;
    }
    let mut total_ms: u128 = 0;
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
            _ => return None,
        };
        total_ms = total_ms.saturating_add(number.saturating_mul(unit));
        number = 0;
    }
    Some(Duration::from_millis(
        u64::try_from(total_ms).unwrap_or(u64::MAX),
    ))
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

fn check_files(c: &mut Checker, files: &[FileSource], frontend: Frontend) -> Vec<File> {
    let list = spec_field("source").child("files");
    if files.is_empty() {
        c.fail(&list, "must list at least one file");
    }
    let mut names = BTreeSet::new();
    let mut parsed = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let field = list.index(i);
        let errors_before = c.errors.len();
        let name_field = field.child("name");
        c.pattern(
            &name_field,
            &file.name,
            &FILE_NAME_RE,
            "a plain file name (letters, digits, ._+@=,~-; no directory)",
        );
        c.max_len(&name_field, &file.name, MAX_FILE_NAME);
        if file.name == "." || file.name == ".." {
            c.fail(&name_field, "must not be . or ..");
        }
        if !names.insert(&file.name) {
            c.fail(
                &name_field,
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
                &field,
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
                &field.child("content"),
                format!("inline content is limited to {MAX_INLINE_CONTENT} bytes; use path or url"),
            );
        }
        if let Some(path) = &file.path {
            if frontend == Frontend::Controller {
                c.fail(
                    &field.child("path"),
                    "local paths are only available to `garden-artifacts apply`; use configMapKeyRef, secretKeyRef or url",
                );
            }
            if path.is_empty() {
                c.fail(&field.child("path"), "must not be empty");
            }
        }
        let mut url_digest = None;
        match (&file.url, &file.digest) {
            (Some(url), digest) => {
                c.pattern(
                    &field.child("url"),
                    url,
                    &HTTP_URL_RE,
                    "an http or https URL without credentials",
                );
                match digest {
                    None => c.fail(
                        &field.child("digest"),
                        "required with url (sha256:<64 hex digits>), so the content is pinned",
                    ),
                    Some(d) => {
                        if c.pattern(
                            &field.child("digest"),
                            d,
                            &SHA256_DIGEST_RE,
                            "a sha256 digest (sha256:<64 lowercase hex digits>)",
                        ) {
                            url_digest = c.parsed(&field.child("digest"), Digest::parse(d));
                        }
                    }
                }
            }
            (None, Some(_)) => c.fail(&field.child("digest"), "only used together with url"),
            (None, None) => {}
        }
        if file.size.is_some() && file.url.is_none() {
            c.fail(&field.child("size"), "only used together with url");
        }
        for (key_field, key_ref) in [
            ("configMapKeyRef", &file.config_map_key_ref),
            ("secretKeyRef", &file.secret_key_ref),
        ] {
            let Some(key_ref) = key_ref else { continue };
            let field = field.child(key_field);
            if frontend == Frontend::Apply {
                c.fail(
                    &field,
                    "only available in the controller; use content, path or url with apply",
                );
            }
            c.pattern(
                &field.child("name"),
                &key_ref.name,
                &OBJECT_NAME_RE,
                "a Kubernetes object name",
            );
            c.pattern(
                &field.child("key"),
                &key_ref.key,
                &CONFIG_KEY_RE,
                "a ConfigMap or Secret key",
            );
        }

        let media_type = match &file.media_type {
            Some(media_type) => {
                c.pattern(
                    &field.child("mediaType"),
                    media_type,
                    &MEDIA_TYPE_RE,
                    "a media type (type/subtype)",
                );
                Some(media_type.clone())
            }
            None => {
                let known = media_types::for_file_name(&file.name);
                if known.is_none() {
                    c.fail(
                        &field.child("mediaType"),
                        format!(
                            "required: {:?} has no suffix in the Garden Linux media type table ({})",
                            file.name,
                            media_types::known_suffixes().join(" ")
                        ),
                    );
                }
                known.map(str::to_string)
            }
        };
        c.annotations(&field.child("annotations"), &file.annotations);
        c.layer_annotation_keys(&field.child("annotations"), &file.annotations);

        if c.errors.len() != errors_before {
            continue;
        }
        let origin = if let Some(content) = &file.content {
            FileOrigin::Inline(Bytes::from(content.clone()))
        } else if let Some(path) = &file.path {
            FileOrigin::Path(path.clone())
        } else if let (Some(url), Some(digest)) = (&file.url, url_digest) {
            FileOrigin::Url {
                url: url.clone(),
                digest,
                size: file.size,
            }
        } else if let Some(key) = &file.config_map_key_ref {
            FileOrigin::ConfigMapKey(KeyRef {
                name: key.name.clone(),
                key: key.key.clone(),
            })
        } else if let Some(key) = &file.secret_key_ref {
            FileOrigin::SecretKey(KeyRef {
                name: key.name.clone(),
                key: key.key.clone(),
            })
        } else {
            unreachable!("exactly one origin was checked above");
        };
        parsed.push(File {
            field,
            name: file.name.clone(),
            media_type: media_type.expect("a file without errors has a media type"),
            annotations: file.annotations.clone(),
            origin,
        });
    }
    parsed
}

/// `artifactRef` or `reference`, exactly one.
fn check_reference(
    c: &mut Checker,
    field: &FieldPath,
    artifact_ref: Option<&str>,
    reference: Option<&str>,
) -> Option<Reference> {
    let target = match (artifact_ref, reference) {
        (Some(name), None) => c
            .pattern(
                &field.child("artifactRef").child("name"),
                name,
                &OBJECT_NAME_RE,
                "a GardenArtifact name",
            )
            .then(|| ReferenceTarget::Object(name.to_string())),
        (None, Some(reference)) => {
            let field = field.child("reference");
            let matches = c.pattern(
                &field,
                reference,
                &ARTIFACT_REFERENCE_RE,
                "a tag, a digest, or a reference host/repo:tag or host/repo@sha256:...",
            );
            let short = c.max_len(&field, reference, MAX_REFERENCE);
            if matches && c.registry_port(&field, reference) && short {
                c.parsed(&field, RelativeReference::parse(reference))
                    .map(ReferenceTarget::Registry)
            } else {
                None
            }
        }
        _ => {
            c.fail(field, "exactly one of artifactRef, reference must be set");
            None
        }
    };
    target.map(|target| Reference {
        field: field.clone(),
        target,
    })
}

fn check_index(c: &mut Checker, spec: &GardenArtifactSpec, index: &IndexSource) -> Vec<IndexEntry> {
    let list = spec_field("source").child("index").child("manifests");
    if index.manifests.is_empty() {
        c.fail(&list, "must list at least one manifest");
    }
    let mut entries = Vec::new();
    for (i, entry) in index.manifests.iter().enumerate() {
        let field = list.index(i);
        let reference = check_reference(
            c,
            &field,
            entry.artifact_ref.as_ref().map(|r| r.name.as_str()),
            entry.reference.as_deref(),
        );
        c.annotations(&field.child("annotations"), &entry.annotations);
        if let Some(platform) = &entry.platform {
            for (name, value) in [
                ("os", &platform.os),
                ("architecture", &platform.architecture),
            ] {
                c.pattern(
                    &field.child("platform").child(name),
                    value,
                    &PLATFORM_PART_RE,
                    "a platform word (lowercase letters, digits, ._-)",
                );
            }
            if let Some(variant) = &platform.variant {
                c.pattern(
                    &field.child("platform").child("variant"),
                    variant,
                    &PLATFORM_PART_RE,
                    "a platform word (lowercase letters, digits, ._-)",
                );
            }
        }
        if let Some(reference) = reference {
            entries.push(IndexEntry {
                reference,
                annotations: entry.annotations.clone(),
                platform: entry.platform.as_ref().map(|p| Platform {
                    architecture: p.architecture.clone(),
                    os: p.os.clone(),
                    os_version: p.os_version.clone(),
                    variant: p.variant.clone(),
                }),
            });
        }
    }
    if spec.config.is_some() {
        c.fail(&spec_field("config"), "an index has no config");
    }
    entries
}

fn check_image(
    c: &mut Checker,
    spec: &GardenArtifactSpec,
    image: &ImageSource,
) -> Option<ImageCopy> {
    let field = spec_field("source").child("image").child("reference");
    let matches = c.not_a_layout(&field, &image.reference)
        && c.pattern(
        &field,
        &image.reference,
        &IMAGE_REFERENCE_RE,
        "an image reference with registry host and a tag or digest (host/repo:tag or host/repo@sha256:...)",
    );
    let short = c.max_len(&field, &image.reference, MAX_REFERENCE);
    let source = if matches && c.registry_port(&field, &image.reference) && short {
        c.parsed(&field, ImageReference::parse(&image.reference))
    } else {
        None
    };
    if let Some(platform) = &image.platform {
        c.pattern(
            &spec_field("source").child("image").child("platform"),
            platform,
            &PLATFORM_RE,
            "a platform os/arch[/variant]",
        );
    }
    let changes_bytes = "not allowed with source.image: the manifest is copied byte for byte, so digests and signatures stay valid";
    if !spec.annotations.is_empty() {
        c.fail(&spec_field("annotations"), changes_bytes);
    }
    if spec.artifact_type.is_some() {
        c.fail(&spec_field("artifactType"), changes_bytes);
    }
    if spec.config.is_some() {
        c.fail(&spec_field("config"), changes_bytes);
    }
    if spec.subject.is_some() {
        c.fail(&spec_field("subject"), changes_bytes);
    }
    if !spec.links.is_empty() {
        c.fail(&spec_field("links"), changes_bytes);
    }
    source.map(|source| ImageCopy {
        source_field: field,
        platform_field: spec_field("source").child("image").child("platform"),
        source,
        platform: image.platform.clone(),
        referrers: image.referrers,
    })
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
        err.0.into_iter().map(|e| e.field.to_string()).collect()
    }

    #[test]
    fn a_flavour_built_from_inline_files_is_valid() {
        let spec = files_spec(vec![FileSource {
            name: "aws-gardener_prod-amd64-1877.5.release".into(),
            content: Some("ID=gardenlinux".into()),
            ..Default::default()
        }]);
        assert!(validate(&spec, Frontend::Apply).is_ok());
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
            assert!(validate(&spec, Frontend::Apply).is_ok(), "{ok}");
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
    fn intervals_parse_like_go_durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn a_valid_spec_reads_into_typed_values() {
        let mut spec = files_spec(vec![FileSource {
            name: "a.raw".into(),
            url: Some("https://example.com/a.raw".into()),
            digest: Some(format!("sha256:{}", "0".repeat(64))),
            ..Default::default()
        }]);
        spec.interval = Some("1h30m".into());
        spec.subject = Some(crate::api::ArtifactReference {
            artifact_ref: None,
            reference: Some("1877.4".into()),
        });
        let intent = validate(&spec, Frontend::Apply).unwrap();
        assert_eq!(
            intent.repository.to_string(),
            "127.0.0.1:5000/gardenlinux/gardenlinux"
        );
        assert_eq!(intent.tags[0].as_str(), "1877.5");
        assert_eq!(intent.interval, Some(Duration::from_secs(5400)));
        let subject = intent.subject.as_ref().unwrap();
        assert_eq!(subject.field.to_string(), "spec.subject");
        assert_eq!(subject.shown(), "1877.4");
        let [file] = intent.files() else {
            panic!("one file")
        };
        assert_eq!(
            file.media_type,
            "application/io.gardenlinux.image.archive.format.raw"
        );
        assert!(matches!(&file.origin, FileOrigin::Url { size: None, .. }));
    }

    #[test]
    fn tags_in_the_shape_of_fallback_or_cosign_tags_are_refused() {
        let hex = "0123456789abcdef".repeat(4);
        let mut spec = files_spec(vec![FileSource {
            name: "a.release".into(),
            content: Some("x".into()),
            ..Default::default()
        }]);
        for ok in [
            format!("sha256-{}", &hex[..63]),
            format!("sha256-{hex}0"),
            format!("sha256-{hex}.sig2"),
            format!("sha256-{hex}.zip"),
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha512-{hex}"),
        ] {
            spec.tags = vec![ok.clone()];
            assert!(validate(&spec, Frontend::Apply).is_ok(), "{ok}");
        }
        for (bad, kept) in [
            (format!("sha256-{hex}"), "referrers fallback index"),
            (format!("sha256-{hex}.sig"), "cosign signatures"),
            (format!("sha256-{hex}.att"), "cosign attestations"),
            (format!("sha256-{hex}.sbom"), "cosign SBOMs"),
        ] {
            spec.tags = vec!["v1".into(), bad.clone()];
            let err = validate(&spec, Frontend::Controller).unwrap_err();
            assert_eq!(fields(err.clone()), ["spec.tags[1]"], "{bad}");
            assert!(err.to_string().contains(kept), "{err}");
        }
    }

    #[test]
    fn annotations_the_engine_writes_are_refused_not_overwritten() {
        let mut spec = files_spec(vec![FileSource {
            name: "a.release".into(),
            content: Some("x".into()),
            annotations: BTreeMap::from([(TITLE_ANNOTATION.into(), "b.release".into())]),
            ..Default::default()
        }]);
        spec.annotations
            .insert("io.gardenlinux.link.release-notes".into(), "x".into());
        spec.annotations
            .insert("io.gardenlinux.linked".into(), "fine".into());
        assert_eq!(
            fields(validate(&spec, Frontend::Apply).unwrap_err()),
            [
                r#"spec.annotations["io.gardenlinux.link.release-notes"]"#,
                r#"spec.source.files[0].annotations["org.opencontainers.image.title"]"#,
            ]
        );
        let err = manifest_fields(
            (
                &FieldPath::root("--annotation"),
                &BTreeMap::from([("io.gardenlinux.link.x".into(), "y".into())]),
            ),
            None,
            &[],
        )
        .unwrap_err();
        assert_eq!(fields(err), [r#"--annotation["io.gardenlinux.link.x"]"#]);
    }

    #[test]
    fn an_index_listing_its_own_tag_or_an_artefact_its_own_subject_is_a_cycle() {
        let mut spec = files_spec(vec![]);
        spec.tags = vec!["v1".into(), "latest".into()];
        spec.source = Source {
            index: Some(crate::api::IndexSource {
                manifests: vec![
                    crate::api::IndexEntry {
                        reference: Some("v0".into()),
                        ..Default::default()
                    },
                    crate::api::IndexEntry {
                        reference: Some("latest".into()),
                        ..Default::default()
                    },
                    crate::api::IndexEntry {
                        reference: Some("127.0.0.1:5000/gardenlinux/gardenlinux:v1".into()),
                        ..Default::default()
                    },
                    crate::api::IndexEntry {
                        reference: Some("127.0.0.1:5000/gardenlinux/other:v1".into()),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        let err = validate(&spec, Frontend::Controller).unwrap_err();
        assert_eq!(
            fields(err.clone()),
            [
                "spec.source.index.manifests[1].reference",
                "spec.source.index.manifests[2].reference",
            ]
        );
        assert!(err.to_string().contains("cannot list itself"), "{err}");

        let mut referrer = files_spec(vec![FileSource {
            name: "a.sbom".into(),
            content: Some("x".into()),
            ..Default::default()
        }]);
        referrer.subject = Some(crate::api::ArtifactReference {
            artifact_ref: None,
            reference: Some("1877.5".into()),
        });
        assert_eq!(
            fields(validate(&referrer, Frontend::Apply).unwrap_err()),
            ["spec.subject.reference"]
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
            assert!(validate(&spec, Frontend::Apply).is_ok(), "{ok}");
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

    fn mirror_spec(yaml: &str) -> GardenMirrorSpec {
        serde_yaml::from_str(yaml).expect("a GardenMirror spec")
    }

    #[test]
    fn a_mirror_of_garden_linux_releases_is_valid() {
        let intent = validate_mirror(&mirror_spec(
            r#"
source: {repository: ghcr.io/gardenlinux/gardenlinux}
repository: registry.internal/mirror/gardenlinux
tags:
  include: ['^1877\.']
  exclude: ['-arm64$']
  latest: {count: 10, extract: '^([0-9]+\.[0-9]+)', order: version}
referrers: true
prune: true
interval: 30m
"#,
        ))
        .unwrap();
        assert_eq!(intent.source.identity(), "ghcr.io/gardenlinux/gardenlinux");
        assert_eq!(intent.tags.latest.as_ref().unwrap().count, 10);
        assert!(intent.referrers && intent.prune);
        assert_eq!(intent.interval, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn every_bad_mirror_field_is_named() {
        let err = validate_mirror(&mirror_spec(
            r#"
source: {repository: "localhost:5000/gl", credentials: {secretRef: {name: "Not_A_Name"}}}
repository: "127.0.0.1:5000/gl"
tags:
  include: ['(a)\1']
  exclude: ['ok', '(a{1000}){1000}']
  latest: {count: 0, extract: '^[0-9]+'}
interval: 1ms
"#,
        ))
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "spec.repository",
                "spec.tags.include[0]",
                "spec.tags.exclude[1]",
                "spec.tags.latest.count",
                "spec.tags.latest.extract",
                "spec.source.credentials.secretRef.name",
                "spec.interval",
            ]
        );
    }

    #[test]
    fn layout_folders_are_refused_where_only_registries_are_read() {
        let err = validate_mirror(&mirror_spec(
            r#"
source: {repository: "oci:/var/carry"}
repository: "oci:carry"
"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("OCI image layout folder"), "{err}");
        assert_eq!(fields(err), ["spec.source.repository", "spec.repository"]);
        let mut spec = files_spec(Vec::new());
        spec.source.files = None;
        spec.source.image = Some(ImageSource {
            reference: "oci:carry:1".into(),
            platform: None,
            referrers: Default::default(),
        });
        let err = validate(&spec, Frontend::Controller).unwrap_err();
        assert_eq!(fields(err), ["spec.source.image.reference"]);
    }

    #[test]
    fn a_mirror_refuses_unknown_fields() {
        let err = serde_yaml::from_str::<GardenMirrorSpec>(
            "source: {repository: a.io/x}\nrepository: b.io/x\ntags: {includes: [x]}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("includes"), "{err}");
    }
}
