//! Leader election on a `coordination.k8s.io/v1` Lease, so of two replicas only one writes to
//! registries. The holder renews every few seconds; another replica takes over only after the
//! lease has gone unrenewed for its whole duration, or at once when the holder, stopping
//! gracefully, released it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// A holder that could not renew for this long stops writing. Shorter than the lease's
    /// duration, so it has stopped before any other replica may take over (client-go's
    /// renewDeadline: 10 s of 15).
    renew_deadline: Duration,
    renew_every: Duration,
}

/// Pure: may `identity` take or keep this lease at `now`?
pub fn may_hold(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec
                .renew_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            now.as_second() - renewed.as_second() > duration
        }
    }
}

/// Pure: the lease as a holder leaves it on release (as client-go does): no holder, so any
/// replica may take it at once; its transitions stay counted.
pub fn released(spec: LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..spec
    }
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(5),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "leader election"),
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews the lease until it is lost, or not renewed within the renew deadline; returns
    /// then (the caller stops writing). A renewal counts from when it was sent, and one that
    /// hangs is given up at the deadline, so a hung API call cannot keep a replica writing
    /// after another may have taken the lease.
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            let sent = tokio::time::Instant::now();
            let left = self.renew_deadline.saturating_sub(last_renewal.elapsed());
            match tokio::time::timeout(left, self.try_hold()).await {
                Ok(Ok(true)) => last_renewal = sent,
                Ok(Ok(false)) => {
                    tracing::error!(lease = %self.name, "another replica holds the lease now");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "lease renewal did not answer in time")
                }
            }
            if last_renewal.elapsed() >= self.renew_deadline {
                tracing::error!(lease = %self.name, "lease not renewed within the renew deadline; stepping down");
                return;
            }
        }
    }

    /// Gives the lease up if this replica still holds it, so a standby takes over at its next
    /// try instead of after the lease's whole duration. Only for when nothing writes any more.
    /// Best effort: should it fail, the lease expires as it would have.
    pub async fn release(&self) {
        match self.try_release().await {
            Ok(true) => {
                tracing::info!(lease = %self.name, identity = %self.identity, "released the leader lease")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "releasing the leader lease failed; it expires unrenewed")
            }
        }
    }

    /// True when it released the lease; false when it was not this replica's (any more).
    /// The replace carries the resourceVersion read, so a lease changed in between is a 409
    /// and left alone.
    async fn try_release(&self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let free = Lease {
            metadata: lease.metadata,
            spec: Some(released(spec, Timestamp::now())),
        };
        match self
            .api
            .replace(&self.name, &PostParams::default(), &free)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One round: create, renew or take over the lease if allowed. Conflicts (another replica
    /// wrote first) are a plain "no".
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let spec_for = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let outcome = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec_for(0, None)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
            Some(lease) if may_hold(lease.spec.as_ref(), &self.identity, now) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
                let acquired = if ours {
                    spec.acquire_time.clone()
                } else {
                    None
                };
                let renewed = Lease {
                    metadata: lease.metadata.clone(),
                    spec: Some(spec_for(transitions, acquired)),
                };
                self.api
                    .replace(&self.name, &PostParams::default(), &renewed)
                    .await
                    .map(|_| true)
            }
            Some(_) => Ok(false),
        };
        match outcome {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake_api::{self, FakeApi};

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_replica_is_respected() {
        let now = Timestamp::from_second(1000).unwrap();
        assert!(!may_hold(Some(&spec("b", 995)), "a", now));
        assert!(may_hold(Some(&spec("a", 995)), "a", now));
        assert!(may_hold(Some(&spec("b", 980)), "a", now), "expired");
        assert!(may_hold(None, "a", now));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let now = Timestamp::from_second(1000).unwrap();
        let held = LeaseSpec {
            lease_transitions: Some(3),
            ..spec("a", 999)
        };
        let free = released(held, now);
        assert!(may_hold(Some(&free), "b", now), "b need not wait");
        assert_eq!(free.holder_identity, None);
        assert_eq!(free.lease_transitions, Some(3));
    }

    fn lease(holder: &str) -> String {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": "l", "namespace": "ns", "resourceVersion": "42" },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "renewTime": "2030-01-01T00:00:00.000000Z",
                "leaseTransitions": 2,
            },
        })
        .to_string()
    }

    /// A holder whose renewals fail steps down at the renew deadline, before the lease could
    /// expire for the others.
    #[tokio::test]
    async fn a_holder_that_cannot_renew_steps_down_at_the_deadline() {
        let api = FakeApi::start(|_| fake_api::status(500, "InternalError", "etcd is down")).await;
        let elector = LeaderElector {
            renew_every: Duration::from_millis(20),
            renew_deadline: Duration::from_millis(200),
            lease_duration: Duration::from_secs(15),
            ..LeaderElector::new(api.client.clone(), "ns", "l", "a")
        };
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), elector.keep())
            .await
            .expect("keep returns");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(api.requests().len() >= 2, "it kept trying until then");
    }

    /// Release writes only a lease this replica holds, with the resourceVersion it read.
    #[tokio::test]
    async fn release_frees_only_our_own_lease() {
        for (holder, writes) in [("a", true), ("b", false)] {
            let read = lease(holder);
            let api = FakeApi::start(move |request| match request.method.as_str() {
                "GET" => (200, read.clone()),
                "PUT" => (200, request.body.clone()),
                _ => fake_api::status(405, "MethodNotAllowed", "no"),
            })
            .await;
            LeaderElector::new(api.client.clone(), "ns", "l", "a")
                .release()
                .await;
            let puts: Vec<_> = api
                .requests()
                .into_iter()
                .filter(|r| r.method == "PUT")
                .collect();
            assert_eq!(puts.len(), usize::from(writes), "holder {holder}");
            if let Some(put) = puts.first() {
                assert!(
                    put.path.contains("/namespaces/ns/leases/l?"),
                    "{}",
                    put.path
                );
                let written: Lease = serde_json::from_str(&put.body).unwrap();
                assert_eq!(written.metadata.resource_version.as_deref(), Some("42"));
                let spec = written.spec.unwrap();
                assert_eq!(spec.holder_identity, None);
                assert_eq!(spec.lease_transitions, Some(2));
            }
        }
    }
}
