//! Pure: which GardenArtifacts a change to another object concerns, and who owns which tag.
//! Each function takes a snapshot of the cache, so it is tested with plain values.

use std::ops::Deref;

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::api::GardenArtifact;
use crate::engine::claims::{self, Claim, Conflict};
use crate::oci::{RelativeReference, Repository, repository_identity};

fn same_namespace<'a, O: Deref<Target = GardenArtifact>>(
    objects: &'a [O],
    namespace: Option<&'a str>,
) -> impl Iterator<Item = &'a O> + 'a {
    objects
        .iter()
        .filter(move |o| o.namespace().as_deref() == namespace)
}

/// Objects of the Secret's namespace that read it (credentials or a file source).
pub fn secret_dependents(
    objects: &[impl Deref<Target = GardenArtifact>],
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<GardenArtifact>> {
    same_namespace(objects, namespace)
        .filter(|o| {
            let spec = &o.spec;
            spec.credentials
                .as_ref()
                .is_some_and(|c| c.secret_ref.name == name)
                || spec
                    .source
                    .files
                    .iter()
                    .flatten()
                    .any(|f| f.secret_key_ref.as_ref().is_some_and(|k| k.name == name))
        })
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// Objects of the ConfigMap's namespace that read it.
pub fn config_map_dependents(
    objects: &[impl Deref<Target = GardenArtifact>],
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<GardenArtifact>> {
    same_namespace(objects, namespace)
        .filter(|o| {
            o.spec.source.files.iter().flatten().any(|f| {
                f.config_map_key_ref
                    .as_ref()
                    .is_some_and(|k| k.name == name)
            })
        })
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// Objects that read what `producer` writes (a copied tag, an index entry, a subject, an
/// `artifactRef`): when it changes, they follow.
pub fn readers_of(
    objects: &[impl Deref<Target = GardenArtifact>],
    producer: &GardenArtifact,
) -> Vec<ObjectRef<GardenArtifact>> {
    objects
        .iter()
        .filter(|o| o.uid() != producer.uid() && reads_from(o, producer))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

fn reads_from(reader: &GardenArtifact, producer: &GardenArtifact) -> bool {
    let produced_digest = producer.status.as_ref().and_then(|s| s.digest.as_deref());
    // Compared by identity: a copy of `localhost:5000/gl:1` follows `127.0.0.1:5000/gl`.
    let produced_in = repository_identity(&producer.spec.repository);
    let names_producer = |reference: &str| {
        let parsed = RelativeReference::parse(reference)
            .ok()
            .and_then(|reference| {
                Repository::parse(&reader.spec.repository)
                    .ok()
                    .map(|repo| reference.resolve_in(&repo))
            });
        parsed.is_some_and(|r| {
            r.repository().identity() == produced_in
                && match (r.digest(), r.tag()) {
                    (Some(digest), _) => produced_digest == Some(digest.as_str()),
                    (None, Some(tag)) => producer.spec.tags.iter().any(|t| t == tag.as_str()),
                    (None, None) => false,
                }
        })
    };
    let same_namespace = reader.namespace() == producer.namespace();
    let spec = &reader.spec;
    let image = spec
        .source
        .image
        .as_ref()
        .is_some_and(|i| names_producer(&i.reference));
    let links = spec
        .source
        .index
        .iter()
        .flat_map(|i| &i.manifests)
        .map(|e| (e.artifact_ref.as_ref(), e.reference.as_deref()))
        .chain(
            spec.subject
                .iter()
                .map(|s| (s.artifact_ref.as_ref(), s.reference.as_deref())),
        )
        .any(|(artifact_ref, reference)| {
            artifact_ref.is_some_and(|r| same_namespace && r.name == producer.name_any())
                || reference.is_some_and(names_producer)
        });
    image || links
}

/// The tags `object` may not have because an older object claims them. Age decides: the
/// creation timestamp, then namespace/name, so every replica and every resync agrees.
pub fn lost_tags(
    objects: &[impl Deref<Target = GardenArtifact>],
    object: &GardenArtifact,
) -> Vec<Conflict> {
    let mut ordered: Vec<&GardenArtifact> = objects.iter().map(|o| &**o).collect();
    ordered.sort_by_key(|o| {
        (
            o.creation_timestamp().map(|t| t.0),
            o.namespace(),
            o.name_any(),
        )
    });
    let owners: Vec<String> = ordered.iter().map(|o| key(*o)).collect();
    // Two spellings of one repository are one repository. This runs over every object each
    // round, so the identity is taken from the admitted text without the grammar's regex.
    let repositories: Vec<String> = ordered
        .iter()
        .map(|o| repository_identity(&o.spec.repository))
        .collect();
    let claims: Vec<Claim<'_>> = ordered
        .iter()
        .zip(&owners)
        .zip(&repositories)
        .map(|((o, owner), repository)| Claim {
            owner,
            repository,
            tags: &o.spec.tags,
        })
        .collect();
    claims::conflicts(&claims)
        .remove(&key(object))
        .unwrap_or_default()
}

pub fn key(object: &impl Resource) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::sync::Arc;

    fn object(ns: &str, name: &str, created: i64, yaml: &str) -> Arc<GardenArtifact> {
        let mut o = GardenArtifact::new(name, serde_yaml::from_str(yaml).unwrap());
        o.metadata.namespace = Some(ns.into());
        o.metadata.uid = Some(format!("{ns}-{name}"));
        o.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        Arc::new(o)
    }

    #[test]
    fn secrets_and_config_maps_map_to_their_readers_in_the_same_namespace() {
        let a = object(
            "r",
            "a",
            1,
            "{repository: h:1/a, tags: [t], credentials: {secretRef: {name: regcred}}, source: {files: [{name: x.raw, content: x}]}}",
        );
        let b = object(
            "r",
            "b",
            2,
            "{repository: h:1/a, tags: [u], source: {files: [{name: x.raw, configMapKeyRef: {name: cm, key: k}}]}}",
        );
        let c = object(
            "other",
            "c",
            3,
            "{repository: h:1/a, tags: [v], credentials: {secretRef: {name: regcred}}, source: {files: [{name: x.raw, content: x}]}}",
        );
        let all = vec![a, b, c];
        let names = |refs: Vec<ObjectRef<GardenArtifact>>| {
            refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        assert_eq!(names(secret_dependents(&all, Some("r"), "regcred")), ["a"]);
        assert_eq!(names(config_map_dependents(&all, Some("r"), "cm")), ["b"]);
        assert!(secret_dependents(&all, Some("r"), "cm").is_empty());
    }

    #[test]
    fn copies_follow_their_producer() {
        let producer = object(
            "r",
            "release",
            1,
            "{repository: h:1/gl, tags: ['1877.5'], source: {files: [{name: x.raw, content: x}]}}",
        );
        let latest = object(
            "r",
            "latest",
            2,
            "{repository: h:1/gl, tags: [latest], source: {image: {reference: 'h:1/gl:1877.5'}}}",
        );
        let other = object(
            "r",
            "other",
            3,
            "{repository: h:1/gl, tags: [old], source: {image: {reference: 'h:1/gl:1443'}}}",
        );
        let index = object(
            "r",
            "index",
            4,
            "{repository: h:1/gl, tags: ['1877'], source: {index: {manifests: [{artifactRef: {name: release}}]}}}",
        );
        let sbom = object(
            "r",
            "sbom",
            5,
            "{repository: h:1/gl, subject: {reference: '1877.5'}, source: {files: [{name: a.sbom, content: x}]}}",
        );
        let elsewhere = object(
            "other",
            "index",
            6,
            "{repository: h:1/gl, tags: ['x'], source: {index: {manifests: [{artifactRef: {name: release}}]}}}",
        );
        let all = vec![producer.clone(), latest, other, index, sbom, elsewhere];
        let names: Vec<String> = readers_of(&all, &producer)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["latest", "index", "sbom"]);
    }

    #[test]
    fn a_copy_follows_its_producer_under_another_spelling_of_the_registry() {
        let producer = object(
            "r",
            "release",
            1,
            "{repository: '127.0.0.1:5000/gl', tags: ['1877.5'], source: {files: [{name: x.raw, content: x}]}}",
        );
        let copy = object(
            "r",
            "mirror",
            2,
            "{repository: 'localhost:5000/mirror', tags: ['1'], source: {image: {reference: 'LOCALHOST:5000/gl:1877.5'}}}",
        );
        let all = vec![producer.clone(), copy];
        let names: Vec<String> = readers_of(&all, &producer)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["mirror"]);
    }

    #[test]
    fn the_older_object_owns_a_contested_tag() {
        let newer = object(
            "b",
            "newer",
            20,
            "{repository: h:1/gl, tags: [latest], source: {files: [{name: x.raw, content: x}]}}",
        );
        let older = object(
            "a",
            "older",
            10,
            "{repository: h:1/gl, tags: [latest, v1], source: {files: [{name: x.raw, content: y}]}}",
        );
        let all = vec![newer.clone(), older.clone()];
        assert!(lost_tags(&all, &older).is_empty());
        let lost = lost_tags(&all, &newer);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].owner, "a/older");
    }

    #[test]
    fn two_spellings_of_one_registry_are_one_contested_tag() {
        let older = object(
            "a",
            "older",
            10,
            "{repository: 'localhost:5000/gl', tags: [latest], source: {files: [{name: x.raw, content: y}]}}",
        );
        for spelling in ["127.0.0.1:5000/gl", "LOCALHOST:5000/gl", "[::1]:5000/gl"] {
            let newer = object(
                "b",
                "newer",
                20,
                &format!(
                    "{{repository: '{spelling}', tags: [latest], source: {{files: [{{name: x.raw, content: x}}]}}}}"
                ),
            );
            let all = vec![newer.clone(), older.clone()];
            assert!(lost_tags(&all, &older).is_empty(), "{spelling}");
            let lost = lost_tags(&all, &newer);
            assert_eq!(lost.len(), 1, "{spelling}");
            assert_eq!(lost[0].owner, "a/older");
        }
    }
}
