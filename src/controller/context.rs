//! What every reconciliation shares: the kube client, the engine (one per registry Secret,
//! all on one connection pool), the event recorder, metrics, and the cache of all objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};

use super::index::SharedIndex;
use super::mirror_claims::MirrorCache;
use super::policy::NamespacePolicy;
use super::recorder::Recorders;
use super::retries::Retries;
use super::shard::Shard;
use super::watched::Watched;
use crate::api::GardenArtifact;
use crate::engine::{Engine, Inputs};
use crate::metrics::Metrics;
use crate::oci::{Digest, ImageReference, Repository};
use crate::registry::{DockerConfig, RegistryClient};

/// (namespace, name) of a registry Secret.
type SecretKey = (String, String);
type ResourceVersion = String;

pub struct Context {
    pub client: kube::Client,
    /// Anonymous access; objects without `spec.credentials` use it.
    pub engine: Arc<Engine>,
    /// The client behind `engine`, from which the clients with a Secret's credentials are made.
    registry: Arc<RegistryClient>,
    pub recorder: Recorders,
    pub metrics: Arc<Metrics>,
    /// Every GardenArtifact the controller watches (`artifactRef`s are read here).
    pub store: Store<Watched>,
    /// Tag ownership and who reads what, over every GardenArtifact of the cluster.
    pub index: Arc<SharedIndex>,
    /// The Secrets and ConfigMaps the controller watches for its objects' sake: inputs are
    /// read here, not fetched each round.
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    /// The GardenMirrors, for the tags they wrote (mirror_claims.rs).
    pub mirrors: MirrorCache,
    /// Engines by Secret, valid for one resourceVersion of it.
    engines: Mutex<HashMap<SecretKey, (ResourceVersion, Arc<Engine>)>>,
    /// Backoff after failed rounds, by object.
    pub retries: Retries,
    /// Where each namespace's objects may write (the operator's `--namespace-policy`).
    pub policy: NamespacePolicy,
    /// The objects this controller reconciles; the others it only watches (shard.rs).
    pub shard: Shard,
}

/// Whose credentials a round speaks to the registry with, named as messages may name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Secret {
        namespace: String,
        name: String,
        resource_version: Option<String>,
    },
}

impl Credentials {
    /// The Secret's resourceVersion; `None` for anonymous access.
    pub fn version(&self) -> Option<String> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Secret {
                resource_version, ..
            } => resource_version.clone(),
        }
    }
}

impl std::fmt::Display for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("anonymous"),
            Credentials::Secret {
                namespace, name, ..
            } => write!(f, "Secret {namespace}/{name}"),
        }
    }
}

/// An input of the spec that cannot be read. Messages name the field and the object, never a
/// Secret's content.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A referenced GardenArtifact has not converged yet; its status change wakes us.
    #[error("{field}: GardenArtifact {namespace}/{name} has no digest yet")]
    NotReady {
        field: String,
        namespace: String,
        name: String,
    },
    #[error("{field}: {kind} {namespace}/{name} does not exist")]
    Missing {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{field}: {detail}")]
    Unusable { field: String, detail: String },
    /// The controller's watch of Secrets or ConfigMaps has not listed them all yet (just
    /// started, or its watch keeps failing): retried, never taken for a missing object.
    #[error("{field}: {kind} {namespace}/{name}: the controller's cache of them is not filled yet")]
    Uncached {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
}

impl InputError {
    /// A cache filling or a dependency converging may pass; a missing or malformed object
    /// needs someone to act.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            InputError::Uncached { .. } | InputError::NotReady { .. }
        )
    }
}

/// How long a round waits for a cache still listing before it is retried later.
const CACHE_FILL_WAIT: Duration = Duration::from_secs(5);

const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";

/// The watch caches a round reads from: the objects, and the Secrets and ConfigMaps they use.
pub struct Caches {
    pub objects: Store<Watched>,
    pub index: Arc<SharedIndex>,
    pub secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
    pub mirrors: MirrorCache,
}

impl Context {
    /// `registry` is the client the engine speaks through; objects with credentials get a copy
    /// of it with theirs.
    pub fn new(
        client: kube::Client,
        registry: Arc<RegistryClient>,
        engine: Arc<Engine>,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        caches: Caches,
    ) -> Self {
        let Caches {
            objects: store,
            index,
            secrets,
            config_maps,
            mirrors,
        } = caches;
        Self {
            recorder: Recorders::new(client.clone(), reporter),
            client,
            registry,
            engine,
            metrics,
            store,
            index,
            secrets,
            config_maps,
            mirrors,
            engines: Mutex::default(),
            retries: Retries::default(),
            policy: NamespacePolicy::default(),
            shard: Shard::default(),
        }
    }

    pub fn with_policy(self, policy: NamespacePolicy) -> Self {
        Self { policy, ..self }
    }

    /// Reconciles only the objects of `shard`.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// The engine speaking with the object's registry credentials, and whose they are.
    pub async fn engine_for(
        &self,
        namespace: &str,
        object: &GardenArtifact,
    ) -> Result<(Arc<Engine>, Credentials), InputError> {
        let Some(credentials) = &object.spec.credentials else {
            return Ok((Arc::clone(&self.engine), Credentials::Anonymous));
        };
        let name = &credentials.secret_ref.name;
        let (engine, mut used) = self
            .engine_with_secrets(namespace, &[("spec.credentials.secretRef", name)])
            .await?;
        Ok((engine, used.pop().unwrap_or(Credentials::Anonymous)))
    }

    /// The engine speaking with the credentials of these Secrets of `namespace` (each named
    /// with the field that names it); for a registry two of them know, the first answers.
    pub async fn engine_with_secrets(
        &self,
        namespace: &str,
        secrets: &[(&str, &str)],
    ) -> Result<(Arc<Engine>, Vec<Credentials>), InputError> {
        if secrets.is_empty() {
            return Ok((Arc::clone(&self.engine), Vec::new()));
        }
        let mut used = Vec::new();
        let mut read = Vec::new();
        for (field, name) in secrets {
            let secret = self.get_secret(namespace, name, field).await?;
            used.push(Credentials::Secret {
                namespace: namespace.to_string(),
                name: name.to_string(),
                resource_version: secret.metadata.resource_version.clone(),
            });
            read.push((field, name, secret));
        }
        let key = (
            namespace.to_string(),
            secrets
                .iter()
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let version = read
            .iter()
            .map(|(_, _, s)| s.metadata.resource_version.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        if let Some((cached_version, engine)) = self.engines.lock().expect("not poisoned").get(&key)
            && *cached_version == version
        {
            return Ok((Arc::clone(engine), used));
        }
        let mut merged = DockerConfig::default();
        for (field, name, secret) in &read {
            merged = merged.followed_by(docker_config(namespace, name, field, secret)?);
        }
        let registry = Arc::new(self.registry.with_credentials(Arc::new(merged)));
        let engine = Arc::new(self.engine.with_registry(registry));
        self.engines
            .lock()
            .expect("not poisoned")
            .insert(key, (version, Arc::clone(&engine)));
        Ok((engine, used))
    }

    /// The resourceVersion of the object's credentials Secret as it is now; `None` when it
    /// has none, or it cannot be read.
    pub async fn credentials_version(
        &self,
        namespace: &str,
        object: &GardenArtifact,
    ) -> Option<String> {
        let name = &object.spec.credentials.as_ref()?.secret_ref.name;
        let secret = self
            .get_secret(namespace, name, "spec.credentials.secretRef")
            .await
            .ok()?;
        secret.metadata.resource_version.clone()
    }

    /// The values of the object's ConfigMap and Secret key sources, from its own namespace.
    pub async fn inputs_for(
        &self,
        namespace: &str,
        object: &GardenArtifact,
    ) -> Result<Inputs, InputError> {
        let mut inputs = Inputs::default();
        for (i, file) in object.spec.source.files.iter().flatten().enumerate() {
            if let Some(key) = &file.config_map_key_ref {
                let field = format!("spec.source.files[{i}].configMapKeyRef");
                let map = self
                    .cached(&self.config_maps, "ConfigMap", namespace, &key.name, &field)
                    .await?;
                let value = map
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&key.key))
                    .map(|s| bytes::Bytes::from(s.clone().into_bytes()))
                    .or_else(|| {
                        map.binary_data
                            .as_ref()
                            .and_then(|d| d.get(&key.key))
                            .map(|b| bytes::Bytes::from(b.0.clone()))
                    })
                    .ok_or_else(|| InputError::Unusable {
                        field: field.clone(),
                        detail: format!(
                            "ConfigMap {namespace}/{} has no key {:?}",
                            key.name, key.key
                        ),
                    })?;
                inputs.config_map_keys.insert(intent_key(key), value);
            }
            if let Some(key) = &file.secret_key_ref {
                let field = format!("spec.source.files[{i}].secretKeyRef");
                let secret = self.get_secret(namespace, &key.name, &field).await?;
                let value = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&key.key))
                    .map(|b| bytes::Bytes::from(b.0.clone()))
                    .ok_or_else(|| InputError::Unusable {
                        field: field.clone(),
                        detail: format!("Secret {namespace}/{} has no key {:?}", key.name, key.key),
                    })?;
                inputs.secret_keys.insert(intent_key(key), value);
            }
        }
        Ok(inputs)
    }

    /// Where each `artifactRef` of the spec points: the named object's repository at the digest
    /// its status reports.
    pub fn artifacts_for(
        &self,
        namespace: &str,
        object: &GardenArtifact,
    ) -> Result<BTreeMap<String, ImageReference>, InputError> {
        let spec = &object.spec;
        let named = spec
            .subject
            .iter()
            .filter_map(|s| {
                s.artifact_ref
                    .as_ref()
                    .map(|r| ("spec.subject".to_string(), r.name.clone()))
            })
            .chain(
                spec.source
                    .index
                    .iter()
                    .flat_map(|i| i.manifests.iter().enumerate())
                    .filter_map(|(i, e)| {
                        e.artifact_ref
                            .as_ref()
                            .map(|r| (format!("spec.source.index.manifests[{i}]"), r.name.clone()))
                    }),
            );
        let mut artifacts = BTreeMap::new();
        for (field, name) in named {
            let watched = self
                .store
                .get(&ObjectRef::new(&name).within(namespace))
                .ok_or_else(|| InputError::Missing {
                    field: format!("{field}.artifactRef"),
                    kind: "GardenArtifact",
                    namespace: namespace.into(),
                    name: name.clone(),
                })?;
            let target = match &watched.0 {
                Ok(target) => target,
                Err(invalid) => {
                    return Err(InputError::Unusable {
                        field: format!("{field}.artifactRef"),
                        detail: format!(
                            "GardenArtifact {namespace}/{name} cannot be read: {}",
                            invalid.error
                        ),
                    });
                }
            };
            let digest = target
                .status
                .as_ref()
                .and_then(|s| s.digest.clone())
                .filter(|_| {
                    target
                        .status
                        .as_ref()
                        .is_some_and(|s| s.observed_generation == target.metadata.generation)
                })
                .ok_or_else(|| InputError::NotReady {
                    field: format!("{field}.artifactRef"),
                    namespace: namespace.into(),
                    name: name.clone(),
                })?;
            let repository = Repository::parse(&target.spec.repository).map_err(|detail| {
                InputError::Unusable {
                    field: format!("{field}.artifactRef"),
                    detail,
                }
            })?;
            let digest = Digest::parse(&digest).map_err(|detail| InputError::Unusable {
                field: format!("{field}.artifactRef"),
                detail,
            })?;
            artifacts.insert(name, repository.with_digest(&digest));
        }
        Ok(artifacts)
    }

    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
        field: &str,
    ) -> Result<Arc<Secret>, InputError> {
        self.cached(&self.secrets, "Secret", namespace, name, field)
            .await
    }

    /// `namespace/name` from the watch cache `store`, once it has listed everything.
    async fn cached<K>(
        &self,
        store: &Store<K>,
        kind: &'static str,
        namespace: &str,
        name: &str,
        field: &str,
    ) -> Result<Arc<K>, InputError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        // Right after a start the cache may still be listing. A writer that is gone (the
        // controller stopping) leaves the cache as it is.
        let filled = tokio::time::timeout(CACHE_FILL_WAIT, store.wait_until_ready())
            .await
            .is_ok();
        if !filled {
            return Err(InputError::Uncached {
                field: field.into(),
                kind,
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        store
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or_else(|| InputError::Missing {
                field: field.into(),
                kind,
                namespace: namespace.into(),
                name: name.into(),
            })
    }
}

/// The registry credentials of a `kubernetes.io/dockerconfigjson` Secret.
fn docker_config(
    namespace: &str,
    name: &str,
    field: &str,
    secret: &Secret,
) -> Result<DockerConfig, InputError> {
    if secret.type_.as_deref() != Some(DOCKER_CONFIG_JSON) {
        return Err(InputError::Unusable {
            field: field.into(),
            detail: format!(
                "Secret {namespace}/{name} has type {:?}, expected {DOCKER_CONFIG_JSON}",
                secret.type_.clone().unwrap_or_default()
            ),
        });
    }
    let json = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| InputError::Unusable {
            field: field.into(),
            detail: format!("Secret {namespace}/{name} has no .dockerconfigjson key"),
        })?;
    DockerConfig::parse(&format!("Secret {namespace}/{name}"), &json.0).map_err(|detail| {
        InputError::Unusable {
            field: field.into(),
            detail,
        }
    })
}

/// The engine's name for a key that a spec's file reads.
fn intent_key(key: &crate::api::KeyRef) -> crate::intent::KeyRef {
    crate::intent::KeyRef {
        name: key.name.clone(),
        key: key.key.clone(),
    }
}
