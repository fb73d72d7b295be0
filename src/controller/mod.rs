//! `garden-artifacts controller`: the engine driven by the Kubernetes API. Kube lives here and
//! only here; the engine below knows nothing of it.

mod apply;
mod cleanup;
mod components;
mod context;
mod earlier;
mod events;
#[cfg(test)]
mod fake_api;
mod health;
mod heap;
pub mod index;
pub mod leader;
mod mirror_claims;
mod mirrors;
pub mod policy;
pub mod reconcile;
mod recorder;
mod resync;
mod retries;
pub mod shard;
pub mod status;
#[cfg(test)]
mod test_support;
mod triggers;
mod trim;
pub mod watched;
pub mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub use context::{Caches, Context};
use index::{ObjectKey, SharedIndex};
use shard::Shard;
use watched::Watched;

use crate::engine::Engine;
use crate::http::{self, Probes, Readiness};
use crate::metrics::Metrics;
use crate::registry::{ClientOptions, NoCredentials, Registry, RegistryClient};
use crate::sources::{UrlFetcher, UrlPolicy};

/// What the controller is told by whoever starts it (the command line builds it from flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    pub metrics_addr: SocketAddr,
    pub registry: ClientOptions,
    /// Where `url` file sources may be fetched from.
    pub url_policy: UrlPolicy,
    /// Objects reconciled at once.
    pub concurrency: u16,
    /// Blob transfers at once within one object.
    pub blob_concurrency: usize,
    /// `Some`: run only while holding this Lease.
    pub leader_election: Option<LeaderElection>,
    /// Where each namespace's objects may write.
    pub namespace_policy: policy::NamespacePolicy,
    /// The objects reconciled here; all are watched.
    pub shard: Shard,
}

/// The Lease that replicas share, and this replica's name in it.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// `None`: the client's own namespace (in a pod, its ServiceAccount's; else the
    /// kubeconfig context's, else `default`), where replicas started alike meet.
    pub lease_namespace: Option<String>,
    pub lease_name: String,
    pub identity: String,
}

/// The pause after an error of any of the controller's watches. kube applies one backoff to
/// all of them together and stops every watch while it waits, so its default (client-go's:
/// 0.8 s doubling to 30 s, up to twice that with jitter, reset only by a watch event or after
/// 2 min) grows with each error of any of the four watches: after an API server restart,
/// their connection errors and then each one's `410 Gone` (the new server's watch cache
/// starts at a later resourceVersion) left the controller deaf for a minute and more. Capped
/// at 5 s, it follows within seconds, at one request per watch every 5 s against a server
/// that is down.
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_FIRST: Duration = Duration::from_millis(500);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_BACKOFF_FIRST,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (wait * 2).min(WATCH_BACKOFF_MAX);
        Some(wait)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// SIGTERM (what the kubelet sends, and what a PID 1 would otherwise ignore) and SIGINT,
/// counted. The first stops the controller gracefully, whatever it is doing: waiting for the
/// leader lease, or reconciling (the reconciliations in flight finish first); the second stops
/// it at once. Listening starts before anything else, so no signal falls between two phases.
struct Signals(watch::Receiver<u32>);

impl Signals {
    fn listen() -> Result<Self, String> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("listening for {name}: {e}"))
        };
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
        let (received, counted) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = terminate.recv() => "SIGTERM",
                    Some(()) = interrupt.recv() => "SIGINT",
                    else => return,
                };
                received.send_modify(|n| *n += 1);
                if *received.borrow() == 1 {
                    tracing::info!(
                        signal = name,
                        "stopping: reconciliations in flight finish first; a second signal stops at once"
                    );
                } else {
                    tracing::info!(signal = name, "stopping at once");
                }
            }
        });
        Ok(Self(counted))
    }

    /// Resolves once `n` signals have arrived (never, should the listener be gone).
    fn received(&self, n: u32) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut counted = self.0.clone();
        async move {
            if counted.wait_for(|received| *received >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

pub async fn run(config: Config) -> Result<(), String> {
    let signals = Signals::listen()?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let registry = Arc::new(
        RegistryClient::new(config.registry, Arc::new(NoCredentials)).map_err(|e| e.to_string())?,
    );
    let engine = Arc::new(Engine::new(
        Arc::clone(&registry) as Arc<dyn Registry>,
        UrlFetcher::new(config.url_policy)?,
        config.blob_concurrency,
    ));
    let metrics = Arc::new(Metrics::default());

    let probes = Arc::new(Probes {
        readiness: Default::default(),
        metrics: {
            let (metrics, engine) = (Arc::clone(&metrics), Arc::clone(&engine));
            Box::new(move |exposition| metrics.render_as(exposition, engine.registry().stats()))
        },
    });
    let listener = http::bind(config.metrics_addr)
        .await
        .map_err(|e| format!("serving metrics on {}: {e}", config.metrics_addr))?;
    let server = tokio::spawn(http::serve(listener, Arc::clone(&probes)));
    heap::limit_arenas();
    let trimming = tokio::spawn(heap::trim_periodically());

    let elector = config.leader_election.as_ref().map(|lease| {
        leader::LeaderElector::new(
            client.clone(),
            lease
                .lease_namespace
                .as_deref()
                .unwrap_or(client.default_namespace()),
            &lease.lease_name,
            &lease.identity,
        )
    });
    if let Some(elector) = &elector {
        // A standby replica is healthy and ready; it just does not write. Once it leads, it
        // is ready as its watch is.
        probes.readiness.set(Readiness::Ready);
        tokio::select! {
            _ = elector.acquire() => {}
            _ = signals.received(1) => {
                // The round of `acquire` cut short may have taken the lease after all.
                elector.release().await;
                trimming.abort();
                server.abort();
                tracing::info!("stopped while waiting for the leader lease");
                return Ok(());
            }
        }
    }

    let (artifacts, secrets, config_maps): (Api<Watched>, Api<Secret>, Api<ConfigMap>) =
        match &config.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let health = Arc::new(health::WatchHealth::new(
        Arc::clone(&probes),
        Arc::clone(&metrics),
    ));
    let recovering = {
        let (health, api) = (Arc::clone(&health), artifacts.clone());
        tokio::spawn(async move { health.recover(api).await })
    };
    // The watches of Secrets and ConfigMaps trigger their readers and, cached, are where
    // rounds read them. Every cache keeps only what is read (trim.rs).
    let (secrets_cache, secrets_writer) = reflector::store();
    let (config_maps_cache, config_maps_writer) = reflector::store();
    let secrets = watcher(secrets, watcher::Config::default())
        .inspect(health::count_errors(Arc::clone(&metrics), "secrets"))
        .modify(trim::secret)
        .reflect(secrets_writer)
        .touched_objects();
    let config_maps = watcher(config_maps, watcher::Config::default())
        .inspect(health::count_errors(Arc::clone(&metrics), "configmaps"))
        .modify(trim::config_map)
        .reflect(config_maps_writer)
        .touched_objects();

    // One watch of every GardenArtifact, whatever the shard. /readyz follows its health; the
    // index takes each event first (tag ownership and readers are decided over the whole
    // cluster, status changes included) and names the objects it concerns; the cache keeps
    // every object, trimmed. Only this shard's objects trigger a round, and only on a change
    // that is not our own write coming back (triggers.rs); the index's triggers of another
    // shard's objects are left alone by `reconcile`.
    let index = Arc::new({
        let policy = config.namespace_policy.clone();
        SharedIndex::with_claim_filter(Box::new(move |object| {
            policy.admits_text(
                object.metadata.namespace.as_deref().unwrap_or_default(),
                &object.spec.repository,
            )
        }))
    });
    let (store, objects_writer) = reflector::store();
    let (concerned, index_triggers) = futures::channel::mpsc::unbounded::<ObjectRef<Watched>>();
    let (artifact_changed, artifact_changes) = futures::channel::mpsc::unbounded::<ObjectKey>();
    let (observed, feeding, shard) = (
        Arc::clone(&health),
        Arc::clone(&index),
        config.shard.clone(),
    );
    let objects = watcher(artifacts.clone(), watcher::Config::default())
        .inspect(move |event| observed.observe(event))
        .modify(trim::artifact)
        .inspect(move |event| {
            if let Ok(event) = event {
                for key in feeding.event(event.clone()) {
                    // The receiver lives as long as the controller.
                    let _ = concerned.unbounded_send(key.to_ref::<Watched>());
                }
            }
        })
        .reflect(objects_writer)
        // After the cache took the change: the components pinning this artefact read it there.
        .inspect(move |event| {
            if let Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) = event {
                // The receiver lives as long as the controller.
                let _ = artifact_changed.unbounded_send(ObjectKey::of(object));
            }
        })
        .applied_objects()
        .predicate_filter(triggers::fingerprint, Default::default())
        .try_filter(move |object| std::future::ready(shard.selects(object)));
    let controller = Controller::for_stream(objects, store.clone());
    // The GardenMirrors: their own controller's rounds, and the tags they wrote, which the
    // artefacts' rounds read (mirror_claims.rs).
    let (mirrors_cache, mirrors_writer) = reflector::store();
    let (mirrors_listed, mirrors_ready) = watch::channel(false);
    let mirror_api: Api<crate::api::GardenMirror> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mirror_objects = watcher(mirror_api, watcher::Config::default())
        .inspect(health::count_errors(Arc::clone(&metrics), "gardenmirrors"))
        .modify(trim::mirror)
        .reflect(mirrors_writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                let _ = mirrors_listed.send(true);
            }
        })
        .applied_objects()
        // A round starts on a change of the spec, never on its own status write coming back.
        .predicate_filter(predicates::generation, Default::default());
    let ctx = Arc::new(
        Context::new(
            client,
            registry,
            engine,
            Reporter::from("garden-artifacts"),
            metrics,
            Caches {
                objects: store.clone(),
                index,
                secrets: secrets_cache,
                config_maps: config_maps_cache,
                mirrors: mirror_claims::MirrorCache::new(mirrors_cache.clone(), mirrors_ready),
            },
        )
        .with_policy(config.namespace_policy)
        .with_shard(config.shard.clone()),
    );
    tracing::info!(shard = %ctx.shard, "reconciling");

    let mirrors = mirrors::run(
        mirror_objects,
        mirrors_cache,
        Arc::clone(&ctx),
        config.concurrency,
        signals.received(1),
    );
    let components = {
        let api: Api<crate::api::GardenComponent> = match &config.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        components::run(
            api,
            artifact_changes,
            Arc::clone(&ctx),
            config.concurrency,
            signals.received(1),
        )
    };
    let (by_secret, by_config_map) = (Arc::clone(&ctx), Arc::clone(&ctx));
    let running = controller
        .watches_stream(secrets, move |secret: Secret| {
            by_secret
                .index
                .read(|index| index.secret_readers(&ObjectKey::of(&secret)))
                .into_iter()
                .map(|key| key.to_ref::<Watched>())
        })
        .watches_stream(config_maps, move |map: ConfigMap| {
            by_config_map
                .index
                .read(|index| index.config_map_readers(&ObjectKey::of(&map)))
                .into_iter()
                .map(|key| key.to_ref::<Watched>())
        })
        .reconcile_on(index_triggers)
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .trigger_backoff(WatchBackoff::default())
        .graceful_shutdown_on(signals.received(1))
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile round"),
            }
        });
    // The controllers stop together: each ends once its rounds in flight are done.
    let running = futures::future::join3(running, mirrors, components);

    // `running` ends only after a graceful stop, once no reconciliation runs any more; a
    // second signal drops it at once, and with it (aborted) the reconciliations in flight.
    let forced = async {
        signals.received(2).await;
        tracing::warn!("stopped without waiting for the reconciliations in flight");
    };
    let outcome = match &elector {
        Some(elector) => tokio::select! {
            _ = running => {
                // Nothing writes any more: a standby may take over now rather than once the
                // lease has gone unrenewed for its whole duration. Not so after a forced stop,
                // whose aborted reconciliations may still have requests on the wire.
                elector.release().await;
                Ok(())
            }
            _ = forced => Ok(()),
            _ = elector.keep() => Err("lost the leader lease; stopping so that only the leader writes".to_string()),
        },
        None => tokio::select! {
            _ = running => Ok(()),
            _ = forced => Ok(()),
        },
    };
    recovering.abort();
    trimming.abort();
    server.abort();
    tracing::info!("controller stopped");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_backoff_doubles_to_five_seconds_and_resets() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u64> = backoff
            .by_ref()
            .take(6)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }
}
