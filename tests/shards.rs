//! Shards on the real kube-apiserver: two controllers, each with its own label selector
//! (`--watch-label-selector`) and its own Lease, as the chart's `shards` runs them. Each
//! reconciles only its objects; tag ownership is decided over all objects, so a tag claimed
//! from both shards has exactly one owner; a shard whose controller is gone leaves the other's
//! objects untouched and its own as they were.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::cluster::{Scene, Watch, artifact_object, condition, condition_status};
use common::digest_of;

fn labelled(ns: &str, name: &str, shard: &str, repository: &str, tags: &[&str]) -> String {
    let mut object = artifact_object(ns, name, repository, tags, name, json!({}));
    object["metadata"]["labels"] = json!({ "shard": shard });
    object.to_string()
}

fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"]
        .as_i64()
        .expect("a generation")
}

fn observed(object: &Value) -> Option<i64> {
    object["status"]["observedGeneration"].as_i64()
}

#[test]
fn two_shards_reconcile_only_their_objects_and_one_owner_per_tag() {
    let ns = "e2e-shards";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    let shard_args = |shard: &'static str, lease: &'static str| {
        vec![
            "--namespace",
            ns,
            "--watch-label-selector",
            shard,
            "--leader-elect",
            "--lease-namespace",
            common::cluster::SYSTEM_NAMESPACE,
            "--lease-name",
            lease,
            "--identity",
            lease,
        ]
    };
    let repository = format!("{}/e2e/shards", scene.registry.addr);

    // Shard a alone: only its object is touched; b's gets neither finalizer nor status.
    scene.start_controller("a", &shard_args("shard=a", "e2e-shards-a"), &[]);
    scene
        .cluster
        .apply(&labelled(ns, "one-a", "a", &repository, &["one-a"]));
    scene
        .cluster
        .apply(&labelled(ns, "one-b", "b", &repository, &["one-b"]));
    scene.wait_ready(ns, "one-a");
    std::thread::sleep(Duration::from_secs(3));
    let untouched = scene.cluster.artifact(ns, "one-b");
    assert!(untouched["status"].is_null(), "{untouched:#}");
    assert!(
        untouched["metadata"]["finalizers"].is_null(),
        "{untouched:#}"
    );
    assert_eq!(digest_of(&format!("{repository}:one-b")), None);

    // Shard b, with its own Lease: both lead at once, and b's object converges.
    scene.start_controller("b", &shard_args("shard=b", "e2e-shards-b"), &[]);
    scene.wait_ready(ns, "one-b");

    // A tag claimed from both shards: the older object (on b) keeps it; the newer (on a) is
    // stalled naming it, though no controller reconciles both.
    scene
        .cluster
        .apply(&labelled(ns, "older-b", "b", &repository, &["shared"]));
    let older = scene.wait_ready(ns, "older-b");
    // creationTimestamp counts whole seconds, and a tie goes to the name first in order
    // ("newer-a"): the newer object must be created in a later second to be the newer one.
    std::thread::sleep(Duration::from_millis(1100));
    scene.cluster.apply(&labelled(
        ns,
        "newer-a",
        "a",
        &repository,
        &["shared", "newer-a"],
    ));
    let newer = scene.wait_condition(ns, "newer-a", "Stalled", "True", Duration::from_secs(60));
    let stalled = condition(&newer, "Stalled").expect("a Stalled condition");
    assert_eq!(stalled["reason"], "TagConflict", "{stalled:#}");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap_or_default()
            .contains("older-b"),
        "{stalled:#}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        digest_of(&format!("{repository}:shared")),
        older["status"]["digest"].as_str().map(String::from),
        "the tag stays with its owner"
    );
    assert_eq!(
        condition_status(&scene.cluster.artifact(ns, "older-b"), "Ready").as_deref(),
        Some("True")
    );

    // Shard b's controller killed: a change to b's object waits for b; a's go on.
    scene.controller_mut("b").kill();
    scene.cluster.apply(&labelled(
        ns,
        "one-b",
        "b",
        &repository,
        &["one-b", "one-b-2"],
    ));
    scene.cluster.apply(&labelled(
        ns,
        "one-a",
        "a",
        &repository,
        &["one-a", "one-a-2"],
    ));
    let one_a = wait_observed(&scene, ns, "one-a");
    assert_eq!(condition_status(&one_a, "Ready").as_deref(), Some("True"));
    assert!(digest_of(&format!("{repository}:one-a-2")).is_some());
    std::thread::sleep(Duration::from_secs(5));
    let one_b = scene.cluster.artifact(ns, "one-b");
    assert!(
        observed(&one_b) < Some(generation(&one_b)),
        "shard a reconciled b's object: {one_b:#}"
    );
    assert_eq!(digest_of(&format!("{repository}:one-b-2")), None);
}

/// Waits until the object's status is of its current generation.
fn wait_observed(scene: &Scene, ns: &str, name: &str) -> Value {
    common::cluster::wait_for(
        &format!("{ns}/{name} to be observed at its generation"),
        Duration::from_secs(60),
        || {
            let object = scene.cluster.artifact(ns, name);
            (observed(&object) == Some(generation(&object))
                && condition_status(&object, "Ready").is_some())
            .then_some(object)
        },
    )
}
