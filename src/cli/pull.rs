//! `garden-artifacts pull REF -o DIR`: the titled layers of an artefact as files. Every file is
//! streamed to a temporary name in DIR and renamed to its title only once its sha256 digest and
//! size match the manifest, so DIR never holds a partial or forged file under a layer's name.
//!
//! Nothing is renamed before every file has been verified, so a failed pull leaves DIR as it was.
//!
//! An index is resolved to image manifests: with `--platform`, the children of that platform;
//! without, every child (nested indexes included) whose layers carry titles, all into DIR. Two
//! children that name different content with the same title are an error (pick one with
//! `--platform`), detected before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use futures::{StreamExt, TryStreamExt, stream};
use indicatif::{MultiProgress, ProgressDrawTarget};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::common::{self, Descriptor, Document, Failure, Format, Outcome, RegistryArgs};
use crate::api::patterns::{MEDIA_TYPE_RE, PLATFORM_RE};
use crate::oci::digest::VerifyingStream;
use crate::oci::media_types::is_index;
use crate::oci::ocm::DESCRIPTOR_FILE;
use crate::oci::{ImageReference, Repository};
use crate::registry::{RawManifest, Registry};

/// Indexes inside indexes, as deep as the engine follows them.
const MAX_INDEX_DEPTH: usize = 3;
/// Files downloaded at once.
const CONCURRENCY: usize = 4;

#[derive(Args)]
pub struct PullArgs {
    /// What to pull: host[:port]/repository:tag or host[:port]/repository@sha256:...
    #[arg(value_name = "REF")]
    reference: String,
    /// The folder to write the files to (created when missing; files in it are replaced).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// For an index: only the children of this platform. Without it, every child with titled
    /// layers is pulled.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Only layers of this media type; repeatable.
    #[arg(long = "media-type", value_name = "TYPE")]
    media_types: Vec<String>,
    /// How the result is printed (-o is the folder here, as with `oras pull`).
    #[arg(long = "format", value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// What `--format json` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pulled {
    reference: String,
    digest: String,
    media_type: String,
    files: Vec<PulledFile>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct PulledFile {
    path: String,
    title: String,
    digest: String,
    size: u64,
    media_type: String,
    /// The image manifest the layer belongs to.
    manifest: String,
}

/// An image manifest chosen for pulling, and where it was found.
struct Chosen {
    digest: String,
    document: Document,
}

pub async fn run(args: PullArgs) -> u8 {
    common::finish(until_interrupted(pull(args)).await)
}

/// Runs the pull until SIGINT or SIGTERM: either drops it, so the temporary files' guards
/// remove them and the folder stays as it was.
async fn until_interrupted(work: impl std::future::Future<Output = Outcome>) -> Outcome {
    let interrupted = |signal: &str, code: u8| Failure {
        code,
        message: format!("{signal}: pull stopped, the folder is as it was"),
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return work.await;
        };
        tokio::select! {
            outcome = work => outcome,
            _ = terminate.recv() => Err(interrupted("SIGTERM", 128 + 15)),
            _ = interrupt.recv() => Err(interrupted("SIGINT", 128 + 2)),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            outcome = work => outcome,
            _ = tokio::signal::ctrl_c() => Err(interrupted("interrupted", 128 + 2)),
        }
    }
}

async fn pull(args: PullArgs) -> Outcome {
    let mut places = common::Places::new(&args.registry)?;
    let reference = places.reference("REF", &args.reference)?;
    if let Some(platform) = &args.platform
        && !PLATFORM_RE.is_match(platform)
    {
        return Err(Failure::invalid(format!(
            "--platform {platform:?}: expected os/arch or os/arch/variant, e.g. linux/amd64"
        )));
    }
    for media_type in &args.media_types {
        if !MEDIA_TYPE_RE.is_match(media_type) {
            return Err(Failure::invalid(format!(
                "--media-type {media_type:?}: expected a media type (type/subtype)"
            )));
        }
    }
    if args.output.exists() && !args.output.is_dir() {
        return Err(Failure::invalid(format!(
            "-o {}: exists and is not a folder",
            args.output.display()
        )));
    }

    let client = places.registry();
    let client = client.as_ref();
    let repo = reference.repository();
    let root = client
        .get_manifest(repo, reference.reference())
        .await?
        .ok_or_else(|| {
            Failure::failed(format!(
                "REF {reference}: no manifest there (expected an artefact manifest or index)"
            ))
        })?;
    // A manifest that does not parse is left to `choose`, which says so.
    if !is_index(&root.media_type)
        && let Ok(document) = Document::parse(&reference.to_string(), &root)
        && let Some(yaml) = super::component::descriptor_yaml(client, repo, &document).await?
    {
        return write_descriptor(&args, &reference, &root, &yaml).await;
    }
    let mut chosen = Vec::new();
    let mut available = Vec::new();
    choose(
        client,
        &reference,
        root.clone(),
        args.platform.as_deref(),
        0,
        &mut chosen,
        &mut available,
    )
    .await?;
    if let Some(wanted) = &args.platform {
        if !is_index(&root.media_type) {
            eprintln!(
                "note: {reference} is a single manifest, not an index; --platform has no effect"
            );
        } else if chosen.is_empty() {
            available.dedup();
            return Err(Failure::failed(format!(
                "REF {reference}: the index has no manifest for --platform {wanted} (it has: {})",
                if available.is_empty() {
                    "no platforms".to_string()
                } else {
                    available.join(", ")
                }
            )));
        }
    }

    let files = select_layers(&reference, &chosen, &args.media_types, &args.output)?;
    nothing_in_the_way(&files)?;
    tokio::fs::create_dir_all(&args.output)
        .await
        .map_err(|e| Failure::failed(format!("-o {}: {e}", args.output.display())))?;

    let progress = if common::show_progress() {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    };
    let progress = &progress;
    let downloads = files
        .iter()
        .map(|file| async move { download(client, repo, file, progress).await });
    // Every file is verified before the first is renamed into place: a failed pull leaves DIR
    // as it was (the temporary files are removed when their guards drop).
    let verified: Vec<Partial> = stream::iter(downloads)
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    // Checked again: the downloads took a while, and a rename that fails half-way through
    // would leave some files replaced.
    nothing_in_the_way(&files)?;
    let mut written = Vec::new();
    for (partial, file) in verified.into_iter().zip(&files) {
        partial.rename_to(Path::new(&file.path)).await?;
        written.push(file.clone());
    }

    match args.format {
        Format::Text => {
            for file in &written {
                println!("{}", file.path);
            }
        }
        Format::Json => common::print_json(&Pulled {
            reference: reference.to_string(),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            files: written,
        }),
    }
    Ok(())
}

/// A component version is pulled as its descriptor, `component-descriptor.yaml` in DIR: the
/// file OCM tools read, rather than the tar it is stored in.
async fn write_descriptor(
    args: &PullArgs,
    reference: &ImageReference,
    root: &RawManifest,
    yaml: &[u8],
) -> Outcome {
    let path = args.output.join(DESCRIPTOR_FILE);
    if path.is_dir() {
        return Err(Failure::failed(format!(
            "{}: is a folder, where {DESCRIPTOR_FILE} would be written",
            path.display()
        )));
    }
    let written = async {
        tokio::fs::create_dir_all(&args.output).await?;
        // Written under a temporary name first, so a failed pull leaves no half a file.
        let partial = args.output.join(format!(".{DESCRIPTOR_FILE}.partial"));
        tokio::fs::write(&partial, yaml).await?;
        tokio::fs::rename(&partial, &path).await
    };
    written
        .await
        .map_err(|e| Failure::failed(format!("-o {}: {e}", args.output.display())))?;
    let file = PulledFile {
        path: path.display().to_string(),
        title: DESCRIPTOR_FILE.to_string(),
        digest: crate::oci::digest::sha256_digest(yaml),
        size: yaml.len() as u64,
        media_type: DESCRIPTOR_MEDIA_TYPE.to_string(),
        manifest: root.digest.clone(),
    };
    match args.format {
        Format::Text => println!("{}", file.path),
        Format::Json => common::print_json(&Pulled {
            reference: reference.to_string(),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            files: vec![file],
        }),
    }
    Ok(())
}

/// The media type of the descriptor as a file (OCM's, for the YAML without its tar).
const DESCRIPTOR_MEDIA_TYPE: &str = "application/vnd.ocm.software.component-descriptor.v2+yaml";

/// The image manifests to pull from `raw`: itself, or the children of an index.
async fn choose(
    client: &dyn Registry,
    reference: &ImageReference,
    raw: RawManifest,
    platform: Option<&str>,
    depth: usize,
    chosen: &mut Vec<Chosen>,
    available: &mut Vec<String>,
) -> Result<(), Failure> {
    let what = format!("{}@{}", reference.repository(), raw.digest);
    let document = Document::parse(&what, &raw)?;
    if !is_index(&raw.media_type) {
        chosen.push(Chosen {
            digest: raw.digest,
            document,
        });
        return Ok(());
    }
    if depth >= MAX_INDEX_DEPTH {
        return Err(Failure::failed(format!(
            "REF {reference}: indexes nest deeper than {MAX_INDEX_DEPTH}"
        )));
    }
    let entries: Vec<&Descriptor> = document
        .manifests
        .iter()
        .filter(|entry| {
            if let Some(p) = &entry.platform {
                available.push(p.to_string());
            }
            match platform {
                // Nested indexes are searched; image manifests must match.
                Some(wanted) => {
                    is_index(&entry.media_type)
                        || entry.platform.as_ref().is_some_and(|p| p.matches(wanted))
                }
                None => true,
            }
        })
        .collect();
    for entry in entries {
        let child = client
            .get_manifest(reference.repository(), &entry.digest)
            .await?
            .ok_or_else(|| {
                Failure::failed(format!(
                    "{what} lists {}, which the registry does not have",
                    entry.digest
                ))
            })?;
        Box::pin(choose(
            client,
            reference,
            child,
            platform,
            depth + 1,
            chosen,
            available,
        ))
        .await?;
    }
    Ok(())
}

/// Every file name a pull writes is either free or a regular file it replaces: a folder or a
/// symbolic link in the way is refused before the first rename, so a failed pull changes
/// nothing.
fn nothing_in_the_way(files: &[PulledFile]) -> Result<(), Failure> {
    let mut problems = Vec::new();
    for file in files {
        let target = Path::new(&file.path);
        match std::fs::symlink_metadata(target) {
            Ok(meta) if meta.file_type().is_symlink() => problems.push(format!(
                "{}: is a symbolic link; the pull does not replace it (remove it, or pull into another folder)",
                target.display()
            )),
            Ok(meta) if meta.is_dir() => problems.push(format!(
                "{}: is a folder, where the layer titled {:?} would be written",
                target.display(),
                file.title
            )),
            Ok(meta) if !meta.is_file() => problems.push(format!(
                "{}: is not a regular file; the pull does not replace it",
                target.display()
            )),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{}: {e}", target.display())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.push("nothing was written".into());
        Err(Failure::failed(problems.join("\n")))
    }
}

/// The most bytes of a file name most file systems allow.
const MAX_NAME_BYTES: usize = 255;

/// A title that is a plain file name in DIR: no folder, no way out of DIR, nothing that
/// rewrites a terminal when the name is printed.
fn safe_title(title: &str) -> Result<(), String> {
    if let Some(c) = title.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character {}",
            c.escape_unicode()
        ));
    }
    if title.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes long, more than the {MAX_NAME_BYTES} a file name may have",
            title.len()
        ));
    }
    if title.contains('/') || title.contains('\\') {
        return Err("contains a path separator".into());
    }
    if title.contains("..") || title == "." {
        return Err("contains \"..\" or is \".\"".into());
    }
    if title.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(())
}

/// The files to write, decided (and refused) before anything is written.
fn select_layers(
    reference: &ImageReference,
    chosen: &[Chosen],
    media_types: &[String],
    dir: &Path,
) -> Result<Vec<PulledFile>, Failure> {
    let mut files: BTreeMap<String, PulledFile> = BTreeMap::new();
    let mut order = Vec::new();
    let mut problems = Vec::new();
    let mut untitled = 0usize;
    for manifest in chosen {
        for layer in &manifest.document.layers {
            if !media_types.is_empty() && !media_types.contains(&layer.media_type) {
                continue;
            }
            let Some(title) = layer.title() else {
                untitled += 1;
                continue;
            };
            if let Err(why) = safe_title(title) {
                problems.push(format!(
                    "{}@{}: layer {} has the title {title:?}, which {why}; refusing to write it",
                    reference.repository(),
                    manifest.digest,
                    layer.digest
                ));
                continue;
            }
            if !layer.digest.starts_with("sha256:") {
                problems.push(format!(
                    "{}@{}: layer {title:?} has digest {}; only sha256 digests can be verified",
                    reference.repository(),
                    manifest.digest,
                    layer.digest
                ));
                continue;
            }
            if layer.size < 0 {
                problems.push(format!(
                    "{}@{}: layer {title:?} has a negative size",
                    reference.repository(),
                    manifest.digest
                ));
                continue;
            }
            if let Some(existing) = files.get(title) {
                if existing.digest != layer.digest {
                    problems.push(format!(
                        "REF {reference}: the title {title:?} names {} in {} and {} in {}; pull one child with --platform",
                        existing.digest, existing.manifest, layer.digest, manifest.digest
                    ));
                }
                continue;
            }
            order.push(title.to_string());
            files.insert(
                title.to_string(),
                PulledFile {
                    path: dir.join(title).display().to_string(),
                    title: title.to_string(),
                    digest: layer.digest.clone(),
                    size: layer.size as u64,
                    media_type: layer.media_type.clone(),
                    manifest: manifest.digest.clone(),
                },
            );
        }
    }
    if !problems.is_empty() {
        return Err(Failure::failed(problems.join("\n")));
    }
    if files.is_empty() {
        let filter = if media_types.is_empty() {
            String::new()
        } else {
            format!(" of media type {}", media_types.join(", "))
        };
        return Err(Failure::failed(format!(
            "REF {reference}: no layer{filter} has an org.opencontainers.image.title to name a file ({untitled} untitled layer(s) skipped)"
        )));
    }
    Ok(order
        .into_iter()
        .filter_map(|title| files.remove(&title))
        .collect())
}

/// Streams one blob to a temporary file in DIR: the verified file, not yet under its title.
async fn download(
    client: &dyn Registry,
    repo: &Repository,
    file: &PulledFile,
    progress: &MultiProgress,
) -> Result<Partial, Failure> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let target = PathBuf::from(&file.path);
    let dir = target.parent().unwrap_or(Path::new("."));
    // Not derived from the title: any title the file system allows must leave room for it.
    let temporary = dir.join(format!(
        ".garden-artifacts-{}-{}.partial",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let bar = progress.add(common::byte_bar(file.size, file.title.clone()));
    // Removes the temporary file on every way out, a cancelled download included (when another
    // file fails, the downloads still running are dropped).
    let partial = Partial(Some(temporary.clone()));
    let result = write_verified(client, repo, file, &temporary, &bar).await;
    bar.finish_and_clear();
    result.map(|()| partial)
}

/// A temporary file that is removed when dropped, unless renamed into place.
struct Partial(Option<PathBuf>);

impl Partial {
    async fn rename_to(mut self, target: &Path) -> Result<(), Failure> {
        let temporary = self.0.clone().expect("an armed guard");
        tokio::fs::rename(&temporary, target)
            .await
            .map_err(|e| Failure::failed(format!("{}: {e}", target.display())))?;
        self.0 = None;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn write_verified(
    client: &dyn Registry,
    repo: &Repository,
    file: &PulledFile,
    temporary: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(), Failure> {
    let what = format!("{repo}@{} ({})", file.digest, file.title);
    let blob = client.get_blob(repo, &file.digest).await?;
    let mut verified = VerifyingStream::new(Box::pin(blob), &file.digest, Some(file.size));
    let mut out = tokio::fs::File::create(temporary)
        .await
        .map_err(|e| Failure::failed(format!("{}: {e}", temporary.display())))?;
    while let Some(chunk) = verified.next().await {
        let chunk = chunk.map_err(|e| Failure::failed(format!("{what}: refused: {e}")))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| Failure::failed(format!("{}: {e}", temporary.display())))?;
        bar.inc(chunk.len() as u64);
    }
    out.sync_all()
        .await
        .map_err(|e| Failure::failed(format!("{}: {e}", temporary.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_that_leave_the_folder_are_refused() {
        assert!(safe_title("aws.raw").is_ok());
        assert!(safe_title("../etc/passwd").is_err());
        assert!(safe_title("a/b").is_err());
        assert!(safe_title("..").is_err());
        assert!(safe_title(".").is_err());
        assert!(safe_title("a\\b").is_err());
    }

    #[test]
    fn titles_with_control_characters_are_refused_and_any_file_name_is_allowed() {
        for bad in [
            "a\nb",
            "a\rb",
            "a\u{1b}[2Jb",
            "a\tb",
            "a\u{7f}b",
            "a\u{9b}b",
            "a\u{85}b",
        ] {
            let err = safe_title(bad).unwrap_err();
            assert!(err.contains("control character"), "{bad:?}: {err}");
        }
        assert!(safe_title(&"x".repeat(255)).is_ok());
        assert!(safe_title(&"é".repeat(127)).is_ok());
        assert!(safe_title(&"x".repeat(256)).is_err());
    }
}
