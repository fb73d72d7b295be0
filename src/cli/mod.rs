//! The command line: one module per verb, each a thin shell over the library.

mod apply;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use crate::api::GardenArtifact;
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
    Controller(crate::controller::ControllerArgs),
    /// Print the GardenArtifact CustomResourceDefinition as YAML.
    Crd,
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
            match crate::controller::run(args).await {
                Ok(()) => exit::OK,
                Err(e) => {
                    tracing::error!(error = %e, "controller failed");
                    exit::FAILED
                }
            }
        }
        Command::Crd => {
            print!("{}", crd_yaml());
            exit::OK
        }
    };
    ExitCode::from(code)
}

/// The CRD exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&GardenArtifact::crd()).expect("the CRD serializes")
}
