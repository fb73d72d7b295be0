//! The real distribution API client: its construction and what every request shares. The
//! requests themselves live in `transport` (send, retry, budget), `auth` (challenges and
//! tokens) and one module per resource (`manifests`, `blobs`, `tags`, `referrers`).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::auth::{AuthScheme, CachedToken};
use super::budget::{BudgetOptions, Budgets};
use super::credentials::{Credential, CredentialSource};
use super::error::Error;
use super::transport::{RequestStats, RetryPolicy};
use crate::http_client::{describe_transport, install_crypto_provider};
use crate::oci::Repository;

#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host:port`) spoken to over plain HTTP although they are not on loopback.
    pub insecure_registries: Vec<String>,
    /// Registries (`host:port`) spoken to over TLS although they are on loopback: a registry
    /// reached through a port-forward or a local TLS proxy.
    pub secure_registries: Vec<String>,
    pub retry: RetryPolicy,
    /// Extra trusted CA certificates (PEM), e.g. for a registry with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    pub budget: BudgetOptions,
}

/// The distribution API client shared by every object of a run: one connection pool, one
/// token per registry and scope, one view of each registry's auth scheme.
pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    pub(super) insecure: BTreeSet<String>,
    pub(super) secure: BTreeSet<String>,
    pub(super) retry: RetryPolicy,
    pub(super) credentials: Arc<dyn CredentialSource>,
    pub(super) resolved_credentials: Mutex<HashMap<String, Option<Credential>>>,
    pub(super) schemes: Mutex<HashMap<String, AuthScheme>>,
    pub(super) tokens: Mutex<HashMap<(String, String), CachedToken>>,
    pub(super) stats: Arc<RequestStats>,
    pub(super) budgets: Arc<Budgets>,
}

/// `localhost`, `127.0.0.0/8` and `::1` speak plain HTTP; nothing else does unless named.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    pub fn new(
        options: ClientOptions,
        credentials: Arc<dyn CredentialSource>,
    ) -> Result<Self, Error> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("garden-artifacts/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = &options.ca_pem {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Invalid {
                    what: "--ca-file".into(),
                    detail: format!("not a PEM certificate bundle: {}", describe_transport(&e)),
                })?;
            if certificates.is_empty() {
                return Err(Error::Invalid {
                    what: "--ca-file".into(),
                    detail: "holds no PEM certificate".into(),
                });
            }
            builder = builder.tls_certs_merge(certificates);
        }
        let http = builder.build().map_err(|e| Error::Invalid {
            what: "HTTP client".into(),
            detail: describe_transport(&e),
        })?;
        Ok(Self {
            http,
            insecure: options.insecure_registries.into_iter().collect(),
            secure: options.secure_registries.into_iter().collect(),
            retry: options.retry,
            credentials,
            resolved_credentials: Mutex::default(),
            schemes: Mutex::default(),
            tokens: Mutex::default(),
            stats: Arc::default(),
            budgets: Arc::new(Budgets::new(options.budget)),
        })
    }

    /// A client with other credentials that shares this one's connection pool and counters
    /// (the controller makes one per registry Secret).
    pub fn with_credentials(&self, credentials: Arc<dyn CredentialSource>) -> Self {
        Self {
            http: self.http.clone(),
            insecure: self.insecure.clone(),
            secure: self.secure.clone(),
            retry: self.retry.clone(),
            credentials,
            resolved_credentials: Mutex::default(),
            schemes: Mutex::new(self.schemes.lock().expect("not poisoned").clone()),
            tokens: Mutex::default(),
            stats: Arc::clone(&self.stats),
            budgets: Arc::clone(&self.budgets),
        }
    }

    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    pub(super) fn base(&self, registry: &str) -> String {
        let plain = !self.secure.contains(registry)
            && (is_loopback(registry) || self.insecure.contains(registry));
        let scheme = if plain { "http" } else { "https" };
        format!("{scheme}://{registry}/v2/")
    }

    pub(super) fn url(&self, repo: &Repository, tail: &str) -> String {
        format!("{}{}/{}", self.base(repo.registry()), repo.name(), tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_speak_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("ghcr.io"));
    }

    #[test]
    fn a_registry_named_secure_speaks_tls_even_on_loopback() {
        let client = RegistryClient::new(
            ClientOptions {
                secure_registries: vec!["localhost:8443".into()],
                ..Default::default()
            },
            Arc::new(crate::registry::NoCredentials),
        )
        .unwrap();
        assert_eq!(client.base("localhost:8443"), "https://localhost:8443/v2/");
        assert_eq!(client.base("localhost:5000"), "http://localhost:5000/v2/");
    }
}
