//! The controller's Prometheus metrics, kept and encoded by `prometheus-client`. Every name
//! is registered without its `_total` suffix: the crate appends it to counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::registry::RequestStats;

const PREFIX: &str = "garden_artifacts";

const DURATION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The results a round can end with; each has a series from the start, so a rate over it is
/// defined before the first round of that result.
const ROUND_RESULTS: [&str; 3] = ["success", "error", "stalled"];

/// The classes a failure can have (`registry::ErrorClass::label()`, and the controller's own
/// `input`, `kube` and `policy`); each has a series from the start, as `ROUND_RESULTS`.
const FAILURE_CLASSES: [&str; 9] = [
    "transient",
    "conflict",
    "unauthorized",
    "forbidden",
    "not_found",
    "invalid",
    "input",
    "kube",
    "policy",
];

/// The watches of the controller, as `garden_artifacts_watch_errors_total` names them; each
/// has a series from the start.
pub const WATCHES: [&str; 3] = ["gardenartifacts", "secrets", "configmaps"];

/// Where an object stands, as its status conditions say (kstatus): converged, waiting for a
/// person, or being worked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectCondition {
    Ready,
    Stalled,
    Reconciling,
}

impl ObjectCondition {
    const ALL: [ObjectCondition; 3] = [
        ObjectCondition::Ready,
        ObjectCondition::Stalled,
        ObjectCondition::Reconciling,
    ];

    fn label(self) -> &'static str {
        match self {
            ObjectCondition::Ready => "Ready",
            ObjectCondition::Stalled => "Stalled",
            ObjectCondition::Reconciling => "Reconciling",
        }
    }
}

/// The two text formats a scraper may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0: counters typed under their family name, ends with `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for scrapers that do not speak OpenMetrics.
    PrometheusText,
}

impl Exposition {
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::PrometheusText => {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    watch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    condition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

/// The controller's own series. The registry client's counters live in [`RequestStats`] (the
/// registry layer knows nothing of Prometheus) and are read at each scrape.
pub struct Metrics {
    reconciles: Family<RoundLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Histogram,
    status_writes: Counter,
    watch_errors: Family<WatchLabels, Counter>,
    /// Objects by condition, kept as each object's status changes (not counted per scrape).
    objects: Family<ConditionLabels, Gauge>,
    /// Each object's condition as last counted in `objects`, by `namespace/name`.
    conditions: Mutex<HashMap<String, ObjectCondition>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<RoundLabels, Counter>::default();
        for result in ROUND_RESULTS {
            let _ = reconciles.get_or_create(&RoundLabels { result });
        }
        let failures = Family::<FailureLabels, Counter>::default();
        for class in FAILURE_CLASSES {
            let _ = failures.get_or_create(&FailureLabels { class });
        }
        let watch_errors = Family::<WatchLabels, Counter>::default();
        for watch in WATCHES {
            let _ = watch_errors.get_or_create(&WatchLabels { watch });
        }
        let objects = Family::<ConditionLabels, Gauge>::default();
        for condition in ObjectCondition::ALL {
            let _ = objects.get_or_create(&ConditionLabels {
                condition: condition.label(),
            });
        }
        Self {
            reconciles,
            failures,
            durations: Histogram::new(DURATION_BUCKETS),
            status_writes: Counter::default(),
            watch_errors,
            objects,
            conditions: Mutex::default(),
        }
    }
}

impl Metrics {
    /// One reconciliation ended with `result` (`success`, `error`, `stalled`).
    pub fn reconciled(&self, result: &'static str, took: Duration) {
        self.reconciles.get_or_create(&RoundLabels { result }).inc();
        self.durations.observe(took.as_secs_f64());
    }

    /// One reconciliation did not converge (it ended `error` or `stalled`), for a reason of
    /// `class`: a `registry::ErrorClass::label()`, or the controller's own (`input`, `kube`).
    pub fn reconcile_failed(&self, class: &'static str) {
        self.failures.get_or_create(&FailureLabels { class }).inc();
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// Only the objects `present` (`namespace/name`) are counted any more: a relist found the
    /// others gone (deleted while the watch was down, so no deletion was seen).
    pub fn retain_objects(&self, present: &std::collections::HashSet<String>) {
        let mut conditions = self.conditions.lock().expect("not poisoned");
        conditions.retain(|key, condition| {
            let keep = present.contains(key);
            if !keep {
                self.objects
                    .get_or_create(&ConditionLabels {
                        condition: condition.label(),
                    })
                    .dec();
            }
            keep
        });
    }

    /// One of the controller's watches (a name of [`WATCHES`]) failed: the API server did not
    /// answer, refused, or the watch broke.
    pub fn watch_failed(&self, watch: &'static str) {
        self.watch_errors
            .get_or_create(&WatchLabels { watch })
            .inc();
    }

    /// The object `key` (`namespace/name`) now stands at `condition`; `None`: it is gone (or
    /// in none of them), and no longer counted.
    pub fn object_condition(&self, key: &str, condition: Option<ObjectCondition>) {
        let mut conditions = self.conditions.lock().expect("not poisoned");
        let before = match condition {
            Some(condition) => conditions.insert(key.to_string(), condition),
            None => conditions.remove(key),
        };
        if before == condition {
            return;
        }
        let gauge = |condition: ObjectCondition| {
            self.objects.get_or_create(&ConditionLabels {
                condition: condition.label(),
            })
        };
        if let Some(before) = before {
            gauge(before).dec();
        }
        if let Some(now) = condition {
            gauge(now).inc();
        }
    }

    /// The OpenMetrics exposition, registry counters included.
    pub fn render(&self, registry: &RequestStats) -> String {
        self.render_as(Exposition::OpenMetrics, registry)
    }

    pub fn render_as(&self, exposition: Exposition, registry: &RequestStats) -> String {
        let scrape = self.scrape_registry(registry.request_counts(), registry.bytes_uploaded());
        encode(exposition, &scrape)
    }

    /// A registry of this scrape: the long-lived series (clones share their values) and a
    /// snapshot of the registry client's counters. The help texts get their final period from
    /// the crate.
    fn scrape_registry(
        &self,
        request_counts: BTreeMap<(String, u16), u64>,
        bytes_pushed: u64,
    ) -> Registry {
        let mut scrape = Registry::with_prefix(PREFIX);
        scrape.register(
            "reconciles",
            "Reconciliations by result",
            self.reconciles.clone(),
        );
        scrape.register(
            "reconcile_failures",
            "Reconciliations that did not converge, by the class of what stopped them",
            self.failures.clone(),
        );
        scrape.register(
            "reconcile_duration_seconds",
            "Time of one reconciliation",
            self.durations.clone(),
        );
        scrape.register(
            "status_writes",
            "Status patches sent to the API server",
            self.status_writes.clone(),
        );
        scrape.register(
            "watch_errors",
            "Errors of the controller's watches of the API server, by watch",
            self.watch_errors.clone(),
        );
        scrape.register(
            "objects",
            "GardenArtifacts by the condition of their status (Ready, Stalled, Reconciling)",
            self.objects.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        for ((method, status), n) in request_counts {
            requests
                .get_or_create(&RequestLabels { method, status })
                .inc_by(n);
        }
        scrape.register(
            "registry_requests",
            "Registry requests by method and status (0: no answer)",
            requests,
        );
        scrape.register(
            "registry_bytes_pushed",
            "Blob bytes uploaded to registries",
            ConstCounter::new(bytes_pushed),
        );
        scrape
    }
}

fn encode(exposition: Exposition, registry: &Registry) -> String {
    let mut out = String::new();
    let encoded = match exposition {
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
        Exposition::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        }
    };
    encoded.expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ErrorClass, NeedsPerson};

    /// One parsed exposition: `# TYPE` per family, and every sample by its name and labels.
    struct Parsed {
        types: BTreeMap<String, String>,
        samples: BTreeMap<String, f64>,
        ends_with_eof: bool,
    }

    /// Parses the text exposition line by line, failing on any line that is not a comment
    /// (`# HELP`, `# TYPE`, `# EOF`) or a `name{labels} value` sample whose name belongs to the
    /// family most recently typed.
    fn parse(text: &str) -> Parsed {
        let sample = regex::Regex::new(
            r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (\S+)$"#,
        )
        .expect("a valid pattern");
        let mut parsed = Parsed {
            types: BTreeMap::new(),
            samples: BTreeMap::new(),
            ends_with_eof: text.ends_with("# EOF\n"),
        };
        let mut family = String::new();
        for line in text.lines() {
            if let Some(typed) = line.strip_prefix("# TYPE ") {
                let (name, kind) = typed.split_once(' ').expect("# TYPE name kind");
                family = name.to_string();
                parsed.types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with("# HELP ") || line == "# EOF" {
            } else {
                let captures = sample
                    .captures(line)
                    .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
                let name = &captures[1];
                assert!(
                    name.starts_with(&family),
                    "{name} outside its family {family}"
                );
                let value: f64 = captures[4].parse().expect("a numeric value");
                let key = format!("{name}{}", captures.get(2).map_or("", |m| m.as_str()));
                parsed.samples.insert(key, value);
            }
        }
        parsed
    }

    #[test]
    fn renders_counters_and_buckets() {
        let m = Metrics::default();
        m.reconciled("success", Duration::from_millis(30));
        m.reconciled("error", Duration::from_secs(3));
        m.reconcile_failed("transient");
        m.status_written();
        let text = m.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"success\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total{class=\"transient\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_duration_seconds_bucket{le=\"5.0\"} 2"));
        assert!(text.contains("garden_artifacts_status_writes_total 1"));
    }

    /// The gauge follows each object's latest condition: a change moves it from one series to
    /// the other, a repeat changes nothing, a deleted object leaves.
    #[test]
    fn objects_are_counted_by_their_latest_condition() {
        let m = Metrics::default();
        let count = |m: &Metrics, condition: &str| {
            let text = m.render(&RequestStats::default());
            let series = format!("garden_artifacts_objects{{condition=\"{condition}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("{series} in\n{text}"))
                .parse::<i64>()
                .expect("an integer")
        };
        assert_eq!(count(&m, "Ready"), 0);
        m.object_condition("ns/a", Some(ObjectCondition::Reconciling));
        m.object_condition("ns/b", Some(ObjectCondition::Ready));
        m.object_condition("ns/a", Some(ObjectCondition::Ready));
        m.object_condition("ns/a", Some(ObjectCondition::Ready));
        m.object_condition("ns/c", Some(ObjectCondition::Stalled));
        assert_eq!(
            (
                count(&m, "Ready"),
                count(&m, "Stalled"),
                count(&m, "Reconciling")
            ),
            (2, 1, 0)
        );
        m.object_condition("ns/a", None);
        m.object_condition("ns/gone", None);
        m.object_condition("ns/c", Some(ObjectCondition::Reconciling));
        assert_eq!(
            (
                count(&m, "Ready"),
                count(&m, "Stalled"),
                count(&m, "Reconciling")
            ),
            (1, 0, 1)
        );
        m.retain_objects(&["ns/c".to_string()].into_iter().collect());
        assert_eq!(
            (
                count(&m, "Ready"),
                count(&m, "Stalled"),
                count(&m, "Reconciling")
            ),
            (0, 0, 1),
            "ns/b was deleted unseen"
        );
    }

    #[test]
    fn watch_errors_are_counted_by_watch_from_zero() {
        let m = Metrics::default();
        m.watch_failed("gardenartifacts");
        m.watch_failed("gardenartifacts");
        let text = m.render(&RequestStats::default());
        assert!(
            text.contains("garden_artifacts_watch_errors_total{watch=\"gardenartifacts\"} 2"),
            "{text}"
        );
        for watch in ["secrets", "configmaps"] {
            let series = format!("garden_artifacts_watch_errors_total{{watch=\"{watch}\"}} 0");
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }

    #[test]
    fn failures_are_counted_by_class() {
        let m = Metrics::default();
        m.reconciled("success", Duration::from_millis(30));
        m.reconciled("stalled", Duration::from_millis(30));
        m.reconcile_failed("invalid");
        m.reconciled("stalled", Duration::from_millis(30));
        m.reconcile_failed("invalid");
        m.reconciled("error", Duration::from_millis(30));
        m.reconcile_failed("unauthorized");
        let text = m.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"stalled\"} 2"));
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"success\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total{class=\"invalid\"} 2"));
        assert!(
            text.contains("garden_artifacts_reconcile_failures_total{class=\"unauthorized\"} 1")
        );
    }

    /// The names, types and label sets dashboards, alerts, the chart's ServiceMonitor, the
    /// e2e tests and bench/controller-scale.sh rely on.
    #[test]
    fn the_exposition_parses_as_openmetrics_with_the_expected_series() {
        let m = Metrics::default();
        m.reconciled("error", Duration::from_millis(700));
        m.reconcile_failed("not_found");
        m.status_written();
        let requests = BTreeMap::from([(("PUT".to_string(), 201), 3), (("GET".to_string(), 0), 1)]);
        let parsed = parse(&encode(
            Exposition::OpenMetrics,
            &m.scrape_registry(requests, 4096),
        ));

        assert!(parsed.ends_with_eof, "OpenMetrics ends with # EOF");
        let types: Vec<(&str, &str)> = parsed
            .types
            .iter()
            .map(|(name, kind)| (name.as_str(), kind.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("garden_artifacts_objects", "gauge"),
                ("garden_artifacts_reconcile_duration_seconds", "histogram"),
                ("garden_artifacts_reconcile_failures", "counter"),
                ("garden_artifacts_reconciles", "counter"),
                ("garden_artifacts_registry_bytes_pushed", "counter"),
                ("garden_artifacts_registry_requests", "counter"),
                ("garden_artifacts_status_writes", "counter"),
                ("garden_artifacts_watch_errors", "counter"),
            ]
        );
        let expected = [
            ("garden_artifacts_reconciles_total{result=\"success\"}", 0.0),
            ("garden_artifacts_reconciles_total{result=\"error\"}", 1.0),
            ("garden_artifacts_reconciles_total{result=\"stalled\"}", 0.0),
            (
                "garden_artifacts_reconcile_failures_total{class=\"not_found\"}",
                1.0,
            ),
            (
                "garden_artifacts_reconcile_failures_total{class=\"kube\"}",
                0.0,
            ),
            (
                "garden_artifacts_reconcile_duration_seconds_bucket{le=\"0.5\"}",
                0.0,
            ),
            (
                "garden_artifacts_reconcile_duration_seconds_bucket{le=\"1.0\"}",
                1.0,
            ),
            (
                "garden_artifacts_reconcile_duration_seconds_bucket{le=\"+Inf\"}",
                1.0,
            ),
            ("garden_artifacts_reconcile_duration_seconds_sum", 0.7),
            ("garden_artifacts_reconcile_duration_seconds_count", 1.0),
            ("garden_artifacts_status_writes_total", 1.0),
            (
                "garden_artifacts_registry_requests_total{method=\"PUT\",status=\"201\"}",
                3.0,
            ),
            (
                "garden_artifacts_registry_requests_total{method=\"GET\",status=\"0\"}",
                1.0,
            ),
            ("garden_artifacts_registry_bytes_pushed_total", 4096.0),
        ];
        for (series, value) in expected {
            assert_eq!(
                parsed.samples.get(series),
                Some(&value),
                "{series} in {:?}",
                parsed.samples.keys()
            );
        }
        let buckets = parsed
            .samples
            .keys()
            .filter(|k| k.starts_with("garden_artifacts_reconcile_duration_seconds_bucket"))
            .count();
        assert_eq!(buckets, DURATION_BUCKETS.len() + 1);
    }

    #[test]
    fn the_prometheus_text_format_types_counters_by_their_sample_name() {
        let m = Metrics::default();
        m.reconciled("success", Duration::from_millis(30));
        let text = m.render_as(Exposition::PrometheusText, &RequestStats::default());
        let parsed = parse(&text);
        assert!(!parsed.ends_with_eof, "{text}");
        assert_eq!(
            parsed
                .types
                .get("garden_artifacts_reconciles_total")
                .map(String::as_str),
            Some("counter"),
            "{text}"
        );
        assert_eq!(
            parsed
                .samples
                .get("garden_artifacts_reconciles_total{result=\"success\"}"),
            Some(&1.0)
        );
    }

    #[test]
    fn every_registry_error_class_has_a_series_from_the_start() {
        let every = [
            ErrorClass::Transient,
            ErrorClass::Conflict,
            ErrorClass::NeedsPerson(NeedsPerson::Unauthorized),
            ErrorClass::NeedsPerson(NeedsPerson::Forbidden),
            ErrorClass::NeedsPerson(NeedsPerson::NotFound),
            ErrorClass::NeedsPerson(NeedsPerson::Invalid),
        ];
        // A new class does not compile here until it is listed above.
        for class in every {
            match class {
                ErrorClass::Transient
                | ErrorClass::Conflict
                | ErrorClass::NeedsPerson(
                    NeedsPerson::Unauthorized
                    | NeedsPerson::Forbidden
                    | NeedsPerson::NotFound
                    | NeedsPerson::Invalid,
                ) => {}
            }
        }
        let text = Metrics::default().render(&RequestStats::default());
        for class in every {
            let series = format!(
                "garden_artifacts_reconcile_failures_total{{class=\"{}\"}} 0",
                class.label()
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }
}
