//! End to end, what becomes of tags an object no longer wants, and of a deletion that cannot
//! clean up: the controller (under the chart's RBAC) against a real kube-apiserver and real
//! Distribution registries, read back with skopeo. See tests/controller_e2e.rs for the setup.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::cluster::{Scene, Watch, artifact_object, condition, wait_for};
use common::digest_of;

fn status_digest(object: &Value) -> String {
    object["status"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.digest in {object:#}"))
        .to_string()
}

/// The tag names of `status.tags`.
fn status_tags(object: &Value) -> Vec<String> {
    object["status"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

/// Merge-patches the spec of a GardenArtifact.
fn patch_spec(scene: &Scene, ns: &str, name: &str, spec: Value) {
    let patch = json!({ "spec": spec }).to_string();
    scene
        .cluster
        .kubectl_ok(&["patch", "ga", name, "-n", ns, "--type=merge", "-p", &patch]);
}

/// Waits until the object reconciled its latest spec to exactly `tags`.
fn wait_converged_to(scene: &Scene, ns: &str, name: &str, tags: &[&str]) -> Value {
    wait_for(
        &format!("{ns}/{name} to converge to tags {tags:?}"),
        Duration::from_secs(60),
        || {
            let object = scene.cluster.get(ns, "ga", name)?;
            let ready = condition(&object, "Ready")?;
            let current =
                object["status"]["observedGeneration"] == object["metadata"]["generation"];
            (current && ready["status"] == "True" && status_tags(&object) == tags).then_some(object)
        },
    )
}

fn events_with(scene: &Scene, ns: &str, reason: &str, needle: &str) -> Vec<Value> {
    scene
        .cluster
        .events(ns)
        .into_iter()
        .filter(|e| e["reason"] == reason && e["note"].as_str().is_some_and(|n| n.contains(needle)))
        .collect()
}

fn wait_for_event(scene: &Scene, ns: &str, reason: &str, needle: &str) -> Value {
    wait_for(
        &format!("an event {reason} mentioning {needle:?} in {ns}"),
        Duration::from_secs(30),
        || events_with(scene, ns, reason, needle).into_iter().next(),
    )
}

/// With `deletionPolicy: Delete`, a tag taken out of `spec.tags` is deleted from the registry,
/// and so are the tags left in a former `spec.repository`; with `Retain` the tag stays, owned
/// by nobody, and `status.releasedTags` names it until it is wanted again.
#[test]
fn tags_no_longer_wanted_are_deleted_with_delete_and_listed_with_retain() {
    let ns = "e2e-dropped-tags";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let addr = scene.registry.addr.clone();
    let deleting_repo = format!("{addr}/e2e/dropped/deleting");
    let moved_repo = format!("{addr}/e2e/dropped/moved");
    let retaining_repo = format!("{addr}/e2e/dropped/retaining");
    for object in [
        artifact_object(
            ns,
            "deleting",
            &deleting_repo,
            &["v1", "v2"],
            "deleting content",
            json!({ "deletionPolicy": "Delete" }),
        ),
        artifact_object(
            ns,
            "retaining",
            &retaining_repo,
            &["r1", "r2"],
            "retaining content",
            json!({}),
        ),
    ] {
        scene.cluster.apply(&object.to_string());
    }
    let deleting = scene.wait_ready(ns, "deleting");
    let retaining = scene.wait_ready(ns, "retaining");
    let ours = status_digest(&deleting);
    let kept = status_digest(&retaining);
    assert_eq!(
        digest_of(&format!("{deleting_repo}:v2")),
        Some(ours.clone())
    );

    // Delete: v2 taken out of spec.tags disappears from the registry; v1 stays.
    patch_spec(&scene, ns, "deleting", json!({ "tags": ["v1"] }));
    let deleting = wait_converged_to(&scene, ns, "deleting", &["v1"]);
    assert_eq!(
        digest_of(&format!("{deleting_repo}:v2")),
        None,
        "v2 deleted"
    );
    assert_eq!(
        digest_of(&format!("{deleting_repo}:v1")),
        Some(ours.clone()),
        "v1 stays"
    );
    assert!(deleting["status"]["releasedTags"].is_null(), "{deleting:#}");
    assert_eq!(deleting["status"]["repository"], deleting_repo.as_str());
    wait_for_event(&scene, ns, "TagDeleted", &format!("v2 of {deleting_repo}"));

    // Delete, and a new repository: the tag is written there, and deleted from the old one.
    patch_spec(&scene, ns, "deleting", json!({ "repository": moved_repo }));
    let moved = wait_for(
        "the status to name the new repository",
        Duration::from_secs(60),
        || {
            let object = scene.cluster.get(ns, "ga", "deleting")?;
            (object["status"]["repository"] == moved_repo.as_str()
                && object["status"]["observedGeneration"] == object["metadata"]["generation"])
                .then_some(object)
        },
    );
    assert_eq!(status_tags(&moved), ["v1"]);
    assert_eq!(digest_of(&format!("{moved_repo}:v1")), Some(ours.clone()));
    assert_eq!(
        digest_of(&format!("{deleting_repo}:v1")),
        None,
        "the tag in the former repository is deleted"
    );

    // Retain: r2 stays in the registry, and the status says so.
    patch_spec(&scene, ns, "retaining", json!({ "tags": ["r1"] }));
    let retaining = wait_converged_to(&scene, ns, "retaining", &["r1"]);
    assert_eq!(
        retaining["status"]["releasedTags"],
        json!([{ "repository": retaining_repo, "name": "r2", "digest": kept }]),
        "{retaining:#}"
    );
    assert_eq!(
        digest_of(&format!("{retaining_repo}:r2")),
        Some(kept.clone()),
        "Retain leaves the tag"
    );
    wait_for_event(
        &scene,
        ns,
        "TagReleased",
        &format!("r2 of {retaining_repo}"),
    );

    // Wanted again: off the list.
    patch_spec(&scene, ns, "retaining", json!({ "tags": ["r1", "r2"] }));
    let retaining = wait_converged_to(&scene, ns, "retaining", &["r1", "r2"]);
    assert!(
        retaining["status"]["releasedTags"].is_null(),
        "{retaining:#}"
    );
}

/// A Delete object deleted while its registry answers 503 says so (Ready=False CleanupFailed
/// with the registry's answer, a Warning event) and keeps its finalizer; once the registry is
/// back, the tag is deleted and the object goes.
#[test]
fn a_deletion_while_the_registry_is_down_says_cleanup_failed_and_completes_when_it_returns() {
    use common::faults::{FaultProxy, Rule, status};
    let ns = "e2e-cleanup-failed";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let proxy = FaultProxy::start(&scene.registry.addr);
    let repo = format!("{}/e2e/cleanup/app", proxy.addr);
    let direct = format!("{}/e2e/cleanup/app:v1", scene.registry.addr);
    scene.cluster.apply(
        &artifact_object(
            ns,
            "doomed",
            &repo,
            &["v1"],
            "doomed content",
            json!({ "deletionPolicy": "Delete" }),
        )
        .to_string(),
    );
    let ready = scene.wait_ready(ns, "doomed");
    assert_eq!(digest_of(&direct), Some(status_digest(&ready)));

    proxy.inject(Rule::new("*", "^/v2/", status(503)));
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "doomed", "-n", ns, "--wait=false"]);
    let failing = wait_for("Ready=False CleanupFailed", Duration::from_secs(90), || {
        let object = scene.cluster.get(ns, "ga", "doomed")?;
        let ready = condition(&object, "Ready")?.clone();
        (ready["reason"] == "CleanupFailed").then_some((object, ready))
    });
    let (object, ready) = failing;
    println!("while the registry is down: Ready={ready}");
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("tags v1 of {repo}")) && message.contains("503"),
        "names what is left and the registry's answer: {message}"
    );
    assert_eq!(
        object["metadata"]["finalizers"],
        json!(["oci.gardenlinux.io/cleanup"]),
        "the finalizer stays"
    );
    let warning = wait_for_event(&scene, ns, "CleanupFailed", "503");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(
        digest_of(&direct),
        Some(status_digest(&object)),
        "the tag is still there"
    );

    proxy.clear();
    wait_for(
        "the object to be gone once the registry is back",
        Duration::from_secs(120),
        || {
            scene
                .cluster
                .get(ns, "ga", "doomed")
                .is_none()
                .then_some(())
        },
    );
    assert_eq!(digest_of(&direct), None, "the tag is deleted");
}

/// In a namespace being deleted the API server refuses events: a cleanup that fails there
/// still names the tags it leaves, in the status and in the controller's log.
#[test]
fn in_a_namespace_being_deleted_the_status_and_the_log_name_the_tags_left() {
    use common::faults::{FaultProxy, Rule, status};
    let ns = "e2e-cleanup-terminating";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let proxy = FaultProxy::start(&scene.registry.addr);
    let repo = format!("{}/e2e/cleanup/terminating", proxy.addr);
    let direct = format!("{}/e2e/cleanup/terminating:v1", scene.registry.addr);
    scene.cluster.apply(
        &artifact_object(
            ns,
            "doomed",
            &repo,
            &["v1"],
            "doomed in a terminating namespace",
            json!({ "deletionPolicy": "Delete" }),
        )
        .to_string(),
    );
    scene.wait_ready(ns, "doomed");

    proxy.inject(Rule::new("*", "^/v2/", status(503)));
    // This API server runs no namespace controller: the namespace stays Terminating and the
    // object is deleted by hand, as that controller would.
    scene
        .cluster
        .kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
    wait_for(
        "the namespace to be terminating",
        Duration::from_secs(30),
        || {
            let phase = scene.cluster.kubectl_ok(&[
                "get",
                "namespace",
                ns,
                "-o",
                "jsonpath={.status.phase}",
            ]);
            (phase.trim() == "Terminating").then_some(())
        },
    );
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "doomed", "-n", ns, "--wait=false"]);
    let ready = wait_for("Ready=False CleanupFailed", Duration::from_secs(90), || {
        let object = scene.cluster.get(ns, "ga", "doomed")?;
        let ready = condition(&object, "Ready")?.clone();
        (ready["reason"] == "CleanupFailed").then_some(ready)
    });
    let left = format!("tags v1 of {repo}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(message.contains(&left), "{message}");
    wait_for(
        "the log to name the tags left and the refused event",
        Duration::from_secs(30),
        || {
            let log = scene.controller("c").log_text();
            (log.contains(&format!("cleanup failed: {left}"))
                && log.contains("could not publish an event"))
            .then_some(())
        },
    );

    proxy.clear();
    wait_for(
        "the object to be gone once the registry is back",
        Duration::from_secs(120),
        || {
            scene
                .cluster
                .get(ns, "ga", "doomed")
                .is_none()
                .then_some(())
        },
    );
    assert_eq!(digest_of(&direct), None, "the tag is deleted");
}

/// A tag taken out of a `Delete` object's list while another object claims it is handed over,
/// not deleted: the claimant, stalled on it until then, takes it.
#[test]
fn a_dropped_tag_another_object_claims_is_handed_over_not_deleted() {
    let ns = "e2e-dropped-handover";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let repo = format!("{}/e2e/dropped/handover", scene.registry.addr);
    scene.cluster.apply(
        &artifact_object(
            ns,
            "a-owner",
            &repo,
            &["v1", "shared"],
            "owner content",
            json!({ "deletionPolicy": "Delete" }),
        )
        .to_string(),
    );
    // Created within the same second, objects are ordered by name: `a-owner` is the older.
    let owner = scene.wait_ready(ns, "a-owner");
    scene.cluster.apply(
        &artifact_object(
            ns,
            "b-claimant",
            &repo,
            &["shared"],
            "claimant content",
            json!({ "interval": "2s" }),
        )
        .to_string(),
    );
    let stalled =
        scene.wait_condition(ns, "b-claimant", "Stalled", "True", Duration::from_secs(30));
    assert_eq!(
        condition(&stalled, "Stalled").unwrap()["reason"],
        "TagConflict"
    );

    patch_spec(&scene, ns, "a-owner", json!({ "tags": ["v1"] }));
    wait_converged_to(&scene, ns, "a-owner", &["v1"]);
    let claimant = scene.wait_ready(ns, "b-claimant");
    assert_ne!(status_digest(&claimant), status_digest(&owner));
    assert_eq!(
        digest_of(&format!("{repo}:shared")),
        Some(status_digest(&claimant)),
        "the claimant holds the tag"
    );
    assert!(
        events_with(&scene, ns, "TagDeleted", "shared").is_empty(),
        "the owner did not delete it"
    );
    let deletes: Vec<_> = scene
        .registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert!(deletes.is_empty(), "nothing deleted: {deletes:?}");
}
