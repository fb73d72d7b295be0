//! What the watch caches keep of an object: only what the controller reads. An object applied
//! with `kubectl apply` carries a copy of itself in an annotation, and every object carries
//! `managedFields` (a field set per writer); together they are most of a small object's size,
//! held for every object for the controller's whole life, and nothing here reads them.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::watched::Watched;

/// kubectl's client-side apply keeps the whole object it applied here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A GardenArtifact keeps its labels (shards select by them) and its other annotations.
pub fn artifact(object: &mut Watched) {
    use kube::Resource;
    shed_bookkeeping(object.meta_mut());
}

/// A GardenMirror keeps everything but the bookkeeping: its status is read, by the
/// artefacts too (the tags it wrote are its own).
pub fn mirror(mirror: &mut crate::api::GardenMirror) {
    use kube::Resource;
    shed_bookkeeping(mirror.meta_mut());
}

/// A Secret is read for its type, its data and its resourceVersion.
pub fn secret(secret: &mut Secret) {
    shed_everything_but_identity(&mut secret.metadata);
    secret.string_data = None;
}

/// A ConfigMap is read for its data.
pub fn config_map(map: &mut ConfigMap) {
    shed_everything_but_identity(&mut map.metadata);
}

fn shed_bookkeeping(metadata: &mut ObjectMeta) {
    metadata.managed_fields = None;
    if let Some(annotations) = &mut metadata.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            metadata.annotations = None;
        }
    }
}

/// Name, namespace, uid and resourceVersion are what caches and messages use.
fn shed_everything_but_identity(metadata: &mut ObjectMeta) {
    *metadata = ObjectMeta {
        name: metadata.name.take(),
        namespace: metadata.namespace.take(),
        uid: metadata.uid.take(),
        resource_version: metadata.resource_version.take(),
        ..ObjectMeta::default()
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::Resource;
    use serde_json::json;

    use super::*;
    use crate::api::{API_VERSION, KIND};

    fn bookkept(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("u-1".into()),
            resource_version: Some("42".into()),
            labels: Some(BTreeMap::from([("shard".into(), "a".into())])),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.into(), "{\"a whole copy\": true}".into()),
                ("team".into(), "os".into()),
            ])),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn an_artifact_loses_its_bookkeeping_and_keeps_labels_and_its_own_annotations() {
        let mut object: Watched = serde_json::from_value(json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": bookkept("a"),
            "spec": { "repository": "registry.example.com/a", "tags": ["v1"],
                      "source": { "files": [{ "name": "a.txt", "content": "a" }] } },
        }))
        .expect("an object");
        artifact(&mut object);
        let meta = object.meta();
        assert_eq!(meta.managed_fields, None);
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([("team".into(), "os".into())]))
        );
        assert_eq!(meta.labels, bookkept("a").labels);
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(object.valid().expect("still valid").spec.tags, ["v1"]);
    }

    #[test]
    fn secrets_and_config_maps_keep_their_identity_type_and_data() {
        let mut regcred = Secret {
            metadata: bookkept("regcred"),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(b"{}".to_vec()),
            )])),
            ..Secret::default()
        };
        let kept = regcred.clone();
        secret(&mut regcred);
        assert_eq!(regcred.metadata.name, kept.metadata.name);
        assert_eq!(regcred.metadata.namespace, kept.metadata.namespace);
        assert_eq!(
            regcred.metadata.resource_version,
            kept.metadata.resource_version
        );
        assert_eq!(
            (
                regcred.metadata.annotations,
                regcred.metadata.managed_fields
            ),
            (None, None)
        );
        assert_eq!((regcred.type_, regcred.data), (kept.type_, kept.data));

        let mut notes = ConfigMap {
            metadata: bookkept("notes"),
            data: Some(BTreeMap::from([("notes".into(), "text".into())])),
            ..ConfigMap::default()
        };
        config_map(&mut notes);
        assert_eq!(notes.metadata.name.as_deref(), Some("notes"));
        assert_eq!(
            (notes.metadata.annotations, notes.metadata.labels),
            (None, None)
        );
        assert_eq!(notes.data.expect("data")["notes"], "text");
    }
}
