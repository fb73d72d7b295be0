//! `garden-artifacts copy SRC DST`: an artefact copied byte for byte (same digest), within a
//! registry by mounting blobs, across registries by streaming them. It is the engine's
//! `source.image`, so `apply` and `copy` move the same bytes the same way.

use clap::Args;

use super::common::{self, Failure, Format, Outcome, RegistryArgs};
use crate::api::patterns::PLATFORM_RE;
use crate::intent::{ArtifactIntent, Content, FieldPath, ImageCopy};

#[derive(Args)]
pub struct CopyArgs {
    /// What to copy: host[:port]/repository:tag or host[:port]/repository@sha256:..., or
    /// oci:PATH:TAG for an OCI image layout folder.
    #[arg(value_name = "SRC")]
    source: String,
    /// Where to: host[:port]/repository:tag, any registry, or oci:PATH:TAG (a layout folder,
    /// created when absent).
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
    let mut places = common::Places::new(&args.registry)?;
    let source = places.reference("SRC", &args.source)?;
    let destination = places.tagged("DST", &args.destination)?;
    if let Some(platform) = &args.platform
        && !PLATFORM_RE.is_match(platform)
    {
        return Err(Failure::invalid(format!(
            "--platform {platform:?}: expected os/arch or os/arch/variant, e.g. linux/amd64"
        )));
    }
    let intent = ArtifactIntent {
        repository: destination.repository().clone(),
        tags: destination.tag().into_iter().cloned().collect(),
        content: Content::Image(ImageCopy {
            source_field: FieldPath::root("SRC"),
            source,
            platform_field: FieldPath::root("--platform"),
            platform: args.platform.clone(),
            referrers: args.referrers,
        }),
        subject: None,
        interval: None,
    };
    let engine = places.engine()?;
    common::reconcile_and_print_with(&engine, &intent, args.output, &args.destination).await
}
