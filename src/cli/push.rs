//! `garden-artifacts push REF FILE[:MEDIATYPE]...`: local files as one artefact, one layer per
//! file. The command line becomes an intent with files, named by the arguments they came from,
//! and goes through the engine, so a pushed artefact is byte for byte what `apply` would build
//! from the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::common::{self, Document, Failure, Format, Outcome, RegistryArgs};
use crate::api::patterns::{FILE_NAME_RE, MEDIA_TYPE_RE};
use crate::api::validate::manifest_fields;
use crate::engine::{Inputs, Mode};
use crate::intent::{
    ArtifactIntent, Content, FieldPath, File, FileOrigin, FilesContent, Reference, ReferenceTarget,
};
use crate::oci::media_types;
use crate::oci::{RelativeReference, Repository, Tag};

#[derive(Args)]
pub struct PushArgs {
    /// Where to push: host[:port]/repository:tag (several tags: repository:tag1,tag2). The tag
    /// may be left out only with --subject (a referrer found through its subject).
    #[arg(value_name = "REF")]
    reference: String,
    /// A file to push as one layer, titled with its base name. The media type comes from the
    /// Garden Linux suffix table unless given after a colon: notes.txt:text/plain.
    #[arg(value_name = "FILE[:MEDIATYPE]", required = true)]
    files: Vec<String>,
    /// The manifest's artifactType (default: application/vnd.unknown.artifact.v1).
    #[arg(long, value_name = "TYPE")]
    artifact_type: Option<String>,
    /// A manifest annotation; repeatable.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Makes the artefact a referrer of this one (OCI 1.1 subject): through the registry's
    /// referrers API, or the fallback tag sha256-<hex> where it has none.
    #[arg(long, value_name = "REF")]
    subject: Option<String>,
    /// A foreign URL the artefact points at, written as the manifest annotation
    /// io.gardenlinux.link.<REL> (.1, .2, ... for more of one REL); repeatable.
    #[arg(long = "link", value_name = "REL=URL")]
    links: Vec<String>,
    /// How the result is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// What `-o json` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pushed {
    reference: String,
    digest: String,
    media_type: String,
    size: u64,
    tags: Vec<String>,
    result: String,
    layers: Vec<PushedLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<PushedSubject>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushedSubject {
    reference: String,
    digest: String,
    /// `referrers-api` or `fallback-tag`.
    via: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushedLayer {
    title: String,
    digest: String,
    size: u64,
    media_type: String,
}

pub async fn run(args: PushArgs) -> u8 {
    common::finish(push(args).await)
}

/// The parts of REF: the repository and its tags (none only with a subject).
fn split_reference(text: &str, has_subject: bool) -> Result<(Repository, Vec<Tag>), Failure> {
    if text.contains('@') {
        return Err(Failure::invalid(format!(
            "REF {text:?} names a digest; expected host[:port]/repository:tag (push writes a tag, the digest follows from the content)"
        )));
    }
    let last_slash = text.rfind('/').unwrap_or(0);
    let (repository, tags) = match text[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            let tags: Vec<String> = text[at + 1..].split(',').map(str::to_string).collect();
            (&text[..at], tags)
        }
        None => (text, Vec::new()),
    };
    let repository = Repository::parse(repository)
        .map_err(|e| Failure::invalid(format!("REF: {e}; expected host[:port]/repository:tag")))?;
    let mut parsed: Vec<Tag> = Vec::new();
    for tag in &tags {
        let Ok(tag) = Tag::parse(tag) else {
            return Err(Failure::invalid(format!(
                "REF {text:?}: {tag:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})"
            )));
        };
        common::tag_to_write(&format!("REF {text:?}"), &tag)?;
        if parsed.contains(&tag) {
            return Err(Failure::invalid(format!(
                "REF {text:?}: tag {:?} is listed twice",
                tag.as_str()
            )));
        }
        parsed.push(tag);
    }
    let tags = parsed;
    if tags.is_empty() && !has_subject {
        return Err(Failure::invalid(format!(
            "REF {text:?} names no tag; expected host[:port]/repository:tag (only a push with --subject may leave it out)"
        )));
    }
    Ok((repository, tags))
}

/// `path` or `path:media/type`: a path that exists is taken whole, so a colon in a file name
/// works; otherwise the part after the last colon must be a media type.
fn split_file_argument(argument: &str) -> Result<(PathBuf, Option<String>), Failure> {
    if Path::new(argument).exists() {
        return Ok((PathBuf::from(argument), None));
    }
    if let Some((path, media_type)) = argument.rsplit_once(':')
        && !path.is_empty()
        && MEDIA_TYPE_RE.is_match(media_type)
    {
        return Ok((PathBuf::from(path), Some(media_type.to_string())));
    }
    match argument.rsplit_once(':') {
        Some((path, media_type)) if Path::new(path).exists() => Err(Failure::invalid(format!(
            "FILE {argument:?}: {media_type:?} is not a media type (type/subtype)"
        ))),
        _ => Err(Failure::invalid(format!("FILE {argument:?}: no such file"))),
    }
}

/// One file per FILE argument, named by it, and the file sizes.
fn file_sources(arguments: &[String]) -> Result<(Vec<File>, Vec<u64>), Failure> {
    let mut sources = Vec::new();
    let mut sizes = Vec::new();
    let mut problems = Vec::new();
    let mut titles = BTreeMap::new();
    for argument in arguments {
        let (path, media_type) = match split_file_argument(argument) {
            Ok(parts) => parts,
            Err(e) => {
                problems.push(e.message);
                continue;
            }
        };
        let metadata = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                problems.push(format!(
                    "FILE {}: not a regular file (push files, not folders)",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("FILE {}: {e}", path.display()));
                continue;
            }
        };
        let Some(title) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            problems.push(format!(
                "FILE {}: the base name is not valid UTF-8",
                path.display()
            ));
            continue;
        };
        if !FILE_NAME_RE.is_match(&title) || title == "." || title == ".." {
            problems.push(format!(
                "FILE {}: the layer title {title:?} is not a plain file name (letters, digits, ._+@=,~-)",
                path.display()
            ));
            continue;
        }
        if let Some(first) = titles.insert(title.clone(), path.clone()) {
            problems.push(format!(
                "FILE {}: the title {title:?} is already taken by {}; layer titles are base names and must differ",
                path.display(),
                first.display()
            ));
            continue;
        }
        let Some(media_type) =
            media_type.or_else(|| media_types::for_file_name(&title).map(str::to_string))
        else {
            problems.push(format!(
                "FILE {}: no media type is known for this suffix (known: {}); give one as {}:TYPE",
                path.display(),
                media_types::known_suffixes().join(" "),
                path.display()
            ));
            continue;
        };
        let absolute = std::path::absolute(&path).unwrap_or(path);
        sizes.push(metadata.len());
        sources.push(File {
            field: FieldPath::root(&format!("FILE {argument}")),
            name: title,
            media_type,
            annotations: BTreeMap::new(),
            origin: FileOrigin::Path(absolute.to_string_lossy().into_owned()),
        });
    }
    if problems.is_empty() {
        Ok((sources, sizes))
    } else {
        Err(Failure::invalid(problems.join("\n")))
    }
}

fn annotations(arguments: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut annotations = BTreeMap::new();
    for argument in arguments {
        let Some((key, value)) = argument.split_once('=') else {
            return Err(Failure::invalid(format!(
                "--annotation {argument:?}: expected KEY=VALUE"
            )));
        };
        if key.is_empty() {
            return Err(Failure::invalid(format!(
                "--annotation {argument:?}: the key is empty; expected KEY=VALUE"
            )));
        }
        if annotations
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            return Err(Failure::invalid(format!(
                "--annotation {key:?} is given twice"
            )));
        }
    }
    Ok(annotations)
}

/// Each `--link REL=URL`, named by the argument, split; checked with the manifest fields.
fn links(arguments: &[String]) -> Result<Vec<(FieldPath, &str, &str)>, Failure> {
    arguments
        .iter()
        .map(|argument| match argument.split_once('=') {
            Some((rel, url)) if !rel.is_empty() && !url.is_empty() => {
                Ok((FieldPath::root(&format!("--link {argument}:")), rel, url))
            }
            _ => Err(Failure::invalid(format!(
                "--link {argument:?}: expected REL=URL, e.g. release-notes=https://example.com/notes"
            ))),
        })
        .collect()
}

async fn push(args: PushArgs) -> Outcome {
    let (repository, tags) = split_reference(&args.reference, args.subject.is_some())?;
    if let Some(subject) = &args.subject {
        common::parse_reference("--subject", subject)?;
    }
    let (files, sizes) = file_sources(&args.files)?;
    let annotations = annotations(&args.annotations)?;
    let links = links(&args.links)?;
    let artifact_type_field = FieldPath::root("--artifact-type");
    let manifest = manifest_fields(
        (&FieldPath::root("--annotation"), &annotations),
        args.artifact_type
            .as_deref()
            .map(|t| (&artifact_type_field, t)),
        &links,
    )
    .map_err(|invalid| common::invalid_spec(&invalid))?;
    let subject = match &args.subject {
        Some(subject) => Some(Reference {
            field: FieldPath::root("--subject"),
            target: ReferenceTarget::Registry(
                RelativeReference::parse(subject)
                    .map_err(|e| Failure::invalid(format!("--subject: {e}")))?,
            ),
        }),
        None => None,
    };
    let intent = ArtifactIntent {
        repository,
        tags: tags.clone(),
        content: Content::Files(FilesContent {
            files,
            config: None,
            manifest,
        }),
        subject,
        interval: None,
    };

    let engine = common::engine(&args.registry)?;
    let total: u64 = sizes.iter().sum();
    let inputs = Inputs::default();
    let report = common::with_transfer_progress(
        &engine,
        Some(total),
        format!(
            "pushing {} file(s), {}",
            sizes.len(),
            common::human_size(total)
        ),
        engine.reconcile(&intent, &inputs, Mode::Apply),
    )
    .await;
    let report = report.map_err(common::engine_failure)?;

    let references: Vec<String> = if tags.is_empty() {
        vec![format!("{}@{}", report.repository, report.digest)]
    } else {
        tags.iter()
            .map(|tag| format!("{}:{tag}@{}", report.repository, report.digest))
            .collect()
    };
    match args.output {
        Format::Text => {
            for reference in references {
                println!("{reference}");
            }
        }
        Format::Json => {
            let layers = pushed_layers(&engine, &report.repository, &report.digest).await?;
            common::print_json(&Pushed {
                reference: args.reference.clone(),
                digest: report.digest.clone(),
                media_type: report.media_type.clone(),
                size: report.size,
                tags: tags.iter().map(ToString::to_string).collect(),
                result: report.outcome.to_string(),
                layers,
                subject: report.subject.as_ref().zip(args.subject.as_ref()).map(
                    |((digest, via), reference)| PushedSubject {
                        reference: reference.clone(),
                        digest: digest.clone(),
                        via: via.map(|v| v.to_string()),
                    },
                ),
            });
        }
    }
    Ok(())
}

/// The layers as stored, read back from the registry by digest.
async fn pushed_layers(
    engine: &crate::engine::Engine,
    repository: &Repository,
    digest: &str,
) -> Result<Vec<PushedLayer>, Failure> {
    let what = format!("{repository}@{digest}");
    let raw = engine
        .registry()
        .get_manifest(repository, digest)
        .await?
        .ok_or_else(|| {
            Failure::failed(format!(
                "{what} was pushed but the registry does not serve it"
            ))
        })?;
    let manifest = Document::parse(&what, &raw)?;
    Ok(manifest
        .layers
        .into_iter()
        .map(|layer| PushedLayer {
            title: layer.title().unwrap_or_default().to_string(),
            digest: layer.digest,
            size: layer.size.max(0) as u64,
            media_type: layer.media_type,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_tag_unless_there_is_a_subject() {
        let (repo, tags) = split_reference("127.0.0.1:5000/gl/a:v1,latest", false).unwrap();
        assert_eq!(repo.to_string(), "127.0.0.1:5000/gl/a");
        assert_eq!(tags, ["v1", "latest"]);
        let e = split_reference("127.0.0.1:5000/gl/a", false).unwrap_err();
        assert!(e.message.contains("names no tag"), "{}", e.message);
        assert!(
            split_reference("127.0.0.1:5000/gl/a", true)
                .unwrap()
                .1
                .is_empty()
        );
        let digest = format!("127.0.0.1:5000/a@sha256:{}", "0".repeat(64));
        let e = split_reference(&digest, false).unwrap_err();
        assert!(e.message.contains("names a digest"), "{}", e.message);
        assert!(split_reference("127.0.0.1:5000/a:bad tag", false).is_err());
    }

    #[test]
    fn files_take_media_types_after_the_last_colon() {
        let dir = tempfile::tempdir().unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "x").unwrap();
        let arg = format!("{}:text/plain", notes.display());
        let (path, media_type) = split_file_argument(&arg).unwrap();
        assert_eq!(path, notes);
        assert_eq!(media_type.as_deref(), Some("text/plain"));
        let (files, _) = file_sources(&[arg]).unwrap();
        assert_eq!(files[0].name, "notes.txt");
        // Without a media type, an unknown suffix is an error naming the file.
        let e = file_sources(&[notes.display().to_string()]).unwrap_err();
        assert!(e.message.contains("no media type"), "{}", e.message);
        let e = file_sources(&["/nonexistent/x.raw".into()]).unwrap_err();
        assert!(e.message.contains("no such file"), "{}", e.message);
    }
}
