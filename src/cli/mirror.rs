//! `garden-artifacts mirror SRC_REPO DST_REPO`: the selected tags of a repository copied byte
//! for byte into another, as skopeo sync and regsync do, with referrers and cosign tags along
//! when asked. Without a cluster nothing remembers what an earlier run wrote, so `--prune`
//! counts every target tag the `--include`/`--exclude` rules admit as the mirror's.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::common::{self, Failure, Format, Outcome, RegistryArgs};
use crate::engine::{MirrorInputs, MirrorProgress, MirrorReport, Mode, TagRemoval, TagResult};
use crate::intent::{FieldPath, Latest, MirrorIntent, TagSelection, VersionOrder, tag_pattern};

#[derive(Args)]
pub struct MirrorArgs {
    /// The repository to mirror: host[:port]/repository, or oci:PATH (an OCI layout folder).
    #[arg(value_name = "SRC_REPO")]
    source: String,
    /// Where to: host[:port]/repository or oci:PATH; each tag keeps its name.
    #[arg(value_name = "DST_REPO")]
    destination: String,
    /// Select the tags this regex (RE2 syntax) matches; repeatable; default: every tag.
    #[arg(long, value_name = "RE")]
    include: Vec<String>,
    /// ... and drop those this one matches; repeatable.
    #[arg(long, value_name = "RE")]
    exclude: Vec<String>,
    /// Keep only the tags of the newest N versions of what is left.
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
    /// With --latest: the version is this regex's first group (default: the whole tag).
    #[arg(long, value_name = "RE", requires = "latest")]
    extract: Option<String>,
    /// With --latest: how versions are ranked.
    #[arg(long, value_enum, default_value = "version", requires = "latest")]
    order: OrderArg,
    /// Also each tag's OCI 1.1 referrers and cosign tags.
    #[arg(long)]
    referrers: bool,
    /// Delete target tags the rules admit that are no longer selected or no longer in the source.
    #[arg(long)]
    prune: bool,
    /// Show what would be copied and pruned; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum OrderArg {
    Version,
    Alphabetical,
}

pub async fn run(args: MirrorArgs) -> u8 {
    common::finish(mirror(args).await)
}

fn intent(args: &MirrorArgs, places: &mut common::Places) -> Result<MirrorIntent, Failure> {
    let mut errors = Vec::new();
    let mut patterns = |flag: &str, texts: &[String]| {
        texts
            .iter()
            .filter_map(|text| {
                tag_pattern(text)
                    .map_err(|e| errors.push(format!("--{flag} {e}")))
                    .ok()
            })
            .collect::<Vec<_>>()
    };
    let include = patterns("include", &args.include);
    let exclude = patterns("exclude", &args.exclude);
    let extract = args.extract.as_ref().and_then(|text| {
        tag_pattern(text)
            .map_err(|e| errors.push(format!("--extract {e}")))
            .ok()
    });
    if let Some(extract) = &extract
        && extract.captures_len() < 2
    {
        errors.push(format!(
            "--extract {:?} has no group; the version is the first group, e.g. '^([0-9.]+)'",
            extract.as_str()
        ));
    }
    if args.latest == Some(0) {
        errors.push("--latest 0 selects nothing; expected a count of at least 1".to_string());
    }
    let source = places.repository("SRC_REPO", &args.source);
    let target = places.repository("DST_REPO", &args.destination);
    if let (Ok(source), Ok(target)) = (&source, &target)
        && source == target
    {
        errors.push(format!(
            "SRC_REPO and DST_REPO are one repository ({}); a mirror copies into another",
            target.identity()
        ));
    }
    for result in [&source, &target] {
        if let Err(failure) = result {
            errors.push(failure.message.clone());
        }
    }
    if !errors.is_empty() {
        return Err(Failure::invalid(errors.join("\n")));
    }
    Ok(MirrorIntent {
        source_field: FieldPath::root("SRC_REPO"),
        source: source?,
        target: target?,
        tags: TagSelection {
            include,
            exclude,
            latest: args.latest.map(|count| Latest {
                count,
                extract,
                order: match args.order {
                    OrderArg::Version => VersionOrder::Version,
                    OrderArg::Alphabetical => VersionOrder::Alphabetical,
                },
            }),
        },
        referrers: args.referrers,
        prune: args.prune,
        interval: None,
    })
}

async fn mirror(args: MirrorArgs) -> Outcome {
    let mut places = common::Places::new(&args.registry)?;
    let intent = intent(&args, &mut places)?;
    let engine = places.engine()?;
    let mut inputs = MirrorInputs::default();
    if intent.prune {
        inputs.written_before = mirror_tags_in_target(&engine, &intent).await?;
    }
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Apply
    };
    let bar = tags_bar(common::unmask(&format!(
        "{} -> {}",
        intent.source, intent.target
    )));
    let shown = Arc::clone(&bar);
    let report = common::with_transfer_progress(
        &engine,
        None,
        String::new(),
        engine.mirror_repository(&intent, &inputs, mode, &move |p: MirrorProgress| {
            shown.set_length(p.selected as u64);
            shown.set_position(p.done as u64);
        }),
    )
    .await
    .map_err(common::engine_failure)?;
    bar.finish_and_clear();
    print(args.output, &intent, &report, args.dry_run);
    match report.failed() {
        0 => Ok(()),
        failed => Err(Failure::failed(format!(
            "{failed} of {} selected tags were not mirrored",
            report.tags.len()
        ))),
    }
}

/// The target tags the rules admit, with their digests: what `--prune` may delete when nothing
/// remembers what earlier runs wrote.
pub(super) async fn mirror_tags_in_target(
    engine: &crate::engine::Engine,
    intent: &MirrorIntent,
) -> Result<BTreeMap<String, String>, Failure> {
    let admitted = TagSelection {
        latest: None,
        ..intent.tags.clone()
    };
    let listed = engine
        .registry()
        .list_tags(&intent.target, 100)
        .await?
        .ok_or_else(|| Failure::failed(format!("{} has too many tags to prune", intent.target)))?;
    let tags: Vec<crate::oci::Tag> = listed
        .iter()
        .filter_map(|t| crate::oci::Tag::parse(t).ok())
        .filter(|t| t.reserved_for().is_none())
        .collect();
    let mut written = BTreeMap::new();
    for tag in admitted.select(&tags) {
        if let Some(head) = engine
            .registry()
            .head_manifest(&intent.target, tag.as_str())
            .await?
        {
            written.insert(tag.to_string(), head.digest);
        }
    }
    Ok(written)
}

fn tags_bar(message: String) -> Arc<ProgressBar> {
    if !common::show_progress() {
        return Arc::new(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed}] {pos}/{len} tags")
            .expect("the template is valid"),
    );
    bar.set_message(message);
    Arc::new(bar)
}

#[derive(Serialize)]
struct Printed<'a> {
    source: String,
    target: String,
    dry_run: bool,
    selected: usize,
    copied: usize,
    unchanged: usize,
    failed: usize,
    tags: Vec<PrintedTag<'a>>,
    pruned: Vec<PrintedPrune<'a>>,
}

#[derive(Serialize)]
struct PrintedTag<'a> {
    tag: &'a str,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct PrintedPrune<'a> {
    tag: &'a str,
    result: String,
}

fn print(format: Format, intent: &MirrorIntent, report: &MirrorReport, dry_run: bool) {
    let tags: Vec<PrintedTag<'_>> = report
        .tags
        .iter()
        .map(|(tag, result)| {
            let (word, reason) = match result {
                TagResult::Copied { .. } if dry_run => ("would copy", None),
                TagResult::Copied { .. } => ("copied", None),
                TagResult::Unchanged { .. } => ("unchanged", None),
                TagResult::Conflict { owner } => ("conflict", Some(format!("owned by {owner}"))),
                TagResult::Failed { message, .. } => ("failed", Some(common::unmask(message))),
            };
            PrintedTag {
                tag: tag.as_str(),
                result: word,
                digest: result.digest(),
                reason,
            }
        })
        .collect();
    let pruned: Vec<PrintedPrune<'_>> = report
        .pruned
        .iter()
        .map(|(tag, removal)| PrintedPrune {
            tag,
            result: match removal {
                TagRemoval::Removed if dry_run => "would delete".to_string(),
                TagRemoval::Removed => "deleted".to_string(),
                TagRemoval::Absent => "absent".to_string(),
                TagRemoval::Elsewhere(digest) => format!("moved to {digest}: left alone"),
            },
        })
        .collect();
    match format {
        Format::Text => {
            for tag in &tags {
                let line = match (&tag.digest, &tag.reason) {
                    (_, Some(reason)) => {
                        format!("{}:{} {}: {reason}", intent.target, tag.tag, tag.result)
                    }
                    (Some(digest), None) => {
                        format!("{}:{}@{digest} {}", intent.target, tag.tag, tag.result)
                    }
                    (None, None) => format!("{}:{} {}", intent.target, tag.tag, tag.result),
                };
                println!(
                    "{}",
                    common::without_control_characters(&common::unmask(&line))
                );
            }
            for prune in &pruned {
                let line = format!("{}:{} {}", intent.target, prune.tag, prune.result);
                println!("{}", common::unmask(&line));
            }
            println!(
                "{} selected: {} copied, {} unchanged, {} failed",
                tags.len(),
                report.copied(),
                report.unchanged(),
                report.failed()
            );
        }
        Format::Json => common::print_json(&Printed {
            source: common::unmask(&intent.source.to_string()),
            target: common::unmask(&intent.target.to_string()),
            dry_run,
            selected: report.tags.len(),
            copied: report.copied(),
            unchanged: report.unchanged(),
            failed: report.failed(),
            tags,
            pruned,
        }),
    }
}
