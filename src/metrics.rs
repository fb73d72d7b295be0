//! Prometheus metrics in the text exposition format. Few enough series that a small registry
//! of our own beats a dependency: counters and one histogram, rendered on scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::registry::RequestStats;

const DURATION_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    status_writes: AtomicU64,
    durations: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// One reconciliation ended with `result` (`success`, `error`, `stalled`).
    pub fn reconciled(&self, result: &'static str, took: Duration) {
        *self
            .reconciles
            .lock()
            .expect("not poisoned")
            .entry(result)
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        let mut h = self.durations.lock().expect("not poisoned");
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn status_written(&self) {
        self.status_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, registry counters included.
    pub fn render(&self, registry: &RequestStats) -> String {
        let mut out = String::new();
        let reconciles = self.reconciles.lock().expect("not poisoned").clone();
        out.push_str("# HELP garden_artifacts_reconciles_total Reconciliations by result.\n");
        out.push_str("# TYPE garden_artifacts_reconciles_total counter\n");
        for result in ["success", "error", "stalled"] {
            let n = reconciles.get(result).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "garden_artifacts_reconciles_total{{result=\"{result}\"}} {n}"
            );
        }
        let failures = reconciles.get("error").copied().unwrap_or(0)
            + reconciles.get("stalled").copied().unwrap_or(0);
        out.push_str("# HELP garden_artifacts_reconcile_failures_total Reconciliations that did not converge.\n");
        out.push_str("# TYPE garden_artifacts_reconcile_failures_total counter\n");
        let _ = writeln!(out, "garden_artifacts_reconcile_failures_total {failures}");

        let h = self.durations.lock().expect("not poisoned");
        out.push_str(
            "# HELP garden_artifacts_reconcile_duration_seconds Time of one reconciliation.\n",
        );
        out.push_str("# TYPE garden_artifacts_reconcile_duration_seconds histogram\n");
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "garden_artifacts_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "garden_artifacts_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "garden_artifacts_reconcile_duration_seconds_sum {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "garden_artifacts_reconcile_duration_seconds_count {}",
            h.count
        );
        drop(h);

        out.push_str(
            "# HELP garden_artifacts_status_writes_total Status patches sent to the API server.\n",
        );
        out.push_str("# TYPE garden_artifacts_status_writes_total counter\n");
        let _ = writeln!(
            out,
            "garden_artifacts_status_writes_total {}",
            self.status_writes.load(Ordering::Relaxed)
        );

        out.push_str("# HELP garden_artifacts_registry_requests_total Registry requests by method and status (0: no answer).\n");
        out.push_str("# TYPE garden_artifacts_registry_requests_total counter\n");
        for ((method, status), n) in registry.request_counts() {
            let _ = writeln!(
                out,
                "garden_artifacts_registry_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP garden_artifacts_registry_bytes_pushed_total Blob bytes uploaded to registries.\n");
        out.push_str("# TYPE garden_artifacts_registry_bytes_pushed_total counter\n");
        let _ = writeln!(
            out,
            "garden_artifacts_registry_bytes_pushed_total {}",
            registry.bytes_uploaded()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_buckets() {
        let m = Metrics::default();
        m.reconciled("success", Duration::from_millis(30));
        m.reconciled("error", Duration::from_secs(3));
        m.status_written();
        let text = m.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"success\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total 1"));
        assert!(text.contains("garden_artifacts_reconcile_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("garden_artifacts_status_writes_total 1"));
    }

    #[test]
    fn stalled_rounds_are_failures() {
        let m = Metrics::default();
        m.reconciled("success", Duration::from_millis(30));
        m.reconciled("stalled", Duration::from_millis(30));
        m.reconciled("stalled", Duration::from_millis(30));
        m.reconciled("error", Duration::from_millis(30));
        let text = m.render(&RequestStats::default());
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"stalled\"} 2"));
        assert!(text.contains("garden_artifacts_reconciles_total{result=\"success\"} 1"));
        assert!(text.contains("garden_artifacts_reconcile_failures_total 3"));
    }
}
