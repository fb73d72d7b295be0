//! GardenComponent on the real API server, the controller under the chart's RBAC: the
//! component version is published with its resources pinned to what the GardenArtifacts
//! published, and a rebuilt flavour moves its resource's digest in the next round (woken by the
//! artefact's change, not by `spec.interval`), with a `Relinked` event.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::cluster::{Scene, Watch, artifact_object, condition_status, wait_for};
use common::digest_of;

const NS: &str = "e2e-component";

fn component(scene: &Scene) -> Option<Value> {
    scene.cluster.get(NS, "gardencomponent", "release")
}

fn resource_digest(object: &Value, i: usize) -> Option<String> {
    object["status"]["resources"][i]["digest"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_rebuilt_flavour_moves_the_component_within_one_round() {
    let mut scene = Scene::new(&[NS], Watch::OwnNamespace);
    let flavours = format!("{}/gardenlinux/gardenlinux", scene.registry.addr);
    for (name, tag) in [
        ("gl-aws", "1877.5-aws-gardener_prod-amd64"),
        ("gl-metal", "1877.5-metal-gardener_prod-arm64"),
    ] {
        scene.cluster.apply(
            &artifact_object(
                NS,
                name,
                &flavours,
                &[tag],
                &format!("{name} build 1"),
                json!({}),
            )
            .to_string(),
        );
    }
    scene.start_namespaced_controller("c");
    scene.wait_ready(NS, "gl-aws");
    scene.wait_ready(NS, "gl-metal");
    let ocm = format!("{}/gardenlinux/ocm", scene.registry.addr);
    scene.cluster.apply(
        &json!({
            "apiVersion": "oci.gardenlinux.io/v1alpha1",
            "kind": "GardenComponent",
            "metadata": { "name": "release", "namespace": NS },
            "spec": {
                "repository": ocm,
                "name": "github.com/gardenlinux/gardenlinux",
                "version": "1877.5",
                "provider": { "name": "SAP SE" },
                // An hour: a change followed within the test came from the watch.
                "interval": "1h",
                "resources": [
                    {
                        "name": "gardenlinux",
                        "type": "virtual_machine_image",
                        "extraIdentity": { "architecture": "amd64", "platform": "aws" },
                        "artifactRef": { "name": "gl-aws" },
                    },
                    {
                        "name": "gardenlinux",
                        "type": "virtual_machine_image",
                        "extraIdentity": { "architecture": "arm64", "platform": "metal" },
                        "artifactRef": { "name": "gl-metal" },
                    },
                ],
            },
        })
        .to_string(),
    );
    let ready = wait_for("the component to be Ready", Duration::from_secs(60), || {
        let object = component(&scene)?;
        (condition_status(&object, "Ready").as_deref() == Some("True")).then_some(object)
    });
    let aws_digest = |scene: &Scene| {
        scene.cluster.artifact(NS, "gl-aws")["status"]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first_aws = aws_digest(&scene);
    assert_eq!(
        resource_digest(&ready, 0).as_deref(),
        Some(first_aws.as_str())
    );
    let version = format!("{ocm}/component-descriptors/github.com/gardenlinux/gardenlinux:1877.5");
    assert_eq!(
        digest_of(&version).as_deref(),
        ready["status"]["digest"].as_str(),
        "{ready:#}"
    );
    assert_eq!(ready["status"]["reference"], version);

    // The aws flavour rebuilt: its digest moves, and the component follows without waiting
    // for its interval.
    scene.cluster.kubectl_ok(&[
        "patch",
        "gardenartifact",
        "gl-aws",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/source/files/0/content","value":"gl-aws build 2"}]"#,
    ]);
    let second_aws = wait_for("the flavour to move", Duration::from_secs(60), || {
        let digest = aws_digest(&scene);
        (digest != first_aws).then_some(digest)
    });
    let moved = wait_for(
        "the component to follow the flavour",
        Duration::from_secs(30),
        || {
            let object = component(&scene)?;
            (resource_digest(&object, 0).as_deref() == Some(second_aws.as_str())).then_some(object)
        },
    );
    assert_ne!(moved["status"]["digest"], ready["status"]["digest"]);
    assert_eq!(resource_digest(&moved, 1), resource_digest(&ready, 1));
    assert_eq!(
        digest_of(&version).as_deref(),
        moved["status"]["digest"].as_str(),
        "the registry holds the re-published version"
    );
    let relinked = wait_for("a Relinked event", Duration::from_secs(30), || {
        scene
            .cluster
            .events(NS)
            .into_iter()
            .find(|e| e["reason"] == "Relinked" && e["regarding"]["kind"] == "GardenComponent")
    });
    let note = relinked["note"].as_str().unwrap_or_default();
    assert!(note.contains(&second_aws), "{relinked:#}");

    // A second object publishing the same version: the older keeps it, the newer is told.
    let mut copy = component(&scene).unwrap();
    copy["metadata"] = json!({ "name": "release-copy", "namespace": NS });
    copy.as_object_mut().unwrap().remove("status");
    copy["spec"]["resources"] = json!([copy["spec"]["resources"][1].clone()]);
    scene.cluster.apply(&copy.to_string());
    let refused = wait_for("the copy to be refused", Duration::from_secs(30), || {
        let object = scene.cluster.get(NS, "gardencomponent", "release-copy")?;
        (condition_status(&object, "Stalled").as_deref() == Some("True")).then_some(object)
    });
    let ready_condition = refused["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready_condition["reason"], "TagClaimed", "{refused:#}");
    assert!(
        ready_condition["message"]
            .as_str()
            .unwrap()
            .contains(&format!("GardenComponent {NS}/release")),
        "{refused:#}"
    );
    assert_eq!(
        digest_of(&version).as_deref(),
        moved["status"]["digest"].as_str(),
        "the owner's version is left as it was"
    );
}
