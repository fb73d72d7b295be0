//! What the client verbs (`push`, `pull`, `discover`, `tag`, `copy`) share: the registry client
//! built from the docker config, output formats, reference parsing with errors that say what
//! was expected, failures that carry their exit code, and progress display on a terminal.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::exit;
use crate::engine::{Engine, EngineError};
use crate::intent::{ArtifactIntent, InvalidSpec};
use crate::oci::Repository;
use crate::oci::media_types::TITLE_ANNOTATION;
use crate::oci::{ImageReference, Tag};
use crate::registry::layout::Routed;
use crate::registry::{DockerConfig, RawManifest, Registry, RegistryClient};
use crate::sources::{UrlFetcher, UrlPolicy};

/// Flags every client verb takes (shared with `apply` and the controller).
pub use super::RegistryArgs;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// A verb's failure: what to print and which exit code it means.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Exit 2: the command line asks for something impossible; nothing was written.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: exit::INVALID,
            message: message.into(),
        }
    }

    /// Exit 1: the registry or the content did not allow it.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: exit::FAILED,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::registry::Error> for Failure {
    fn from(e: crate::registry::Error) -> Self {
        Failure::failed(format!("{}{e}", credentials_tried(&e)))
    }
}

/// The credentials of this process's registry client, kept to name them (never their values)
/// when a registry refuses them.
static CREDENTIALS: std::sync::OnceLock<DockerConfig> = std::sync::OnceLock::new();

/// For a 401 or 403: which credentials were sent, so the person knows what to fix. A prefix, so
/// the registry's answer stays the end of the message.
fn credentials_tried(e: &crate::registry::Error) -> String {
    use crate::registry::{ErrorClass, NeedsPerson};
    let refused = matches!(
        e.class(),
        ErrorClass::NeedsPerson(NeedsPerson::Unauthorized | NeedsPerson::Forbidden)
    );
    match (refused, e.registry(), CREDENTIALS.get()) {
        (true, Some(registry), Some(config)) => {
            format!("credentials tried: {}; ", config.describe_for(&registry))
        }
        _ => String::new(),
    }
}

pub type Outcome = Result<(), Failure>;

/// Prints the failure (if any) on stderr and turns the outcome into an exit code.
pub fn finish(outcome: Outcome) -> u8 {
    match outcome {
        Ok(()) => exit::OK,
        Err(failure) => {
            for line in unmask(&failure.message).lines() {
                eprintln!("error: {}", without_control_characters(line));
            }
            if failure.code == exit::INVALID {
                eprintln!("error: invalid input, nothing was written");
            }
            failure.code
        }
    }
}

/// A line for a terminal: what a registry or a file sent may hold escape sequences that move
/// the cursor or rewrite what was printed before.
pub fn without_control_characters(line: &str) -> String {
    line.chars()
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

/// The registry client of a verb: credentials from `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG` or
/// `~/.docker/config.json` (helpers included), anonymous otherwise.
pub fn registry_client(args: &RegistryArgs) -> Result<Arc<RegistryClient>, Failure> {
    let credentials = DockerConfig::load_default()
        .map_err(|e| Failure::invalid(format!("registry credentials: {e}")))?;
    let _ = CREDENTIALS.set(credentials.clone());
    let options = args.client_options().map_err(Failure::invalid)?;
    RegistryClient::new(options, Arc::new(credentials))
        .map(Arc::new)
        .map_err(|e| Failure::invalid(e.to_string()))
}

/// An engine over [`registry_client`], for the verbs that write (one way to build manifests).
pub fn engine(args: &RegistryArgs) -> Result<Engine, Failure> {
    let registry = registry_client(args)?;
    // The client verbs name local files, never URLs.
    let urls = UrlFetcher::new(UrlPolicy::none()).map_err(Failure::invalid)?;
    Ok(Engine::new(registry, urls, 4))
}

/// The registries and OCI image layout directories a verb's arguments name. `oci:PATH` is a
/// layout (skopeo's spelling: `oci:PATH:TAG` for one artefact in it, the path ending at the
/// first `:`); anything else is a registry reference. Layouts stand in the engine as
/// repositories of a reserved host, and are named by their path again in
/// everything printed.
pub struct Places {
    routed: Routed,
}

/// The path each layout repository of this process stands for. Process-wide, like
/// [`CREDENTIALS`], because every message printed (a failure in [`finish`], a report) names
/// repositories and must name a layout by its path instead.
static LAYOUT_NAMES: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// `text` with every layout repository replaced by `oci:PATH`.
pub fn unmask(text: &str) -> String {
    let mut names = LAYOUT_NAMES.lock().expect("not poisoned").clone();
    if names.is_empty() {
        return text.to_string();
    }
    // Longest first: `layout-10` contains `layout-1`.
    names.sort_by_key(|(repository, _)| std::cmp::Reverse(repository.len()));
    names
        .iter()
        .fold(text.to_string(), |text, (repository, path)| {
            text.replace(repository.as_str(), &format!("oci:{path}"))
        })
}

impl Places {
    pub fn new(args: &RegistryArgs) -> Result<Self, Failure> {
        Ok(Self {
            routed: Routed::new(registry_client(args)? as Arc<dyn Registry>),
        })
    }

    fn layout(&mut self, what: &str, path: &str) -> Result<Repository, Failure> {
        if path.is_empty() {
            return Err(Failure::invalid(format!(
                "{what} \"oci:\" names no folder; expected oci:PATH"
            )));
        }
        let absolute = std::path::absolute(path)
            .map_err(|e| Failure::invalid(format!("{what} oci:{path}: {e}")))?;
        let repository = self.routed.add_layout(&absolute);
        LAYOUT_NAMES
            .lock()
            .expect("not poisoned")
            .push((repository.to_string(), path.to_string()));
        Ok(repository)
    }

    /// A manifest by tag or digest: `oci:PATH:TAG`, `oci:PATH@DIGEST`, or a registry reference.
    pub fn reference(&mut self, what: &str, text: &str) -> Result<ImageReference, Failure> {
        let Some(rest) = text.strip_prefix("oci:") else {
            return parse_reference(what, text);
        };
        let (path, reference) = match rest.split_once('@') {
            Some((path, digest)) => (path, format!("@{digest}")),
            None => match rest.split_once(':') {
                Some((path, tag)) => (path, format!(":{tag}")),
                None => {
                    return Err(Failure::invalid(format!(
                        "{what} {text:?} names no tag; expected oci:PATH:TAG"
                    )));
                }
            },
        };
        let repository = self.layout(what, path)?;
        parse_reference(what, &format!("{repository}{reference}"))
    }

    /// A reference that is written by tag.
    pub fn tagged(&mut self, what: &str, text: &str) -> Result<ImageReference, Failure> {
        if !text.starts_with("oci:") {
            return parse_tagged(what, text);
        }
        let reference = self.reference(what, text)?;
        match reference.tag() {
            Some(tag) if reference.digest().is_none() => tag_to_write(what, tag)?,
            _ => {
                return Err(Failure::invalid(format!(
                    "{what} {text:?} names no tag; expected oci:PATH:TAG, since a tag is what gets written"
                )));
            }
        }
        Ok(reference)
    }

    /// A whole repository: `oci:PATH`, or host[:port]/repository.
    pub fn repository(&mut self, what: &str, text: &str) -> Result<Repository, Failure> {
        match text.strip_prefix("oci:") {
            Some(path) if path.contains(':') || path.contains('@') => Err(Failure::invalid(
                format!("{what} {text:?} names a tag or digest; expected oci:PATH, a folder"),
            )),
            Some(path) => self.layout(what, path),
            None => {
                let names_one = text.contains('@')
                    || text
                        .rsplit('/')
                        .next()
                        .is_some_and(|last| last.contains(':'));
                if names_one {
                    return Err(Failure::invalid(format!(
                        "{what} {text:?} names a tag or digest; expected host[:port]/repository"
                    )));
                }
                Repository::parse(text).map_err(|e| Failure::invalid(format!("{what}: {e}")))
            }
        }
    }

    /// The registry every argument is read and written through.
    pub fn registry(self) -> Arc<dyn Registry> {
        Arc::new(self.routed)
    }

    /// An engine over [`Places::registry`].
    pub fn engine(self) -> Result<Engine, Failure> {
        // The client verbs name local files, never URLs.
        let urls = UrlFetcher::new(UrlPolicy::none()).map_err(Failure::invalid)?;
        Ok(Engine::new(self.registry(), urls, 4))
    }
}

/// A reference that names a manifest by tag or digest.
pub fn parse_reference(what: &str, text: &str) -> Result<ImageReference, Failure> {
    ImageReference::parse(text).map_err(|e| Failure::invalid(format!("{what}: {e}")))
}

/// `host[:port]/repository:tag` (a destination that is written by tag). A digest is refused:
/// a tag is what the verb moves.
pub fn parse_tagged(what: &str, text: &str) -> Result<ImageReference, Failure> {
    if text.contains('@') {
        return Err(Failure::invalid(format!(
            "{what} {text:?} names a digest; expected host[:port]/repository:tag, since a tag is what gets written"
        )));
    }
    let reference = parse_reference(what, text)?;
    match reference.tag() {
        None => {
            return Err(Failure::invalid(format!(
                "{what} {text:?} names no tag; expected host[:port]/repository:tag"
            )));
        }
        Some(tag) => tag_to_write(what, tag)?,
    }
    Ok(reference)
}

/// A tag the verb writes; refused in the shape of a tag that tools derive from a digest, since
/// writing it would replace the referrers or signatures kept there.
pub fn tag_to_write(what: &str, tag: &Tag) -> Result<(), Failure> {
    match tag.reserved_for() {
        Some(kept) => Err(Failure::invalid(format!(
            "{what}: tag {:?} has the shape of the tag that holds {kept} of a digest; writing it would replace them",
            tag.as_str()
        ))),
        None => Ok(()),
    }
}

/// An engine error as the command line shows it: the verbs name their intents' fields after
/// the arguments, so the message needs no translation; the exit code follows the kind.
pub fn engine_failure(e: EngineError) -> Failure {
    let tried = match &e {
        EngineError::Registry(registry_error) => credentials_tried(registry_error),
        _ => String::new(),
    };
    Failure::failed(format!("{tried}{e}"))
}

/// An intent the command line could not be read into: one line per argument.
pub fn invalid_spec(invalid: &InvalidSpec) -> Failure {
    let lines: Vec<String> = invalid.0.iter().map(ToString::to_string).collect();
    Failure::invalid(lines.join("\n"))
}

pub fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

/// `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Progress is drawn only for a person watching: stderr is a terminal.
pub fn show_progress() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte progress bar on stderr (hidden unless stderr is a terminal).
pub fn byte_bar(total: u64, message: String) -> ProgressBar {
    if !show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A descriptor as the client verbs read it: enough of the image spec for manifests, index
/// entries and referrers, without rejecting fields or platform values other tools write.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    pub fn title(&self) -> Option<&str> {
        self.annotations
            .get(TITLE_ANNOTATION)
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`: with no variant asked for, any variant matches.
    pub fn matches(&self, wanted: &str) -> bool {
        let mut parts = wanted.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        Some(self.os.as_str()) == os
            && Some(self.architecture.as_str()) == arch
            && (variant.is_none() || self.variant.as_deref() == variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// An image manifest or an index, read leniently (one type for both).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Document {
    /// Parses a manifest that `what` names, for error messages.
    pub fn parse(what: &str, raw: &RawManifest) -> Result<Self, Failure> {
        serde_json::from_slice(&raw.bytes).map_err(|e| {
            Failure::failed(format!(
                "{what}: expected an OCI manifest or index, the registry served a {} that does not parse: {e}",
                raw.media_type
            ))
        })
    }

    /// The artefact type: `artifactType`, else the config media type (OCI 1.1 rule).
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

/// What a verb that wrote tags (`tag`, `copy`) prints with `-o json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub tags: Vec<String>,
    /// `created`, `updated` or `unchanged`.
    pub result: String,
}

/// What `tag` and `copy` share: an intent built from the arguments, reconciled by the engine,
/// and its report printed.
pub async fn reconcile_and_print(
    intent: &ArtifactIntent,
    registry: &RegistryArgs,
    format: Format,
    shown: &str,
) -> Result<(), Failure> {
    let engine = engine(registry)?;
    reconcile_and_print_with(&engine, intent, format, shown).await
}

/// [`reconcile_and_print`] with an engine the verb built (one that may reach layouts).
pub async fn reconcile_and_print_with(
    engine: &Engine,
    intent: &ArtifactIntent,
    format: Format,
    shown: &str,
) -> Result<(), Failure> {
    use crate::engine::{Inputs, Mode};
    let report = with_transfer_progress(
        engine,
        None,
        format!("{shown}:"),
        engine.reconcile(intent, &Inputs::default(), Mode::Apply),
    )
    .await
    .map_err(engine_failure)?;
    print_report(format, shown, &report);
    Ok(())
}

/// Runs `work` with the engine's upload bytes on stderr while it runs (when stderr is a
/// terminal): a bar when the `total` is known, a spinner with bytes and rate when not (a copy
/// learns its size as it goes). Mounts and retags send no bytes and show none.
pub async fn with_transfer_progress<T>(
    engine: &crate::engine::Engine,
    total: Option<u64>,
    message: String,
    work: impl std::future::Future<Output = T>,
) -> T {
    let bar = match total {
        Some(total) => byte_bar(total, message),
        None => sent_spinner(message),
    };
    let stats = engine.registry().stats();
    let before = stats.bytes_sent();
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                // A retried upload sends its bytes again; the bar never passes the total.
                let sent = stats.bytes_sent() - before;
                bar.set_position(total.map_or(sent, |total| sent.min(total)));
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// A spinner with the bytes sent so far and their rate, for transfers of unknown size.
fn sent_spinner(message: String) -> ProgressBar {
    if !show_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}] {bytes} sent, {bytes_per_sec}")
            .expect("the template is valid"),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Prints an engine report: `REPOSITORY:TAG@DIGEST` per tag, or one JSON object.
pub fn print_report(format: Format, reference: &str, report: &crate::engine::Report) {
    match format {
        Format::Text => {
            let repository = unmask(&report.repository.to_string());
            for tag in &report.tags {
                println!("{repository}:{tag}@{}", report.digest);
            }
        }
        Format::Json => print_json(&Written {
            reference: reference.to_string(),
            digest: report.digest.clone(),
            media_type: report.media_type.clone(),
            size: report.size,
            tags: report.tags.clone(),
            result: report.outcome.to_string(),
        }),
    }
}
