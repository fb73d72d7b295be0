//! `garden-artifacts controller`: its flags, turned into the controller's plain configuration.

use std::net::SocketAddr;

use clap::Args;

use super::{RegistryArgs, SourceArgs};
use crate::controller::policy::{NamespacePolicy, NamespaceRule, Unlisted};
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
    /// Run only while holding a Lease, so of several controllers only one writes (on by
    /// default; `--leader-elect=false` for a controller that is alone by construction, such as
    /// a shard of one).
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub leader_elect: bool,
    /// Namespace of the Lease. Default: the pod's own namespace (`POD_NAMESPACE`, or the
    /// ServiceAccount's in a cluster), else the kubeconfig context's namespace, else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    #[arg(long, default_value = "garden-artifacts")]
    pub lease_name: String,
    /// This replica's name in the Lease. Default: `$HOSTNAME-<process id>`.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The registries or repository prefixes (registry/path) the GardenArtifacts of NAMESPACE
    /// may write to; repeatable. An object writing elsewhere is Stalled (PolicyViolation) and
    /// nothing is sent to that registry.
    #[arg(long, value_name = "NAMESPACE=PREFIX[,PREFIX...]")]
    pub namespace_policy: Vec<NamespaceRule>,
    /// What namespaces that no --namespace-policy names may write to: anything (`allow`) or
    /// nothing (`deny`).
    #[arg(long, value_name = "allow|deny", default_value = "allow")]
    pub namespace_policy_default: Unlisted,
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
            identity: self.identity.clone().unwrap_or_else(|| {
                // Two controllers started by hand on one host share its name; the process id
                // tells them apart, or both would take the Lease as their own.
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "garden-artifacts".into());
                format!("{host}-{}", std::process::id())
            }),
        });
        Ok(Config {
            namespace: self.namespace.clone(),
            metrics_addr: self.metrics_addr,
            registry: self.registry.client_options()?,
            url_policy: self.sources.controller_policy(),
            concurrency: self.concurrency,
            blob_concurrency: self.blob_concurrency,
            leader_election,
            namespace_policy: NamespacePolicy::new(
                self.namespace_policy.clone(),
                self.namespace_policy_default,
            ),
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

    fn config_of(flags: &[&str]) -> Result<Config, String> {
        let args =
            Command::try_parse_from(std::iter::once("controller").chain(flags.iter().copied()))
                .map_err(|e| e.to_string())?
                .args;
        args.config()
    }

    fn config(flags: &[&str]) -> Config {
        config_of(flags).expect("valid flags")
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
                leader.lease_namespace.as_deref(),
                leader.lease_name.as_str(),
                leader.identity.as_str()
            ),
            (Some("lease-ns"), "garden-artifacts", "replica-a")
        );
    }

    #[test]
    fn namespace_policies_are_flags() {
        let config = config(&[
            "--namespace-policy=team=localhost:5000/team",
            "--namespace-policy",
            "team=ghcr.io/team,quay.io",
            "--namespace-policy-default=deny",
        ]);
        let policy = &config.namespace_policy;
        let repository = |r: &str| crate::oci::Repository::parse(r).unwrap();
        let allowed = |ns: &str, r: &str| policy.check(ns, "f", &repository(r)).is_ok();
        assert!(allowed("team", "127.0.0.1:5000/team/app"));
        assert!(allowed("team", "quay.io/x/y"));
        assert!(!allowed("team", "localhost:5000/other"));
        assert!(!allowed("other", "ghcr.io/team/app"), "unlisted: denied");
        assert!(config_of(&["--namespace-policy=team"]).is_err());
        assert!(config_of(&["--namespace-policy-default=maybe"]).is_err());
        let open = self::config(&[]).namespace_policy;
        assert!(open.check("any", "f", &repository("quay.io/x/y")).is_ok());
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
    fn leader_election_is_on_unless_turned_off_and_no_url_host_is_allowed() {
        let config = config(&[]);
        let leader = config.leader_election.expect("leader election by default");
        assert_eq!(leader.lease_name, "garden-artifacts");
        assert_eq!(config.url_policy.allowed_hosts, Some(Vec::new()));
        for on in ["--leader-elect", "--leader-elect=true"] {
            assert!(self::config(&[on]).leader_election.is_some(), "{on}");
        }
        assert!(
            self::config(&["--leader-elect=false"])
                .leader_election
                .is_none()
        );
    }
}
