//! The event recorder, renewed every few minutes. kube's `Recorder` keeps each event it
//! published for 6 minutes, to fold a repeat into a series, and lets them go only when it
//! publishes again: after a burst (10,000 new objects, a `Pushed` each) a
//! controller that then only resyncs, publishing nothing, would hold them all for good. A fresh
//! recorder after that time holds only what came since; a repeat of an event from before the
//! change starts a new series instead of counting in the old one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::events::{Recorder, Reporter};

/// kube's own time to keep a published event (`events::CACHE_TTL`).
const RENEW_AFTER: Duration = Duration::from_secs(6 * 60);

pub struct Recorders {
    client: kube::Client,
    reporter: Reporter,
    current: Mutex<(Instant, Recorder)>,
}

impl Recorders {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        let first = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            reporter,
            current: Mutex::new((Instant::now(), first)),
        }
    }

    /// The recorder to publish with: a fresh one once the current one is old.
    pub fn current(&self) -> Recorder {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Recorder {
        let mut current = self.current.lock().expect("not poisoned");
        if now.duration_since(current.0) >= RENEW_AFTER {
            *current = (
                now,
                Recorder::new(self.client.clone(), self.reporter.clone()),
            );
        }
        current.1.clone()
    }

    /// Lets an old recorder, and the events it holds, go even when nothing is published.
    pub fn renew_if_old(&self) {
        drop(self.current());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake_api::FakeApi;

    #[tokio::test]
    async fn an_old_recorder_is_replaced_and_a_young_one_kept() {
        let api = FakeApi::start(|_| (200, "{}".into())).await;
        let recorders = Recorders::new(api.client.clone(), Reporter::from("garden-artifacts"));
        let born = || recorders.current.lock().expect("not poisoned").0;
        let start = born();
        recorders.current_at(start + Duration::from_secs(60));
        assert_eq!(born(), start, "a recorder younger than 6 minutes is kept");
        recorders.current_at(start + RENEW_AFTER);
        assert_eq!(born(), start + RENEW_AFTER, "an older one is replaced");
    }
}
