//! The command line: one module per verb, each a thin shell over the library.

mod apply;
mod controller;
mod registry_args;

pub use registry_args::{RegistryArgs, SourceArgs};
mod common;
mod component;
mod copy;
mod discover;
mod mirror;
mod pull;
mod push;
mod tag;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;

use crate::api::{GardenArtifact, GardenComponent, GardenMirror};
use crate::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "garden-artifacts",
    version,
    about = "OCI registries made declarative"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make registries match GardenArtifact manifests, without a cluster.
    Apply(apply::ApplyArgs),
    /// Run the Kubernetes controller.
    Controller(controller::ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML: every one, or that of KIND.
    Crd {
        #[arg(value_enum)]
        kind: Option<CrdKind>,
    },
    /// Push local files as one artefact (one layer per file).
    Push(push::PushArgs),
    /// Write the titled layers of an artefact to a folder, digest-verified.
    Pull(pull::PullArgs),
    /// Show what hangs off an artefact: referrers, index children, links.
    Discover(discover::DiscoverArgs),
    /// Point more tags at a manifest, in its repository.
    Tag(tag::TagArgs),
    /// Copy an artefact byte for byte to another repository or registry.
    Copy(copy::CopyArgs),
    /// Copy the selected tags of a repository into another, byte for byte.
    Mirror(mirror::MirrorArgs),
}

/// Exit codes of every verb.
pub mod exit {
    /// Everything converged.
    pub const OK: u8 = 0;
    /// Some object failed; the others were still reconciled.
    pub const FAILED: u8 = 1;
    /// Invalid input; nothing was written.
    pub const INVALID: u8 = 2;
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Apply(args) => {
            telemetry::init(LogFormat::Text, "warn");
            apply::run(args).await
        }
        Command::Controller(args) => {
            telemetry::init(args.log_format, "info");
            let run = match args.config() {
                Ok(config) => crate::controller::run(config).await,
                Err(e) => Err(e),
            };
            match run {
                Ok(()) => exit::OK,
                Err(e) => {
                    tracing::error!(error = %e, "controller failed");
                    exit::FAILED
                }
            }
        }
        Command::Crd { kind } => {
            match kind {
                Some(kind) => print!("{}", crd_yaml_of(kind)),
                None => {
                    let all: Vec<String> = CrdKind::value_variants()
                        .iter()
                        .map(|kind| crd_yaml_of(*kind))
                        .collect();
                    print!("{}", all.join("---\n"));
                }
            }
            exit::OK
        }
        Command::Push(args) => {
            telemetry::init(LogFormat::Text, "warn");
            push::run(args).await
        }
        Command::Pull(args) => {
            telemetry::init(LogFormat::Text, "warn");
            pull::run(args).await
        }
        Command::Discover(args) => {
            telemetry::init(LogFormat::Text, "warn");
            discover::run(args).await
        }
        Command::Tag(args) => {
            telemetry::init(LogFormat::Text, "warn");
            tag::run(args).await
        }
        Command::Copy(args) => {
            telemetry::init(LogFormat::Text, "warn");
            copy::run(args).await
        }
        Command::Mirror(args) => {
            telemetry::init(LogFormat::Text, "warn");
            mirror::run(args).await
        }
    };
    ExitCode::from(code)
}

/// The kinds this project defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum CrdKind {
    GardenArtifact,
    GardenMirror,
    GardenComponent,
}

/// The GardenArtifact CRD exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    crd_yaml_of(CrdKind::GardenArtifact)
}

/// A CRD exactly as committed under `crds/`.
pub fn crd_yaml_of(kind: CrdKind) -> String {
    let crd = match kind {
        CrdKind::GardenArtifact => GardenArtifact::crd(),
        CrdKind::GardenMirror => GardenMirror::crd(),
        CrdKind::GardenComponent => GardenComponent::crd(),
    };
    serde_yaml::to_string(&crd).expect("the CRD serializes")
}
