//! Flags every command that talks to registries shares.

use std::path::PathBuf;

use clap::Args;

use crate::registry::{BudgetOptions, ClientOptions};
use crate::sources::{AllowedHost, UrlPolicy};

#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// A registry (host:port) to speak plain HTTP to; loopback registries always do.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// A registry (host:port) to speak TLS to even on loopback, e.g. through a port-forward.
    #[arg(long = "secure-registry", value_name = "HOST:PORT")]
    pub secure_registries: Vec<String>,
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
        if let Some(both) = self
            .secure_registries
            .iter()
            .find(|r| self.insecure_registries.contains(r))
        {
            return Err(format!(
                "{both} is named by both --secure-registry and --insecure-registry; name it once"
            ));
        }
        Ok(ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            secure_registries: self.secure_registries.clone(),
            ca_pem,
            budget: BudgetOptions {
                max_in_flight: self.registry_max_in_flight,
                per_second: self.registry_qps,
            },
            ..Default::default()
        })
    }
}

/// Flags for `url` file sources.
#[derive(Args, Clone, Debug, Default)]
pub struct SourceArgs {
    /// A host (or host:port, [IPv6]:port) URL sources may be fetched from; repeatable.
    /// Loopback, private and cluster-internal addresses are only fetched when their host is
    /// listed here.
    #[arg(long = "allow-source-host", value_name = "HOST[:PORT]")]
    pub allowed_hosts: Vec<AllowedHost>,
    /// The most bytes one URL source may have.
    #[arg(long, value_name = "BYTES", default_value_t = crate::sources::DEFAULT_MAX_SOURCE_BYTES)]
    pub max_source_bytes: u64,
}

impl SourceArgs {
    /// `apply`: any public host unless hosts are listed.
    pub fn apply_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allowed_hosts: (!self.allowed_hosts.is_empty()).then(|| self.allowed_hosts.clone()),
            max_bytes: self.max_source_bytes,
        }
    }

    /// The controller: only the listed hosts (none by default), since whoever may create a
    /// GardenArtifact would otherwise make the controller fetch for them.
    pub fn controller_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allowed_hosts: Some(self.allowed_hosts.clone()),
            max_bytes: self.max_source_bytes,
        }
    }
}
