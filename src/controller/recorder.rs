//! Where events go. kube's `Recorder` keeps each event it published for 6 minutes, to fold a
//! repeat into a series, and on every publish scans all it keeps: after a burst of 10,000 new
//! objects (a `Pushed` each) it held 10,000 events, about 2 KiB apiece, and each publish took
//! longer than the one before. An event that reports a change the engine made (a push, a tag
//! set, a drift repaired) is news every time: it is created as it is and nothing is kept of
//! it. A Warning (a failure) does repeat, at every retry: those go through the recorder, so
//! repeats count in one event's series, and it is renewed every few minutes so that what it
//! holds goes even when nothing is published any more; a repeat of a Warning from before the
//! renewal starts a new series instead of counting in the old one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

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

    /// Publishes `event` about `regarding`: a Warning through the recorder, which folds its
    /// repeats; anything else created on its own, remembered nowhere.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        match event.type_ {
            EventType::Warning => self.current().publish(event, regarding).await,
            EventType::Normal => {
                let created = news(&self.reporter, event, regarding, Timestamp::now());
                let namespace = regarding.namespace.as_deref().unwrap_or("default");
                Api::<KubeEvent>::namespaced(self.client.clone(), namespace)
                    .create(&PostParams::default(), &created)
                    .await
                    .map(drop)
            }
        }
    }

    /// The recorder to publish with: a fresh one once the current one is old.
    fn current(&self) -> Recorder {
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

/// The Event as kube's recorder would create it the first time (same name scheme, reporting
/// controller and instance), so both kinds read alike in `kubectl events`.
fn news(
    reporter: &Reporter,
    event: &Event,
    regarding: &ObjectReference,
    at: Timestamp,
) -> KubeEvent {
    let type_ = match event.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    KubeEvent {
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or(&reporter.controller),
                at.as_nanosecond()
            )),
            ..ObjectMeta::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        type_: Some(type_.into()),
        event_time: Some(MicroTime(at)),
        regarding: Some(regarding.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..KubeEvent::default()
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

    #[test]
    fn news_reads_like_the_recorders_first_event() {
        let regarding = ObjectReference {
            api_version: Some("oci.gardenlinux.io/v1alpha1".into()),
            kind: Some("GardenArtifact".into()),
            namespace: Some("ns".into()),
            name: Some("a".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        };
        let pushed = Event {
            type_: EventType::Normal,
            reason: "Pushed".into(),
            note: Some("pushed sha256:1 to r".into()),
            action: "Push".into(),
            secondary: None,
        };
        let at = Timestamp::from_nanosecond(0x1234).expect("a time");
        let reporter = Reporter::from("garden-artifacts");
        let event = news(&reporter, &pushed, &regarding, at);
        assert_eq!(event.metadata.name.as_deref(), Some("a.1234"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(event.regarding.as_ref(), Some(&regarding));
        assert_eq!(
            (
                event.type_.as_deref(),
                event.reason.as_deref(),
                event.action.as_deref()
            ),
            (Some("Normal"), Some("Pushed"), Some("Push"))
        );
        assert_eq!(event.note, pushed.note);
        assert_eq!(event.event_time, Some(MicroTime(at)));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("garden-artifacts")
        );
        assert_eq!(event.reporting_instance, reporter.instance);
        assert_eq!(event.series, None);
    }

    #[tokio::test]
    async fn news_is_created_and_nothing_kept_while_a_warning_goes_to_the_recorder() {
        let api = FakeApi::start(|_| {
            let event =
                r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"a.1"}}"#;
            (201, event.into())
        })
        .await;
        let recorders = Recorders::new(api.client.clone(), Reporter::from("garden-artifacts"));
        let regarding = ObjectReference {
            namespace: Some("ns".into()),
            name: Some("a".into()),
            ..ObjectReference::default()
        };
        let event = |type_| Event {
            type_,
            reason: "R".into(),
            note: Some("n".into()),
            action: "A".into(),
            secondary: None,
        };
        for _ in 0..2 {
            recorders
                .publish(&event(EventType::Normal), &regarding)
                .await
                .expect("created");
        }
        let requests = api.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests.iter().all(|r| r.method == "POST"), "{requests:?}");
        // The recorder folds a repeated Warning: the second is a PATCH of the first.
        for _ in 0..2 {
            recorders
                .publish(&event(EventType::Warning), &regarding)
                .await
                .expect("published");
        }
        let methods: Vec<String> = api.requests().iter().map(|r| r.method.clone()).collect();
        assert_eq!(methods, ["POST", "POST", "POST", "PATCH"]);
    }
}
