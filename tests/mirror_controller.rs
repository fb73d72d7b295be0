//! GardenMirror on the real API server, the controller under the chart's RBAC: a source and
//! a target registry behind different passwords, each read through its own Secret; tags a
//! GardenArtifact owns in the target left alone and reported, and tags the mirror wrote kept
//! from a GardenArtifact that claims them later; a converged resync writes no status.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::cluster::{Scene, Watch, artifact_object, condition_status, wait_for};
use common::{Registry, digest_of, garden_artifacts, stderr, stdout};

/// A docker config folder with `user:password` for `registry`, for the CLI and skopeo.
fn docker_config(dir: &std::path::Path, logins: &[(&str, &str, &str)]) -> std::path::PathBuf {
    use base64::Engine;
    let auths: serde_json::Map<String, Value> = logins
        .iter()
        .map(|(registry, user, password)| {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            (registry.to_string(), json!({ "auth": auth }))
        })
        .collect();
    let folder = dir.join("docker");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("config.json"),
        json!({ "auths": auths }).to_string(),
    )
    .unwrap();
    folder
}

fn mirror_status(scene: &Scene, ns: &str, name: &str) -> Option<Value> {
    scene.cluster.get(ns, "gardenmirror", name)
}

#[test]
fn a_mirror_with_credentials_on_both_sides_converges_and_yields_to_artifacts() {
    let ns = "e2e-mirror";
    let (source_user, source_password) = ("reader", "S0urce-pw-e2e-8c1d");
    let (target_user, target_password) = ("writer", "T4rget-pw-e2e-2b9e");
    let source = Registry::start_with_basic_auth(source_user, source_password);
    let mut scene = Scene::with_registry(&[ns], Watch::OwnNamespace, || {
        Registry::start_with_basic_auth(target_user, target_password)
    });
    let work = tempfile::tempdir().unwrap();
    let config = docker_config(
        work.path(),
        &[
            (&source.addr, source_user, source_password),
            (&scene.registry.addr, target_user, target_password),
        ],
    );
    let env = [("DOCKER_CONFIG", config.to_str().unwrap())];
    let upstream = format!("{}/gardenlinux/gardenlinux", source.addr);
    for tag in ["1877.9", "1877.10", "1592.4"] {
        let file = work.path().join(format!("{tag}.txt"));
        std::fs::write(&file, format!("release {tag}\n")).unwrap();
        let out = garden_artifacts(
            &[
                "push",
                &format!("{upstream}:{tag}"),
                &format!("{}:text/plain", file.display()),
            ],
            &env,
        );
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    }
    for (name, registry, user, password) in [
        ("source-read", &source.addr, source_user, source_password),
        (
            "target-push",
            &scene.registry.addr,
            target_user,
            target_password,
        ),
    ] {
        let yaml = scene.cluster.kubectl_ok(&[
            "create",
            "secret",
            "docker-registry",
            name,
            "-n",
            ns,
            &format!("--docker-server={registry}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        scene.cluster.apply(&yaml);
    }
    let target = format!("{}/mirror/gardenlinux", scene.registry.addr);
    // A local build owns 1877.9 in the target.
    scene.cluster.apply(
        &artifact_object(
            ns,
            "local",
            &target,
            &["1877.9"],
            "a local build",
            json!({ "credentials": { "secretRef": { "name": "target-push" } } }),
        )
        .to_string(),
    );
    scene.start_namespaced_controller("c");
    scene.wait_ready(ns, "local");
    scene.cluster.apply(
        &json!({
            "apiVersion": "oci.gardenlinux.io/v1alpha1",
            "kind": "GardenMirror",
            "metadata": { "name": "releases", "namespace": ns },
            "spec": {
                "source": {
                    "repository": upstream,
                    "credentials": { "secretRef": { "name": "source-read" } },
                },
                "repository": target,
                "tags": { "include": ["^1877\\."] },
                "interval": "2s",
                "credentials": { "secretRef": { "name": "target-push" } },
            },
        })
        .to_string(),
    );
    let mirrored = wait_for(
        "the mirror to report its round",
        Duration::from_secs(60),
        || {
            let object = mirror_status(&scene, ns, "releases")?;
            (object["status"]["selected"] == 2 && object["status"]["failed"] == 1).then_some(object)
        },
    );
    let status = &mirrored["status"];
    assert_eq!(
        condition_status(&mirrored, "Ready").as_deref(),
        Some("False")
    );
    assert_eq!(status["failedTags"][0]["tag"], "1877.9", "{status:#}");
    assert!(
        status["failedTags"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("GardenArtifact {ns}/local")),
        "{status:#}"
    );
    // The copy is byte for byte; the local tag is untouched. skopeo reads with the logins.
    let read = |reference: &str| {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{reference}"))
            .env("REGISTRY_AUTH_FILE", config.join("config.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout)))
    };
    assert_eq!(
        read(&format!("{target}:1877.10")),
        read(&format!("{upstream}:1877.10"))
    );
    let local = scene.cluster.artifact(ns, "local");
    assert_eq!(
        read(&format!("{target}:1877.9")),
        local["status"]["digest"].as_str().unwrap()
    );
    assert_eq!(digest_of(&format!("{target}:1592.4")), None);
    assert_eq!(status["written"][0]["name"], "1877.10", "{status:#}");

    // Without the conflict it converges; then resyncs every 2 s write no status.
    scene
        .cluster
        .kubectl_ok(&["delete", "gardenartifact", "local", "-n", ns]);
    scene.cluster.kubectl_ok(&[
        "patch",
        "gardenmirror",
        "releases",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"tags":{"include":["^1877\\.10$"]}}}"#,
    ]);
    let ready = wait_for("the mirror to be Ready", Duration::from_secs(60), || {
        let object = mirror_status(&scene, ns, "releases")?;
        (condition_status(&object, "Ready").as_deref() == Some("True")).then_some(object)
    });
    let version = ready["metadata"]["resourceVersion"].clone();
    let heads_before = scene
        .registry
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.status == 200)
        .count();
    std::thread::sleep(Duration::from_secs(7));
    let heads_after = scene
        .registry
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.status == 200)
        .count();
    assert!(
        heads_after >= heads_before + 2,
        "resyncs ran: {heads_before} -> {heads_after} HEADs"
    );
    let again = mirror_status(&scene, ns, "releases").unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"], version,
        "no status write"
    );

    // A tag the mirror wrote is the mirror's: an artefact that claims it afterwards is refused
    // and the tag stays as mirrored, while the mirror stays Ready and writes nothing.
    let mirrored_digest = read(&format!("{target}:1877.10"));
    scene.cluster.apply(
        &artifact_object(
            ns,
            "late",
            &target,
            &["1877.10"],
            "a late local build",
            json!({
                "credentials": { "secretRef": { "name": "target-push" } },
                "interval": "2s",
            }),
        )
        .to_string(),
    );
    let refused = scene.wait_condition(ns, "late", "Stalled", "True", Duration::from_secs(60));
    let stalled = common::cluster::condition(&refused, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "TagConflict", "{refused:#}");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains(&format!("GardenMirror {ns}/releases")),
        "{refused:#}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(read(&format!("{target}:1877.10")), mirrored_digest);
    let mirror_now = mirror_status(&scene, ns, "releases").unwrap();
    assert_eq!(
        condition_status(&mirror_now, "Ready").as_deref(),
        Some("True"),
        "{mirror_now:#}"
    );
    assert_eq!(mirror_now["metadata"]["resourceVersion"], version);
    // Without the mirror the tag is free: the artefact takes it.
    scene
        .cluster
        .kubectl_ok(&["delete", "gardenmirror", "releases", "-n", ns]);
    let took = scene.wait_ready(ns, "late");
    assert_eq!(
        read(&format!("{target}:1877.10")),
        took["status"]["digest"].as_str().unwrap()
    );
    assert_ne!(read(&format!("{target}:1877.10")), mirrored_digest);

    // No password anywhere it could leak.
    let text = scene.controller("c").log_text() + &again.to_string();
    for secret in [source_password, target_password] {
        assert!(!text.contains(secret));
    }
}
