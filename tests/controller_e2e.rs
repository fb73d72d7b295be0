//! End to end: `garden-artifacts controller` against a real kube-apiserver v1.20.2 and etcd
//! (scripts/dev-env.sh, one cluster per test binary, torn down at exit) and real Distribution
//! registries, one per test. The controller runs as a process with the Helm chart's RBAC and
//! a ServiceAccount token, never as admin. Tests use namespaces of their own and run in
//! parallel; the two whose controller watches all namespaces run alone (see `Watch`).
//!
//! Needs what scripts/dev-env.sh installs (etcd, kube-apiserver, kubectl, docker-registry,
//! skopeo, curl, htpasswd) and helm via scripts/helm. Nothing is skipped when it is missing.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::cluster::{Scene, Watch, artifact_object, condition, condition_status, wait_for};
use common::{
    FileServer, Registry, digest_of, examples_for, examples_with_containers_for, fallback_index,
    listed_digests, skopeo_json, skopeo_raw,
};

const API_VERSION: &str = "oci.gardenlinux.io/v1alpha1";

/// [`artifact_object`] as JSON text (which kubectl takes as YAML).
fn artifact(
    ns: &str,
    name: &str,
    repository: &str,
    tags: &[&str],
    content: &str,
    spec: Value,
) -> String {
    artifact_object(ns, name, repository, tags, content, spec).to_string()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn status_digest(object: &Value) -> String {
    object["status"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.digest in {object:#}"))
        .to_string()
}

fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"].as_i64().unwrap()
}

/// `curl` against a registry: (HTTP status, body). `user` is `user:password` for basic auth.
fn curl(
    method: &str,
    url: &str,
    headers: &[&str],
    body: Option<&[u8]>,
    user: Option<&str>,
) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("body");
    let mut command = std::process::Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}"]);
    match method {
        "HEAD" => command.arg("--head"),
        _ => command.args(["-X", method]),
    };
    for h in headers {
        command.args(["-H", h]);
    }
    if let Some(body) = body {
        let file = dir.path().join("upload");
        std::fs::write(&file, body).unwrap();
        command
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
    }
    if let Some(user) = user {
        command.args(["-u", user]);
    }
    let out = command.arg(url).output().expect("curl runs");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "curl {method} {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (code, std::fs::read(&out_file).unwrap_or_default())
}

/// `host:port/path/to/repo` → (`host:port`, `path/to/repo`).
fn split_repository(repository: &str) -> (&str, &str) {
    repository.split_once('/').unwrap()
}

/// PUTs manifest bytes under `reference`; returns their digest.
fn put_manifest(repository: &str, reference: &str, manifest: &Value) -> String {
    let (host, path) = split_repository(repository);
    let bytes = serde_json::to_vec(manifest).unwrap();
    let media_type = manifest["mediaType"]
        .as_str()
        .expect("manifest has a mediaType");
    let (code, body) = curl(
        "PUT",
        &format!("http://{host}/v2/{path}/manifests/{reference}"),
        &[&format!("Content-Type: {media_type}")],
        Some(&bytes),
        None,
    );
    assert_eq!(
        code,
        201,
        "PUT manifest {repository}:{reference}: {}",
        String::from_utf8_lossy(&body)
    );
    sha256(&bytes)
}

fn delete_manifest(repository: &str, digest: &str) {
    let (host, path) = split_repository(repository);
    let (code, body) = curl(
        "DELETE",
        &format!("http://{host}/v2/{path}/manifests/{digest}"),
        &[],
        None,
        None,
    );
    assert_eq!(
        code,
        202,
        "DELETE {repository}@{digest}: {}",
        String::from_utf8_lossy(&body)
    );
}

fn blob(repository: &str, digest: &str) -> Vec<u8> {
    let (host, path) = split_repository(repository);
    let (code, body) = curl(
        "GET",
        &format!("http://{host}/v2/{path}/blobs/{digest}"),
        &["Accept: */*"],
        None,
        None,
    );
    assert_eq!(code, 200, "GET blob {repository}@{digest}");
    body
}

/// The bytes of the layer titled `title` in the manifest `repository@digest`.
fn layer_bytes(repository: &str, digest: &str, title: &str) -> Vec<u8> {
    let manifest = skopeo_json(&format!("{repository}@{digest}"));
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.opencontainers.image.title"] == title)
        .unwrap_or_else(|| panic!("no layer {title} in {manifest:#}"));
    let bytes = blob(repository, layer["digest"].as_str().unwrap());
    assert_eq!(sha256(&bytes), layer["digest"].as_str().unwrap());
    bytes
}

/// Events of a namespace with `reason` whose note contains `needle`.
fn events_with(scene: &Scene, ns: &str, reason: &str, needle: &str) -> Vec<Value> {
    scene
        .cluster
        .events(ns)
        .into_iter()
        .filter(|e| e["reason"] == reason && e["note"].as_str().is_some_and(|n| n.contains(needle)))
        .collect()
}

/// How often `reason` was reported about `object`: kube's event recorder folds a repeat of the
/// same reason and action on the same object within minutes into the first event's `series`
/// (keeping the first note), as client-go does.
fn occurrences(scene: &Scene, ns: &str, reason: &str, object: &str) -> u64 {
    scene
        .cluster
        .events(ns)
        .iter()
        .filter(|e| e["reason"] == reason && e["regarding"]["name"] == object)
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum()
}

fn wait_for_event(scene: &Scene, ns: &str, reason: &str, needle: &str, timeout: Duration) -> Value {
    wait_for(
        &format!("an event {reason} mentioning {needle:?} in {ns}"),
        timeout,
        || events_with(scene, ns, reason, needle).into_iter().next(),
    )
}

/// Scenario 1: The examples, applied with kubectl, converge; skopeo reads every tag at
/// `.status.digest`.
#[test]
fn examples_converge_under_the_charts_rbac() {
    let (releases, mirrors) = ("e2e-examples-releases", "e2e-examples-mirrors");
    let mut scene = Scene::new(&[releases, mirrors], Watch::AllNamespaces);
    scene.start_controller("all-namespaces", &[], &[]);

    let examples = examples_with_containers_for(&scene.registry);
    let dir = examples.path();
    let mut expected_objects = 0;
    for folder in [dir.to_path_buf(), dir.join("controller-only")] {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("namespace: releases", &format!("namespace: {releases}"))
                    .replace("namespace: mirrors", &format!("namespace: {mirrors}"));
                expected_objects += text.matches("kind: GardenArtifact").count();
                std::fs::write(&path, text).unwrap();
            }
        }
    }
    assert!(
        expected_objects >= 4,
        "the examples hold {expected_objects} GardenArtifacts"
    );
    let top = dir.to_string_lossy().into_owned();
    let controller_only = dir.join("controller-only").to_string_lossy().into_owned();
    scene
        .cluster
        .kubectl_ok(&["apply", "-f", &top, "-f", &controller_only]);

    let started = Instant::now();
    for ns in [releases, mirrors] {
        scene.cluster.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            "gardenartifact",
            "--all",
            "-n",
            ns,
            "--timeout=60s",
        ]);
    }
    eprintln!(
        "examples Ready after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut objects = Vec::new();
    for ns in [releases, mirrors] {
        let list: Value = serde_json::from_str(
            &scene
                .cluster
                .kubectl_ok(&["get", "ga", "-n", ns, "-o", "json"]),
        )
        .unwrap();
        objects.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        objects.len(),
        expected_objects,
        "every example GardenArtifact exists"
    );
    for object in &objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        let status = &object["status"];
        let generation = generation(object);
        assert_eq!(
            status["observedGeneration"].as_i64(),
            Some(generation),
            "{name}: observedGeneration"
        );
        for (type_, expected) in [
            ("Ready", "True"),
            ("Reconciling", "False"),
            ("Stalled", "False"),
        ] {
            let c =
                condition(object, type_).unwrap_or_else(|| panic!("{name}: no {type_} condition"));
            assert_eq!(c["status"], expected, "{name}: {type_}: {c}");
            assert_eq!(
                c["observedGeneration"].as_i64(),
                Some(generation),
                "{name}: {type_}"
            );
            assert!(
                c["lastTransitionTime"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()),
                "{name}: {type_}"
            );
        }
        let digest = status_digest(object);
        let repository = object["spec"]["repository"].as_str().unwrap();
        let spec_tags: Vec<&str> = object["spec"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        // An artefact found through its subject may have no tag; status.tags is then absent.
        let status_tags: Vec<(&str, &str)> = status["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .map(|t| (t["name"].as_str().unwrap(), t["digest"].as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            status_tags.iter().map(|t| t.0).collect::<Vec<_>>(),
            spec_tags,
            "{name}: status.tags"
        );
        for (tag, tag_digest) in &status_tags {
            assert_eq!(*tag_digest, digest, "{name}: status.tags[{tag}]");
            assert_eq!(
                digest_of(&format!("{repository}:{tag}")).as_deref(),
                Some(digest.as_str()),
                "{name}: skopeo reads {repository}:{tag}"
            );
        }
        let raw = skopeo_raw(&format!("{repository}@{digest}"))
            .unwrap_or_else(|| panic!("{name}: skopeo cannot read {repository}@{digest}"));
        assert_eq!(
            status["size"].as_u64(),
            Some(raw.len() as u64),
            "{name}: status.size"
        );
        let manifest: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            status["mediaType"], manifest["mediaType"],
            "{name}: status.mediaType"
        );
        assert!(
            status["lastSyncTime"].as_str().is_some(),
            "{name}: lastSyncTime"
        );
        if object["spec"]["subject"].is_object() {
            assert_eq!(
                manifest["subject"]["digest"], status["subject"]["digest"],
                "{name}: the manifest's subject is status.subject"
            );
        }
        // References to other objects resolved to their digests, which the manifest names.
        for reference in status["references"].as_array().into_iter().flatten() {
            let Some(other) = reference["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("artifactRef:"))
            else {
                continue;
            };
            let other = objects
                .iter()
                .find(|o| {
                    o["metadata"]["name"] == other
                        && o["metadata"]["namespace"] == object["metadata"]["namespace"]
                })
                .unwrap_or_else(|| panic!("{name}: references unknown {other}"));
            assert_eq!(
                reference["digest"], other["status"]["digest"],
                "{name}: {reference}"
            );
            let text = String::from_utf8_lossy(&raw);
            assert!(
                text.contains(reference["digest"].as_str().unwrap()),
                "{name}: the manifest names {reference}"
            );
        }
    }
    // Copies (mirror, promotions) are byte for byte the artefact whose tag they name; the
    // container images are copies of what examples/containers/build.sh pushed.
    let mut copies = 0;
    let mut copies_of_builds = 0;
    for copy in &objects {
        let Some(source) = copy["spec"]["source"]["image"]["reference"].as_str() else {
            continue;
        };
        let (repository, tag) = source.rsplit_once(':').unwrap();
        let producer = objects.iter().find(|o| {
            o["spec"]["repository"] == repository
                && o["spec"]["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == tag))
        });
        match producer {
            Some(producer) => {
                assert_eq!(
                    status_digest(copy),
                    status_digest(producer),
                    "{} copies {source}",
                    copy["metadata"]["name"]
                );
                copies += 1;
            }
            None => {
                assert!(
                    repository.ends_with("/builds/gardenlinux/container"),
                    "no example produces {source}"
                );
                copies_of_builds += 1;
            }
        }
        assert_eq!(
            digest_of(source).as_deref(),
            Some(status_digest(copy).as_str()),
            "{} copies {source}",
            copy["metadata"]["name"]
        );
    }
    assert!(copies >= 2, "the examples hold a mirror and a promotion");
    assert_eq!(copies_of_builds, 2, "the release's two container images");

    // The release index lists the container images as podman would: platform os linux, no
    // annotations, the digests their objects report.
    let release = objects
        .iter()
        .find(|o| {
            o["spec"]["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "1877.5"))
        })
        .expect("the release index");
    let index = skopeo_json(&format!(
        "{}@{}",
        release["spec"]["repository"].as_str().unwrap(),
        status_digest(release)
    ));
    let containers: Vec<(Value, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["platform"]["os"] == "linux")
        .map(|e| {
            assert!(e.get("annotations").is_none(), "{e}");
            (
                e["platform"].clone(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(Value, String)> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let object = objects
                .iter()
                .find(|o| o["metadata"]["name"] == format!("gl-1877-5-container-{arch}"))
                .unwrap_or_else(|| panic!("no container object for {arch}"));
            (
                serde_json::json!({"os": "linux", "architecture": arch}),
                status_digest(object),
            )
        })
        .collect();
    assert_eq!(containers, expected, "{index:#}");

    // Printer columns.
    let table = scene.cluster.kubectl_ok(&["get", "ga", "-n", releases]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "DIGEST", "TAGS", "AGE"],
        "{table}"
    );
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        objects
            .iter()
            .filter(|o| o["metadata"]["namespace"] == releases)
            .count(),
        "{table}"
    );
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let object = objects
            .iter()
            .find(|o| o["metadata"]["name"] == cells[0])
            .unwrap();
        assert_eq!(cells[1], "True", "{table}");
        assert_eq!(cells[2], status_digest(object), "{table}");
        match object["spec"]["tags"][0].as_str() {
            Some(tag) => assert!(cells[3].contains(tag), "{table}"),
            None => assert_eq!(cells[3], "[]", "{table}"),
        }
    }
}

/// Scenario 2: A tag moved or deleted by hand is put back on the next resync, with a DriftRepaired
/// event.
#[test]
fn drift_is_repaired_on_resync() {
    let ns = "e2e-drift";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let repository = format!("{}/e2e/drift", scene.registry.addr);
    scene.cluster.apply(&artifact(
        ns,
        "drifty",
        &repository,
        &["v1", "v2"],
        "drift me",
        json!({ "interval": "5s" }),
    ));
    let object = scene.wait_ready(ns, "drifty");
    let digest = status_digest(&object);
    let (v1, v2) = (format!("{repository}:v1"), format!("{repository}:v2"));
    assert_eq!(digest_of(&v1).as_deref(), Some(digest.as_str()));
    let manifest = skopeo_json(&format!("{repository}@{digest}"));

    // Moved: another manifest (same blobs, one more annotation) under v1.
    let mut other = manifest.clone();
    other["annotations"]["e2e.example/moved"] = json!("by hand");
    let moved = put_manifest(&repository, "v1", &other);
    assert_ne!(moved, digest);
    assert_eq!(
        digest_of(&v1).as_deref(),
        Some(moved.as_str()),
        "the tag moved"
    );
    let started = Instant::now();
    wait_for(
        "v1 back on the object's digest",
        Duration::from_secs(30),
        || (digest_of(&v1).as_deref() == Some(digest.as_str())).then_some(()),
    );
    eprintln!(
        "moved tag restored after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let event = wait_for_event(
        &scene,
        ns,
        "DriftRepaired",
        "tag v1 had been moved",
        Duration::from_secs(10),
    );
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["name"], "drifty");
    assert!(event["note"].as_str().unwrap().contains(&moved), "{event}");
    let repairs_before = occurrences(&scene, ns, "DriftRepaired", "drifty");

    // Deleted: Distribution deletes manifests, not tags; a manifest only v1 points at, deleted
    // by digest, takes v1 with it (v2 stays on the object's digest).
    let mut deleted = false;
    for attempt in 0..3 {
        let mut tombstone = manifest.clone();
        tombstone["annotations"]["e2e.example/tombstone"] = json!(format!("attempt {attempt}"));
        let tombstone = put_manifest(&repository, "v1", &tombstone);
        delete_manifest(&repository, &tombstone);
        let (host, path) = split_repository(&repository);
        let (code, _) = curl(
            "HEAD",
            &format!("http://{host}/v2/{path}/manifests/v1"),
            &["Accept: application/vnd.oci.image.manifest.v1+json"],
            None,
            None,
        );
        if code == 404 {
            deleted = true;
            break;
        }
        // The controller resynced in between and put v1 back first: again.
    }
    assert!(deleted, "could not delete tag v1 by hand");
    assert_eq!(
        digest_of(&v2).as_deref(),
        Some(digest.as_str()),
        "v2 untouched"
    );
    let started = Instant::now();
    wait_for("v1 recreated", Duration::from_secs(30), || {
        (digest_of(&v1).as_deref() == Some(digest.as_str())).then_some(())
    });
    eprintln!(
        "deleted tag recreated after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // A second DriftRepaired on the same object: a new event, or (kube's recorder) the
    // first one's series count going up.
    wait_for(
        "a second DriftRepaired occurrence",
        Duration::from_secs(10),
        || (occurrences(&scene, ns, "DriftRepaired", "drifty") > repairs_before).then_some(()),
    );

    // Resyncs did it, not a change of the object.
    let object = scene.cluster.artifact(ns, "drifty");
    assert_eq!(generation(&object), 1);
    assert_eq!(condition_status(&object, "Ready").as_deref(), Some("True"));
    assert_eq!(status_digest(&object), digest);
}

/// Scenario 3: Deletion: Retain leaves the registry alone; Delete removes the object's tags but not
/// a tag of another object on the same digest.
#[test]
fn deletion_policies() {
    let ns = "e2e-deletion";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let kept_repo = format!("{}/e2e/deletion/kept", scene.registry.addr);
    let shared_repo = format!("{}/e2e/deletion/shared", scene.registry.addr);
    for object in [
        artifact(
            ns,
            "retained",
            &kept_repo,
            &["v1"],
            "retained content",
            json!({}),
        ),
        artifact(
            ns,
            "doomed",
            &shared_repo,
            &["v1", "v2"],
            "shared content",
            json!({ "deletionPolicy": "Delete" }),
        ),
        // Same file name and content as `doomed`: the same manifest, hence the same digest.
        artifact(
            ns,
            "bystander",
            &shared_repo,
            &["stays"],
            "shared content",
            json!({ "source": { "files": [
                    { "name": "doomed.txt", "content": "shared content", "mediaType": "text/plain" },
                ] } }),
        ),
    ] {
        scene.cluster.apply(&object);
    }
    let retained = scene.wait_ready(ns, "retained");
    let doomed = scene.wait_ready(ns, "doomed");
    let bystander = scene.wait_ready(ns, "bystander");
    // Retain has nothing to do on deletion: no finalizer; Delete has one.
    assert!(retained["metadata"]["finalizers"].is_null(), "{retained:#}");
    assert_eq!(
        doomed["metadata"]["finalizers"],
        json!(["oci.gardenlinux.io/cleanup"])
    );
    let shared = status_digest(&doomed);
    assert_eq!(
        status_digest(&bystander),
        shared,
        "precondition: one digest, two owners"
    );

    // Retain (the default).
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "retained", "-n", ns, "--timeout=30s"]);
    assert!(
        scene.cluster.get(ns, "ga", "retained").is_none(),
        "object gone"
    );
    assert_eq!(
        digest_of(&format!("{kept_repo}:v1")),
        Some(status_digest(&retained)),
        "Retain keeps the tag"
    );

    // Delete.
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "doomed", "-n", ns, "--timeout=30s"]);
    assert!(
        scene.cluster.get(ns, "ga", "doomed").is_none(),
        "finalizer removed, object gone"
    );
    for tag in ["v1", "v2"] {
        assert_eq!(
            digest_of(&format!("{shared_repo}:{tag}")),
            None,
            "tag {tag} deleted"
        );
    }
    assert_eq!(
        digest_of(&format!("{shared_repo}:stays")).as_deref(),
        Some(shared.as_str()),
        "another object's tag on the same digest stays"
    );
    // Both tags deleted in one round: one event that names both.
    assert_eq!(occurrences(&scene, ns, "TagDeleted", "doomed"), 1);
    assert!(
        !events_with(
            &scene,
            ns,
            "TagDeleted",
            &format!("deleted tags v1, v2 of {shared_repo} (deletionPolicy: Delete)")
        )
        .is_empty()
    );
    let bystander = scene.cluster.artifact(ns, "bystander");
    assert_eq!(
        condition_status(&bystander, "Ready").as_deref(),
        Some("True")
    );
}

/// Scenario 4: The API server itself refuses invalid objects, naming the field.
#[test]
fn invalid_objects_are_refused_by_the_api_server() {
    let ns = "e2e-invalid";
    let scene = Scene::new(&[ns], Watch::OwnNamespace);
    let repository = format!("{}/e2e/invalid", scene.registry.addr);
    let refused = |yaml: &str| {
        let out = scene.cluster.kubectl_stdin(&["apply", "-f", "-"], yaml);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let bad_tag = refused(&artifact(
        ns,
        "bad-tag",
        &repository,
        &["-bad"],
        "x",
        json!({}),
    ));
    assert!(
        bad_tag.contains("spec.tags") && bad_tag.contains("\"-bad\""),
        "{bad_tag}"
    );

    let two_sources = artifact(
        ns,
        "two-sources",
        &repository,
        &["v1"],
        "x",
        json!({ "source": {
            "files": [{ "name": "x.txt", "content": "x", "mediaType": "text/plain" }],
            "image": { "reference": format!("{repository}:other") },
        } }),
    );
    let two_sources = refused(&two_sources);
    assert!(
        two_sources.contains("spec.source") && two_sources.contains("oneOf"),
        "{two_sources}"
    );

    for name in ["bad-tag", "two-sources"] {
        assert!(
            scene.cluster.get(ns, "ga", name).is_none(),
            "{name} was not stored"
        );
    }
    // The same object with a good tag and one source is accepted.
    scene
        .cluster
        .apply(&artifact(ns, "good", &repository, &["v1"], "x", json!({})));
    assert!(scene.cluster.get(ns, "ga", "good").is_some());
}

/// Scenario 5: A Secret with a wrong password: Ready=False with the registry's 401; the Secret
/// fixed, the object converges without being touched. No password anywhere.
#[test]
fn a_fixed_secret_re_reconciles() {
    let ns = "e2e-secret";
    let (user, password, wrong) = ("e2e-user", "Corr3ct-h0rse-e2e-91f3", "Wr0ng-p0ny-e2e-5c7a");
    let mut scene = Scene::with_registry(&[ns], Watch::OwnNamespace, || {
        Registry::start_with_basic_auth(user, password)
    });
    scene.start_controller(
        "c",
        &["--namespace", ns],
        &[("RUST_LOG", "info,garden_artifacts=debug")],
    );
    let host = scene.registry.addr.clone();
    let secret = |pass: &str| {
        let yaml = scene.cluster.kubectl_ok(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            ns,
            &format!("--docker-server={host}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={pass}"),
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        scene.cluster.apply(&yaml);
    };
    secret(wrong);
    let repository = format!("{host}/e2e/secret");
    scene.cluster.apply(&artifact(
        ns,
        "private",
        &repository,
        &["v1"],
        "behind a password",
        json!({ "credentials": { "secretRef": { "name": "regcred" } } }),
    ));

    let failing = scene.wait_condition(ns, "private", "Ready", "False", Duration::from_secs(60));
    let message = condition(&failing, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("with the wrong password: {message}");
    assert!(
        message.contains("401"),
        "the status names the registry's 401: {message}"
    );
    let generation_before = generation(&failing);

    secret(password);
    let started = Instant::now();
    let ready = scene.wait_ready(ns, "private");
    let took = started.elapsed();
    eprintln!(
        "Ready {:.1}s after the Secret was fixed",
        took.as_secs_f64()
    );
    // The Secret's watch triggers it; waiting for the 10 s error requeue would take longer.
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}: the Secret change did not trigger a reconcile"
    );
    assert_eq!(
        generation(&ready),
        generation_before,
        "the object was not touched"
    );
    let digest = status_digest(&ready);
    let (code, body) = curl(
        "GET",
        &format!("http://{host}/v2/e2e/secret/manifests/v1"),
        &["Accept: application/vnd.oci.image.manifest.v1+json"],
        None,
        Some(&format!("{user}:{password}")),
    );
    assert_eq!(code, 200);
    assert_eq!(
        sha256(&body),
        digest,
        "the tag behind basic auth is at status.digest"
    );

    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secrets = [
        password.to_string(),
        wrong.to_string(),
        b64(&format!("{user}:{password}")),
        b64(&format!("{user}:{wrong}")),
    ];
    let object_yaml = scene
        .cluster
        .kubectl_ok(&["get", "ga", "private", "-n", ns, "-o", "yaml"]);
    let events = serde_json::to_string(&scene.cluster.events(ns)).unwrap();
    let log = scene.controller("c").log_text();
    assert!(log.contains("private"), "the log is the controller's log");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a credential is in the controller's log"
        );
        assert!(
            !object_yaml.contains(secret.as_str()),
            "a credential is in the object:\n{object_yaml}"
        );
        assert!(
            !events.contains(secret.as_str()),
            "a credential is in the events"
        );
    }
}

/// A registry refusing the credentials needs a person: `Ready=False` with reason
/// `Unauthorized`, naming the Secret; one Warning event, not one per retry; retries spaced by
/// a growing backoff (the registry's access log shows each round); and once the Secret is
/// fixed, the object converges at once.
#[test]
fn refused_credentials_warn_once_and_back_off() {
    let ns = "e2e-refused";
    let (user, password, wrong) = ("e2e-user", "Corr3ct-h0rse-e2e-4b1d", "Wr0ng-p0ny-e2e-77e0");
    let mut scene = Scene::with_registry(&[ns], Watch::OwnNamespace, || {
        Registry::start_with_basic_auth(user, password)
    });
    scene.start_namespaced_controller("c");
    let host = scene.registry.addr.clone();
    let secret = |pass: &str| {
        let yaml = scene.cluster.kubectl_ok(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            ns,
            &format!("--docker-server={host}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={pass}"),
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        scene.cluster.apply(&yaml);
    };
    secret(wrong);
    scene.cluster.apply(&artifact(
        ns,
        "private",
        &format!("{host}/e2e/refused"),
        &["v1"],
        "behind a password",
        json!({ "credentials": { "secretRef": { "name": "regcred" } } }),
    ));

    let failing = scene.wait_condition(ns, "private", "Ready", "False", Duration::from_secs(60));
    let ready = condition(&failing, "Ready").unwrap();
    let message = ready["message"].as_str().unwrap();
    assert_eq!(ready["reason"], "Unauthorized", "{ready}");
    assert!(
        message.contains(&format!("Secret {ns}/regcred")) && message.contains("401"),
        "the status names the Secret and the registry's answer: {message}"
    );
    assert!(!message.contains(wrong), "{message}");

    std::thread::sleep(Duration::from_secs(125));
    let warnings: Vec<Value> = scene
        .cluster
        .events(ns)
        .into_iter()
        .filter(|e| e["type"] == "Warning" && e["regarding"]["name"] == "private")
        .collect();
    assert_eq!(warnings.len(), 1, "one Warning: {warnings:#?}");
    assert_eq!(warnings[0]["reason"], "Unauthorized", "{warnings:#?}");
    assert!(
        warnings[0]["series"].is_null(),
        "the Warning was not repeated: {warnings:#?}"
    );

    // Each round asks the registry within a second or two; rounds are further apart.
    let refused: Vec<i64> = scene
        .registry
        .timed_requests()
        .into_iter()
        .filter(|(_, r)| r.status == 401)
        .map(|(at, _)| at)
        .collect();
    let mut rounds: Vec<i64> = Vec::new();
    for at in refused {
        if rounds.last().is_none_or(|last| at - last > 3) {
            rounds.push(at);
        }
    }
    let gaps: Vec<i64> = rounds.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("rounds refused at {rounds:?}, {gaps:?} s apart");
    // 10 s, 20 s, 40 s (the next, 80 s later, falls after the 2 minutes).
    assert!(
        (3..=4).contains(&gaps.len()),
        "4 or 5 rounds in ~2 minutes: {gaps:?}"
    );
    assert!(
        (9..=12).contains(&gaps[0]),
        "first retry after 10 s: {gaps:?}"
    );
    for pair in gaps.windows(2) {
        assert!(
            pair[1] * 10 >= pair[0] * 15,
            "each retry waits longer than the last: {gaps:?}"
        );
    }

    secret(password);
    let started = Instant::now();
    scene.wait_ready(ns, "private");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}: the backoff held back the fixed Secret"
    );
}

/// The CRD on the API server, made newer than this controller for one test: `spec.retention`,
/// a field the controller's version does not know, is kept by the API server. Put back on drop.
struct NewerCrd {
    cluster: &'static common::cluster::Cluster,
}

const CRD_NAME: &str = "gardenartifacts.oci.gardenlinux.io";
const NEWER_FIELD: &str = "retention";

impl NewerCrd {
    fn install(cluster: &'static common::cluster::Cluster) -> Self {
        Self::edit(cluster, |spec| {
            spec["properties"][NEWER_FIELD] = json!({ "type": "string" });
        });
        wait_for(
            "the API server to keep the newer field",
            Duration::from_secs(30),
            || {
                let probe = artifact_object(
                    "default",
                    "probe",
                    "h:1/probe",
                    &["v1"],
                    "probe",
                    json!({ NEWER_FIELD: "30d" }),
                );
                let out = cluster.kubectl_stdin(
                    &[
                        "create",
                        "--dry-run=server",
                        "--validate=false",
                        "-o",
                        "json",
                        "-f",
                        "-",
                    ],
                    &probe.to_string(),
                );
                let created: Value = serde_json::from_slice(&out.stdout).ok()?;
                created["spec"].get(NEWER_FIELD).is_some().then_some(())
            },
        );
        NewerCrd { cluster }
    }

    /// Replaces the CRD with `change` applied to the schema of its `spec`.
    fn edit(cluster: &common::cluster::Cluster, change: impl Fn(&mut Value)) {
        let mut crd: Value =
            serde_json::from_str(&cluster.kubectl_ok(&["get", "crd", CRD_NAME, "-o", "json"]))
                .unwrap();
        for version in crd["spec"]["versions"].as_array_mut().unwrap() {
            change(&mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]);
        }
        let out = cluster.kubectl_stdin(&["replace", "-f", "-"], &crd.to_string());
        assert!(
            out.status.success(),
            "kubectl replace of the CRD failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NewerCrd {
    fn drop(&mut self) {
        Self::edit(self.cluster, |spec| {
            if let Some(properties) = spec["properties"].as_object_mut() {
                properties.remove(NEWER_FIELD);
            }
        });
    }
}

/// The CRD upgraded under a running controller: one object written against it (a field this
/// controller does not know) is reported on itself, `Stalled` with reason `InvalidObject`
/// naming the field, with one Warning; the watch goes on, so the other objects, one of them
/// created after it, converge; and once the field is gone, the object converges too.
#[test]
fn an_object_of_a_newer_crd_is_reported_and_the_others_still_converge() {
    let ns = "e2e-newer-crd";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let repository = |name: &str| format!("{}/e2e/newer/{name}", scene.registry.addr);
    scene.cluster.apply(&artifact(
        ns,
        "before",
        &repository("before"),
        &["v1"],
        "before",
        json!({}),
    ));
    scene.wait_ready(ns, "before");
    // The CRD is upgraded under the running controller, as when a newer chart is installed.
    let _newer = NewerCrd::install(scene.cluster);
    let newer = artifact(
        ns,
        "newer",
        &repository("newer"),
        &["v1"],
        "newer",
        json!({ NEWER_FIELD: "30d" }),
    );
    let out = scene
        .cluster
        .kubectl_stdin(&["apply", "--validate=false", "-f", "-"], &newer);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stalled = scene.wait_condition(ns, "newer", "Stalled", "True", Duration::from_secs(60));
    let condition = condition(&stalled, "Stalled").unwrap();
    let message = condition["message"].as_str().unwrap();
    assert_eq!(condition["reason"], "InvalidObject", "{condition}");
    assert!(
        message.contains("spec") && message.contains(NEWER_FIELD),
        "the message names the field: {message}"
    );
    assert_eq!(
        condition_status(&stalled, "Ready").as_deref(),
        Some("False")
    );

    scene.cluster.apply(&artifact(
        ns,
        "after",
        &repository("after"),
        &["v1"],
        "after",
        json!({}),
    ));
    scene.wait_ready(ns, "after");
    assert!(
        scene.controller_mut("c").running(),
        "the controller still runs"
    );

    let warnings: Vec<Value> = scene
        .cluster
        .events(ns)
        .into_iter()
        .filter(|e| e["type"] == "Warning" && e["regarding"]["name"] == "newer")
        .collect();
    assert_eq!(warnings.len(), 1, "one Warning: {warnings:#?}");
    assert_eq!(warnings[0]["reason"], "InvalidObject", "{warnings:#?}");

    scene.cluster.kubectl_ok(&[
        "patch",
        "gardenartifact",
        "newer",
        "-n",
        ns,
        "--type=json",
        "-p",
        &format!(r#"[{{"op":"remove","path":"/spec/{NEWER_FIELD}"}}]"#),
    ]);
    scene.wait_ready(ns, "newer");
}

/// Scenario 6: A layer from a ConfigMap: a new ConfigMap content moves the tag to a new digest.
#[test]
fn a_config_map_change_moves_the_tag() {
    let ns = "e2e-configmap";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let examples = examples_for(&scene.registry);
    let manifest = std::fs::read_to_string(
        examples
            .path()
            .join("controller-only/kvm-flavour-from-configmap.yaml"),
    )
    .unwrap()
    .replace("namespace: releases", &format!("namespace: {ns}"));
    scene.cluster.apply(&manifest);
    let (name, map, key) = (
        "gl-1877-5-kvm-gardener-prod-amd64",
        "gl-1877-5-kvm-build",
        "kvm-gardener_prod-amd64-1877.5.release",
    );
    let first = scene.wait_ready(ns, name);
    let old_digest = status_digest(&first);
    let repository = first["spec"]["repository"].as_str().unwrap().to_string();
    let tag = format!(
        "{repository}:{}",
        first["spec"]["tags"][0].as_str().unwrap()
    );
    let old_content = scene.cluster.get(ns, "configmap", map).unwrap()["data"][key]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        layer_bytes(&repository, &old_digest, key),
        old_content.as_bytes()
    );

    let new_content = format!("{old_content}GARDENLINUX_E2E=changed\n");
    let patch = json!({ "data": { key: new_content } }).to_string();
    scene.cluster.kubectl_ok(&[
        "patch",
        "configmap",
        map,
        "-n",
        ns,
        "--type=merge",
        "-p",
        &patch,
    ]);
    let started = Instant::now();
    let moved = wait_for("a new status.digest", Duration::from_secs(30), || {
        let object = scene.cluster.artifact(ns, name);
        (object["status"]["digest"]
            .as_str()
            .is_some_and(|d| d != old_digest)
            && condition_status(&object, "Ready").as_deref() == Some("True"))
        .then_some(object)
    });
    eprintln!(
        "new digest {:.1}s after the ConfigMap changed",
        started.elapsed().as_secs_f64()
    );
    let new_digest = status_digest(&moved);
    assert_eq!(
        digest_of(&tag).as_deref(),
        Some(new_digest.as_str()),
        "the tag moved"
    );
    assert_eq!(
        layer_bytes(&repository, &new_digest, key),
        new_content.as_bytes()
    );
    assert_eq!(
        generation(&moved),
        generation(&first),
        "the object was not touched"
    );
}

/// Scenario 7: A converged object costs no status write and no registry write per resync.
#[test]
fn a_converged_resync_writes_nothing() {
    let ns = "e2e-quiet";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    // A URL source too: its size is learned once, so a resync asks nothing about its blob.
    let files = FileServer::start();
    let image = vec![3u8; 100_000];
    let url = files.put("disk.raw", &image);
    let file_host = files.base_url.trim_start_matches("http://").to_string();
    // And JSON logs, as the chart runs it: every line must be one JSON object.
    scene.start_controller(
        "c",
        &[
            "--namespace",
            ns,
            "--allow-source-host",
            &file_host,
            "--log-format",
            "json",
        ],
        &[],
    );
    let repository = format!("{}/e2e/quiet", scene.registry.addr);
    scene.cluster.apply(&artifact(
        ns,
        "quiet",
        &repository,
        &["v1", "v2"],
        "nothing to do",
        json!({ "interval": "2s" }),
    ));
    scene.cluster.apply(&artifact(
        ns,
        "quiet-url",
        &repository,
        &["disk"],
        "",
        json!({ "interval": "2s", "source": { "files": [
            { "name": "disk.raw", "url": url, "digest": sha256(&image) },
        ] } }),
    ));
    scene.wait_ready(ns, "quiet");
    scene.wait_ready(ns, "quiet-url");
    // The status write itself is a change the controller sees once more; let that pass.
    std::thread::sleep(Duration::from_secs(3));
    let controller = scene.controller("c");
    let before = scene.cluster.artifact(ns, "quiet");
    let writes_before = controller.metric("garden_artifacts_status_writes_total");
    let reconciles_before = controller.metric("garden_artifacts_reconciles_total");
    let requests_before = scene.registry.requests().len();

    std::thread::sleep(Duration::from_secs(10));

    let after = scene.cluster.artifact(ns, "quiet");
    let writes_after = controller.metric("garden_artifacts_status_writes_total");
    let reconciles_after = controller.metric("garden_artifacts_reconciles_total");
    let window: Vec<_> = scene.registry.requests().split_off(requests_before);
    let heads = window.iter().filter(|r| r.method == "HEAD").count();
    let others: Vec<_> = window.iter().filter(|r| r.method != "HEAD").collect();
    eprintln!(
        "converged window of 10s at interval 2s: {} reconciles, {} status writes, resourceVersion {} -> {}, {} registry requests: {} HEAD, {} other {:?}",
        reconciles_after - reconciles_before,
        writes_after - writes_before,
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"],
        window.len(),
        heads,
        others.len(),
        others
    );
    assert!(
        reconciles_after - reconciles_before >= 3.0,
        "resyncs happened in the window"
    );
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "no write to the object"
    );
    assert_eq!(after["status"], before["status"]);
    assert_eq!(writes_after, writes_before, "no status write");
    assert!(others.is_empty(), "only HEADs: {others:?}");
    assert!(heads > 0, "the resyncs checked the registry");
    let not_tags: Vec<_> = window
        .iter()
        .filter(|r| !r.uri.contains("/manifests/") || r.uri.contains("sha256:"))
        .collect();
    assert!(
        not_tags.is_empty(),
        "one HEAD per tag and nothing else, the URL source's blob included: {not_tags:?}"
    );
    let log = controller.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
}

/// A new object costs one API write, its status, in one round: with `deletionPolicy: Retain`
/// a deletion has nothing to do, so no finalizer is set. With `Delete` it costs the two
/// writes Kubernetes 1.20 allows at the least (the finalizer, a metadata patch; the status, a
/// subresource). No write triggers another round (which would HEAD its tags again), and the
/// retained object, deleted, goes at once.
#[test]
fn a_new_object_costs_one_api_write_and_two_with_delete() {
    let ns = "e2e-first-round";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let admin = scene
        .cluster
        .admin_kubeconfig
        .to_string_lossy()
        .into_owned();
    let watched = scene.cluster.state_dir.join(format!("{ns}.watch.json"));
    let mut watch = std::process::Command::new("kubectl")
        .args(["--kubeconfig", &admin, "get", "ga", "-n", ns, "--watch"])
        .args(["--output-watch-events", "-o", "json"])
        .stdout(std::fs::File::create(&watched).expect("a file for the watch"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl watches");
    std::thread::sleep(Duration::from_secs(2));
    let repository = format!("{}/e2e/first", scene.registry.addr);
    scene.cluster.apply(&artifact(
        ns,
        "first",
        &repository,
        &["v1", "v2"],
        "first",
        json!({}),
    ));
    scene.cluster.apply(&artifact(
        ns,
        "second",
        &repository,
        &["v3"],
        "second",
        json!({ "deletionPolicy": "Delete" }),
    ));
    let first = scene.wait_ready(ns, "first");
    let second = scene.wait_ready(ns, "second");
    std::thread::sleep(Duration::from_secs(4));
    let _ = watch.kill();
    let _ = watch.wait();

    assert!(
        first["metadata"]["finalizers"].is_null(),
        "no finalizer with Retain: {first:#}"
    );
    assert_eq!(
        second["metadata"]["finalizers"],
        json!(["oci.gardenlinux.io/cleanup"])
    );
    let text = std::fs::read_to_string(&watched).expect("the watch's output");
    let events_of = |name: &str| -> Vec<String> {
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map(|event| event.expect("a watch event"))
            .filter(|event| event["object"]["metadata"]["name"] == name)
            .map(|event| event["type"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(
        events_of("first"),
        ["ADDED", "MODIFIED"],
        "kubectl's create, then the status"
    );
    assert_eq!(
        events_of("second"),
        ["ADDED", "MODIFIED", "MODIFIED"],
        "kubectl's create, then the finalizer and the status"
    );
    let controller = scene.controller("c");
    let heads = scene
        .registry
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.uri.contains("/manifests/"))
        .count();
    assert_eq!(controller.metric("garden_artifacts_reconciles_total"), 2.0);
    assert_eq!(
        controller.metric("garden_artifacts_status_writes_total"),
        2.0
    );
    assert!(
        heads <= 3,
        "each tag looked at once: {heads} manifest HEADs"
    );

    // Deleted, the retained object goes at once; its tags stay.
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "first", "-n", ns, "--timeout=30s"]);
    assert!(scene.cluster.get(ns, "ga", "first").is_none());
    assert!(digest_of(&format!("{repository}:v1")).is_some());
}

/// Scenario 8: Two replicas with leader election: only the leader reconciles; killed, the other
/// takes over.
#[test]
fn leader_election_fails_over() {
    let ns = "e2e-leader";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    let lease = "e2e-leader";
    let args = |identity: &'static str| {
        vec![
            "--namespace",
            ns,
            "--leader-elect",
            "--lease-namespace",
            common::cluster::SYSTEM_NAMESPACE,
            "--lease-name",
            lease,
            "--identity",
            identity,
        ]
    };
    scene.start_controller("a", &args("a"), &[]);
    wait_for("a to lead", Duration::from_secs(20), || {
        scene
            .controller("a")
            .log_text()
            .contains("became leader")
            .then_some(())
    });
    scene.start_controller("b", &args("b"), &[]);
    let holder = || {
        scene.cluster.kubectl_ok(&[
            "get",
            "lease",
            lease,
            "-n",
            common::cluster::SYSTEM_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    };
    let repository = format!("{}/e2e/leader", scene.registry.addr);
    scene.cluster.apply(&artifact(
        ns,
        "first",
        &repository,
        &["first"],
        "first",
        json!({}),
    ));
    scene.wait_ready(ns, "first");
    std::thread::sleep(Duration::from_secs(2));
    let (a, b) = (scene.controller("a"), scene.controller("b"));
    let reconciles = "garden_artifacts_reconciles_total";
    assert!(a.metric(reconciles) >= 1.0, "the leader reconciled");
    assert_eq!(b.metric(reconciles), 0.0, "the standby did not reconcile");
    assert!(!b.log_text().contains("became leader"));
    assert_eq!(holder(), "a");

    scene.controller_mut("a").kill();
    let killed = Instant::now();
    scene.cluster.apply(&artifact(
        ns,
        "second",
        &repository,
        &["second"],
        "second",
        json!({}),
    ));
    let second = scene.wait_condition(ns, "second", "Ready", "True", Duration::from_secs(45));
    eprintln!(
        "after kill -9 of the leader, b reconciled a new object in {:.1}s",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        digest_of(&format!("{repository}:second")),
        Some(status_digest(&second))
    );
    assert_eq!(holder(), "b");
    let b = scene.controller("b");
    assert!(b.metric(reconciles) >= 1.0, "b reconciles now");
    assert!(b.log_text().contains("became leader"));
}

/// Two controllers started by hand with the default flags, on one host (one `HOSTNAME`):
/// leader election is on by default, so one holds the Lease and writes, and the other writes
/// nothing, not even a status.
#[test]
fn two_controllers_started_alike_write_once() {
    let ns = "e2e-one-writer";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    let env = [("HOSTNAME", "one-host")];
    scene.start_controller_as_given("a", &["--namespace", ns], &env);
    scene.start_controller_as_given("b", &["--namespace", ns], &env);
    let leading = |scene: &Scene| -> Vec<&str> {
        ["a", "b"]
            .into_iter()
            .filter(|name| scene.controller(name).log_text().contains("became leader"))
            .collect()
    };
    wait_for("one controller to lead", Duration::from_secs(30), || {
        (!leading(&scene).is_empty()).then_some(())
    });
    let repository = format!("{}/e2e/one-writer", scene.registry.addr);
    for name in ["w1", "w2", "w3"] {
        scene
            .cluster
            .apply(&artifact(ns, name, &repository, &[name], name, json!({})));
    }
    for name in ["w1", "w2", "w3"] {
        scene.wait_ready(ns, name);
    }
    std::thread::sleep(Duration::from_secs(3));

    let leaders = leading(&scene);
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    let (leader, standby) = match leaders[0] {
        "a" => ("a", "b"),
        _ => ("b", "a"),
    };
    let (reconciles, writes) = (
        "garden_artifacts_reconciles_total",
        "garden_artifacts_status_writes_total",
    );
    assert!(scene.controller(leader).metric(reconciles) >= 3.0);
    assert_eq!(scene.controller(standby).metric(reconciles), 0.0);
    assert_eq!(scene.controller(standby).metric(writes), 0.0);
    let holder = scene.cluster.kubectl_ok(&[
        "get",
        "lease",
        "garden-artifacts",
        "-n",
        common::cluster::SYSTEM_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(holder.starts_with("one-host-"), "{holder}");
    // Each manifest was written once: two writers would each PUT every tag.
    let puts = scene
        .registry
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.uri.contains("/manifests/"))
        .count();
    assert_eq!(puts, 3, "one manifest PUT per object");
}

/// The operator's namespace policy: the namespace may write only under `team` of the scene's
/// registry (named in the policy by another spelling, `localhost`). A squatter aiming at
/// another registry, and one at `team-evil` (a prefix of the text, not of the path), are
/// Stalled as `PolicyViolation`, naming the namespace, the field and what is allowed, and
/// neither registry hears a single request for them; the allowed object converges, though an
/// older squatter from another namespace claims its tag (a refused object claims nothing).
#[test]
fn the_namespace_policy_refuses_a_squatter_before_any_registry_request() {
    let (ns, squat_ns) = ("e2e-policy", "e2e-policy-squat");
    let mut scene = Scene::new(&[ns, squat_ns], Watch::AllNamespaces);
    let other = Registry::start();
    let port = scene.registry.addr.rsplit_once(':').unwrap().1.to_string();
    let policy = format!("{ns}=localhost:{port}/team");
    let squat_policy = format!("{squat_ns}=localhost:{port}/squat");
    scene.start_controller(
        "c",
        &[
            "--namespace-policy",
            &policy,
            "--namespace-policy",
            &squat_policy,
        ],
        &[],
    );
    let allowed = format!("{}/team/app", scene.registry.addr);
    scene.cluster.apply(&artifact(
        squat_ns,
        "early",
        &allowed,
        &["v1"],
        "squatted",
        json!({}),
    ));
    let early = scene.wait_condition(
        squat_ns,
        "early",
        "Stalled",
        "True",
        Duration::from_secs(30),
    );
    assert_eq!(
        condition(&early, "Stalled").unwrap()["reason"],
        "PolicyViolation",
        "{early:#}"
    );
    assert!(
        scene.registry.requests().is_empty(),
        "the squatter was refused before any request: {:?}",
        scene.registry.requests()
    );
    let evil = format!("{}/team-evil/app", scene.registry.addr);
    let squatted = format!("{}/team/app", other.addr);
    for (name, repository) in [
        ("allowed", &allowed),
        ("evil", &evil),
        ("squatter", &squatted),
    ] {
        scene
            .cluster
            .apply(&artifact(ns, name, repository, &["v1"], name, json!({})));
    }
    scene.wait_ready(ns, "allowed");
    for (name, repository) in [("evil", &evil), ("squatter", &squatted)] {
        let refused = scene.wait_condition(ns, name, "Stalled", "True", Duration::from_secs(30));
        let stalled = condition(&refused, "Stalled").unwrap();
        assert_eq!(stalled["reason"], "PolicyViolation", "{refused:#}");
        let message = stalled["message"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "spec.repository: namespace {ns} may not write to {repository}; the controller's --namespace-policy allows it only localhost:{port}/team"
            )
        );
        assert_eq!(
            condition_status(&refused, "Ready").as_deref(),
            Some("False")
        );
    }
    // Resyncs or not, a refused object is not tried again by itself.
    std::thread::sleep(Duration::from_secs(3));
    for name in ["evil", "squatter"] {
        assert_eq!(
            occurrences(&scene, ns, "PolicyViolation", name),
            1,
            "one Warning event for {name}"
        );
    }
    assert_eq!(
        other.requests().len(),
        0,
        "the squatter's registry heard nothing: {:?}",
        other.requests()
    );
    let evil_requests: Vec<_> = scene
        .registry
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("team-evil"))
        .collect();
    assert!(evil_requests.is_empty(), "{evil_requests:?}");
    assert!(digest_of(&format!("{allowed}:v1")).is_some());

    // A URL source on a host the operator did not allow (--allow-source-host) is the
    // operator's refusal too, with its own reason, not the registry's.
    let files = FileServer::start();
    let image = b"not to be fetched".to_vec();
    let url = files.put("disk.raw", &image);
    scene.cluster.apply(&artifact(
        ns,
        "unlisted-url",
        &format!("{allowed}-url"),
        &["v1"],
        "",
        json!({ "source": { "files": [
            { "name": "disk.raw", "url": url, "digest": sha256(&image), "size": image.len() },
        ] } }),
    ));
    let refused = scene.wait_condition(
        ns,
        "unlisted-url",
        "Stalled",
        "True",
        Duration::from_secs(30),
    );
    let stalled = condition(&refused, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "SourceNotAllowed", "{refused:#}");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("--allow-source-host"),
        "{stalled}"
    );
    assert!(files.requests().is_empty(), "{:?}", files.requests());

    let controller = scene.controller("c");
    let metrics = controller.metrics();
    assert!(
        metrics.contains("garden_artifacts_reconcile_failures_total{class=\"policy\"} "),
        "{metrics}"
    );
    assert_eq!(
        common::cluster::sum_metric(
            &metrics
                .lines()
                .filter(|l| l.contains("condition=\"Stalled\""))
                .collect::<Vec<_>>()
                .join("\n"),
            "garden_artifacts_objects"
        ),
        4.0,
        "four objects Stalled in the gauge"
    );
}

/// Scenario 9: Objects claim a repository:tag the older object owns, from another namespace and
/// from its own: the older keeps both tags, each claimant is Stalled naming it, nothing moves.
#[test]
fn the_older_object_keeps_a_contested_tag() {
    let (ns_a, ns_b) = ("e2e-conflict-a", "e2e-conflict-b");
    let mut scene = Scene::new(&[ns_a, ns_b], Watch::AllNamespaces);
    scene.start_controller("all-namespaces", &[], &[]);
    let repository = format!("{}/e2e/conflict", scene.registry.addr);
    scene.cluster.apply(&artifact(
        ns_a,
        "older",
        &repository,
        &["shared", "a-only"],
        "older content",
        json!({ "interval": "2s" }),
    ));
    let older = scene.wait_ready(ns_a, "older");
    let digest = status_digest(&older);
    let shared = format!("{repository}:shared");
    assert_eq!(digest_of(&shared).as_deref(), Some(digest.as_str()));

    let requests_before = scene.registry.requests().len();
    scene.cluster.apply(&artifact(
        ns_b,
        "newer",
        &repository,
        &["shared"],
        "newer content",
        json!({ "interval": "2s" }),
    ));
    // And a claimant in the owner's own namespace.
    scene.cluster.apply(&artifact(
        ns_a,
        "sibling",
        &repository,
        &["a-only"],
        "sibling content",
        json!({ "interval": "2s" }),
    ));
    for (ns, name, tag) in [(ns_b, "newer", "shared"), (ns_a, "sibling", "a-only")] {
        let claimant = scene.wait_condition(ns, name, "Stalled", "True", Duration::from_secs(30));
        let stalled = condition(&claimant, "Stalled").unwrap();
        assert_eq!(stalled["reason"], "TagConflict", "{stalled}");
        let message = stalled["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{ns_a}/older")) && message.contains(tag),
            "{ns}/{name} names the owner: {message}"
        );
        assert_eq!(
            condition_status(&claimant, "Ready").as_deref(),
            Some("False")
        );
    }

    // A minute of resyncs every 2 s on all sides: neither tag changes hands.
    let a_only = format!("{repository}:a-only");
    let mut changes = 0;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        for tag in [&shared, &a_only] {
            if digest_of(tag).as_deref() != Some(digest.as_str()) {
                changes += 1;
            }
        }
    }
    eprintln!("tag changes of {shared} and {a_only} during 60 s of resyncs every 2 s: {changes}");
    assert_eq!(changes, 0, "the tag did not move");
    let older = scene.cluster.artifact(ns_a, "older");
    assert_eq!(condition_status(&older, "Ready").as_deref(), Some("True"));
    let writes = Registry::writes(&scene.registry.requests()[requests_before..]);
    assert!(
        writes.is_empty(),
        "the registry was not written: {writes:?}"
    );
    wait_for_event(
        &scene,
        ns_b,
        "TagConflict",
        "older",
        Duration::from_secs(10),
    );
}

/// No squatting: a tag is owned by an object that earned it, one whose credentials the
/// registry accepted for a write. An object without credentials that claims the tag first
/// does not keep the object with them from it: the legitimate object is Ready and the tag holds
/// its content; the squatter is not Ready and says why (the owner, and the registry's 401).
#[test]
fn a_claimant_without_credentials_does_not_block_one_with_them() {
    let (ns_a, ns_b) = ("e2e-squat-a", "e2e-squat-b");
    let (user, password) = ("e2e-user", "Corr3ct-h0rse-e2e-2d8e");
    let mut scene = Scene::with_registry(&[ns_a, ns_b], Watch::AllNamespaces, || {
        Registry::start_with_basic_auth(user, password)
    });
    scene.start_controller("all-namespaces", &[], &[]);
    let host = scene.registry.addr.clone();
    let repository = format!("{host}/e2e/squat");
    scene.cluster.apply(&artifact(
        ns_a,
        "squatter",
        &repository,
        &["release"],
        "squatter content",
        json!({ "interval": "2s" }),
    ));
    // The squatter claims the tag first and has had its try.
    scene.wait_condition(ns_a, "squatter", "Ready", "False", Duration::from_secs(60));
    // Creation times have seconds: the legitimate object is the younger one.
    std::thread::sleep(Duration::from_millis(1100));
    let yaml = scene.cluster.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "-n",
        ns_b,
        &format!("--docker-server={host}"),
        &format!("--docker-username={user}"),
        &format!("--docker-password={password}"),
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    scene.cluster.apply(&yaml);
    scene.cluster.apply(&artifact(
        ns_b,
        "legit",
        &repository,
        &["release"],
        "legitimate content",
        json!({ "interval": "2s", "credentials": { "secretRef": { "name": "regcred" } } }),
    ));

    let legit = scene.wait_ready(ns_b, "legit");
    let digest = status_digest(&legit);
    assert_eq!(
        legit["status"]["writeAccess"]["result"], "Granted",
        "{legit:#}"
    );
    let tag = || {
        let (code, body) = curl(
            "GET",
            &format!("http://{host}/v2/e2e/squat/manifests/release"),
            &["Accept: application/vnd.oci.image.manifest.v1+json"],
            None,
            Some(&format!("{user}:{password}")),
        );
        assert_eq!(code, 200);
        sha256(&body)
    };
    assert_eq!(
        tag(),
        digest,
        "the tag holds the legitimate object's artefact"
    );

    let owner = format!("{ns_b}/legit");
    let squatter = wait_for(
        "the squatter to name the owner",
        Duration::from_secs(60),
        || {
            let squatter = scene.cluster.artifact(ns_a, "squatter");
            let stalled = condition(&squatter, "Stalled")?.clone();
            (stalled["status"] == "True"
                && stalled["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&owner)))
            .then_some(squatter)
        },
    );
    let ready = condition(&squatter, "Ready").unwrap();
    let message = ready["message"].as_str().unwrap();
    eprintln!("the squatter says: {} {message}", ready["reason"]);
    assert_eq!(ready["status"], "False");
    assert!(
        message.contains(&owner) && message.contains("401"),
        "the squatter names the owner and the registry's refusal: {message}"
    );
    assert_eq!(
        squatter["status"]["writeAccess"]["result"], "Denied",
        "{squatter:#}"
    );

    // Resyncs every 2 s on both sides: the tag stays where it is.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(tag(), digest, "the tag did not move");
    }
    let legit = scene.cluster.artifact(ns_b, "legit");
    assert_eq!(condition_status(&legit, "Ready").as_deref(), Some("True"));
}

/// Namespaces are walls: an object names Secrets, ConfigMaps and other GardenArtifacts of its
/// own namespace only, so one that exists next door is not found, and says so.
#[test]
fn another_namespaces_secrets_and_objects_are_out_of_reach() {
    let (mine, theirs) = ("e2e-wall-mine", "e2e-wall-theirs");
    let mut scene = Scene::new(&[mine, theirs], Watch::AllNamespaces);
    scene.start_controller("all-namespaces", &[], &[]);
    let repository = format!("{}/e2e/wall", scene.registry.addr);

    // Next door: a Secret, a ConfigMap and a converged GardenArtifact.
    let secret = scene.cluster.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "-n",
        theirs,
        &format!("--docker-server={}", scene.registry.addr),
        "--docker-username=u",
        "--docker-password=p",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    scene.cluster.apply(&secret);
    scene.cluster.apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "build", "namespace": theirs},
            "data": {"notes.txt": "theirs"},
        })
        .to_string(),
    );
    scene.cluster.apply(&artifact(
        theirs,
        "flavour",
        &repository,
        &["theirs"],
        "x",
        json!({}),
    ));
    scene.wait_ready(theirs, "flavour");

    scene.cluster.apply(&artifact(
        mine,
        "with-secret",
        &repository,
        &["a"],
        "a",
        json!({ "credentials": { "secretRef": { "name": "regcred" } } }),
    ));
    scene.cluster.apply(
        &json!({
            "apiVersion": API_VERSION, "kind": "GardenArtifact",
            "metadata": {"name": "with-config-map", "namespace": mine},
            "spec": {"repository": repository, "tags": ["b"], "source": {"files": [{
                "name": "notes.txt", "mediaType": "text/plain",
                "configMapKeyRef": {"name": "build", "key": "notes.txt"}}]}},
        })
        .to_string(),
    );
    scene.cluster.apply(
        &json!({
            "apiVersion": API_VERSION, "kind": "GardenArtifact",
            "metadata": {"name": "with-index", "namespace": mine},
            "spec": {"repository": repository, "tags": ["c"], "source": {"index": {"manifests": [
                {"artifactRef": {"name": "flavour"}}]}}},
        })
        .to_string(),
    );

    for (name, needle) in [
        (
            "with-secret",
            format!("spec.credentials.secretRef: Secret {mine}/regcred does not exist"),
        ),
        (
            "with-config-map",
            format!("spec.source.files[0].configMapKeyRef: ConfigMap {mine}/build does not exist"),
        ),
        (
            "with-index",
            format!(
                "spec.source.index.manifests[0].artifactRef: GardenArtifact {mine}/flavour does not exist"
            ),
        ),
    ] {
        let stalled = scene.wait_condition(mine, name, "Stalled", "True", Duration::from_secs(60));
        let message = condition(&stalled, "Stalled").unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(&needle), "{name}: {message}");
    }
    for tag in ["a", "b", "c"] {
        assert_eq!(
            digest_of(&format!("{repository}:{tag}")),
            None,
            "nothing written for tag {tag}"
        );
    }
}

/// Two referrers of another object (`spec.subject.artifactRef`, no tags) on Distribution,
/// which has no referrers API: both are linked through the fallback tag and status says so;
/// when the subject's content changes, both follow it to the new digest and a `Relinked` event
/// names the move; deleting one with `deletionPolicy: Delete` takes its descriptor out of the
/// fallback index and deletes its manifest, and the other's descriptor stays.
#[test]
fn referrers_follow_their_subject_and_are_unlinked_on_delete() {
    let ns = "e2e-referrers";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let repo = format!("{}/e2e/referrers/app", scene.registry.addr);
    let subject = json!({ "artifactRef": { "name": "base" } });
    scene
        .cluster
        .apply(&artifact(ns, "base", &repo, &["v1"], "base 1", json!({})));
    scene.cluster.apply(&artifact(
        ns,
        "sbom",
        &repo,
        &[],
        "sbom",
        json!({ "subject": subject, "deletionPolicy": "Delete" }),
    ));
    scene.cluster.apply(&artifact(
        ns,
        "notes",
        &repo,
        &[],
        "notes",
        json!({ "subject": subject }),
    ));
    let first = status_digest(&scene.wait_ready(ns, "base"));
    let sbom = scene.wait_ready(ns, "sbom");
    let notes = scene.wait_ready(ns, "notes");
    for referrer in [&sbom, &notes] {
        assert_eq!(
            referrer["status"]["subject"],
            json!({ "digest": first, "via": "fallback-tag" }),
            "{referrer:#}"
        );
    }
    let linked = listed_digests(fallback_index(&repo, &first).as_ref());
    assert!(
        linked.contains(&status_digest(&sbom)) && linked.contains(&status_digest(&notes)),
        "{linked:?}"
    );

    // The subject changes: both referrers follow.
    scene
        .cluster
        .apply(&artifact(ns, "base", &repo, &["v1"], "base 2", json!({})));
    let second = wait_for("base at a new digest", Duration::from_secs(60), || {
        let base = scene.cluster.artifact(ns, "base");
        let digest = base["status"]["digest"].as_str()?.to_string();
        (digest != first && base["status"]["observedGeneration"] == base["metadata"]["generation"])
            .then_some(digest)
    });
    let follows = |name: &str| {
        wait_for(
            &format!("{name} linked to {second}"),
            Duration::from_secs(60),
            || {
                let object = scene.cluster.artifact(ns, name);
                (object["status"]["subject"]["digest"] == second.as_str()
                    && condition_status(&object, "Ready").as_deref() == Some("True"))
                .then_some(object)
            },
        )
    };
    let sbom = follows("sbom");
    let notes = follows("notes");
    wait_for_event(
        &scene,
        ns,
        "Relinked",
        &format!("moved from {first} to {second}; relinked"),
        Duration::from_secs(30),
    );
    let relinked = listed_digests(fallback_index(&repo, &second).as_ref());
    assert!(
        relinked.contains(&status_digest(&sbom)) && relinked.contains(&status_digest(&notes)),
        "{relinked:?}"
    );

    // Delete: the sbom's descriptor and manifest go, the notes' descriptor stays.
    let sbom_digest = status_digest(&sbom);
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "sbom", "-n", ns, "--timeout=30s"]);
    assert!(scene.cluster.get(ns, "ga", "sbom").is_none());
    let left = listed_digests(fallback_index(&repo, &second).as_ref());
    assert!(!left.contains(&sbom_digest), "{left:?}");
    assert!(left.contains(&status_digest(&notes)), "{left:?}");
    assert_eq!(skopeo_raw(&format!("{repo}@{sbom_digest}")), None);
    wait_for_event(
        &scene,
        ns,
        "ReferrerDeleted",
        &sbom_digest,
        Duration::from_secs(30),
    );
}

/// The registry behind the fault-injecting proxy of tests/common/faults.rs answers 503 to
/// every request: the object is `Ready=False` and `Reconciling=True` (it is retried) with the
/// registry's status in the message, and nothing is tagged; once the registry answers again,
/// the object converges without anyone touching it.
#[test]
fn a_failing_registry_shows_in_ready_and_the_object_converges_when_it_recovers() {
    use common::faults::{FaultProxy, Rule, status};
    let ns = "e2e-registry-faults";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    scene.start_namespaced_controller("c");
    let proxy = FaultProxy::start(&scene.registry.addr);
    proxy.inject(Rule::new("*", "^/v2/", status(503)));
    let repo = format!("{}/e2e/faults/app", proxy.addr);
    scene
        .cluster
        .apply(&artifact(ns, "flaky", &repo, &["v1"], "flaky", json!({})));
    let failing = scene.wait_condition(ns, "flaky", "Ready", "False", Duration::from_secs(60));
    let ready = condition(&failing, "Ready").unwrap();
    println!("while failing: Ready={}", ready);
    assert!(
        ready["message"].as_str().unwrap_or("").contains("503"),
        "the registry's status is named: {ready:#}"
    );
    assert_eq!(
        condition_status(&failing, "Reconciling").as_deref(),
        Some("True"),
        "{failing:#}"
    );
    assert!(
        proxy
            .seen()
            .iter()
            .all(|s| !s.is_write() || s.status == Some(503))
    );
    let direct = format!("{}/e2e/faults/app:v1", scene.registry.addr);
    assert_eq!(digest_of(&direct), None, "nothing tagged while failing");

    proxy.clear();
    let recovered = scene.wait_condition(ns, "flaky", "Ready", "True", Duration::from_secs(60));
    assert_eq!(digest_of(&direct), Some(status_digest(&recovered)));
}
