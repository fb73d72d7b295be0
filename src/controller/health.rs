//! Whether the controller can list and watch its objects, for `/readyz`, and its watches' errors
//! for the metrics. Ready once the watch of GardenArtifacts has listed them all; not ready from a
//! watch error on, until that watch delivers again or a list of the objects succeeds (a watch
//! re-established over a quiet cluster may have nothing to deliver for minutes).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use super::watched::Watched;
use super::watches;
use crate::http::{Probes, Readiness};
use crate::metrics::Metrics;

/// The name of the GardenArtifact watch in `garden_artifacts_watch_errors_total`.
pub const ARTIFACTS_WATCH: &str = "gardenartifacts";

/// How often a failing controller checks whether it can list its objects again.
const RECOVERY_CHECK_EVERY: Duration = Duration::from_secs(2);

pub struct WatchHealth {
    probes: Arc<Probes>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The first list has completed.
    listed: bool,
    /// The last word of the watch was an error, and nothing has succeeded since.
    failing: bool,
    /// Errors so far: a recovery list that overlapped a newer error proves nothing.
    errors: u64,
    /// The objects of the list under way (`namespace/name`): once complete, objects deleted
    /// while the watch was down leave the gauge of objects by condition.
    listing: HashSet<String>,
}

impl State {
    fn readiness(&self) -> Readiness {
        if self.failing {
            Readiness::WatchFailing
        } else if self.listed {
            Readiness::Ready
        } else {
            Readiness::Starting
        }
    }
}

impl WatchHealth {
    /// Starting: not ready until the first list completes.
    pub fn new(probes: Arc<Probes>, metrics: Arc<Metrics>) -> Self {
        probes.readiness.set(Readiness::Starting);
        Self {
            probes,
            metrics,
            state: Mutex::default(),
        }
    }

    /// One item of the GardenArtifact watch. A deleted object also leaves the gauge of
    /// objects by condition.
    pub fn observe(&self, event: &Result<watcher::Event<Watched>, watcher::Error>) {
        let mut state = self.state.lock().expect("not poisoned");
        match event {
            // Sent before the list is asked for: no sign either way.
            Ok(watcher::Event::Init) => state.listing.clear(),
            Ok(watcher::Event::InitDone) => {
                state.listed = true;
                state.failing = false;
                self.metrics
                    .retain_objects(&std::mem::take(&mut state.listing));
            }
            Ok(watcher::Event::InitApply(object)) => {
                state.listing.insert(watches::key(object));
                state.failing = false;
            }
            Ok(watcher::Event::Delete(object)) => {
                self.metrics.object_condition(&watches::key(object), None);
                state.failing = false;
            }
            Ok(watcher::Event::Apply(_)) => state.failing = false,
            Err(error) => {
                state.failing = true;
                state.errors += 1;
                self.metrics.watch_failed(ARTIFACTS_WATCH);
                tracing::warn!(watch = ARTIFACTS_WATCH, %error, "watch failed; not ready until it recovers");
            }
        }
        self.probes.readiness.set(state.readiness());
    }

    /// While the watch is failing, lists one object now and then; a list that succeeds with no
    /// watch error meanwhile makes the controller ready again. Runs until dropped.
    pub async fn recover(&self, api: Api<Watched>) {
        loop {
            tokio::time::sleep(RECOVERY_CHECK_EVERY).await;
            let errors = {
                let state = self.state.lock().expect("not poisoned");
                if !state.failing {
                    continue;
                }
                state.errors
            };
            if api
                .list_metadata(&ListParams::default().limit(1))
                .await
                .is_ok()
            {
                let mut state = self.state.lock().expect("not poisoned");
                if state.errors == errors && state.failing {
                    state.failing = false;
                    tracing::info!(
                        watch = ARTIFACTS_WATCH,
                        "the API server answers again; ready"
                    );
                    self.probes.readiness.set(state.readiness());
                }
            }
        }
    }
}

/// Counts the errors of a watch other than the GardenArtifacts' (`name`, one of
/// `metrics::WATCHES`) as the stream passes them on.
pub fn count_errors<K>(
    metrics: Arc<Metrics>,
    name: &'static str,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if let Err(error) = event {
            metrics.watch_failed(name);
            tracing::warn!(watch = name, %error, "watch failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RequestStats;

    fn health() -> (WatchHealth, Arc<Probes>, Arc<Metrics>) {
        let probes = Arc::new(Probes {
            readiness: Default::default(),
            metrics: Box::new(|_| String::new()),
        });
        let metrics = Arc::new(Metrics::default());
        let health = WatchHealth::new(Arc::clone(&probes), Arc::clone(&metrics));
        (health, probes, metrics)
    }

    fn failed() -> Result<watcher::Event<Watched>, watcher::Error> {
        Err(watcher::Error::NoResourceVersion)
    }

    /// Starting until listed; a watch error makes it not ready (and is counted) until the
    /// watch delivers again: a relist starting is not a delivery.
    #[test]
    fn readiness_follows_the_watch() {
        let (health, probes, metrics) = health();
        assert_eq!(probes.readiness.get(), Readiness::Starting);
        health.observe(&Ok(watcher::Event::Init));
        assert_eq!(probes.readiness.get(), Readiness::Starting);
        health.observe(&Ok(watcher::Event::InitDone));
        assert_eq!(probes.readiness.get(), Readiness::Ready);

        health.observe(&failed());
        assert_eq!(probes.readiness.get(), Readiness::WatchFailing);
        health.observe(&failed());
        health.observe(&Ok(watcher::Event::Init));
        assert_eq!(probes.readiness.get(), Readiness::WatchFailing);
        health.observe(&Ok(watcher::Event::InitDone));
        assert_eq!(probes.readiness.get(), Readiness::Ready);

        let text = metrics.render(&RequestStats::default());
        assert!(
            text.contains("garden_artifacts_watch_errors_total{watch=\"gardenartifacts\"} 2"),
            "{text}"
        );
    }

    /// A relist forgets, in the gauge, the objects deleted while the watch was down.
    #[test]
    fn a_relist_drops_objects_deleted_unseen() {
        use crate::metrics::ObjectCondition;
        let (health, _, metrics) = health();
        let object = |name: &str| {
            let value = serde_json::json!({
                "apiVersion": "oci.gardenlinux.io/v1alpha1",
                "kind": "GardenArtifact",
                "metadata": { "name": name, "namespace": "ns" },
                "spec": { "repository": "registry.example.com/a", "tags": ["v1"],
                          "source": { "files": [{ "name": "a.txt", "content": "a" }] } },
            });
            serde_json::from_value::<Watched>(value).expect("a GardenArtifact")
        };
        metrics.object_condition("ns/kept", Some(ObjectCondition::Ready));
        metrics.object_condition("ns/gone", Some(ObjectCondition::Ready));
        health.observe(&failed());
        health.observe(&Ok(watcher::Event::Init));
        health.observe(&Ok(watcher::Event::InitApply(object("kept"))));
        health.observe(&Ok(watcher::Event::InitDone));
        let text = metrics.render(&RequestStats::default());
        assert!(
            text.contains("garden_artifacts_objects{condition=\"Ready\"} 1"),
            "{text}"
        );
    }

    /// An error before the first list is a failing watch, not a slow start.
    #[test]
    fn an_error_before_the_first_list_is_failing() {
        let (health, probes, _) = health();
        health.observe(&failed());
        assert_eq!(probes.readiness.get(), Readiness::WatchFailing);
        health.observe(&Ok(watcher::Event::InitDone));
        assert_eq!(probes.readiness.get(), Readiness::Ready);
    }
}
