//! `garden-artifacts mirror` against real Distribution registries, read back with skopeo:
//! tag selection, byte-exact copies, referrers and cosign tags carried, prune, the cost of a
//! converged resync from the access logs, and the refusals of bad input.

mod common;

use common::{Registry, digest_of, garden_artifacts, run_fails, run_ok, stderr, stdout};
use serde_json::Value;

/// Pushes one small artefact per tag (two layers, one shared by all) into `repository`.
fn seed(repository: &str, tags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.txt");
    std::fs::write(&shared, "shared by every tag\n").unwrap();
    for tag in tags {
        let own = dir.path().join("own.txt");
        std::fs::write(&own, format!("content of {tag}\n")).unwrap();
        run_ok(&[
            "push",
            &format!("{repository}:{tag}"),
            &format!("{}:text/plain", own.display()),
            &format!("{}:text/plain", shared.display()),
        ]);
    }
}

fn mirror_json(args: &[&str]) -> Value {
    let mut all = vec!["mirror"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&run_ok(&all)).unwrap()
}

fn tags_of(json: &Value, result: &str) -> Vec<String> {
    let mut tags: Vec<String> = json["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["result"] == result)
        .map(|t| t["tag"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

#[test]
fn selection_copies_byte_for_byte_and_a_resync_only_looks() {
    let from = Registry::start();
    let to = Registry::start();
    let source = format!("{}/gardenlinux/gardenlinux", from.addr);
    let target = format!("{}/mirror/gardenlinux", to.addr);
    seed(
        &source,
        &[
            "1877.9",
            "1877.10",
            "1877.10-arm64",
            "1877.2",
            "1592.4",
            "nightly",
        ],
    );
    let args = [
        source.as_str(),
        target.as_str(),
        "--include",
        r"^1877\.",
        // `=`: a pattern may start with a dash.
        "--exclude=-arm64$",
        "--latest",
        "2",
        "--extract",
        r"^([0-9]+\.[0-9]+)",
    ];
    let first = mirror_json(&args);
    // 1877.10 ranks above 1877.9 (numbers, not text); -arm64 is excluded; 1877.2 is older.
    assert_eq!(
        tags_of(&first, "copied"),
        ["1877.10", "1877.9"],
        "{first:#}"
    );
    assert_eq!(first["selected"], 2);
    for tag in ["1877.10", "1877.9"] {
        assert_eq!(
            digest_of(&format!("{target}:{tag}")),
            digest_of(&format!("{source}:{tag}")),
            "{tag}: same digest"
        );
    }
    for absent in ["1877.10-arm64", "1877.2", "1592.4", "nightly"] {
        assert_eq!(digest_of(&format!("{target}:{absent}")), None, "{absent}");
    }

    // A converged resync: one listing of the source and a HEAD per selected tag on each side.
    let (source_before, target_before) = (from.requests().len(), to.requests().len());
    let second = mirror_json(&args);
    assert_eq!(tags_of(&second, "unchanged"), ["1877.10", "1877.9"]);
    let source_requests = from.requests().split_off(source_before);
    let target_requests = to.requests().split_off(target_before);
    let counted = |requests: &[common::Request], method: &str, part: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.uri.contains(part) && r.status < 400)
            .count()
    };
    assert_eq!(
        counted(&source_requests, "GET", "/tags/list"),
        1,
        "{source_requests:#?}"
    );
    assert_eq!(
        counted(&source_requests, "HEAD", "/manifests/"),
        2,
        "{source_requests:#?}"
    );
    assert_eq!(
        source_requests.iter().filter(|r| r.status < 400).count(),
        3,
        "{source_requests:#?}"
    );
    assert_eq!(
        counted(&target_requests, "HEAD", "/manifests/"),
        2,
        "{target_requests:#?}"
    );
    assert!(
        Registry::writes(&target_requests).is_empty(),
        "{target_requests:#?}"
    );

    // A new upstream release: only it is copied.
    seed(&source, &["1877.11"]);
    let third = mirror_json(&args);
    assert_eq!(tags_of(&third, "copied"), ["1877.11"], "{third:#}");
    assert_eq!(tags_of(&third, "unchanged"), ["1877.10"], "{third:#}");
}

#[test]
fn prune_deletes_what_the_rules_no_longer_select_and_nothing_else() {
    let registry = Registry::start();
    let source = format!("{}/upstream/gl", registry.addr);
    let target = format!("{}/mirror/gl", registry.addr);
    seed(&source, &["1877.1", "1877.2", "1877.3"]);
    mirror_json(&[&source, &target, "--include", r"^1877\."]);
    // A tag of the target the rules never admit.
    seed(&target, &["keep-me"]);

    let pruned = mirror_json(&[
        &source,
        &target,
        "--include",
        r"^1877\.",
        "--latest",
        "1",
        "--prune",
    ]);
    let deleted: Vec<&str> = pruned["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["result"] == "deleted")
        .map(|p| p["tag"].as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 2, "{pruned:#}");
    assert_eq!(digest_of(&format!("{target}:1877.1")), None);
    assert_eq!(digest_of(&format!("{target}:1877.2")), None);
    assert!(digest_of(&format!("{target}:1877.3")).is_some());
    assert!(digest_of(&format!("{target}:keep-me")).is_some());
    // The source is never touched.
    assert!(digest_of(&format!("{source}:1877.1")).is_some());
}

#[test]
fn referrers_and_cosign_tags_travel_with_their_tag() {
    let registry = Registry::start();
    let source = format!("{}/upstream/gl", registry.addr);
    let target = format!("{}/mirror/gl", registry.addr);
    seed(&source, &["1877.5", "signature-source"]);
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "release notes\n").unwrap();
    let referrer: Value = serde_json::from_str(&run_ok(&[
        "push",
        &source,
        &format!("{}:text/plain", notes.display()),
        "--subject",
        &format!("{source}:1877.5"),
        "-o",
        "json",
    ]))
    .unwrap();
    // A legacy cosign signature tag, written by skopeo as cosign would.
    let subject = digest_of(&format!("{source}:1877.5")).unwrap();
    let sig_tag = format!("{}.sig", subject.replacen(':', "-", 1));
    let copied = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{source}:signature-source"))
        .arg(format!("docker://{source}:{sig_tag}"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));

    let json = mirror_json(&[&source, &target, "--include", "^1877", "--referrers"]);
    // The cosign tag is no tag of its own in the selection: it comes with its subject.
    assert_eq!(json["selected"], 1, "{json:#}");
    assert_eq!(
        digest_of(&format!("{target}:{sig_tag}")),
        digest_of(&format!("{source}:{sig_tag}"))
    );
    let tree: Value = serde_json::from_str(&run_ok(&[
        "discover",
        &format!("{target}:1877.5"),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        tree["referrers"][0]["digest"], referrer["digest"],
        "{tree:#}"
    );
}

#[test]
fn bad_input_is_refused_naming_the_argument_and_nothing_is_written() {
    let registry = Registry::start();
    let source = format!("{}/upstream/gl", registry.addr);
    let target = format!("{}/mirror/gl", registry.addr);
    seed(&source, &["1"]);
    let before = registry.requests().len();

    let e = run_fails(&["mirror", &source, &target, "--include", "(a)\\1"], 2);
    assert!(e.contains("--include") && e.contains("RE2"), "{e}");
    let e = run_fails(
        &["mirror", &source, &target, "--exclude", "(a{1000}){1000}"],
        2,
    );
    assert!(e.contains("--exclude") && e.contains("too large"), "{e}");
    let e = run_fails(
        &[
            "mirror",
            &source,
            &target,
            "--latest",
            "1",
            "--extract",
            "^[0-9]+",
        ],
        2,
    );
    assert!(e.contains("--extract") && e.contains("no group"), "{e}");
    let e = run_fails(&["mirror", &source, &format!("{source}:1")], 2);
    assert!(e.contains("DST_REPO") && e.contains("names a tag"), "{e}");
    // Two spellings of one repository are one repository.
    let other_spelling = source.replace("127.0.0.1", "localhost");
    let e = run_fails(&["mirror", &source, &other_spelling], 2);
    assert!(e.contains("one repository"), "{e}");
    assert!(
        registry.requests().len() == before,
        "{:#?}",
        registry.requests().split_off(before)
    );

    // A source that does not exist has no tags: nothing selected, nothing written.
    let json = mirror_json(&[&format!("{}/no/such", registry.addr), &target]);
    assert_eq!(json["selected"], 0);
    assert!(Registry::writes(&registry.requests().split_off(before)).is_empty());
}

/// In one `apply`, a GardenMirror runs after the GardenArtifacts that write its source, and
/// leaves the tags another GardenArtifact claims in its target alone.
#[test]
fn apply_orders_a_mirror_after_its_producers_and_respects_their_tags() {
    let registry = Registry::start();
    let r = &registry.addr;
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::write_manifest(
        dir.path(),
        "release.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenMirror
metadata: {{name: releases, namespace: mirrors}}
spec:
  source: {{repository: {r}/gardenlinux/gardenlinux}}
  repository: {r}/mirror/gardenlinux
  tags: {{include: ['^1877\.']}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: gl-1877-10, namespace: releases}}
spec:
  repository: {r}/gardenlinux/gardenlinux
  tags: ["1877.10", "1877.9"]
  source: {{files: [{{name: a.release, content: "VERSION_ID=1877.10\n"}}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: local-1877-9, namespace: mirrors}}
spec:
  repository: {r}/mirror/gardenlinux
  tags: ["1877.9"]
  source: {{files: [{{name: a.release, content: "a local build\n"}}]}}
"#
        ),
    );
    let path = manifest.to_str().unwrap();
    let out = garden_artifacts(&["apply", "-f", path, "-o", "json"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mirror = results
        .iter()
        .find(|r| r["kind"] == "GardenMirror")
        .unwrap_or_else(|| panic!("{results:#?}"));
    let error = mirror["error"].as_str().unwrap();
    assert!(
        error.contains("1877.9: owned by mirrors/local-1877-9"),
        "{error}"
    );
    let source = format!("{r}/gardenlinux/gardenlinux");
    let target = format!("{r}/mirror/gardenlinux");
    assert_eq!(
        digest_of(&format!("{target}:1877.10")),
        digest_of(&format!("{source}:1877.10"))
    );
    assert_ne!(
        digest_of(&format!("{target}:1877.9")),
        digest_of(&format!("{source}:1877.9")),
        "the local object's tag is not overwritten"
    );
    // Converged as far as it can: a second run writes nothing.
    let before = registry.requests().len();
    garden_artifacts(&["apply", "-f", path], &[]);
    let writes = Registry::writes(&registry.requests().split_off(before));
    assert!(writes.is_empty(), "{writes:#?}");
}

/// The example mirror, applied with the examples it mirrors: every flavour of the newest
/// release arrives with its digest, and the SBOM attached to a flavour comes along.
#[test]
fn the_example_mirror_carries_the_newest_release_with_its_referrers() {
    let registry = Registry::start();
    let examples = common::examples_with_containers_for(&registry);
    let dir = examples.path();
    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            dir.to_str().unwrap(),
            "-f",
            dir.join("mirrors").to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mirror = results
        .iter()
        .find(|r| r["kind"] == "GardenMirror")
        .unwrap_or_else(|| panic!("{results:#?}"));
    let source = format!("{}/gardenlinux/gardenlinux", registry.addr);
    let target = format!("{}/mirror/gardenlinux-releases", registry.addr);
    let listed = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{source}"))
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let release = regex::Regex::new(r"^[0-9]+\.[0-9]+").unwrap();
    let expected: Vec<&str> = listed["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| release.is_match(t))
        .collect();
    assert!(expected.len() >= 4, "{listed:#}");
    assert_eq!(
        mirror["tags"].as_array().unwrap().len(),
        expected.len(),
        "{mirror:#}"
    );
    for tag in &expected {
        assert_eq!(
            digest_of(&format!("{target}:{tag}")),
            digest_of(&format!("{source}:{tag}")),
            "{tag}"
        );
    }
    // The flavour with an SBOM attached has it in the mirror too.
    let with_referrers = expected.iter().find(|tag| {
        let tree: Value = serde_json::from_str(&run_ok(&[
            "discover",
            &format!("{source}:{tag}"),
            "-o",
            "json",
        ]))
        .unwrap();
        tree.get("referrers").is_some()
    });
    let tag = with_referrers.expect("an example flavour has a referrer");
    let mirrored: Value = serde_json::from_str(&run_ok(&[
        "discover",
        &format!("{target}:{tag}"),
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(mirrored.get("referrers").is_some(), "{mirrored:#}");
}
