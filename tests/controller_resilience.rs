//! Resilience of `garden-artifacts controller` against a real kube-apiserver v1.20.2 and etcd
//! (scripts/dev-env.sh; this test binary has a cluster of its own) and a real Distribution
//! registry per test:
//!
//! - a controller killed with SIGKILL in the middle of reconciling 100 objects (60 tagged ones
//!   and 40 referrers of one subject, whose fallback index `sha256-<hex>` is read-modify-write)
//!   leaves nothing that a new controller cannot finish: every tag at its object's digest, the
//!   fallback index listing each referrer once, none lost;
//! - the kube-apiserver restarted under a running controller (etcd keeps the data): the
//!   controller stays up and its watches resume, so new objects, changed objects and
//!   deletions after the restart are reconciled.
//!
//! The second test stops the API server of the cluster every test of this binary shares, so
//! it runs alone: its `Scene` takes the exclusive lock (`Watch::AllNamespaces`), though its
//! controller watches only its namespace.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use common::cluster::{Scene, Watch, artifact_object as artifact, condition_status, wait_for};
use common::{digest_of, fallback_index, listed_digests};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn status_digest(object: &Value) -> String {
    object["status"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.digest in {object:#}"))
        .to_string()
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

fn is_ready(object: &Value) -> bool {
    condition_status(object, "Ready").as_deref() == Some("True")
}

/// Every GardenArtifact of a namespace.
fn list(scene: &Scene, ns: &str) -> Vec<Value> {
    let out = scene
        .cluster
        .kubectl_ok(&["get", "gardenartifacts", "-n", ns, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// HEADs every `repository:tag` in one curl run; the `Docker-Content-Digest` of each, `None`
/// where the registry answered anything but 200.
fn head_digests(references: &[String]) -> BTreeMap<String, Option<String>> {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "60",
        "--head",
        "-H",
        &format!("Accept: {MANIFEST_TYPES}"),
        "-w",
        "%{http_code} %header{docker-content-digest}\n",
    ]);
    for reference in references {
        let (repository, tag) = reference.rsplit_once(':').unwrap();
        let (host, path) = repository.split_once('/').unwrap();
        command
            .args(["-o", "/dev/null"])
            .arg(format!("http://{host}/v2/{path}/manifests/{tag}"));
    }
    let out = command.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        references.len(),
        "curl answered for every reference: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    references
        .iter()
        .zip(lines)
        .map(|(reference, line)| {
            let (code, digest) = line.split_once(' ').unwrap_or((line, ""));
            let digest =
                (code == "200" && !digest.trim().is_empty()).then(|| digest.trim().to_string());
            (reference.clone(), digest)
        })
        .collect()
}

/// Scenario 1: A controller killed with SIGKILL while reconciling 100 objects, 40 of them
/// referrers of one subject: a new controller converges every object, and the subject's
/// fallback index lists each referrer exactly once.
#[test]
fn a_controller_killed_mid_reconcile_converges_after_restart() {
    const PLAIN: usize = 60;
    const REFERRERS: usize = 40;
    let ns = "resilience-kill";
    let mut scene = Scene::new(&[ns], Watch::OwnNamespace);
    let subject_repo = format!("{}/resilience/kill/subject", scene.registry.addr);
    let plain_repo = format!("{}/resilience/kill/plain", scene.registry.addr);

    // The subject, converged by a first controller, which then stops.
    scene.start_namespaced_controller("first");
    scene.cluster.apply(
        &artifact(
            ns,
            "subject",
            &subject_repo,
            &["base"],
            "the subject",
            json!({}),
        )
        .to_string(),
    );
    let subject = scene.wait_ready(ns, "subject");
    let subject_digest = status_digest(&subject);
    scene.controller_mut("first").kill();

    // 100 objects in one `kubectl apply -f` of a multi-document file. Some KiB each, so that
    // each costs an upload.
    let filler = "0123456789abcdef".repeat(256);
    let mut docs = Vec::new();
    for i in 0..PLAIN {
        let (a, b) = (format!("p{i:02}-a"), format!("p{i:02}-b"));
        docs.push(artifact(
            ns,
            &format!("plain-{i:02}"),
            &plain_repo,
            &[&a, &b],
            &format!("plain object {i}\n{filler}"),
            json!({}),
        ));
    }
    for i in 0..REFERRERS {
        docs.push(artifact(
            ns,
            &format!("referrer-{i:02}"),
            &subject_repo,
            &[],
            &format!("referrer {i} of the subject\n{filler}"),
            json!({ "subject": { "reference": "base" } }),
        ));
    }
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    // YAML documents: kubectl reads a file that starts with `{` as one JSON stream.
    let yaml: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect();
    std::fs::write(file.path(), yaml.join("---\n")).unwrap();
    let applied = scene
        .cluster
        .kubectl_ok(&["apply", "-f", &file.path().to_string_lossy()]);
    assert_eq!(
        applied.lines().filter(|l| l.ends_with(" created")).count(),
        PLAIN + REFERRERS,
        "{applied}"
    );
    let others = |objects: &[Value]| -> Vec<Value> {
        objects
            .iter()
            .filter(|o| name_of(o) != "subject")
            .cloned()
            .collect()
    };
    assert_eq!(others(&list(&scene, ns)).len(), PLAIN + REFERRERS);

    // The victim: killed once it has been at work for 1.5 s and has finished at least one
    // object, so that the kill lands with some objects done and most not.
    let requests_before = scene.registry.requests().len();
    scene.start_namespaced_controller("victim");
    let started = Instant::now();
    let mut ready_seen = 0;
    while started.elapsed() < Duration::from_millis(1500) || ready_seen == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the victim made no object Ready in 30 s"
        );
        ready_seen = others(&list(&scene, ns))
            .iter()
            .filter(|o| is_ready(o))
            .count();
        std::thread::sleep(Duration::from_millis(100));
    }
    scene.controller_mut("victim").kill();
    let killed_after = started.elapsed();
    let at_kill = others(&list(&scene, ns));
    let ready_at_kill: Vec<&str> = at_kill
        .iter()
        .filter(|o| is_ready(o))
        .map(name_of)
        .collect();
    let referrers_ready_at_kill = ready_at_kill
        .iter()
        .filter(|n| n.starts_with("referrer-"))
        .count();
    let with_finalizer = at_kill
        .iter()
        .filter(|o| {
            o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        })
        .count();
    let victim_requests = scene.registry.requests().split_off(requests_before);
    let victim_writes = common::Registry::writes(&victim_requests).len();
    let listed_at_kill = listed_digests(fallback_index(&subject_repo, &subject_digest).as_ref());
    eprintln!(
        "victim killed after {:.2}s: {} of {} objects Ready ({} referrers), {} with a finalizer, {} registry requests ({} writes), fallback index listing {} referrers",
        killed_after.as_secs_f64(),
        ready_at_kill.len(),
        PLAIN + REFERRERS,
        referrers_ready_at_kill,
        with_finalizer,
        victim_requests.len(),
        victim_writes,
        listed_at_kill.len(),
    );
    assert!(
        (1..PLAIN + REFERRERS).contains(&ready_at_kill.len()),
        "the kill must land mid-run: {} of {} Ready",
        ready_at_kill.len(),
        PLAIN + REFERRERS
    );
    assert!(victim_writes > 0, "the victim wrote to the registry");

    // A new controller finishes the work.
    let requests_before = scene.registry.requests().len();
    scene.start_namespaced_controller("successor");
    let restarted = Instant::now();
    let objects = wait_for(
        "all 101 objects Ready under the successor",
        Duration::from_secs(180),
        || {
            let objects = list(&scene, ns);
            (objects.len() == PLAIN + REFERRERS + 1 && objects.iter().all(is_ready))
                .then_some(objects)
        },
    );
    let successor_requests = scene.registry.requests().split_off(requests_before);
    eprintln!(
        "successor: all {} objects Ready after {:.1}s, {} registry requests ({} writes)",
        objects.len(),
        restarted.elapsed().as_secs_f64(),
        successor_requests.len(),
        common::Registry::writes(&successor_requests).len(),
    );
    assert!(
        scene.controller_mut("successor").running(),
        "the successor runs"
    );

    // Every tag of every object at the object's status digest, read from the registry.
    let mut expected = BTreeMap::new();
    for object in &objects {
        let name = name_of(object);
        let digest = status_digest(object);
        assert_eq!(
            object["status"]["observedGeneration"], object["metadata"]["generation"],
            "{name}: observedGeneration"
        );
        let repository = object["spec"]["repository"].as_str().unwrap();
        let tags: Vec<&str> = object["spec"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for tag in &tags {
            expected.insert(
                format!("{repository}:{tag}"),
                (name.to_string(), digest.clone()),
            );
        }
        let status_tags: Vec<&Value> = object["status"]["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(status_tags.len(), tags.len(), "{name}: status.tags");
        for t in status_tags {
            assert_eq!(t["digest"].as_str(), Some(digest.as_str()), "{name}: {t}");
        }
        if name.starts_with("referrer-") {
            assert!(tags.is_empty());
            assert_eq!(
                object["status"]["subject"]["digest"].as_str(),
                Some(subject_digest.as_str()),
                "{name}: status.subject"
            );
        }
    }
    assert_eq!(expected.len(), 2 * PLAIN + 1);
    let references: Vec<String> = expected.keys().cloned().collect();
    let heads = head_digests(&references);
    let wrong: Vec<String> = heads
        .iter()
        .filter(|(reference, digest)| digest.as_deref() != Some(expected[*reference].1.as_str()))
        .map(|(reference, digest)| {
            format!(
                "{reference} ({}): {digest:?}, status says {}",
                expected[reference].0, expected[reference].1
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "tags not at their object's digest:\n{}",
        wrong.join("\n")
    );
    // One tag read by another client as well.
    assert_eq!(
        digest_of(&format!("{subject_repo}:base")),
        Some(subject_digest.clone())
    );

    // The subject's fallback index: each referrer once, nothing else.
    let index =
        fallback_index(&subject_repo, &subject_digest).expect("the subject has a fallback index");
    assert_eq!(index["mediaType"], OCI_INDEX);
    let listed = listed_digests(Some(&index));
    let unique: BTreeSet<&String> = listed.iter().collect();
    let referrers: BTreeSet<String> = objects
        .iter()
        .filter(|o| name_of(o).starts_with("referrer-"))
        .map(status_digest)
        .collect();
    let missing: Vec<&String> = referrers.iter().filter(|d| !unique.contains(d)).collect();
    let extra: Vec<&&String> = unique.iter().filter(|d| !referrers.contains(**d)).collect();
    eprintln!(
        "fallback index of {subject_digest}: {} descriptors, {} distinct; {} referrers, {} missing, {} extra",
        listed.len(),
        unique.len(),
        referrers.len(),
        missing.len(),
        extra.len()
    );
    assert_eq!(referrers.len(), REFERRERS, "distinct referrer digests");
    assert_eq!(
        listed.len(),
        unique.len(),
        "no descriptor listed twice: {listed:?}"
    );
    assert!(
        missing.is_empty(),
        "referrers missing from the index: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "descriptors of no referrer in the index: {extra:?}"
    );
    assert_eq!(listed.len(), REFERRERS);
}

/// `kubectl apply` of one object, tried again for a while: right after a restart the API
/// server may not serve the custom resource yet.
fn apply_soon(scene: &Scene, object: &Value) {
    let yaml = object.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = scene.cluster.kubectl_stdin(&["apply", "-f", "-"], &yaml);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl apply failed for 30 s after the restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether the API server lets the controller's ServiceAccount watch GardenArtifacts in `ns`
/// (a SelfSubjectAccessReview, answered by the same authorizer as the watch).
fn controller_may_watch(scene: &Scene, ns: &str) -> bool {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&scene.cluster.controller_kubeconfig)
        .arg("--cache-dir")
        .arg(scene.cluster.state_dir.join("kube-cache-controller"))
        .args([
            "--request-timeout=5s",
            "auth",
            "can-i",
            "watch",
            "gardenartifacts.oci.gardenlinux.io",
            "-n",
            ns,
        ])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes")
}

/// Scenario 2: The kube-apiserver restarted under a running controller (etcd keeps
/// everything): the controller stays up, and its watches resume: a new object, a changed
/// object and a deletion made after the restart are all carried out.
#[test]
fn the_api_server_restarted_under_the_controller_is_followed() {
    let ns = "resilience-apiserver";
    // Exclusive: this test stops the API server every test of this binary shares.
    let mut scene = Scene::new(&[ns], Watch::AllNamespaces);
    // Debug lines of the trigger streams' backoff and of failed rounds, for the figures.
    scene.start_controller(
        "c",
        &["--namespace", ns],
        &[(
            "RUST_LOG",
            "info,kube_runtime::utils::stream_backoff=debug,garden_artifacts::controller=debug",
        )],
    );
    let repository = format!("{}/resilience/apiserver", scene.registry.addr);
    let changing = |content: &str| {
        artifact(
            ns,
            "changing",
            &repository,
            &["changing"],
            content,
            json!({}),
        )
    };
    let objects = [
        artifact(
            ns,
            "steady",
            &repository,
            &["steady"],
            "steady content",
            json!({}),
        ),
        changing("first content"),
        artifact(
            ns,
            "doomed",
            &repository,
            &["doomed-1", "doomed-2"],
            "doomed content",
            json!({ "deletionPolicy": "Delete" }),
        ),
    ];
    for object in &objects {
        scene.cluster.apply(&object.to_string());
    }
    let mut before = BTreeMap::new();
    for name in ["steady", "changing", "doomed"] {
        before.insert(name, status_digest(&scene.wait_ready(ns, name)));
    }
    let tag = |t: &str| format!("{repository}:{t}");
    assert_eq!(
        digest_of(&tag("doomed-1")).as_ref(),
        Some(&before["doomed"])
    );

    // Down: SIGTERM (the API server stops listening at once), SIGKILL if it still runs after
    // 10 s (it waits for open watches); then kept down 3 s more. The controller cannot come
    // back once it has exited, so checking it during and at the end of the outage suffices.
    let old_pid = scene.cluster.apiserver_pid().expect("the API server runs");
    let stopping = Instant::now();
    let stopping_at = SystemTime::now();
    let needed_kill = scene.cluster.stop_apiserver();
    let exited_after = stopping.elapsed();
    assert!(!scene.cluster.apiserver_ready(), "the API server is down");
    let mut alive_while_down = true;
    let mut healthz_while_down = true;
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(3) {
        let controller = scene.controller_mut("c");
        alive_while_down &= controller.running();
        healthz_while_down &= Command::new("curl")
            .args(["-fsS", "--max-time", "2", "-o", "/dev/null"])
            .arg(format!("http://{}/healthz", controller.metrics_addr))
            .status()
            .is_ok_and(|s| s.success());
        std::thread::sleep(Duration::from_millis(500));
    }
    let log_len_at_restart = scene.controller("c").log_text().len();

    // Up again: same flags, ports and certificates, same etcd.
    scene.cluster.start_apiserver();
    let back = Instant::now();
    let downtime = stopping.elapsed();
    // Ready is not yet authorizing: until its RBAC cache is filled, the new server may refuse
    // the controller's ServiceAccount. Those refusals are the server's, not the chart's.
    let authorized_after = wait_for(
        "the restarted API server to authorize the controller",
        Duration::from_secs(60),
        || controller_may_watch(&scene, ns).then(|| back.elapsed()),
    );
    // A restarted kube-apiserver 1.20 can still refuse for a while after it first allows the
    // controller (its RBAC caches fill in the background): refusals up to 30 s later are the
    // restart, not the chart. A permission truly missing shows in tests/controller_e2e.rs too.
    scene.excuse_refusals_between(stopping_at, SystemTime::now() + Duration::from_secs(30));
    let new_pid = scene
        .cluster
        .apiserver_pid()
        .expect("the API server runs again");
    assert_ne!(old_pid, new_pid, "a new API server process");
    eprintln!(
        "API server pid {old_pid}: SIGTERM, exited after {:.1}s{}; pid {new_pid} ready {:.1}s after the SIGTERM (downtime), authorizing the controller {:.1}s after ready; controller alive while down: {alive_while_down}, its /healthz answered: {healthz_while_down}",
        exited_after.as_secs_f64(),
        if needed_kill {
            " (SIGKILL after 10 s)"
        } else {
            ""
        },
        downtime.as_secs_f64(),
        authorized_after.as_secs_f64(),
    );
    assert!(
        alive_while_down,
        "the controller exited while the API server was down:\n{}",
        scene.controller("c").log_tail(40)
    );
    assert!(
        healthz_while_down,
        "the controller's /healthz did not answer while the API server was down"
    );
    // etcd kept the objects.
    for (name, digest) in &before {
        let object = scene.cluster.artifact(ns, name);
        assert_eq!(
            &status_digest(&object),
            digest,
            "{name} survived the restart"
        );
    }

    // After the restart: a new object, a change, a deletion.
    apply_soon(
        &scene,
        &artifact(
            ns,
            "fresh",
            &repository,
            &["fresh"],
            "born after the restart",
            json!({}),
        ),
    );
    let created = Instant::now();
    apply_soon(&scene, &changing("second content"));
    scene
        .cluster
        .kubectl_ok(&["delete", "ga", "doomed", "-n", ns, "--wait=false"]);

    let fresh = scene.wait_condition(ns, "fresh", "Ready", "True", Duration::from_secs(60));
    let fresh_after = back.elapsed();
    let fresh_since_creation = created.elapsed();
    let fresh_digest = status_digest(&fresh);
    let changed = wait_for(
        "changing to converge on its new content",
        Duration::from_secs(60),
        || {
            let object = scene.cluster.artifact(ns, "changing");
            (is_ready(&object)
                && object["status"]["observedGeneration"] == object["metadata"]["generation"]
                && object["metadata"]["generation"].as_i64() == Some(2))
            .then_some(object)
        },
    );
    let changed_after = back.elapsed();
    let changed_digest = status_digest(&changed);
    wait_for("doomed to be gone", Duration::from_secs(60), || {
        scene
            .cluster
            .get(ns, "ga", "doomed")
            .is_none()
            .then_some(())
    });
    let deleted_after = back.elapsed();
    eprintln!(
        "after the API server was back: fresh Ready in {:.1}s ({:.1}s after its creation), changing re-converged in {:.1}s, doomed gone in {:.1}s",
        fresh_after.as_secs_f64(),
        fresh_since_creation.as_secs_f64(),
        changed_after.as_secs_f64(),
        deleted_after.as_secs_f64(),
    );

    assert_eq!(digest_of(&tag("fresh")), Some(fresh_digest));
    assert_ne!(
        changed_digest, before["changing"],
        "new content, new digest"
    );
    assert_eq!(digest_of(&tag("changing")), Some(changed_digest));
    for t in ["doomed-1", "doomed-2"] {
        assert_eq!(
            digest_of(&tag(t)),
            None,
            "tag {t} of the deleted object removed"
        );
    }
    assert_eq!(
        digest_of(&tag("steady")).as_ref(),
        Some(&before["steady"]),
        "untouched"
    );

    let controller = scene.controller_mut("c");
    assert!(controller.running(), "the controller still runs");
    let log = controller.log_text();
    assert!(
        !log.contains("controller stopped"),
        "{}",
        controller.log_tail(40)
    );
    // What the outage looked like from inside (debug lines asked for at start).
    let backoffs: Vec<String> = log
        .lines()
        .filter(|l| l.contains("Error received, backing off"))
        .filter_map(|l| l.split("duration=").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or(d).to_string())
        .collect();
    let refusals = log
        .lines()
        .filter(|l| l.contains("is forbidden: User"))
        .count();
    let failed_rounds = log
        .lines()
        .filter(|l| l.contains("reconcile round"))
        .count();
    eprintln!(
        "controller: {} trigger-stream backoffs ({}), {failed_rounds} failed rounds logged, {refusals} refusals by the starting API server; {} log bytes after the restart",
        backoffs.len(),
        backoffs.join(", "),
        log.len() - log_len_at_restart.min(log.len()),
    );
}

/// `/readyz` of a running controller, as its HTTP status (0: no answer).
fn readyz(scene: &Scene, controller: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
        ])
        .arg(format!(
            "http://{}/readyz",
            scene.controller(controller).metrics_addr
        ))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The value of one series (`name{labels}`) of a controller's /metrics.
fn series(scene: &Scene, controller: &str, series: &str) -> f64 {
    let text = scene.controller(controller).metrics();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a number")
}

/// Scenario 3: honest health. `/readyz` answers 503 while the API server is down (the
/// controller can neither list nor watch its objects) and 200 again once it is back; the
/// watch errors are counted, and the objects are counted by condition.
#[test]
fn readyz_fails_while_the_api_server_is_down_and_recovers() {
    let ns = "resilience-readyz";
    // Exclusive: this test stops the API server every test of this binary shares.
    let mut scene = Scene::new(&[ns], Watch::AllNamespaces);
    scene.start_controller("c", &["--namespace", ns], &[]);
    wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        (readyz(&scene, "c") == 200).then_some(())
    });
    let repository = format!("{}/resilience/readyz", scene.registry.addr);
    scene
        .cluster
        .apply(&artifact(ns, "before", &repository, &["before"], "before", json!({})).to_string());
    scene.wait_ready(ns, "before");
    let ready_objects = r#"garden_artifacts_objects{condition="Ready"}"#;
    let watch_errors = r#"garden_artifacts_watch_errors_total{watch="gardenartifacts"}"#;
    wait_for(
        "the Ready object to be counted",
        Duration::from_secs(10),
        || (series(&scene, "c", ready_objects) == 1.0).then_some(()),
    );
    let errors_before = series(&scene, "c", watch_errors);

    let stopping_at = SystemTime::now();
    let down = Instant::now();
    scene.cluster.stop_apiserver();
    assert!(!scene.cluster.apiserver_ready(), "the API server is down");
    let noticed = wait_for(
        "/readyz to answer 503 with the API server down",
        Duration::from_secs(30),
        || (readyz(&scene, "c") == 503).then(|| down.elapsed()),
    );
    let mut answers_while_down = Vec::new();
    for _ in 0..6 {
        answers_while_down.push(readyz(&scene, "c"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let errors_while_down = series(&scene, "c", watch_errors);

    scene.cluster.start_apiserver();
    let back = Instant::now();
    // The restarted server may refuse for a while as its RBAC caches fill (see scenario 2).
    scene.excuse_refusals_between(stopping_at, SystemTime::now() + Duration::from_secs(30));
    let recovered = wait_for(
        "/readyz to answer 200 with the API server back",
        Duration::from_secs(90),
        || (readyz(&scene, "c") == 200).then(|| back.elapsed()),
    );
    eprintln!(
        "/readyz 503 {:.1}s after the API server stopped, 200 {:.1}s after it was ready again; watch errors {errors_before} -> {errors_while_down}",
        noticed.as_secs_f64(),
        recovered.as_secs_f64()
    );
    assert_eq!(answers_while_down, [503; 6], "503 all the time it is down");
    assert!(
        errors_while_down > errors_before,
        "the watch errors are counted: {errors_before} -> {errors_while_down}"
    );
    // Ready means working: an object made after the restart converges.
    apply_soon(
        &scene,
        &artifact(ns, "after", &repository, &["after"], "after", json!({})),
    );
    scene.wait_condition(ns, "after", "Ready", "True", Duration::from_secs(60));
    wait_for(
        "both Ready objects to be counted",
        Duration::from_secs(10),
        || (series(&scene, "c", ready_objects) == 2.0).then_some(()),
    );
}
