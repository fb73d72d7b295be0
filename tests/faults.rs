//! Reliability: `garden-artifacts apply` against a real Distribution registry behind the
//! fault-injecting proxy of `tests/common/faults.rs` (429 with Retry-After, 5xx bursts, a
//! permanent 500, slow answers, connections dropped mid-request and mid-response), and against
//! a registry killed with SIGKILL in the middle of a large upload. What reached the registry is
//! checked directly (skopeo, curl, sha256sum), never through the proxy.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::faults::{Action, Distribution, FaultProxy, Rule, Seen, status, too_many_requests};
use common::*;

const SECOND: Duration = Duration::from_secs(1);

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The proxy log as a table, for failure messages.
fn table(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| {
            format!(
                "{:>6} ms -> {:>6} ms  {:<6} {:<4} {}{}",
                ms(s.started),
                s.answered.map_or("-".into(), |a| ms(a).to_string()),
                s.method,
                s.status.map_or("drop".into(), |c| c.to_string()),
                s.target.split('?').next().unwrap(),
                s.fault
                    .as_ref()
                    .map_or(String::new(), |f| format!("   <- {f}"))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn apply(file: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "-f", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    garden_artifacts(&args, &[])
}

fn json_results(out: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(out), stderr(out)))
}

fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    )
}

/// `skopeo copy docker://REF dir:DIR` straight from the registry: the blobs as files named by
/// their hex digest.
fn skopeo_copy_dir(reference: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dir.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    dir
}

/// 429 with `Retry-After: 2` on the first manifest HEAD and the first blob POST of one object,
/// while a second object of the same run writes to the same registry: both converge, each
/// 429'd request is retried no sooner than 2 s later, and during each pause no request at all
/// starts against that registry: the other object's next write waits out the pause too,
/// although its previous request finished 1.5 s earlier.
#[test]
fn retry_after_pauses_every_request_to_the_registry() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let p = &proxy.addr;
    let file = write_manifest(
        dir.path(),
        "rate.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: a}}
spec: {{repository: {p}/rate/a, tags: [v1], source: {{files: [{{name: a.release, content: "ID=a\n"}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: b}}
spec: {{repository: {p}/rate/b, tags: [v1], source: {{files: [{{name: b.release, content: "ID=b\n"}}]}}}}
"#
        ),
    );
    // The 429s are held back a little so that everything the client had in flight when it
    // asked has arrived first; b's uploads are slow so that b has a write waiting in the pause.
    proxy.inject(
        Rule::new("HEAD", "^/v2/rate/a/manifests/", too_many_requests(2))
            .times(1)
            .delay(SECOND),
    );
    proxy.inject(
        Rule::new("POST", "^/v2/rate/a/blobs/uploads/", too_many_requests(2))
            .times(1)
            .delay(Duration::from_millis(300)),
    );
    proxy.inject(
        Rule::new("PUT", "^/v2/rate/b/blobs/uploads/", Action::Forward)
            .delay(Duration::from_millis(1500)),
    );

    let out = apply(&file, &["-o", "json"]);
    let seen = proxy.seen();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        table(&seen)
    );
    for r in json_results(&out) {
        assert_eq!(r["result"], "created", "{r}");
        let name = r["name"].as_str().unwrap();
        assert_eq!(
            digest_of(&format!("{}/rate/{name}:v1", registry.addr)).as_deref(),
            r["digest"].as_str(),
            "{name} as the registry itself serves it"
        );
    }

    let pauses: Vec<&Seen> = seen.iter().filter(|s| s.status == Some(429)).collect();
    assert_eq!(pauses.len(), 2, "{}", table(&seen));
    for pause in pauses {
        let said = pause.answered.unwrap();
        let until = said + 2 * SECOND;
        // The same request again: not before Retry-After has passed, and not much later.
        let retry = seen
            .iter()
            .find(|s| s.method == pause.method && s.path() == pause.path() && s.started > said)
            .unwrap_or_else(|| panic!("no retry of {pause:?}\n{}", table(&seen)));
        assert!(
            retry.started >= until && retry.started < until + 2 * SECOND,
            "retried {} ms after the 429:\n{}",
            ms(retry.started - said),
            table(&seen)
        );
        assert!(
            retry.status.is_some_and(|s| s < 300 || s == 404),
            "{retry:?}"
        );
        // Nothing else started during the pause either. Requests the client sent before it
        // read the 429 may arrive just after it went out: 100 ms of grace for those.
        let during: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.started > said + Duration::from_millis(100) && s.started < until)
            .collect();
        assert!(
            during.is_empty(),
            "requests during the pause {}..{} ms: {during:#?}\n{}",
            ms(said),
            ms(until),
            table(&seen)
        );
    }

    // The shared pause, seen from b: its blob uploads came back well inside a's first pause,
    // and its next request (the manifest) still waited for the pause to end.
    let first_pause = seen.iter().find(|s| s.status == Some(429)).unwrap();
    let pause_end = first_pause.answered.unwrap() + 2 * SECOND;
    let b_uploads_done = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path().starts_with("/v2/rate/b/blobs/"))
        .map(|s| s.answered.unwrap())
        .max()
        .unwrap();
    let b_manifest = seen
        .iter()
        .find(|s| s.method == "PUT" && s.path().starts_with("/v2/rate/b/manifests/"))
        .unwrap();
    assert!(
        b_uploads_done + Duration::from_millis(500) < pause_end,
        "b's uploads did not finish inside the pause; the test proves nothing:\n{}",
        table(&seen)
    );
    assert!(
        b_manifest.started >= pause_end,
        "b wrote its manifest {} ms into a's pause:\n{}",
        ms(b_manifest.started - first_pause.answered.unwrap()),
        table(&seen)
    );
    println!("{}", table(&seen));
}

/// 429 with `Retry-After: 2` on the upload of a blob's content (the `PUT` that finishes the
/// session, which is not replayed like other requests but started over by the engine): the
/// next upload of that blob, and every other request, waits the 2 s as well.
#[test]
fn retry_after_on_a_blob_upload_is_honoured_too() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.raw"), random_bytes(256 * 1024)).unwrap();
    let digest = sha256sum(&dir.path().join("disk.raw"));
    let hex = digest.trim_start_matches("sha256:");
    let p = &proxy.addr;
    let file = write_manifest(
        dir.path(),
        "put.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: put}}
spec: {{repository: {p}/rate/put, tags: [v1], source: {{files: [{{name: disk.raw, path: disk.raw}}]}}}}
"#
        ),
    );
    proxy.inject(
        Rule::new(
            "PUT",
            &format!("/blobs/uploads/.*digest=sha256(:|%3A){hex}"),
            too_many_requests(2),
        )
        .times(1)
        .delay(Duration::from_millis(300)),
    );
    let out = apply(&file, &["-o", "json"]);
    let seen = proxy.seen();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        table(&seen)
    );
    assert_eq!(
        digest_of(&format!("{}/rate/put:v1", registry.addr)).as_deref(),
        json_results(&out)[0]["digest"].as_str()
    );
    let limited = seen.iter().find(|s| s.status == Some(429)).unwrap();
    let said = limited.answered.unwrap();
    let until = said + 2 * SECOND;
    let again = seen
        .iter()
        .find(|s| s.method == "PUT" && s.target.contains(hex) && s.started > said)
        .unwrap_or_else(|| panic!("no second upload\n{}", table(&seen)));
    assert!(
        again.started >= until,
        "uploaded again {} ms after the 429:\n{}",
        ms(again.started - said),
        table(&seen)
    );
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.started > said + Duration::from_millis(100) && s.started < until)
        .collect();
    assert!(during.is_empty(), "{during:#?}\n{}", table(&seen));
    println!("{}", table(&seen));
}

/// Bursts of 503 and 502 on writes and a 500 on a read are retried by the client, two 500s on
/// blob uploads by the engine (a new upload session each time): the artefact converges, with
/// exactly the content asked for.
#[test]
fn bursts_of_server_errors_on_uploads_are_retried_until_the_artefact_converges() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let layer = random_bytes(1024 * 1024);
    std::fs::write(dir.path().join("disk.raw"), &layer).unwrap();
    let p = &proxy.addr;
    let file = write_manifest(
        dir.path(),
        "burst.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: burst}}
spec:
  repository: {p}/burst/app
  tags: [v1, stable]
  source:
    files:
      - {{name: disk.raw, path: disk.raw}}
      - {{name: app.release, content: "ID=burst\n"}}
"#
        ),
    );
    proxy.inject(Rule::new("HEAD", "^/v2/burst/app/manifests/", status(500)).times(1));
    proxy.inject(Rule::new("POST", "^/v2/burst/app/blobs/uploads/", status(503)).times(3));
    proxy.inject(Rule::new("PUT", "^/v2/burst/app/blobs/uploads/", status(500)).times(2));
    proxy.inject(Rule::new("PUT", "^/v2/burst/app/manifests/", status(502)).times(1));
    proxy.inject(Rule::new("PUT", "^/v2/burst/app/manifests/", status(503)).times(1));

    let out = apply(&file, &["-o", "json"]);
    let seen = proxy.seen();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        table(&seen)
    );
    let result = &json_results(&out)[0];
    assert_eq!(result["result"], "created");
    let digest = result["digest"].as_str().unwrap();
    for tag in ["v1", "stable"] {
        assert_eq!(
            digest_of(&format!("{}/burst/app:{tag}", registry.addr)).as_deref(),
            Some(digest)
        );
    }

    let injected: Vec<&Seen> = seen.iter().filter(|s| s.fault.is_some()).collect();
    assert_eq!(injected.len(), 8, "{}", table(&seen));
    // Each failed request was followed by a successful one of its kind.
    for (method, path, ok) in [
        ("HEAD", "/manifests/", 404),
        ("POST", "/blobs/uploads/", 202),
        ("PUT", "/blobs/uploads/", 201),
        ("PUT", "/manifests/", 201),
    ] {
        let failures = injected
            .iter()
            .filter(|s| s.method == method && s.path().contains(path))
            .count();
        let successes = seen
            .iter()
            .filter(|s| s.method == method && s.path().contains(path) && s.status == Some(ok))
            .count();
        assert!(
            failures > 0 && successes > 0,
            "{method} {path}\n{}",
            table(&seen)
        );
    }
    // The 500'd uploads carried the whole megabyte, and were started over with a new session.
    let failed_puts: Vec<&&Seen> = injected
        .iter()
        .filter(|s| s.method == "PUT" && s.path().contains("/blobs/uploads/"))
        .collect();
    assert_eq!(failed_puts.len(), 2);
    let uploaded = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path().contains("/blobs/uploads/"))
        .count();
    assert_eq!(
        uploaded,
        3 + 2,
        "three blobs (config and two layers), two retried:\n{}",
        table(&seen)
    );

    // The bytes in the registry are the file's.
    let copy = skopeo_copy_dir(&format!("{}/burst/app:v1", registry.addr));
    let layer_digest = sha256sum(&dir.path().join("disk.raw"));
    let stored = copy.path().join(layer_digest.trim_start_matches("sha256:"));
    assert_eq!(sha256sum(&stored), layer_digest);
    println!("{}", table(&seen));
}

/// A registry that answers 500 to everything: exit 1, the status in the message, and after
/// five attempts of the first read, no write at all. A registry that refuses every upload with
/// 500: three attempts per blob, then exit 1, and the tag still points where it did.
#[test]
fn a_permanent_server_error_fails_with_its_status_and_moves_no_tag() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let object = |registry: &str, content: &str| {
        format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: perm}}
spec: {{repository: {registry}/perm/app, tags: [stable], source: {{files: [{{name: app.release, content: "{content}"}}]}}}}
"#
        )
    };
    // The tag points at a first version, written straight to the registry.
    let first = write_manifest(dir.path(), "one.yaml", &object(&registry.addr, "ID=one"));
    let out = apply(&first, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = format!("{}/perm/app:stable", registry.addr);
    let before = digest_of(&reference).unwrap();

    let proxy = FaultProxy::start(&registry.addr);
    let second = write_manifest(dir.path(), "two.yaml", &object(&proxy.addr, "ID=two"));

    // 500 on everything.
    proxy.inject(Rule::new("*", "", status(500)));
    let out = apply(&second, &[]);
    let seen = proxy.seen();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        table(&seen)
    );
    let text = stdout(&out);
    assert!(
        // A HEAD answer has no body, so the status is all the registry said.
        text.contains("failed: HEAD ") && text.contains("/v2/perm/app/manifests/stable: 500"),
        "{text}"
    );
    assert_eq!(
        seen.len(),
        5,
        "five attempts of one HEAD:\n{}",
        table(&seen)
    );
    assert!(
        seen.iter()
            .all(|s| s.method == "HEAD" && s.status == Some(500))
    );
    assert_eq!(digest_of(&reference).as_deref(), Some(before.as_str()));

    // 500 on every upload: the blob is tried three times (a new session each), the manifest
    // and the tag are never written.
    proxy.clear();
    proxy.forget();
    proxy.inject(Rule::new("POST", "/blobs/uploads/", status(500)));
    let out = apply(&second, &["-o", "json"]);
    let seen = proxy.seen();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        table(&seen)
    );
    let result = &json_results(&out)[0];
    assert_eq!(result["result"], "failed");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.starts_with("POST ") && error.contains(": 500 UNKNOWN: fault injected"),
        "{error}"
    );
    // Two blobs to upload (config and layer), each tried three times, the run ending when the
    // first has used its attempts.
    let posts = seen.iter().filter(|s| s.method == "POST").count();
    assert!(
        (3..=6).contains(&posts),
        "three attempts per missing blob:\n{}",
        table(&seen)
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "PUT" || s.path().contains("/manifests/") && s.is_write()),
        "{}",
        table(&seen)
    );
    assert_eq!(
        digest_of(&reference).as_deref(),
        Some(before.as_str()),
        "the tag moved"
    );
    // And the registry never saw a write from the second version.
    let writes: Vec<_> = Registry::writes(&registry.requests())
        .into_iter()
        .filter(|r| r.uri.contains("/manifests/"))
        .collect();
    assert_eq!(writes.len(), 1, "only the first version's tag: {writes:#?}");
}

/// Blob uploads answered 1 s late, the first manifest HEAD's answer cut in half, the large
/// blob's first upload cut off after 1 MiB of its 8 MiB, its second upload stored by the
/// registry but the answer lost: the engine's three attempts are enough, and the blob in the
/// registry has the file's digest (skopeo copy to a folder, sha256sum).
#[test]
fn slow_answers_and_dropped_connections_still_converge_with_the_right_bytes() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let size = 8 * 1024 * 1024;
    std::fs::write(dir.path().join("disk.raw"), random_bytes(size)).unwrap();
    let digest = sha256sum(&dir.path().join("disk.raw"));
    let hex = digest.trim_start_matches("sha256:");
    let p = &proxy.addr;
    let file = write_manifest(
        dir.path(),
        "slow.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: slow}}
spec:
  repository: {p}/slow/app
  tags: [v1]
  source:
    files:
      - {{name: disk.raw, path: disk.raw}}
      - {{name: app.release, content: "ID=slow\n"}}
"#
        ),
    );
    let big_put = format!("^/v2/slow/app/blobs/uploads/.*[?&]digest=sha256(:|%3A){hex}");
    proxy.inject(Rule::new("HEAD", "^/v2/slow/app/manifests/", Action::DropResponse).times(1));
    proxy.inject(
        Rule::new(
            "PUT",
            &big_put,
            Action::DropRequestBody { after: 1024 * 1024 },
        )
        .times(1),
    );
    proxy.inject(
        Rule::new("PUT", &big_put, Action::DropResponse)
            .times(1)
            .delay(SECOND),
    );
    proxy.inject(Rule::new("PUT", "^/v2/slow/app/blobs/uploads/", Action::Forward).delay(SECOND));

    let started = Instant::now();
    let out = apply(&file, &["-o", "json"]);
    let took = started.elapsed();
    let seen = proxy.seen();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        table(&seen)
    );
    assert_eq!(json_results(&out)[0]["result"], "created");

    let big: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.target.contains(hex))
        .collect();
    assert_eq!(big.len(), 3, "{}", table(&seen));
    assert_eq!((big[0].status, big[0].body_bytes), (None, 1024 * 1024));
    assert_eq!((big[1].status, big[1].body_bytes), (None, size as u64));
    assert_eq!((big[2].status, big[2].body_bytes), (Some(201), size as u64));
    for put in &big[1..] {
        assert!(put.answered.unwrap() - put.started >= SECOND, "{put:?}");
    }
    let heads: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "HEAD" && s.path() == "/v2/slow/app/manifests/v1")
        .collect();
    assert_eq!(heads[0].status, None);
    assert_eq!(heads[1].status, Some(404));
    assert!(took >= 2 * SECOND, "{took:?}");

    // What the registry holds, read without the proxy.
    let copy = skopeo_copy_dir(&format!("{}/slow/app:v1", registry.addr));
    let stored = copy.path().join(hex);
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), size as u64);
    assert_eq!(sha256sum(&stored), digest);
    println!("{}", table(&seen));
}

/// The proxy itself, driven by curl: a chunked request body (what a streaming client without
/// a known length sends) passes through whole, and is cut where a rule says.
#[test]
fn the_proxy_passes_chunked_bodies_through_and_cuts_them_where_told() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let upload = |name: &str, size: usize| -> (String, std::process::ExitStatus, String) {
        let path = dir.path().join(name);
        std::fs::write(&path, random_bytes(size)).unwrap();
        let digest = sha256sum(&path);
        let (code, headers) = curl(&[
            "-X",
            "POST",
            &format!("http://{}/v2/chunked/app/blobs/uploads/", proxy.addr),
        ]);
        assert_eq!(code, 202);
        let location = header(&headers, "location").unwrap().to_string();
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["-H", "Transfer-Encoding: chunked"])
            .args(["-H", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", path.display()))
            .arg(format!("{location}&digest={digest}"))
            .output()
            .unwrap();
        (digest, out.status, stdout(&out))
    };

    let (digest, status, code) = upload("whole.raw", 3 * 1024 * 1024 + 17);
    assert!(status.success(), "{code}");
    assert_eq!(code, "201");
    let (code, headers) = curl_head(
        &format!("http://{}/v2/chunked/app/blobs/{digest}", registry.addr),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-length"), Some("3145745"));

    proxy.inject(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Action::DropRequestBody { after: 100_000 },
    ));
    let (digest, status, _) = upload("cut.raw", 1024 * 1024);
    assert!(!status.success(), "curl did not notice the cut");
    let (code, _) = curl_head(
        &format!("http://{}/v2/chunked/app/blobs/{digest}", registry.addr),
        None,
    );
    assert_eq!(code, 404, "a cut upload must not become a blob");
    let seen = proxy.seen();
    let puts: Vec<&Seen> = seen.iter().filter(|s| s.method == "PUT").collect();
    assert_eq!(puts.len(), 2, "{}", table(&seen));
    assert_eq!((puts[0].status, puts[0].body_bytes), (Some(201), 3145745));
    assert_eq!((puts[1].status, puts[1].body_bytes), (None, 100_000));
}

/// `curl -si ARGS`: the status and the headers, lower-cased names.
fn curl(args: &[&str]) -> (u16, Vec<(String, String)>) {
    let out = Command::new("curl")
        .args(["-si", "-m", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    parse_head(&String::from_utf8_lossy(&out.stdout))
}

fn parse_head(text: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// One look at the registry through curl, as a client that knows nothing of garden-artifacts.
#[derive(Clone, Debug)]
struct Sample {
    at: Duration,
    /// HTTP status of `HEAD` of the tag; 0: the registry did not answer.
    tag: u16,
    /// HTTP status of `HEAD` of the big blob.
    blob: u16,
}

/// `curl -sI`: the status (0: no answer) and the headers, lower-cased names.
fn curl_head(url: &str, accept: Option<&str>) -> (u16, Vec<(String, String)>) {
    let mut command = Command::new("curl");
    command.args(["-sI", "-m", "5"]);
    if let Some(accept) = accept {
        command.args(["-H", &format!("Accept: {accept}")]);
    }
    let out = command.arg(url).output().expect("curl runs");
    parse_head(&String::from_utf8_lossy(&out.stdout))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The tag's manifest, when the tag is there: every blob it names must be complete (HEAD 200
/// with the size the manifest gives). Returns what is wrong.
fn check_tagged_manifest(base: &str, repo: &str, digest: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "-m", "5", "-H", &format!("Accept: {OCI_MANIFEST}")])
        .arg(format!("{base}/v2/{repo}/manifests/{digest}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return Some(format!("tag points at {digest}, which cannot be read"));
    }
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut blobs = vec![manifest["config"].clone()];
    blobs.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
    for blob in blobs {
        let digest = blob["digest"].as_str().unwrap_or("?");
        let (code, headers) = curl_head(&format!("{base}/v2/{repo}/blobs/{digest}"), None);
        let length: Option<u64> = header(&headers, "content-length").and_then(|v| v.parse().ok());
        if code != 200 || length != blob["size"].as_u64() {
            return Some(format!(
                "tag points at a manifest whose blob {digest} is {code} with {length:?} bytes, expected {}",
                blob["size"]
            ));
        }
    }
    None
}

/// The largest upload in progress in the registry's storage.
fn upload_in_progress(storage: &Path) -> u64 {
    fn walk(dir: &Path, largest: &mut u64) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, largest);
            } else if path.file_name().is_some_and(|n| n == "data")
                && path.components().any(|c| c.as_os_str() == "_uploads")
            {
                *largest = (*largest).max(entry.metadata().map_or(0, |m| m.len()));
            }
        }
    }
    let mut largest = 0;
    walk(storage, &mut largest);
    largest
}

/// 1 GiB of random data: the registry is killed with SIGKILL once a quarter of it has
/// arrived, the run fails, the registry comes back on the same port and storage, the next run
/// converges. Meanwhile curl looks every 100 ms: the tag is absent until it is complete (every
/// blob of its manifest HEADs 200 with the right size), and the big blob is 404 until its whole
/// content is there.
#[test]
fn a_registry_killed_mid_upload_never_shows_a_partial_blob_or_an_early_tag() {
    // The issue asks for a 1 GiB upload: the size Garden Linux images have.
    const SIZE: u64 = 1024 * 1024 * 1024;
    let mut registry = Distribution::start("", "");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.raw");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {SIZE} /dev/urandom > '{}'", big.display()))
        .status()
        .unwrap();
    assert!(made.success());
    let digest = sha256sum(&big);
    let r = registry.addr.clone();
    let file = write_manifest(
        dir.path(),
        "big.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: big}}
spec:
  repository: {r}/crash/app
  tags: [v1]
  source:
    files:
      - {{name: big.raw, path: big.raw}}
      - {{name: app.release, content: "ID=crash\n"}}
"#
        ),
    );

    // The watcher.
    let base = format!("http://{r}");
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let watcher = {
        let (stop, samples, violations) = (stop.clone(), samples.clone(), violations.clone());
        let (base, digest) = (base.clone(), digest.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let next = Instant::now() + Duration::from_millis(100);
                let at = epoch.elapsed();
                let (tag, headers) = curl_head(
                    &format!("{base}/v2/crash/app/manifests/v1"),
                    Some(OCI_MANIFEST),
                );
                if tag == 200 {
                    let target = header(&headers, "docker-content-digest").unwrap_or("?");
                    if let Some(wrong) = check_tagged_manifest(&base, "crash/app", target) {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("{} ms: {wrong}", ms(at)));
                    }
                }
                let (blob, headers) =
                    curl_head(&format!("{base}/v2/crash/app/blobs/{digest}"), None);
                if blob == 200 && header(&headers, "content-length") != Some(&SIZE.to_string()) {
                    violations.lock().unwrap().push(format!(
                        "{} ms: the big blob is visible with {:?} bytes",
                        ms(at),
                        header(&headers, "content-length")
                    ));
                }
                samples.lock().unwrap().push(Sample { at, tag, blob });
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };

    // First run: killed in the middle of the big upload.
    let config = tempfile::tempdir().unwrap();
    let mut first = Command::new(BINARY)
        .args(["apply", "-f", file.to_str().unwrap()])
        .env("DOCKER_CONFIG", config.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let received = loop {
        let received = upload_in_progress(&registry.storage());
        if received >= SIZE / 4 {
            break received;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the run ended before the upload got far"
        );
        assert!(Instant::now() < deadline, "the upload did not get going");
        std::thread::sleep(Duration::from_millis(20));
    };
    registry.kill9();
    let killed_at = epoch.elapsed();
    assert!(received < SIZE, "the upload was complete before the kill");
    let deadline = Instant::now() + Duration::from_secs(120);
    while first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first run does not give up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(stdout(&first).contains("failed: "), "{}", stdout(&first));

    // Back on the same port and storage; the second run converges.
    registry.restart();
    let restarted_at = epoch.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let second_started = epoch.elapsed();
    let second = apply(&file, &["-o", "json"]);
    let second_ended = epoch.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert!(
        second.status.success(),
        "{}\n{}",
        stdout(&second),
        stderr(&second)
    );
    assert_eq!(json_results(&second)[0]["result"], "created");

    let samples = samples.lock().unwrap().clone();
    let violations = violations.lock().unwrap().clone();
    let summary = format!(
        "killed at {} ms with {received} of {SIZE} bytes received, restarted at {} ms, second run {}..{} ms; {} samples",
        ms(killed_at),
        ms(restarted_at),
        ms(second_started),
        ms(second_ended),
        samples.len()
    );
    assert!(violations.is_empty(), "{summary}\n{violations:#?}");
    // The watcher saw every phase: up before the kill, down, up again.
    assert!(
        samples.iter().any(|s| s.at < killed_at && s.tag == 404),
        "{summary}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.at > killed_at && s.at < restarted_at && s.tag == 0),
        "{summary}"
    );
    // Until the second run, neither the tag nor the big blob was ever there.
    for s in samples.iter().filter(|s| s.at < second_started) {
        assert!(matches!(s.tag, 0 | 404), "{summary}\n{s:?}");
        assert!(matches!(s.blob, 0 | 404), "{summary}\n{s:?}");
    }
    // The blob comes before the tag, and at the end both are there.
    let first_blob = samples.iter().find(|s| s.blob == 200).map(|s| s.at);
    let first_tag = samples.iter().find(|s| s.tag == 200).map(|s| s.at);
    assert!(first_blob.is_some() && first_tag.is_some(), "{summary}");
    assert!(first_blob <= first_tag, "{summary}");
    let last = samples.last().unwrap();
    assert_eq!((last.tag, last.blob), (200, 200), "{summary}");

    // The stored bytes are the file's, read straight from the registry.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -sf {base}/v2/crash/app/blobs/{digest} | sha256sum"
        ))
        .output()
        .unwrap();
    let stored = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        format!("sha256:{}", stored.split_whitespace().next().unwrap_or("")),
        digest
    );
    // The second run uploaded the big blob from the start, in a new session.
    let uploads: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.uri.contains("/blobs/uploads/") && r.status == 201)
        .collect();
    assert!(!uploads.is_empty(), "{}", registry.log());
    println!("{summary}");
}

/// A source registry that serves a blob whose bytes do not match its digest (the proxy
/// changes the last byte): `copy` to another registry streams without hashing, and the
/// target registry, which verifies the `?digest=` of the upload, refuses to commit it. The
/// copy fails naming the digest problem, the destination tag does not exist and the tampered
/// blob is not in the target; the next copy, with the source healthy, converges.
#[test]
fn a_source_serving_tampered_bytes_is_never_committed_to_the_target() {
    let source = Registry::start();
    let target = Registry::start();
    let proxy = FaultProxy::start(&source.addr);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.raw"), random_bytes(256 * 1024)).unwrap();
    let digest = sha256sum(&dir.path().join("disk.raw"));
    let hex = digest.trim_start_matches("sha256:");
    let file = write_manifest(
        dir.path(),
        "source.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: source}}
spec:
  repository: {}/src/app
  tags: [v1]
  source:
    files:
      - {{name: disk.raw, path: disk.raw}}
"#,
            source.addr
        ),
    );
    let out = apply(&file, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    proxy.inject(Rule::new(
        "GET",
        &format!("^/v2/src/app/blobs/sha256:{hex}"),
        Action::CorruptResponseBody,
    ));
    let from = format!("{}/src/app:v1", proxy.addr);
    let to = format!("{}/dst/app:v1", target.addr);
    let out = garden_artifacts(&["copy", &from, &to], &[]);
    let seen = proxy.seen();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stderr(&out),
        table(&seen)
    );
    assert!(
        stderr(&out).contains("DIGEST_INVALID"),
        "the error names the refused digest: {}",
        stderr(&out)
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.fault.is_some() && s.target.contains(hex)),
        "the tampered blob was served: {}",
        table(&seen)
    );
    assert_eq!(digest_of(&to), None, "no tag after a refused blob");
    let (code, _) = curl_head(
        &format!("http://{}/v2/dst/app/blobs/{digest}", target.addr),
        None,
    );
    assert_eq!(code, 404, "the tampered blob is not in the target");

    proxy.clear();
    let out = garden_artifacts(&["copy", &from, &to], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        digest_of(&to),
        digest_of(&format!("{}/src/app:v1", source.addr))
    );
    let copied = skopeo_copy_dir(&to);
    assert_eq!(sha256sum(&copied.path().join(hex)), digest);
}

/// A manifest PUT refused as `400 DIGEST_INVALID` (what Distribution 2.8 answers when another
/// process commits one of its blobs at that moment) is sent once more, 200 ms later: once
/// refused, the object converges; refused every time, it fails with the registry's code after
/// exactly two attempts and no tag exists.
#[test]
fn a_manifest_put_refused_as_digest_invalid_is_tried_once_more() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let p = &proxy.addr;
    let file = write_manifest(
        dir.path(),
        "race.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: race}}
spec:
  repository: {p}/race/app
  tags: [v1]
  source: {{files: [{{name: app.release, content: "ID=race\n"}}]}}
"#
        ),
    );
    let tag_puts = |seen: &[Seen]| -> Vec<Seen> {
        seen.iter()
            .filter(|s| s.method == "PUT" && s.path() == "/v2/race/app/manifests/v1")
            .cloned()
            .collect()
    };

    proxy.inject(Rule::new("PUT", "^/v2/race/app/manifests/v1", status(400)).times(1));
    let out = apply(&file, &[]);
    let seen = proxy.seen();
    assert!(out.status.success(), "{}\n{}", stderr(&out), table(&seen));
    let puts = tag_puts(&seen);
    assert_eq!(puts.len(), 2, "{}", table(&seen));
    assert_eq!((puts[0].status, puts[1].status), (Some(400), Some(201)));
    assert!(puts[1].started - puts[0].answered.unwrap() >= Duration::from_millis(200));
    let tagged = format!("{}/race/app:v1", registry.addr);
    assert!(digest_of(&tagged).is_some());

    // Refused every time: two attempts, then the registry's code; the tag stays absent.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("tags: [v1]", "tags: [v2]")
            .replace("ID=race", "ID=race2"),
    )
    .unwrap();
    proxy.clear();
    proxy.forget();
    proxy.inject(Rule::new("PUT", "^/v2/race/app/manifests/v2", status(400)));
    let out = apply(&file, &[]);
    let seen = proxy.seen();
    assert_eq!(out.status.code(), Some(1), "{}", table(&seen));
    assert!(stdout(&out).contains("DIGEST_INVALID"), "{}", stdout(&out));
    let v2_puts = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path() == "/v2/race/app/manifests/v2")
        .count();
    assert_eq!(v2_puts, 2, "{}", table(&seen));
    assert_eq!(digest_of(&format!("{}/race/app:v2", registry.addr)), None);
}
