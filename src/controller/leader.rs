//! Leader election on a `coordination.k8s.io/v1` Lease, so of two replicas only one writes to
//! registries. The holder renews every few seconds; another replica takes over only after the
//! lease has gone unrenewed for its whole duration.

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

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
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

    /// Renews the lease until it is lost; returns then (the caller stops writing).
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_hold().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another replica holds the lease now");
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "lease renewal failed");
                    if last_renewal.elapsed() >= self.lease_duration {
                        tracing::error!(lease = %self.name, "lease expired without renewal");
                        return;
                    }
                }
            }
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
}
