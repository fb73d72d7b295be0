//! `garden-artifacts copy SRC DST`: an artefact copied byte for byte (same digest), within a
//! registry by mounting blobs, across registries by streaming them. It is the engine's
//! `source.image`, so `apply` and `copy` move the same bytes the same way.

use clap::Args;

use super::common::{self, Failure, Format, Outcome, RegistryArgs};
use crate::api::patterns::PLATFORM_RE;
use crate::api::{GardenArtifactSpec, ImageSource, Source};

#[derive(Args)]
pub struct CopyArgs {
    /// What to copy: host[:port]/repository:tag or host[:port]/repository@sha256:...
    #[arg(value_name = "SRC")]
    source: String,
    /// Where to: host[:port]/repository:tag, any registry.
    #[arg(value_name = "DST")]
    destination: String,
    /// Also copy what hangs off SRC (referrers).
    #[arg(long)]
    referrers: bool,
    /// For an index: copy only the manifest of this platform.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// How the result is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub async fn run(args: CopyArgs) -> u8 {
    common::finish(copy(args).await)
}

async fn copy(args: CopyArgs) -> Outcome {
    common::parse_reference("SRC", &args.source)?;
    let destination = common::parse_tagged("DST", &args.destination)?;
    if let Some(platform) = &args.platform
        && !PLATFORM_RE.is_match(platform)
    {
        return Err(Failure::invalid(format!(
            "--platform {platform:?}: expected os/arch or os/arch/variant, e.g. linux/amd64"
        )));
    }
    let spec = GardenArtifactSpec {
        repository: destination.repository().to_string(),
        tags: destination.tag().iter().map(|t| t.to_string()).collect(),
        annotations: Default::default(),
        artifact_type: None,
        config: None,
        source: Source {
            image: Some(ImageSource {
                reference: args.source.clone(),
                platform: args.platform.clone(),
                referrers: args.referrers,
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
        ("spec.source.image.referrers", "--referrers"),
        ("spec.source.image.platform", "--platform"),
        ("spec.source.image.reference", "SRC"),
        ("spec.source.image", "SRC"),
        ("spec.repository", "DST"),
        ("spec.tags", "DST tag"),
    ];
    common::reconcile_and_print(
        &spec,
        &renames,
        &args.registry,
        args.output,
        &args.destination,
    )
    .await
}
