//! Which changes of an object trigger a round of it. The controller's own writes (the first
//! finalizer, the status) come back as watch events; reconciling on them would only repeat the
//! round that made them (a new object would cost a second round, one more HEAD per tag, for
//! nothing). So an object's change triggers a round only when it touches what a person or
//! another tool changes: the spec (its generation), labels (the shard), annotations, or its
//! deletion. The resync, and the watches of what an object reads (Secrets, ConfigMaps, the
//! objects it copies), trigger as ever.
//!
//! Told apart by content, not by remembering the resourceVersions we wrote: a watch event may
//! arrive before the answer to the write that caused it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use kube::Resource;

/// The fingerprint of what triggers a round; equal fingerprints of one object (kube's
/// predicate filter keeps the last per name and uid) trigger nothing.
pub fn fingerprint<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::controller::reconcile::FINALIZER;
    use crate::controller::test_support::object;

    #[test]
    fn our_own_writes_trigger_nothing_and_a_persons_changes_do() {
        let mut new = object(
            json!({ "repository": "h:1/a", "tags": ["v1"], "source": {} }),
            json!(null),
        );
        new.metadata.finalizers = None;
        let created = fingerprint(&new);

        let mut ours = new.clone();
        ours.metadata.finalizers = Some(vec![FINALIZER.into()]);
        ours.metadata.resource_version = Some("8".into());
        assert_eq!(fingerprint(&ours), created, "the finalizer");
        ours.status = serde_json::from_value(json!({ "observedGeneration": 1 })).unwrap();
        ours.metadata.resource_version = Some("9".into());
        assert_eq!(fingerprint(&ours), created, "the status");

        let mut spec = ours.clone();
        spec.metadata.generation = Some(2);
        let mut labels = ours.clone();
        labels.metadata.labels = Some(BTreeMap::from([("shard".into(), "b".into())]));
        let mut annotations = ours.clone();
        annotations.metadata.annotations =
            Some(BTreeMap::from([("requestedAt".into(), "now".into())]));
        let mut deleted = ours.clone();
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        for (what, changed) in [
            ("spec", spec),
            ("labels", labels),
            ("annotations", annotations),
            ("deletion", deleted),
        ] {
            assert_ne!(fingerprint(&changed), created, "{what}");
        }
    }
}
