//! The client verbs (`push`, `pull`, `discover`, `tag`, `copy`) against real Distribution
//! registries, checked with independent clients: skopeo, the ORAS Python SDK, curl, and the
//! registry's own access log.

mod common;

use std::path::Path;

use common::oras::*;
use common::*;
use serde_json::{Value, json};

/// Deterministic bytes that do not compress, so a blob is as large as asked.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn titles(manifest: &Value) -> Vec<(String, String)> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                l["mediaType"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn push_builds_the_garden_linux_layout_that_skopeo_and_the_oras_sdk_read() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    let raw = noise(3 * 1024 * 1024 + 17, 1);
    std::fs::write(input.path().join("gl-1.0.raw"), &raw).unwrap();
    std::fs::write(input.path().join("gl-1.0.release"), "ID=gardenlinux\n").unwrap();
    std::fs::write(input.path().join("notes.txt"), "release notes\n").unwrap();
    let path = |name: &str| input.path().join(name).display().to_string();
    let reference = format!("{}/gardenlinux/push:1.0", registry.addr);

    let out = run_ok(&[
        "push",
        &reference,
        &path("gl-1.0.release"),
        &path("gl-1.0.raw"),
        &format!("{}:text/plain", path("notes.txt")),
        "--annotation",
        "version=1.0",
        "--annotation",
        "cname=metal-1.0",
        "--artifact-type",
        "application/vnd.gardenlinux.image.v1",
    ]);
    let digest = digest_of(&reference).expect("skopeo reads the pushed tag");
    assert_eq!(out.trim(), format!("{reference}@{digest}"));

    let manifest = skopeo_json(&reference);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.gardenlinux.image.v1"
    );
    assert_eq!(manifest["config"]["mediaType"], OCI_EMPTY);
    assert_eq!(manifest["annotations"]["version"], "1.0");
    assert_eq!(manifest["annotations"]["cname"], "metal-1.0");
    assert_eq!(
        titles(&manifest),
        [
            ("gl-1.0.release", "application/io.gardenlinux.release"),
            (
                "gl-1.0.raw",
                "application/io.gardenlinux.image.archive.format.raw"
            ),
            ("notes.txt", "text/plain"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(manifest["layers"][1]["size"], raw.len());
    assert_eq!(manifest["layers"][1]["digest"], sha256(&raw).as_str());

    // The ORAS SDK pulls the same files, byte for byte.
    let pulled = tempfile::tempdir().unwrap();
    let written = oras_pull(&reference, pulled.path());
    assert_eq!(written.len(), 3, "{written:?}");
    for name in ["gl-1.0.release", "gl-1.0.raw", "notes.txt"] {
        assert_eq!(
            std::fs::read(pulled.path().join(name)).unwrap(),
            std::fs::read(input.path().join(name)).unwrap(),
            "{name}"
        );
    }

    // The same push again is unchanged, and -o json describes the layers as stored.
    let out = run_ok(&[
        "push",
        &reference,
        &path("gl-1.0.release"),
        &path("gl-1.0.raw"),
        &format!("{}:text/plain", path("notes.txt")),
        "--annotation",
        "version=1.0",
        "--annotation",
        "cname=metal-1.0",
        "--artifact-type",
        "application/vnd.gardenlinux.image.v1",
        "-o",
        "json",
    ]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["reference"], reference.as_str());
    assert_eq!(json["digest"], digest.as_str());
    assert_eq!(json["mediaType"], OCI_MANIFEST);
    assert_eq!(json["result"], "unchanged");
    assert_eq!(
        json["size"],
        skopeo_raw(&reference).unwrap().len(),
        "the manifest size"
    );
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[1]["title"], "gl-1.0.raw");
    assert_eq!(layers[1]["digest"], sha256(&raw).as_str());
    assert_eq!(layers[1]["size"], raw.len());
    assert_eq!(
        layers[1]["mediaType"],
        "application/io.gardenlinux.image.archive.format.raw"
    );
}

#[test]
fn push_refuses_bad_input_with_exit_2_and_writes_nothing() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("data.bin"), "x").unwrap();
    std::fs::write(input.path().join("a.release"), "x").unwrap();
    let bin = input.path().join("data.bin").display().to_string();
    let release = input.path().join("a.release").display().to_string();
    let repo = format!("{}/gl/bad", registry.addr);

    // An unknown suffix without a media type names the file and how to fix it.
    let e = run_fails(&["push", &format!("{repo}:v1"), &bin], 2);
    assert!(e.contains("data.bin") && e.contains("no media type"), "{e}");
    assert!(e.contains(":TYPE"), "{e}");
    // A digest is not something to push to.
    let digest_ref = format!("{repo}@sha256:{}", "0".repeat(64));
    let e = run_fails(&["push", &digest_ref, &release], 2);
    assert!(
        e.contains("names a digest") && e.contains("repository:tag"),
        "{e}"
    );
    // No tag, no subject.
    let e = run_fails(&["push", &repo, &release], 2);
    assert!(e.contains("names no tag"), "{e}");
    // A missing file.
    let e = run_fails(&["push", &format!("{repo}:v1"), "/nonexistent/x.raw"], 2);
    assert!(
        e.contains("/nonexistent/x.raw") && e.contains("no such file"),
        "{e}"
    );
    // Two files with one title.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("a.release"), "y").unwrap();
    let twin = other.path().join("a.release").display().to_string();
    let e = run_fails(&["push", &format!("{repo}:v1"), &release, &twin], 2);
    assert!(e.contains("already taken"), "{e}");
    // A malformed annotation.
    let e = run_fails(
        &[
            "push",
            &format!("{repo}:v1"),
            &release,
            "--annotation",
            "novalue",
        ],
        2,
    );
    assert!(e.contains("--annotation") && e.contains("KEY=VALUE"), "{e}");

    assert!(Registry::writes(&registry.requests()).is_empty());
}

#[test]
fn files_pushed_by_the_oras_sdk_are_pulled_digest_verified() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    let big = noise(5 * 1024 * 1024 + 3, 2);
    std::fs::write(input.path().join("big.bin"), &big).unwrap();
    std::fs::write(input.path().join("a.release"), "ID=gardenlinux\n").unwrap();
    let reference = format!("{}/oras/pushed:v1", registry.addr);
    oras_push(
        &reference,
        input.path(),
        &["a.release:application/io.gardenlinux.release", "big.bin"],
        &[("org.example.k", "v")],
    );

    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("files");
    let out = run_ok(&[
        "pull",
        &reference,
        "-o",
        target.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["reference"], reference.as_str());
    assert_eq!(json["digest"], digest_of(&reference).unwrap().as_str());
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{json:#}");
    assert_eq!(files[1]["title"], "big.bin");
    assert_eq!(files[1]["digest"], sha256(&big).as_str());
    assert_eq!(files[1]["size"], big.len());
    assert_eq!(
        files[1]["path"],
        target.join("big.bin").display().to_string().as_str()
    );
    assert_eq!(std::fs::read(target.join("big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(target.join("a.release")).unwrap(),
        "ID=gardenlinux\n"
    );
    // Nothing but the files: no temporary leftovers.
    assert_eq!(files_in(&target), ["a.release", "big.bin"]);

    // --media-type picks layers; text output is one written path per line.
    let only = out_dir.path().join("only");
    let out = run_ok(&[
        "pull",
        &reference,
        "-o",
        only.to_str().unwrap(),
        "--media-type",
        "application/io.gardenlinux.release",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [only.join("a.release").display().to_string()]
    );
    assert_eq!(files_in(&only), ["a.release"]);
}

#[test]
fn pull_refuses_corrupted_blobs_wrong_sizes_and_escaping_titles() {
    let registry = Registry::start();
    let repo = "gl/broken";
    let content = b"the real content\n";
    let blob = put_blob(&registry.addr, repo, content);
    let empty = put_blob(&registry.addr, repo, b"{}");
    // A large good layer next to the bad one: a failed pull leaves the folder as it was, so
    // the good file is not written either (and no temporary file stays behind).
    let large = noise(8 * 1024 * 1024, 5);
    let large_blob = put_blob(&registry.addr, repo, &large);
    let manifest = |title: &str, size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.test",
            "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": large_blob,
                    "size": large.len(),
                    "annotations": {"org.opencontainers.image.title": "large.bin"},
                },
                {
                    "mediaType": "text/plain",
                    "digest": blob,
                    "size": size,
                    "annotations": {"org.opencontainers.image.title": title},
                },
            ],
        }))
        .unwrap()
    };
    put_manifest(
        &registry.addr,
        repo,
        "good",
        OCI_MANIFEST,
        &manifest("a.txt", content.len()),
    );
    put_manifest(
        &registry.addr,
        repo,
        "short",
        OCI_MANIFEST,
        &manifest("a.txt", 5),
    );
    put_manifest(
        &registry.addr,
        repo,
        "escape",
        OCI_MANIFEST,
        &manifest("../evil.txt", content.len()),
    );
    let reference = |tag: &str| format!("{}/{repo}:{tag}", registry.addr);

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("d");
    let dir_arg = dir.to_str().unwrap();

    // The good one works (the set-up is right).
    run_ok(&["pull", &reference("good"), "-o", dir_arg]);
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), content);
    assert_eq!(std::fs::read(dir.join("large.bin")).unwrap(), large);
    std::fs::remove_dir_all(&dir).unwrap();

    // A manifest that declares the wrong size.
    let e = run_fails(&["pull", &reference("short"), "-o", dir_arg], 1);
    assert!(e.contains(&blob) && e.contains("expected 5 bytes"), "{e}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));

    // A title that leaves the folder: refused before anything is written.
    let e = run_fails(&["pull", &reference("escape"), "-o", dir_arg], 1);
    assert!(e.contains("../evil.txt") && e.contains("refusing"), "{e}");
    assert!(files_in(&dir).is_empty());
    assert!(!out.path().join("evil.txt").exists());

    // A blob corrupted in storage (same size, other bytes): the digest check catches it.
    corrupt_blob(&registry, &blob, b"the fake content\n");
    let e = run_fails(&["pull", &reference("good"), "-o", dir_arg], 1);
    assert!(
        e.contains(&blob) && e.contains("a.txt") && e.contains("content digest is sha256:"),
        "{e}"
    );
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));

    // What is not there is named.
    let e = run_fails(&["pull", &reference("missing"), "-o", dir_arg], 1);
    assert!(
        e.contains(&reference("missing")) && e.contains("no manifest"),
        "{e}"
    );
}

#[test]
fn tag_adds_tags_with_manifest_writes_only() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("a.raw"), noise(200_000, 3)).unwrap();
    let repo = format!("{}/gl/tagged", registry.addr);
    let source = format!("{repo}:1.0");
    run_ok(&[
        "push",
        &source,
        input.path().join("a.raw").to_str().unwrap(),
    ]);
    let digest = digest_of(&source).unwrap();

    let before = registry.requests().len();
    let out = run_ok(&["tag", &source, "latest", "1"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("{repo}:latest@{digest}"),
            format!("{repo}:1@{digest}")
        ]
    );
    let requests = registry.requests().split_off(before);
    let writes = Registry::writes(&requests);
    assert!(!writes.is_empty());
    assert!(
        writes
            .iter()
            .all(|r| r.method == "PUT" && r.uri.starts_with("/v2/gl/tagged/manifests/")),
        "only manifest PUTs, no blob upload: {writes:#?}"
    );
    assert!(
        requests.iter().all(|r| !r.uri.contains("/blobs/")),
        "{requests:#?}"
    );
    assert_eq!(
        digest_of(&format!("{repo}:latest")).as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        digest_of(&format!("{repo}:1")).as_deref(),
        Some(digest.as_str())
    );

    // By digest, with JSON output; a second run writes nothing.
    let before = registry.requests().len();
    let out = run_ok(&["tag", &format!("{repo}@{digest}"), "latest", "-o", "json"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["digest"], digest.as_str());
    assert_eq!(json["result"], "unchanged");
    assert!(Registry::writes(&registry.requests().split_off(before)).is_empty());

    // A reference where a tag belongs, and a source that does not exist.
    let e = run_fails(&["tag", &source, &format!("{repo}:x")], 2);
    assert!(e.contains("TAG") && e.contains("expected a tag"), "{e}");
    let e = run_fails(&["tag", &format!("{repo}:nope"), "x"], 1);
    assert!(
        e.contains(&format!("{repo}:nope")) && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn copy_across_registries_keeps_the_digest() {
    let from = Registry::start();
    let to = Registry::start();
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("a.raw"), noise(300_000, 4)).unwrap();
    std::fs::write(input.path().join("a.release"), "ID=gardenlinux\n").unwrap();
    let source = format!("{}/gl/source:1.0", from.addr);
    run_ok(&[
        "push",
        &source,
        input.path().join("a.raw").to_str().unwrap(),
        input.path().join("a.release").to_str().unwrap(),
    ]);
    let digest = digest_of(&source).unwrap();

    let destination = format!("{}/mirror/gl:1.0", to.addr);
    let out = run_ok(&["copy", &source, &destination]);
    assert_eq!(out.trim(), format!("{destination}@{digest}"));
    // The destination tag is looked at once, not once to decide and again to plan.
    let tag_heads = to
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.uri == "/v2/mirror/gl/manifests/1.0")
        .count();
    assert_eq!(tag_heads, 1, "{:#?}", to.requests());
    assert_eq!(digest_of(&destination).as_deref(), Some(digest.as_str()));
    // The blobs went to the other registry and arrive intact (read back by the ORAS SDK).
    let pulled = tempfile::tempdir().unwrap();
    oras_pull(&destination, pulled.path());
    assert_eq!(
        std::fs::read(pulled.path().join("a.raw")).unwrap(),
        std::fs::read(input.path().join("a.raw")).unwrap()
    );
    assert!(
        Registry::writes(&from.requests())
            .iter()
            .all(|r| !r.uri.contains("/mirror/"))
    );

    // DST must be a tag; SRC must exist.
    let e = run_fails(
        &["copy", &source, &format!("{}/mirror/gl@{digest}", to.addr)],
        2,
    );
    assert!(e.contains("DST") && e.contains("repository:tag"), "{e}");
    let e = run_fails(
        &["copy", &format!("{}/gl/none:1", from.addr), &destination],
        1,
    );
    assert!(e.contains("SRC") && e.contains("does not exist"), "{e}");
}

/// Puts a referrer of `subject` (manifest bytes) into `repo`, and lists it under the subject's
/// fallback tag `sha256-<hex>` as a client without the referrers API does; the referrer's bytes.
fn attach_by_fallback_tag(
    addr: &str,
    repo: &str,
    subject: &[u8],
    subject_media_type: &str,
    artifact_type: &str,
    annotations: Value,
) -> Vec<u8> {
    let empty = put_blob(addr, repo, b"{}");
    let content = format!("{artifact_type} of {}", sha256(subject));
    let layer = put_blob(addr, repo, content.as_bytes());
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": layer, "size": content.len()}],
        "subject": descriptor(subject_media_type, subject),
        "annotations": annotations,
    }))
    .unwrap();
    let digest = put_manifest(addr, repo, &sha256(&referrer), OCI_MANIFEST, &referrer);
    let mut entry = descriptor(OCI_MANIFEST, &referrer);
    entry["artifactType"] = json!(artifact_type);
    entry["annotations"] = annotations;
    let fallback = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry],
    }))
    .unwrap();
    let tag = sha256(subject).replace(':', "-");
    put_manifest(addr, repo, &tag, OCI_INDEX, &fallback);
    assert_eq!(digest, sha256(&referrer));
    referrer
}

#[test]
fn discover_shows_children_links_and_fallback_tag_referrers() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    let repo = "gl/discover";
    let base = format!("{}/{repo}", registry.addr);
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let file = input.path().join(format!("{arch}.release"));
        std::fs::write(&file, format!("ARCH={arch}\n")).unwrap();
        let reference = format!("{base}:{arch}");
        run_ok(&["push", &reference, file.to_str().unwrap()]);
        let raw = skopeo_raw(&reference).unwrap();
        let mut entry = descriptor(OCI_MANIFEST, &raw);
        entry["platform"] = json!({"os": "linux", "architecture": arch});
        entry["annotations"] = json!({"cname": format!("metal-{arch}")});
        children.push((entry, raw));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
        "annotations": {
            "version": "1.0",
            "io.gardenlinux.link.release-notes": "https://example.com/notes",
            "io.gardenlinux.link.release-notes.1": "https://example.com/notes-2",
        },
    }))
    .unwrap();
    let index_digest = put_manifest(&registry.addr, repo, "1.0", OCI_INDEX, &index);

    // An SBOM referring to the index, a signature referring to the SBOM, and one more level
    // below each, to see the depth limit (3 levels under REF).
    let sbom = attach_by_fallback_tag(
        &registry.addr,
        repo,
        &index,
        OCI_INDEX,
        "application/vnd.example.sbom.v1",
        json!({"io.gardenlinux.link.source": "https://example.com/src", "kind": "sbom"}),
    );
    let signature = attach_by_fallback_tag(
        &registry.addr,
        repo,
        &sbom,
        OCI_MANIFEST,
        "application/vnd.example.signature.v1",
        json!({"kind": "signature"}),
    );
    let level3 = attach_by_fallback_tag(
        &registry.addr,
        repo,
        &signature,
        OCI_MANIFEST,
        "application/vnd.example.level3.v1",
        json!({}),
    );
    let level4 = attach_by_fallback_tag(
        &registry.addr,
        repo,
        &level3,
        OCI_MANIFEST,
        "application/vnd.example.level4.v1",
        json!({}),
    );

    let reference = format!("{base}:1.0");
    let text = run_ok(&["discover", &reference]);
    let first = text.lines().next().unwrap();
    assert_eq!(first, format!("{reference}@{index_digest}"));
    for (entry, _) in &children {
        let digest = entry["digest"].as_str().unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains(digest) && l.contains("linux/")),
            "{digest} with its platform:\n{text}"
        );
    }
    for needle in [
        "[manifests]",
        "cname: metal-amd64",
        "[links]",
        "release-notes: https://example.com/notes",
        "release-notes: https://example.com/notes-2",
        "source: https://example.com/src",
        "application/vnd.example.sbom.v1",
        &sha256(&sbom),
        "application/vnd.example.signature.v1",
        &sha256(&signature),
        "application/vnd.example.level3.v1",
        &sha256(&level3),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(!text.contains(&sha256(&level4)), "depth limit:\n{text}");
    assert!(text.contains("├── ") && text.contains("└── "), "{text}");

    let json: Value =
        serde_json::from_str(&run_ok(&["discover", &reference, "--format", "json"])).unwrap();
    assert_eq!(json["reference"], reference.as_str());
    assert_eq!(json["digest"], index_digest.as_str());
    assert_eq!(json["mediaType"], OCI_INDEX);
    assert_eq!(json["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(json["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(json["manifests"][1]["annotations"]["cname"], "metal-arm64");
    assert_eq!(
        json["links"],
        json!([
            {"rel": "release-notes", "url": "https://example.com/notes"},
            {"rel": "release-notes", "url": "https://example.com/notes-2"},
        ])
    );
    assert_eq!(
        json["referrersSource"],
        format!("tag {}", index_digest.replace(':', "-")).as_str()
    );
    let sbom_node = &json["referrers"][0];
    assert_eq!(sbom_node["digest"], sha256(&sbom).as_str());
    assert_eq!(sbom_node["artifactType"], "application/vnd.example.sbom.v1");
    assert_eq!(sbom_node["annotations"]["kind"], "sbom");
    assert_eq!(
        sbom_node["links"],
        json!([{"rel": "source", "url": "https://example.com/src"}])
    );
    let signature_node = &sbom_node["referrers"][0];
    assert_eq!(signature_node["digest"], sha256(&signature).as_str());
    let level3_node = &signature_node["referrers"][0];
    assert_eq!(level3_node["digest"], sha256(&level3).as_str());
    assert!(level3_node.get("referrers").is_none(), "{level3_node:#}");

    // By digest, a child: no referrers, no children, just itself.
    let child = children[0].0["digest"].as_str().unwrap();
    let json: Value = serde_json::from_str(&run_ok(&[
        "discover",
        &format!("{base}@{child}"),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["digest"], child);
    assert!(json.get("referrers").is_none() && json.get("manifests").is_none());

    let e = run_fails(&["discover", &format!("{base}:nope")], 1);
    assert!(e.contains(&format!("{base}:nope")), "{e}");
}

#[test]
fn pull_of_an_index_takes_a_platform_or_every_child() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    let repo = "gl/multi";
    let base = format!("{}/{repo}", registry.addr);
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let dir = input.path().join(arch);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join(format!("gl-{arch}.release"));
        std::fs::write(&file, format!("ARCH={arch}\n")).unwrap();
        let shared = dir.join("shared.txt");
        std::fs::write(&shared, format!("differs per arch: {arch}\n")).unwrap();
        let reference = format!("{base}:{arch}");
        run_ok(&[
            "push",
            &reference,
            file.to_str().unwrap(),
            &format!("{}:text/plain", shared.display()),
        ]);
        let raw = skopeo_raw(&reference).unwrap();
        let mut entry = descriptor(OCI_MANIFEST, &raw);
        entry["platform"] = json!({"os": "linux", "architecture": arch});
        entries.push(entry);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    put_manifest(&registry.addr, repo, "1.0", OCI_INDEX, &index);
    let reference = format!("{base}:1.0");
    let out = tempfile::tempdir().unwrap();

    let arm = out.path().join("arm");
    run_ok(&[
        "pull",
        &reference,
        "-o",
        arm.to_str().unwrap(),
        "--platform",
        "linux/arm64",
    ]);
    assert_eq!(files_in(&arm), ["gl-arm64.release", "shared.txt"]);
    assert_eq!(
        std::fs::read_to_string(arm.join("shared.txt")).unwrap(),
        "differs per arch: arm64\n"
    );

    // Without a platform, every child: here two children disagree on shared.txt, which is an
    // error before anything is written.
    let all = out.path().join("all");
    let e = run_fails(&["pull", &reference, "-o", all.to_str().unwrap()], 1);
    assert!(e.contains("shared.txt") && e.contains("--platform"), "{e}");
    assert!(files_in(&all).is_empty());
    // With the conflict filtered out by media type, both children's files arrive.
    run_ok(&[
        "pull",
        &reference,
        "-o",
        all.to_str().unwrap(),
        "--media-type",
        "application/io.gardenlinux.release",
    ]);
    assert_eq!(files_in(&all), ["gl-amd64.release", "gl-arm64.release"]);

    let e = run_fails(
        &[
            "pull",
            &reference,
            "-o",
            all.to_str().unwrap(),
            "--platform",
            "linux/s390x",
        ],
        1,
    );
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64, linux/arm64"),
        "{e}"
    );
}

/// `push --subject` on a registry without the referrers API (the fallback tag) and on one with
/// it (ferro-oci-server); `discover` finds the referrer either way, with its links.
#[test]
fn push_with_a_subject_is_discovered_on_registries_with_and_without_the_referrers_api() {
    let distribution = Registry::start();
    let ferro = common::ferro::Ferro::start();
    let input = tempfile::tempdir().unwrap();
    let release = input.path().join("gl-1.0.release");
    std::fs::write(&release, "ID=gardenlinux\n").unwrap();
    let sbom = input.path().join("gl-1.0.sbom.json");
    std::fs::write(&sbom, r#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();

    for (addr, via, source) in [
        (distribution.addr.as_str(), "fallback-tag", "tag"),
        (ferro.addr.as_str(), "referrers-api", "api"),
    ] {
        let repo = format!("{addr}/gl/subject");
        let base = format!("{repo}:1.0");
        let pushed: Value = serde_json::from_str(&run_ok(&[
            "push",
            &base,
            release.to_str().unwrap(),
            "-o",
            "json",
        ]))
        .unwrap();
        let base_digest = pushed["digest"].as_str().unwrap().to_string();

        // No tag: a referrer is found through its subject.
        let out = run_ok(&[
            "push",
            &repo,
            &format!("{}:application/spdx+json", sbom.display()),
            "--artifact-type",
            "application/spdx+json",
            "--subject",
            &base,
            "--link",
            "docs=https://example.com/docs",
            "--link",
            "docs=https://example.com/docs-2",
            "-o",
            "json",
        ]);
        let referrer: Value = serde_json::from_str(&out).unwrap();
        let referrer_digest = referrer["digest"].as_str().unwrap();
        assert_eq!(referrer["tags"], json!([]), "{referrer:#}");
        assert_eq!(
            referrer["subject"]["digest"],
            base_digest.as_str(),
            "{referrer:#}"
        );
        assert_eq!(referrer["subject"]["via"], via, "{addr}: {referrer:#}");

        let tree: Value =
            serde_json::from_str(&run_ok(&["discover", &base, "--format", "json"])).unwrap();
        assert_eq!(tree["digest"], base_digest.as_str());
        let found = &tree["referrers"][0];
        assert_eq!(found["digest"], referrer_digest, "{addr}: {tree:#}");
        assert_eq!(found["artifactType"], "application/spdx+json");
        assert_eq!(
            found["links"],
            json!([
                {"rel": "docs", "url": "https://example.com/docs"},
                {"rel": "docs", "url": "https://example.com/docs-2"},
            ])
        );
        assert!(
            tree["referrersSource"]
                .as_str()
                .unwrap()
                .starts_with(source),
            "{addr}: {tree:#}"
        );
        let text = run_ok(&["discover", &base]);
        assert!(
            text.contains("application/spdx+json") && text.contains(referrer_digest),
            "{text}"
        );
        assert!(text.contains("docs: https://example.com/docs-2"), "{text}");

        // The referrer carries the subject, read back by our pull's neighbour: the raw bytes.
        let dir = tempfile::tempdir().unwrap();
        run_ok(&[
            "pull",
            &format!("{repo}@{referrer_digest}"),
            "-o",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(dir.path().join("gl-1.0.sbom.json")).unwrap(),
            std::fs::read(&sbom).unwrap()
        );
    }

    // Cross-checks by other clients: the fallback index by skopeo, the API by curl.
    let base_digest = digest_of(&format!("{}/gl/subject:1.0", distribution.addr)).unwrap();
    let fallback = skopeo_json(&format!(
        "{}/gl/subject:{}",
        distribution.addr,
        base_digest.replace(':', "-")
    ));
    assert_eq!(fallback["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        fallback["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
}

/// `copy --referrers` passes the flag to the engine: either the referrers arrive with the
/// copy, or the engine's refusal is reported as the flag's.
#[test]
fn copy_passes_referrers_through() {
    let registry = Registry::start();
    let input = tempfile::tempdir().unwrap();
    let release = input.path().join("a.release");
    std::fs::write(&release, "ID=gardenlinux\n").unwrap();
    let notes = input.path().join("notes.txt");
    std::fs::write(&notes, "notes\n").unwrap();
    let source = format!("{}/gl/with-referrers:1.0", registry.addr);
    run_ok(&["push", &source, release.to_str().unwrap()]);
    let referrer: Value = serde_json::from_str(&run_ok(&[
        "push",
        &format!("{}/gl/with-referrers", registry.addr),
        &format!("{}:text/plain", notes.display()),
        "--subject",
        &source,
        "-o",
        "json",
    ]))
    .unwrap();

    let destination = format!("{}/mirror/with-referrers:1.0", registry.addr);
    run_ok(&["copy", &source, &destination, "--referrers"]);
    let tree: Value =
        serde_json::from_str(&run_ok(&["discover", &destination, "-o", "json"])).unwrap();
    assert_eq!(
        tree["referrers"][0]["digest"], referrer["digest"],
        "{tree:#}"
    );
    // Without the flag, the copy has no referrers.
    let plain = format!("{}/mirror/plain:1.0", registry.addr);
    run_ok(&["copy", &source, &plain]);
    let tree: Value =
        serde_json::from_str(&run_ok(&["discover", &plain, "--format", "json"])).unwrap();
    assert!(tree.get("referrers").is_none(), "{tree:#}");
}

/// A registry that asks for Basic credentials, then refuses them with an error body that echoes
/// the `Authorization` header it got, a pre-signed URL and terminal escape sequences.
fn start_echoing_registry() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for stream in listener.incoming() {
            if std::time::Instant::now() > deadline {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorization = None;
            let mut first = String::new();
            if reader.read_line(&mut first).unwrap_or(0) == 0 {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorization = Some(value.trim().to_string());
                }
            }
            let (challenge, body) = match &authorization {
                None => (
                    "WWW-Authenticate: Basic realm=\"echo\"\r\n".to_string(),
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_string(),
                ),
                Some(sent) => (
                    String::new(),
                    serde_json::json!({"errors": [{
                        "code": "UNAUTHORIZED",
                        "message": format!(
                            "you sent Authorization: {sent}; retry at https://cdn.example/b?X-Amz-Signature=presigned-sig \u{1b}]0;pwned\u{7}\u{1b}[2J\r\nerror: all good"
                        ),
                    }]})
                    .to_string(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\n{challenge}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, server)
}

#[test]
fn registry_errors_never_show_the_credentials_sent_urls_queries_or_control_characters() {
    let (port, _server) = start_echoing_registry();
    let registry = format!("127.0.0.1:{port}");
    let config = tempfile::tempdir().unwrap();
    // base64("alice:s3cr3t-pass")
    let secret = "YWxpY2U6czNjcjN0LXBhc3M=";
    std::fs::write(
        config.path().join("config.json"),
        json!({"auths": {registry.clone(): {"auth": secret}}}).to_string(),
    )
    .unwrap();
    let docker_config = config.path().to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = garden_artifacts(
        &[
            "pull",
            &format!("{registry}/echo/app:v1"),
            "-o",
            out_dir.path().to_str().unwrap(),
        ],
        &[("DOCKER_CONFIG", docker_config)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert!(shown.contains("401"), "{shown}");
    for secret in [secret, "s3cr3t-pass", "presigned-sig"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\r'),
        "control characters reach the terminal: {shown:?}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("error: all good")),
        "a registry forged a line: {shown}"
    );
    // Which credentials were tried, by where they come from.
    let config_file = config.path().join("config.json");
    assert!(
        shown.contains(&format!(
            "credentials tried: the credentials for {registry} in {}",
            config_file.display()
        )),
        "{shown}"
    );

    let anonymous = garden_artifacts(
        &[
            "pull",
            &format!("{registry}/echo/app:v1"),
            "-o",
            out_dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let shown = stderr(&anonymous);
    assert!(shown.contains("credentials tried: anonymous"), "{shown}");
}

/// A manifest whose layers are `(title, blob digest, size)`.
fn titled_manifest(registry: &str, repo: &str, tag: &str, layers: &[(&str, &str, usize)]) {
    let empty = put_blob(registry, repo, b"{}");
    let layers: Vec<Value> = layers
        .iter()
        .map(|(title, digest, size)| {
            json!({
                "mediaType": "application/octet-stream",
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.title": title},
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.test",
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": layers,
    });
    put_manifest(
        registry,
        repo,
        tag,
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
}

#[test]
fn pull_writes_any_file_name_refuses_control_characters_and_what_is_in_the_way() {
    let registry = Registry::start();
    let repo = "gl/names";
    let first = b"first\n";
    let second = b"second\n";
    let first_blob = put_blob(&registry.addr, repo, first);
    let second_blob = put_blob(&registry.addr, repo, second);
    let reference = |tag: &str| format!("{}/{repo}:{tag}", registry.addr);

    // The longest name a file system allows.
    let long_title = format!("{}.bin", "x".repeat(251));
    titled_manifest(
        &registry.addr,
        repo,
        "long",
        &[(&long_title, &first_blob, first.len())],
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("d");
    let dir_arg = dir.to_str().unwrap();
    run_ok(&["pull", &reference("long"), "-o", dir_arg]);
    assert_eq!(std::fs::read(dir.join(&long_title)).unwrap(), first);
    std::fs::remove_dir_all(&dir).unwrap();

    // Titles that would rewrite a terminal when printed.
    for (tag, title) in [
        ("newline", "a\nb.txt"),
        ("escape", "a\u{1b}[2J.txt"),
        ("tab", "a\tb.txt"),
        ("delete", "a\u{7f}.txt"),
        ("csi", "a\u{9b}31m.txt"),
    ] {
        titled_manifest(
            &registry.addr,
            repo,
            tag,
            &[
                ("ok.txt", &first_blob, first.len()),
                (title, &second_blob, second.len()),
            ],
        );
        let e = run_fails(&["pull", &reference(tag), "-o", dir_arg], 1);
        assert!(e.contains("control character"), "{tag}: {e}");
        assert!(
            !e.chars().any(|c| c.is_control() && c != '\n'),
            "{tag}: {e:?}"
        );
        assert!(files_in(&dir).is_empty(), "{tag}: {:?}", files_in(&dir));
    }

    // Something in the way of the second file: the first is not replaced either.
    titled_manifest(
        &registry.addr,
        repo,
        "two",
        &[
            ("a.txt", &first_blob, first.len()),
            ("b.txt", &second_blob, second.len()),
        ],
    );
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), b"old a\n").unwrap();
    std::fs::create_dir(dir.join("b.txt")).unwrap();
    let e = run_fails(&["pull", &reference("two"), "-o", dir_arg], 1);
    assert!(e.contains("b.txt") && e.contains("is a folder"), "{e}");
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"old a\n");
    assert_eq!(files_in(&dir), ["a.txt", "b.txt"]);
    std::fs::remove_dir(dir.join("b.txt")).unwrap();
    std::fs::write(out.path().join("elsewhere"), b"elsewhere\n").unwrap();
    std::os::unix::fs::symlink(out.path().join("elsewhere"), dir.join("b.txt")).unwrap();
    let e = run_fails(&["pull", &reference("two"), "-o", dir_arg], 1);
    assert!(e.contains("b.txt") && e.contains("symbolic link"), "{e}");
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"old a\n");
    assert!(
        std::fs::symlink_metadata(dir.join("b.txt"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(files_in(&dir), ["a.txt", "b.txt"]);
    // With the way clear, both are written (the set-up is right).
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    run_ok(&["pull", &reference("two"), "-o", dir_arg]);
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), first);
    assert_eq!(std::fs::read(dir.join("b.txt")).unwrap(), second);
}

#[test]
fn a_pull_stopped_by_sigterm_or_sigint_leaves_the_folder_as_it_was() {
    use common::faults::{Action, FaultProxy, Rule};
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    let repo = "gl/stopped";
    let fast = noise(64 * 1024, 1);
    let slow = noise(64 * 1024, 2);
    let fast_blob = put_blob(&registry.addr, repo, &fast);
    let slow_blob = put_blob(&registry.addr, repo, &slow);
    titled_manifest(
        &registry.addr,
        repo,
        "v1",
        &[
            ("fast.bin", &fast_blob, fast.len()),
            ("slow.bin", &slow_blob, slow.len()),
        ],
    );
    proxy.inject(
        Rule::new("GET", &format!("/blobs/{slow_blob}"), Action::Forward)
            .delay(std::time::Duration::from_secs(60)),
    );
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), b"keep\n").unwrap();
        let config = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(BINARY)
            .args(["pull", &format!("{}/{repo}:v1", proxy.addr), "-o"])
            .arg(&dir)
            .env("DOCKER_CONFIG", config.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The fast file is downloaded (to its temporary name) while the slow one waits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while files_in(&dir).iter().all(|f| !f.ends_with(".partial")) {
            assert!(std::time::Instant::now() < deadline, "no download started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let done = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(code), "SIG{signal}: {e}");
        assert_eq!(files_in(&dir), ["keep.txt"], "SIG{signal}: {e}");
    }
}
