//! `garden-artifacts tag REF TAG...`: more tags on REF's manifest, in REF's repository. It is the
//! engine's `source.image` copy into the same repository: a manifest-only retag, no blob moves.

use clap::Args;

use super::common::{self, Failure, Format, Outcome, RegistryArgs};
use crate::api::patterns::TAG_RE;
use crate::api::{GardenArtifactSpec, ImageSource, Source};

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
    for tag in &args.tags {
        if !TAG_RE.is_match(tag) {
            return Err(Failure::invalid(format!(
                "TAG {tag:?}: expected a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}), not a reference"
            )));
        }
    }
    let spec = GardenArtifactSpec {
        repository: source.repository().to_string(),
        tags: args.tags.clone(),
        annotations: Default::default(),
        artifact_type: None,
        config: None,
        source: Source {
            image: Some(ImageSource {
                reference: args.reference.clone(),
                platform: None,
                referrers: false,
            }),
            ..Default::default()
        },
        subject: None,
        links: Vec::new(),
        credentials: None,
        deletion_policy: Default::default(),
        interval: None,
        suspend: false,
    };
    let renames = [
        ("spec.source.image.reference", "REF"),
        ("spec.repository", "REF"),
        ("spec.tags", "TAG"),
    ];
    common::reconcile_and_print(
        &spec,
        &renames,
        &args.registry,
        args.output,
        &args.reference,
    )
    .await
}
