//! `garden-artifacts controller`: its flags, turned into the controller's plain configuration.

use std::net::SocketAddr;

use clap::Args;

use super::{RegistryArgs, SourceArgs};
use crate::controller::shard::Shard;
use crate::controller::{Config, LeaderElection};

#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Objects reconciled at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u16,
    /// Blob transfers at once within one object.
    #[arg(long, default_value_t = 4)]
    pub blob_concurrency: usize,
    /// Run only while holding a Lease, so one of several replicas writes.
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, default_value = "garden-artifacts")]
    pub lease_name: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconcile only the objects with these labels (kubectl's selector syntax), for one
    /// shard of several controllers; every shard still watches all objects for tag ownership.
    /// Give each shard its own --lease-name.
    #[arg(long, value_parser = Shard::parse, default_value = "")]
    pub watch_label_selector: Shard,
    /// Log lines as JSON (the default) or text.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: crate::telemetry::LogFormat,
}

impl ControllerArgs {
    /// The controller's configuration; fails only on a `--ca-file` that cannot be read.
    pub fn config(&self) -> Result<Config, String> {
        let leader_election = self.leader_elect.then(|| LeaderElection {
            lease_namespace: self.lease_namespace.clone(),
            lease_name: self.lease_name.clone(),
            identity: self
                .identity
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("garden-artifacts-{}", std::process::id())),
        });
        Ok(Config {
            namespace: self.namespace.clone(),
            metrics_addr: self.metrics_addr,
            registry: self.registry.client_options()?,
            url_policy: self.sources.controller_policy(),
            concurrency: self.concurrency,
            blob_concurrency: self.blob_concurrency,
            leader_election,
            shard: self.watch_label_selector.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn config(flags: &[&str]) -> Config {
        let args =
            Command::try_parse_from(std::iter::once("controller").chain(flags.iter().copied()))
                .expect("valid flags")
                .args;
        args.config().expect("a configuration")
    }

    #[test]
    fn flags_become_the_controllers_configuration() {
        let config = config(&[
            "--namespace=ns",
            "--insecure-registry=registry:5000",
            "--allow-source-host=files.example.com",
            "--concurrency=2",
            "--leader-elect",
            "--lease-namespace=lease-ns",
            "--identity=replica-a",
        ]);
        assert_eq!(config.namespace.as_deref(), Some("ns"));
        assert_eq!(config.registry.insecure_registries, ["registry:5000"]);
        let allowed: Vec<String> = config
            .url_policy
            .allowed_hosts
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["files.example.com"]);
        assert_eq!(config.concurrency, 2);
        let leader = config.leader_election.expect("leader election");
        assert_eq!(
            (
                leader.lease_namespace.as_str(),
                leader.lease_name.as_str(),
                leader.identity.as_str()
            ),
            ("lease-ns", "garden-artifacts", "replica-a")
        );
    }

    #[test]
    fn a_shard_is_a_label_selector_and_a_bad_one_is_refused() {
        let shard = config(&["--watch-label-selector=shard in (a,b)"]).shard;
        assert_eq!(shard.to_string(), "objects labelled shard in (a,b)");
        assert_eq!(config(&[]).shard.to_string(), "every object");
        let refused = Command::try_parse_from(["controller", "--watch-label-selector=shard in a"]);
        assert!(refused.is_err());
    }

    #[test]
    fn without_leader_elect_there_is_no_lease_and_no_url_host() {
        let config = config(&[]);
        assert!(config.leader_election.is_none());
        assert_eq!(config.url_policy.allowed_hosts, Some(Vec::new()));
    }
}
