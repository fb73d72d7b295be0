//! The operator's namespace policy (`--namespace-policy NAMESPACE=PREFIX[,PREFIX...]`): which
//! registries and repositories the GardenArtifacts of each namespace may write to. Prefixes
//! compare by repository identity (`localhost:5000` is `127.0.0.1:5000`, `docker.io/x` is
//! `index.docker.io/library/x`) and on path-segment boundaries (`reg/team` allows `reg/team`
//! and `reg/team/app`, not `reg/team-evil`). Controller-only: `apply` runs with its user's own
//! credentials and knows no namespaces to police.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::oci::{RegistryId, Repository, repository_identity};

/// What a namespace that the policy does not list may write to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unlisted {
    /// Anything, as without a policy: only the listed namespaces are restricted.
    #[default]
    Allow,
    /// Nothing: every namespace that writes must be listed.
    Deny,
}

impl FromStr for Unlisted {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "allow" => Ok(Unlisted::Allow),
            "deny" => Ok(Unlisted::Deny),
            _ => Err(format!("{text:?}: expected allow or deny")),
        }
    }
}

/// A registry, or a registry and a repository path prefix, that a namespace may write to.
#[derive(Clone, Debug)]
pub struct Prefix {
    /// As the operator wrote it, for messages.
    text: String,
    registry: RegistryId,
    /// `registry-id/canonical-path`; `None` for the whole registry.
    path: Option<String>,
}

impl Prefix {
    fn admits(&self, repository: &Repository) -> bool {
        self.admits_identity(repository.registry_id(), &repository.identity())
    }

    /// `identity` is the repository's `registry-id/canonical-path`.
    fn admits_identity(&self, registry: &RegistryId, identity: &str) -> bool {
        match &self.path {
            None => *registry == self.registry,
            Some(prefix) => {
                identity == prefix
                    || identity
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_end_matches('/');
        let bad = |why: &str| Err(format!("{text:?}: {why}"));
        if trimmed.is_empty() {
            return bad("an empty prefix");
        }
        if trimmed.contains("://") {
            return bad("a registry host, not a URL (no scheme)");
        }
        if trimmed.contains('@') || trimmed.chars().any(char::is_whitespace) {
            return bad("a registry or a repository prefix, without a tag or digest");
        }
        match trimmed.split_once('/') {
            None => Ok(Self {
                text: trimmed.to_string(),
                registry: RegistryId::of(trimmed),
                path: None,
            }),
            Some((registry, path)) => {
                if path.contains(':') || path.split('/').any(str::is_empty) {
                    return bad("a repository prefix is path segments, without a tag");
                }
                // The path as written: a prefix is no repository, so Docker Hub's `library/`
                // is not put in front of a single segment (`docker.io/library` is the prefix of
                // its official images).
                let registry = RegistryId::of(registry);
                Ok(Self {
                    text: trimmed.to_string(),
                    path: Some(format!("{registry}/{path}")),
                    registry,
                })
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One `--namespace-policy` flag: `NAMESPACE=PREFIX[,PREFIX...]`.
#[derive(Clone, Debug)]
pub struct NamespaceRule {
    pub namespace: String,
    pub prefixes: Vec<Prefix>,
}

impl FromStr for NamespaceRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (namespace, prefixes) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected NAMESPACE=PREFIX[,PREFIX...]"))?;
        let label = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if namespace.is_empty()
            || namespace.len() > 63
            || !namespace.chars().all(label)
            || namespace.starts_with('-')
            || namespace.ends_with('-')
        {
            return Err(format!("{namespace:?} is not a namespace name"));
        }
        let prefixes = prefixes
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Prefix>, String>>()?;
        Ok(Self {
            namespace: namespace.to_string(),
            prefixes,
        })
    }
}

/// Which namespace may write where; the default admits everything.
#[derive(Clone, Debug, Default)]
pub struct NamespacePolicy {
    rules: BTreeMap<String, Vec<Prefix>>,
    unlisted: Unlisted,
}

impl NamespacePolicy {
    /// The rules of every flag (a namespace named twice may write to the prefixes of both).
    pub fn new(rules: impl IntoIterator<Item = NamespaceRule>, unlisted: Unlisted) -> Self {
        let mut by_namespace: BTreeMap<String, Vec<Prefix>> = BTreeMap::new();
        for rule in rules {
            by_namespace
                .entry(rule.namespace)
                .or_default()
                .extend(rule.prefixes);
        }
        Self {
            rules: by_namespace,
            unlisted,
        }
    }

    /// Whether an object of `namespace` may write to `repository` (named at `field`); when
    /// not, the message says who, where, and what is allowed instead.
    pub fn check(
        &self,
        namespace: &str,
        field: &str,
        repository: &Repository,
    ) -> Result<(), String> {
        match self.rules.get(namespace) {
            Some(prefixes) if prefixes.iter().any(|p| p.admits(repository)) => Ok(()),
            Some(prefixes) => Err(format!(
                "{field}: namespace {namespace} may not write to {repository}; the controller's --namespace-policy allows it only {}",
                prefixes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None if self.unlisted == Unlisted::Allow => Ok(()),
            None => Err(format!(
                "{field}: namespace {namespace} may not write to {repository}; it is not listed in the controller's --namespace-policy, and unlisted namespaces may write nowhere (--namespace-policy-default=deny)"
            )),
        }
    }

    /// [`NamespacePolicy::check`] of a repository as an admitted object's spec writes it,
    /// without the grammar's regex: it runs over every object each round. Text that is no
    /// repository is admitted here (validation refuses it).
    pub fn admits_text(&self, namespace: &str, repository: &str) -> bool {
        let Some(prefixes) = self.rules.get(namespace) else {
            return self.unlisted == Unlisted::Allow;
        };
        let Some((registry, _)) = repository.split_once('/') else {
            return true;
        };
        let (registry, identity) = (RegistryId::of(registry), repository_identity(repository));
        prefixes
            .iter()
            .any(|p| p.admits_identity(&registry, &identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(flags: &[&str], unlisted: Unlisted) -> NamespacePolicy {
        NamespacePolicy::new(
            flags.iter().map(|f| f.parse().expect("a valid flag")),
            unlisted,
        )
    }

    /// Checked both ways, which must agree: typed (the object's own round) and as text (the
    /// claimants of its tags).
    fn admits(policy: &NamespacePolicy, namespace: &str, repository: &str) -> bool {
        let typed = Repository::parse(repository).expect("a repository");
        let checked = policy.check(namespace, "spec.repository", &typed).is_ok();
        assert_eq!(
            policy.admits_text(namespace, repository),
            checked,
            "{namespace} {repository}"
        );
        checked
    }

    #[test]
    fn prefixes_compare_by_identity_on_segment_boundaries() {
        let p = policy(
            &["team=localhost:5000/team", "hub=docker.io/library,ghcr.io"],
            Unlisted::Allow,
        );
        assert!(admits(&p, "team", "127.0.0.1:5000/team"));
        assert!(admits(&p, "team", "LOCALHOST:5000/team/app"));
        assert!(!admits(&p, "team", "localhost:5000/team-evil/app"));
        assert!(!admits(&p, "team", "localhost:5000/other"));
        assert!(!admits(&p, "team", "localhost:5001/team/app"));
        assert!(admits(&p, "hub", "index.docker.io/nginx"));
        assert!(admits(&p, "hub", "ghcr.io/anyone/anything"));
        assert!(!admits(&p, "hub", "docker.io/someone/nginx"));
        assert!(admits(&p, "elsewhere", "quay.io/x/y"), "unlisted: allowed");
    }

    #[test]
    fn a_refusal_names_the_namespace_the_field_and_what_is_allowed() {
        let p = policy(
            &["team=reg.example.com/team", "team=ghcr.io/team"],
            Unlisted::Deny,
        );
        let repository = Repository::parse("reg.example.com/other/app").unwrap();
        let message = p.check("team", "spec.repository", &repository).unwrap_err();
        assert_eq!(
            message,
            "spec.repository: namespace team may not write to reg.example.com/other/app; the controller's --namespace-policy allows it only reg.example.com/team, ghcr.io/team"
        );
        let unlisted = p
            .check("other", "spec.repository", &repository)
            .unwrap_err();
        assert!(
            unlisted.contains("not listed") && unlisted.contains("--namespace-policy-default=deny"),
            "{unlisted}"
        );
        assert!(admits(&p, "team", "ghcr.io/team/app"));
    }

    #[test]
    fn flags_that_cannot_mean_a_prefix_are_refused() {
        for bad in [
            "team",
            "=reg/x",
            "Team=reg/x",
            "team=",
            "team=reg/x,",
            "team=https://reg/x",
            "team=reg/x:v1",
            "team=reg/x@sha256:00",
            "team=reg//x",
        ] {
            assert!(bad.parse::<NamespaceRule>().is_err(), "{bad}");
        }
        let rule: NamespaceRule = "team=reg:5000/team/,ghcr.io".parse().unwrap();
        assert_eq!(rule.namespace, "team");
        let texts: Vec<String> = rule.prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["reg:5000/team", "ghcr.io"]);
    }
}
