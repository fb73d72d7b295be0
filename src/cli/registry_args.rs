//! Flags every command that talks to registries shares.

use std::path::PathBuf;

use clap::Args;

use crate::registry::{BudgetOptions, ClientOptions};

#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// A registry (host:port) to speak plain HTTP to; loopback registries always do.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Trust the CA certificates in this PEM file (in addition to the system's).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Requests in flight at once per registry.
    #[arg(long, default_value_t = 32)]
    pub registry_max_in_flight: usize,
    /// Requests started per second per registry (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    pub registry_qps: f64,
}

impl RegistryArgs {
    pub fn client_options(&self) -> Result<ClientOptions, String> {
        let ca_pem = match &self.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ca_pem,
            budget: BudgetOptions {
                max_in_flight: self.registry_max_in_flight,
                per_second: self.registry_qps,
            },
            ..Default::default()
        })
    }
}
