//! `garden-artifacts tag REF TAG...`: more tags on REF's manifest, in REF's repository. It is the
//! engine's `source.image` copy into the same repository: a manifest-only retag, no blob moves.

use clap::Args;

use super::common::{self, Failure, Format, Outcome, RegistryArgs};
use crate::intent::{ArtifactIntent, Content, FieldPath, ImageCopy};
use crate::oci::Tag;

#[derive(Args)]
pub struct TagArgs {
    /// The manifest to tag: host[:port]/repository:tag or host[:port]/repository@sha256:...
    #[arg(value_name = "REF")]
    reference: String,
    /// Tags to point at it, in the same repository.
    #[arg(value_name = "TAG", required = true)]
    tags: Vec<String>,
    /// How the result is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub async fn run(args: TagArgs) -> u8 {
    common::finish(tag(args).await)
}

async fn tag(args: TagArgs) -> Outcome {
    let source = common::parse_reference("REF", &args.reference)?;
    let tags = args
        .tags
        .iter()
        .map(|tag| {
            let parsed = Tag::parse(tag).map_err(|_| {
                Failure::invalid(format!(
                    "TAG {tag:?}: expected a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}), not a reference"
                ))
            })?;
            common::tag_to_write("TAG", &parsed)?;
            Ok::<_, Failure>(parsed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(twice) = tags
        .iter()
        .enumerate()
        .find(|(i, t)| tags[..*i].contains(t))
    {
        return Err(Failure::invalid(format!(
            "TAG {:?} is given twice",
            twice.1.as_str()
        )));
    }
    let intent = ArtifactIntent {
        repository: source.repository().clone(),
        tags,
        content: Content::Image(ImageCopy {
            source_field: FieldPath::root("REF"),
            source,
            platform_field: FieldPath::root("--platform"),
            platform: None,
            referrers: false,
        }),
        subject: None,
        interval: None,
    };
    common::reconcile_and_print(&intent, &args.registry, args.output, &args.reference).await
}
