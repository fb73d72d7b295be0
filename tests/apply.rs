//! `garden-artifacts apply` against a real Distribution registry, checked with skopeo and the
//! registry's own access log.

mod common;

use std::process::Command;

use common::*;
use sha2::Digest;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn examples_converge_and_a_second_apply_writes_nothing() {
    let registry = Registry::start();
    let examples = examples_with_containers_for(&registry);
    let dir = examples.path().to_str().unwrap();

    let apply_only = examples.path().join("apply-only");
    let apply_only = apply_only.to_str().unwrap();

    let out = garden_artifacts(&["apply", "-f", dir, "-f", apply_only, "-o", "json"], &[]);
    assert!(
        out.status.success(),
        "apply failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 12, "{results:#?}");
    for r in &results {
        assert_eq!(r["result"], "created", "{r}");
        // Every tag of the object resolves to the reported digest, as skopeo reads it.
        for tag in r["tags"].as_array().unwrap() {
            let reference = format!(
                "{}:{}",
                r["repository"].as_str().unwrap(),
                tag.as_str().unwrap()
            );
            assert_eq!(
                digest_of(&reference).as_deref(),
                r["digest"].as_str(),
                "{reference}"
            );
        }
    }

    // The flavour is laid out as Garden Linux publishes it.
    let repo = format!("{}/gardenlinux/gardenlinux", registry.addr);
    let manifest = skopeo_json(&format!("{repo}:1877.5-aws-gardener_prod-amd64"));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.unknown.config.v1+json"
    );
    assert_eq!(
        manifest["config"]["annotations"]["cname"],
        "aws-gardener_prod-amd64-1877.5-60d819dd"
    );
    assert_eq!(manifest["annotations"]["version"], "1877.5");
    assert_eq!(
        manifest["annotations"]["feature_set"],
        "log,sap,ssh,_prod,base,server,cloud,aws,gardener"
    );
    let layers = manifest["layers"].as_array().unwrap();
    let titles_and_types: Vec<(String, String)> = layers
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
        .collect();
    assert_eq!(
        titles_and_types,
        [
            (
                "aws-gardener_prod-amd64-1877.5.release",
                "application/io.gardenlinux.release"
            ),
            (
                "aws-gardener_prod-amd64-1877.5.manifest",
                "application/io.gardenlinux.manifest"
            ),
            (
                "aws-gardener_prod-amd64-1877.5.cmdline",
                "application/io.gardenlinux.cmdline"
            ),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for layer in layers {
        assert_eq!(
            layer["annotations"]["io.gardenlinux.image.layer.architecture"],
            "amd64"
        );
    }

    // Each blob's bytes equal the input files, fetched by skopeo.
    let copy = tempfile::tempdir().unwrap();
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{repo}:1877.5-gcp-gardener_prod-amd64"))
        .arg(format!("dir:{}", copy.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    let gcp = skopeo_json(&format!("{repo}:1877.5-gcp-gardener_prod-amd64"));
    let gcp_layers = gcp["layers"].as_array().unwrap();
    assert_eq!(gcp_layers.len(), 3);
    for layer in gcp_layers {
        let title = layer["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap();
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let stored = std::fs::read(copy.path().join(hex)).unwrap();
        let input = match std::fs::read(examples.path().join("apply-only/files").join(title)) {
            Ok(file) => file,
            // The one inline layer of the example.
            Err(_) => b"root=LABEL=ROOT ro console=ttyS0 earlyprintk=ttyS0 consoleblank=0".to_vec(),
        };
        assert_eq!(stored, input, "{title}");
    }

    // Promotion and mirror are byte-for-byte copies: the same digest.
    let aws = |name: &str| results.iter().find(|r| r["name"] == name).unwrap()["digest"].clone();
    let flavour_digest = aws("gl-1877-5-aws-gardener-prod-amd64");
    assert_eq!(aws("gl-aws-gardener-prod-amd64-latest"), flavour_digest);
    assert_eq!(aws("gl-1877-5-aws-mirror"), flavour_digest);
    // The mirror within one registry mounted the blobs instead of uploading them.
    let requests = registry.requests();
    let mirror_writes: Vec<_> = Registry::writes(&requests)
        .into_iter()
        .filter(|r| r.uri.starts_with("/v2/mirror/gardenlinux/blobs/"))
        .collect();
    assert!(!mirror_writes.is_empty());
    assert!(
        mirror_writes
            .iter()
            .all(|r| r.method == "POST" && r.uri.contains("mount=") && r.status == 201),
        "{mirror_writes:#?}"
    );

    // Second apply: unchanged, one HEAD per tag (and per copied source), no write at all.
    let before = registry.requests().len();
    let out = garden_artifacts(&["apply", "-f", dir, "-f", apply_only], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.ends_with("  unchanged")).count(),
        12,
        "{text}"
    );
    let second: Vec<_> = registry.requests().split_off(before);
    assert!(Registry::writes(&second).is_empty(), "{second:#?}");
    let heads = second.iter().filter(|r| r.method == "HEAD").count();
    let gets: Vec<_> = second.iter().filter(|r| r.method == "GET").collect();
    // One HEAD per tag (13 tags and the component version's), one per copied source (5: the
    // promotion, the mirror, the retag of the index and the two container images), one per
    // index child pinned (5), and for the tagless SBOM: its subject and itself by digest (2).
    // The component's resources are pinned by the run's own digests: no HEAD.
    assert_eq!(heads, 26, "{second:#?}");
    // The SBOM's link: the referrers API probe (404 here) and the fallback index.
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert!(
        gets.iter().any(|r| r.uri.contains("/referrers/")),
        "{gets:#?}"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let registry = Registry::start();
    let examples = examples_for(&registry);
    let file = examples.path().join("gardenlinux-flavour.yaml");
    let out = garden_artifacts(&["apply", "--dry-run", "-f", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("would write blob"), "{text}");
    assert!(
        text.contains("would write tag 1877.5-aws-gardener_prod-amd64"),
        "{text}"
    );
    assert!(Registry::writes(&registry.requests()).is_empty());
    assert!(
        digest_of(&format!(
            "{}/gardenlinux/gardenlinux:1877.5-aws-gardener_prod-amd64",
            registry.addr
        ))
        .is_none()
    );
}

#[test]
fn invalid_objects_exit_2_name_object_and_field_and_nothing_is_written() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let file = write_manifest(
        dir.path(),
        "bad.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: good, namespace: ci}}
spec: {{repository: {r}/a, tags: [ok], source: {{files: [{{name: a.release, content: x}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: bad-tag, namespace: ci}}
spec: {{repository: {r}/a, tags: ["-nope"], source: {{files: [{{name: a.release, content: x}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: two-sources, namespace: ci}}
spec:
  repository: {r}/a
  tags: [two]
  source:
    files: [{{name: a.release, content: x}}]
    image: {{reference: "{r}/a:ok"}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: url-without-digest, namespace: ci}}
spec: {{repository: {r}/a, tags: [u], source: {{files: [{{name: a.raw, url: "http://127.0.0.1:1/a.raw"}}]}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("ci/bad-tag: spec.tags[0]"), "{err}");
    assert!(
        err.contains("ci/two-sources: spec.source: exactly one of files, image, index"),
        "{err}"
    );
    assert!(
        err.contains("ci/url-without-digest: spec.source.files[0].digest: required with url"),
        "{err}"
    );
    assert!(!err.contains("ci/good"), "{err}");
    assert!(registry.requests().is_empty(), "{:#?}", registry.requests());
}

#[test]
fn a_url_whose_content_does_not_match_fails_that_object_and_leaves_its_tag() {
    let registry = Registry::start();
    let files = FileServer::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let image = vec![7u8; 300_000];
    let url = files.put("disk.raw", &image);

    // First the tag points at a good upload from the URL.
    let good = write_manifest(
        dir.path(),
        "good.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: disk}}
spec:
  repository: {r}/gl
  tags: [disk]
  source: {{files: [{{name: disk.raw, url: "{url}", digest: "{}"}}]}}
"#,
            sha256(&image)
        ),
    );
    // Loopback is never fetched unless an operator allows the host.
    let out = garden_artifacts(&["apply", "-f", good.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("loopback, link-local or private address"),
        "{}",
        stdout(&out)
    );
    assert!(Registry::writes(&registry.requests()).is_empty());
    let allow = files.base_url.trim_start_matches("http://").to_string();
    // Nor more than the size limit.
    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            good.to_str().unwrap(),
            "--allow-source-host",
            &allow,
            "--max-source-bytes",
            "1000",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("more than the 1000"),
        "{}",
        stdout(&out)
    );
    assert!(digest_of(&format!("{r}/gl:disk")).is_none());

    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            good.to_str().unwrap(),
            "--allow-source-host",
            &allow,
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let before = digest_of(&format!("{r}/gl:disk")).unwrap();
    let manifest = skopeo_json(&format!("{r}/gl:disk"));
    assert_eq!(manifest["layers"][0]["size"], 300_000);

    // Then the file changes under the same digest pin: refused, the tag stays, the other
    // object of the same run still converges.
    files.put("disk.raw", &vec![8u8; 300_000]);
    let changed = write_manifest(
        dir.path(),
        "changed.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: disk}}
spec:
  repository: {r}/gl
  tags: [disk]
  source: {{files: [{{name: disk.raw, url: "{url}", digest: "sha256:{}"}}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: other}}
spec: {{repository: {r}/gl, tags: [other], source: {{files: [{{name: a.release, content: x}}]}}}}
"#,
            "ab".repeat(32)
        ),
    );
    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            changed.to_str().unwrap(),
            "--allow-source-host",
            &allow,
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let disk_line = text
        .lines()
        .find(|l| l.starts_with("default/disk "))
        .unwrap();
    assert!(
        disk_line.contains("failed: spec.source.files[0].url: content of"),
        "{disk_line}"
    );
    assert!(disk_line.contains("refused"), "{disk_line}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("default/other ") && l.ends_with("created")),
        "{text}"
    );
    assert_eq!(digest_of(&format!("{r}/gl:disk")).unwrap(), before);
    // No upload under the pinned digest was completed: the registry holds no such blob.
    let pinned = format!("digest=sha256%3A{}", "ab".repeat(32));
    let completed: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|q| q.method == "PUT" && q.uri.contains(&pinned) && q.status == 201)
        .collect();
    assert!(completed.is_empty(), "{completed:#?}");
    let blob = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
        .arg(format!("http://{r}/v2/gl/blobs/sha256:{}", "ab".repeat(32)))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&blob.stdout), "404");
}

#[test]
fn basic_auth_uses_the_docker_config_and_never_prints_the_password() {
    let password = "Sup3r-s3cret-pw";
    let registry = Registry::start_with_basic_auth("ci-bot", password);
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let file = write_manifest(
        dir.path(),
        "a.yaml",
        &format!(
            "apiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {{name: a}}\nspec: {{repository: {r}/private, tags: [v1, v2, v3], source: {{files: [{{name: a.release, content: x}}]}}}}\n"
        ),
    );
    let file = file.to_str().unwrap();

    // Anonymous: refused with the registry's answer.
    let out = garden_artifacts(&["apply", "-f", file], &[("RUST_LOG", "debug")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("401"), "{}", stdout(&out));

    // With credentials in a docker config.
    let config = tempfile::tempdir().unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("ci-bot:{password}"));
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"{r}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let config_dir = config.path().to_str().unwrap();
    for args in [
        vec!["apply", "-f", file],
        vec!["apply", "-f", file, "-o", "json"],
    ] {
        let out = garden_artifacts(
            &args,
            &[("DOCKER_CONFIG", config_dir), ("RUST_LOG", "trace")],
        );
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(password), "the password leaked");
        assert!(!all.contains(&auth), "the encoded credential leaked");
    }

    // A wrong password fails clearly and is not echoed either.
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"{r}":{{"username":"ci-bot","password":"wrong-{password}"}}}}}}"#),
    )
    .unwrap();
    let out = garden_artifacts(
        &["apply", "-f", file],
        &[("DOCKER_CONFIG", config_dir), ("RUST_LOG", "trace")],
    );
    // The tag exists now, so a HEAD with bad credentials is what fails.
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("401"), "{all}");
    assert!(!all.contains(password), "the password leaked");
}

#[test]
fn two_objects_claiming_one_tag_the_first_keeps_it() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let file = write_manifest(
        dir.path(),
        "claims.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: first, namespace: team-a}}
spec: {{repository: {r}/gl, tags: [latest, a], source: {{files: [{{name: a.release, content: a}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: second, namespace: team-b}}
spec: {{repository: {r}/gl, tags: [b, latest], source: {{files: [{{name: b.release, content: b}}]}}}}
"#
        ),
    );
    for _ in 0..2 {
        let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        let second = text
            .lines()
            .find(|l| l.starts_with("team-b/second "))
            .unwrap();
        assert!(
            second.contains("failed: tag \"latest\" is owned by team-a/first"),
            "{second}"
        );
    }
    let first = digest_of(&format!("{r}/gl:a")).unwrap();
    assert_eq!(digest_of(&format!("{r}/gl:latest")).unwrap(), first);
    assert!(
        digest_of(&format!("{r}/gl:b")).is_none(),
        "nothing of the refused object is written"
    );
}

/// An index with two platform manifests, stored by hand with curl (an independent writer).
fn put_index(registry: &Registry, dir: &std::path::Path) -> (String, String) {
    let r = &registry.addr;
    let file = write_manifest(
        dir,
        "platforms.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: amd64}}
spec: {{repository: {r}/multi, tags: [amd64], source: {{files: [{{name: a.release, content: amd64}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: arm64}}
spec: {{repository: {r}/multi, tags: [arm64], source: {{files: [{{name: a.release, content: arm64}}]}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let amd = skopeo_raw(&format!("{r}/multi:amd64")).unwrap();
    let arm = skopeo_raw(&format!("{r}/multi:arm64")).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&amd), "size": amd.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&arm), "size": arm.len(),
             "platform": {"os": "linux", "architecture": "arm64"}}
        ]
    });
    let body = serde_json::to_vec(&index).unwrap();
    let body_file = dir.join("index.json");
    std::fs::write(&body_file, &body).unwrap();
    let status = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", body_file.display()))
        .arg(format!("http://{r}/v2/multi/manifests/both"))
        .status()
        .unwrap();
    assert!(status.success());
    (sha256(&body), sha256(&arm))
}

#[test]
fn mirrors_an_index_to_another_registry_byte_for_byte_and_picks_a_platform() {
    let source = Registry::start();
    let target = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (index_digest, arm_digest) = put_index(&source, dir.path());
    let (s, t) = (&source.addr, &target.addr);
    let file = write_manifest(
        dir.path(),
        "mirror.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: mirror-all}}
spec:
  repository: {t}/mirror/multi
  tags: [both]
  source: {{image: {{reference: "{s}/multi:both"}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: mirror-arm}}
spec:
  repository: {t}/mirror/multi-arm
  tags: [arm64]
  source: {{image: {{reference: "{s}/multi@{index_digest}", platform: linux/arm64}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        digest_of(&format!("{t}/mirror/multi:both")).unwrap(),
        index_digest
    );
    assert_eq!(
        digest_of(&format!("{t}/mirror/multi-arm:arm64")).unwrap(),
        arm_digest
    );
    // The children of the index arrived too, readable by digest.
    let index = skopeo_json(&format!("{t}/mirror/multi:both"));
    for entry in index["manifests"].as_array().unwrap() {
        let child = format!("{t}/mirror/multi@{}", entry["digest"].as_str().unwrap());
        assert!(skopeo_raw(&child).is_some(), "{child}");
    }

    let again = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert!(again.status.success());
    assert_eq!(
        stdout(&again).matches("unchanged").count(),
        2,
        "{}",
        stdout(&again)
    );
}

/// Many new tags in one repository: after a few HEADs that find nothing, one tag listing
/// answers for the rest, so the push costs little more than its writes. Tags that exist (one
/// made beforehand by another client, and all of them on the second apply) are still HEADed:
/// the existing tag is reported as moved, and a converged apply sends exactly one HEAD per tag
/// and no listing.
#[test]
fn many_new_tags_in_one_repository_are_looked_up_with_one_listing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let objects = 60;
    let mut yaml = String::new();
    for i in 0..objects {
        yaml.push_str(&format!(
            "---\napiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {{name: a{i}}}\nspec:\n  repository: {}/fan/out\n  tags: [a{i}, b{i}]\n  source:\n    files:\n      - {{name: n.release, content: \"{i}\\n\"}}\n",
            registry.addr
        ));
    }
    let file = write_manifest(dir.path(), "fan.yaml", &yaml);
    // One tag exists already, pointing elsewhere: it must be seen and reported as moved.
    let other = write_manifest(
        dir.path(),
        "other.yaml",
        &format!(
            "apiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {{name: other}}\nspec:\n  repository: {}/fan/out\n  tags: [b59]\n  source:\n    files:\n      - {{name: n.release, content: \"other\\n\"}}\n",
            registry.addr
        ),
    );
    let out = garden_artifacts(&["apply", "-f", other.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = registry.requests().len();

    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--concurrency",
            "4",
            "-o",
            "json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), objects);
    let moved: Vec<_> = results
        .iter()
        .filter(|r| r["result"] == "updated")
        .collect();
    assert_eq!(moved.len(), 1, "{results:#?}");
    assert_eq!(moved[0]["name"], "a59");
    let first: Vec<_> = registry.requests().split_off(before);
    let tag_heads = first
        .iter()
        .filter(|r| {
            r.method == "HEAD" && r.uri.contains("/manifests/") && !r.uri.contains("sha256:")
        })
        .count();
    let listings = first
        .iter()
        .filter(|r| r.method == "GET" && r.uri.contains("/tags/list"))
        .count();
    println!(
        "{tag_heads} tag HEADs and {listings} listing for {} new tags",
        2 * objects
    );
    assert_eq!(listings, 1, "{first:#?}");
    assert!(
        tag_heads < objects,
        "{tag_heads} tag HEADs for {} new tags: the listing should have stood in for most",
        2 * objects
    );
    for i in [0, 30, 59] {
        let tagged = format!("{}/fan/out:a{i}", registry.addr);
        assert_eq!(
            digest_of(&tagged),
            digest_of(&format!("{}/fan/out:b{i}", registry.addr)),
            "a{i} and b{i} name one manifest"
        );
        assert!(digest_of(&tagged).is_some());
    }

    let before = registry.requests().len();
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second: Vec<_> = registry.requests().split_off(before);
    assert_eq!(second.len(), 2 * objects, "{second:#?}");
    assert!(
        second
            .iter()
            .all(|r| r.method == "HEAD" && r.uri.contains("/manifests/") && r.status == 200),
        "{second:#?}"
    );
}

/// A server on a free loopback port that answers every request with `302 Found` to `location`.
fn redirector(location: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
}

/// A URL source on an allowed host that redirects to a host nobody allowed is refused, naming
/// the redirect target, and nothing is written; allowing the target too makes it converge.
#[test]
fn a_redirect_to_a_host_not_allowed_is_refused() {
    let registry = Registry::start();
    let files = FileServer::start();
    let dir = tempfile::tempdir().unwrap();
    let image = vec![5u8; 10_000];
    let target = files.put("disk.raw", &image);
    let hop = redirector(target.clone());
    let r = &registry.addr;
    let manifest = write_manifest(
        dir.path(),
        "hop.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: hop}}
spec:
  repository: {r}/gl
  tags: [hop]
  source: {{files: [{{name: disk.raw, url: "http://{hop}/disk.raw", digest: "{}"}}]}}
"#,
            sha256(&image)
        ),
    );
    let file_host = files.base_url.trim_start_matches("http://").to_string();
    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--allow-source-host",
            &hop,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&target) && text.contains("is not allowed for URL sources"),
        "the refusal names the redirect target: {text}"
    );
    assert!(Registry::writes(&registry.requests()).is_empty());

    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--allow-source-host",
            &hop,
            "--allow-source-host",
            &file_host,
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(digest_of(&format!("{r}/gl:hop")).is_some());
}

#[test]
fn a_dry_run_never_reads_a_url_body_and_a_declared_size_needs_no_request_at_all() {
    let registry = Registry::start();
    let files = FileServer::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let image = vec![5u8; 300_000];
    let url = files.put("disk.raw", &image);
    let allow = files.base_url.trim_start_matches("http://").to_string();
    let manifest = |name: &str, size: Option<usize>| {
        let size = size.map(|n| format!(", size: {n}")).unwrap_or_default();
        write_manifest(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: {name}}}
spec:
  repository: {r}/gl
  tags: [{name}]
  source: {{files: [{{name: disk.raw, url: "{url}", digest: "{}"{size}}}]}}
"#,
                sha256(&image)
            ),
        )
    };
    let apply = |file: &std::path::Path, dry_run: bool| {
        let mut args = vec![
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--allow-source-host",
            &allow,
        ];
        if dry_run {
            args.push("--dry-run");
        }
        garden_artifacts(&args, &[])
    };

    // Declared size: the plan is made without asking the URL's host anything.
    let sized = manifest("sized", Some(image.len()));
    let out = apply(&sized, true);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "would write blob {} (300000 bytes) from url {url}",
            sha256(&image)
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        files.requests(),
        vec![],
        "a dry run with a declared size asks the URL nothing"
    );

    // No size: one HEAD for the announced length, never the body.
    let unsized_ = manifest("unsized", None);
    let out = apply(&unsized_, true);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let methods: Vec<String> = files.requests().into_iter().map(|q| q.method).collect();
    assert_eq!(methods, ["HEAD"]);
    assert!(Registry::writes(&registry.requests()).is_empty());

    // Applying reads the body once, in the plan's upload, verified against size and digest.
    let out = apply(&sized, false);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let methods: Vec<String> = files.requests().into_iter().map(|q| q.method).collect();
    assert_eq!(methods, ["HEAD", "GET"]);
    assert_eq!(
        skopeo_json(&format!("{r}/gl:sized"))["layers"][0]["size"],
        300_000
    );

    // A declared size that is wrong is refused by the upload, and no tag is written.
    let wrong = manifest("wrong", Some(image.len() - 1));
    let before = registry.requests().len();
    let other_repo = wrong.to_str().unwrap().replace("wrong.yaml", "wrong2.yaml");
    std::fs::write(
        &other_repo,
        std::fs::read_to_string(&wrong)
            .unwrap()
            .replace(&format!("{r}/gl"), &format!("{r}/fresh")),
    )
    .unwrap();
    let out = apply(std::path::Path::new(&other_repo), false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("spec.source.files[0].url: content of"),
        "{}",
        stdout(&out)
    );
    assert!(digest_of(&format!("{r}/fresh:wrong")).is_none());
    let pinned = format!("digest={}", sha256(&image).replacen(':', "%3A", 1));
    let completed: Vec<_> = registry.requests()[before..]
        .iter()
        .filter(|q| q.method == "PUT" && q.uri.contains(&pinned) && q.status == 201)
        .cloned()
        .collect();
    assert!(completed.is_empty(), "{completed:#?}");
}

#[test]
fn a_dry_run_of_a_referrer_on_distribution_prints_the_fallback_index_update() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let subject = write_manifest(
        dir.path(),
        "subject.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: image}}
spec: {{repository: {r}/gl, tags: [v1], source: {{files: [{{name: a.release, content: x}}]}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", subject.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let subject_digest = digest_of(&format!("{r}/gl:v1")).unwrap();
    let referrer = write_manifest(
        dir.path(),
        "referrer.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: sbom}}
spec:
  repository: {r}/gl
  subject: {{reference: v1}}
  artifactType: application/vnd.cyclonedx+json
  source: {{files: [{{name: a.sbom, content: "{{}}"}}]}}
"#
        ),
    );
    let before = registry.requests().len();
    let out = garden_artifacts(
        &["apply", "--dry-run", "-f", referrer.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let index_line = format!(
        "would write fallback index {r}/gl:{}: add sha256:",
        subject_digest.replacen(':', "-", 1)
    );
    assert!(text.contains(&index_line), "{text}");
    assert!(Registry::writes(&registry.requests()[before..]).is_empty());
    assert!(fallback_index(&format!("{r}/gl"), &subject_digest).is_none());

    // Applied, the index lists the referrer; a dry run then plans no index change.
    let out = garden_artifacts(&["apply", "-f", referrer.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let index = fallback_index(&format!("{r}/gl"), &subject_digest);
    assert_eq!(listed_digests(index.as_ref()).len(), 1);
    let out = garden_artifacts(
        &["apply", "--dry-run", "-f", referrer.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("fallback index"), "{}", stdout(&out));
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
}

/// `garden-artifacts ARGS` that is killed after 30 s (exit 124): reading a FIFO or `/dev/zero`
/// used to never end.
fn garden_artifacts_bounded(args: &[&str]) -> std::process::Output {
    let empty_config = tempfile::tempdir().unwrap();
    Command::new("timeout")
        .arg("30")
        .arg(BINARY)
        .args(args)
        .env("DOCKER_CONFIG", empty_config.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("timeout runs")
}

#[test]
fn path_sources_that_are_not_regular_files_are_refused_before_reading() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let fifo = dir.path().join("fifo.raw");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::create_dir(dir.path().join("folder.raw")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.raw")).unwrap();
    let file = write_manifest(
        dir.path(),
        "special.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: fifo, namespace: ci}}
spec: {{repository: {r}/special, tags: [fifo], source: {{files: [{{name: a.raw, path: fifo.raw}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: folder, namespace: ci}}
spec: {{repository: {r}/special, tags: [folder], source: {{files: [{{name: a.raw, path: folder.raw}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: zero, namespace: ci}}
spec: {{repository: {r}/special, tags: [zero], source: {{files: [{{name: a.raw, path: zero.raw}}]}}}}
"#
        ),
    );
    let file = file.to_str().unwrap();
    for dry_run in [true, false] {
        let mut args = vec!["apply", "--allow-path-outside", "-f", file];
        if dry_run {
            args.insert(1, "--dry-run");
        }
        let out = garden_artifacts_bounded(&args);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}\n{text}{}",
            stderr(&out)
        );
        for (name, kind) in [
            ("fifo", "a FIFO"),
            ("folder", "a directory"),
            ("zero", "a device"),
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("ci/{name} ")))
                .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
            assert!(
                line.contains("failed: spec.source.files[0].path:")
                    && line.contains(&format!("is {kind}, not a regular file")),
                "{line}"
            );
        }
    }
    assert!(Registry::writes(&registry.requests()).is_empty());
}

#[test]
fn path_sources_outside_the_manifest_folder_need_allow_path_outside() {
    let registry = Registry::start();
    let root = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let folder = root.path().join("pull-request");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(root.path().join("config.json"), r#"{"auths":{}}"#).unwrap();
    std::os::unix::fs::symlink(
        root.path().join("config.json"),
        folder.join("innocent.json"),
    )
    .unwrap();
    std::fs::write(folder.join("inside.release"), "ID=gardenlinux\n").unwrap();
    let manifest = |path: &str| {
        format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: inside, namespace: ci}}
spec: {{repository: {r}/paths, tags: [inside], source: {{files: [{{name: a.release, path: inside.release}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: outside, namespace: ci}}
spec:
  repository: {r}/paths
  tags: [outside]
  source: {{files: [{{name: config.json, mediaType: application/json, path: "{path}"}}]}}
"#
        )
    };
    let absolute = root.path().join("config.json");
    for path in [
        "../config.json",
        "innocent.json",
        absolute.to_str().unwrap(),
    ] {
        let file = write_manifest(&folder, "m.yaml", &manifest(path));
        for dry_run in [true, false] {
            let mut args = vec!["apply", "-f", file.to_str().unwrap()];
            if dry_run {
                args.insert(1, "--dry-run");
            }
            let out = garden_artifacts(&args, &[]);
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{path} {args:?}\n{}{err}",
                stdout(&out)
            );
            assert!(
                err.contains("ci/outside: spec.source.files[0].path:")
                    && err.contains("outside the manifest's folder")
                    && err.contains("--allow-path-outside"),
                "{err}"
            );
            assert!(!err.contains("ci/inside"), "{err}");
        }
    }
    assert!(registry.requests().is_empty(), "{:#?}", registry.requests());

    let file = write_manifest(&folder, "m.yaml", &manifest("innocent.json"));
    let out = garden_artifacts(
        &[
            "apply",
            "--allow-path-outside",
            "-f",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(digest_of(&format!("{r}/paths:outside")).is_some());
}

#[test]
fn platform_on_a_single_manifest_is_checked_against_its_config() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let source = write_manifest(
        dir.path(),
        "source.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: amd64-image}}
spec:
  repository: {r}/single
  tags: [amd64]
  config:
    mediaType: application/vnd.oci.image.config.v1+json
    content: '{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}'
  source: {{files: [{{name: a.release, content: amd64}}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: no-platform}}
spec: {{repository: {r}/single, tags: [artefact], source: {{files: [{{name: a.release, content: x}}]}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", source.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let copies = write_manifest(
        dir.path(),
        "copies.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: wrong-arch}}
spec: {{repository: {r}/copy, tags: [arm64], source: {{image: {{reference: "{r}/single:amd64", platform: linux/arm64}}}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: no-platform-in-config}}
spec: {{repository: {r}/copy, tags: [artefact], source: {{image: {{reference: "{r}/single:artefact", platform: linux/amd64}}}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: right-arch}}
spec: {{repository: {r}/copy, tags: [amd64], source: {{image: {{reference: "{r}/single:amd64", platform: linux/amd64}}}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", copies.to_str().unwrap()], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("default/{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    assert!(
        line("wrong-arch").contains(&format!(
            "failed: spec.source.image.platform: {r}/single:amd64 is a single manifest, not an index, for linux/amd64; it has no linux/arm64 manifest"
        )),
        "{text}"
    );
    assert!(
        line("no-platform-in-config").contains("failed: spec.source.image.platform:")
            && line("no-platform-in-config").contains("names no platform"),
        "{text}"
    );
    assert!(!line("right-arch").contains("failed"), "{text}");
    assert!(digest_of(&format!("{r}/copy:arm64")).is_none());
    assert!(digest_of(&format!("{r}/copy:artefact")).is_none());
    assert_eq!(
        digest_of(&format!("{r}/copy:amd64")),
        digest_of(&format!("{r}/single:amd64"))
    );
}

/// `apply` with `input` on standard input.
fn apply_with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let config = tempfile::tempdir().unwrap();
    let mut child = Command::new(BINARY)
        .args(args)
        .env("DOCKER_CONFIG", config.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn apply_reads_stdin_lists_byte_order_marks_and_subfolders_like_kubectl() {
    let registry = Registry::start();
    let object = |name: &str, tag: &str| {
        format!(
            "apiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {{name: {name}}}\nspec:\n  repository: {}/habits/{name}\n  tags: [{tag}]\n  source: {{files: [{{name: {name}.release, content: {name}}}]}}\n",
            registry.addr
        )
    };
    let tag_of =
        |name: &str, tag: &str| digest_of(&format!("{}/habits/{name}:{tag}", registry.addr));

    // `-f -`, with a byte-order mark, and a `kind: List` as `kubectl get -o yaml` writes it.
    let indented = |text: String| {
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    format!("- {l}")
                } else {
                    format!("  {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let list = format!(
        "\u{feff}apiVersion: v1\nkind: List\nmetadata: {{resourceVersion: \"\"}}\nitems:\n{}\n{}\n",
        indented(object("listed-a", "v1")),
        indented(object("listed-b", "v1")),
    );
    let out = apply_with_stdin(&["apply", "-f", "-", "-o", "json"], list.as_bytes());
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 2, "{results:#?}");
    assert!(tag_of("listed-a", "v1").is_some() && tag_of("listed-b", "v1").is_some());

    // -R reads subfolders; without it, the folder's own files only, and it says so.
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("nested/deeper");
    std::fs::create_dir_all(&nested).unwrap();
    write_manifest(&nested, "deep.yaml", &object("deep", "v1"));
    let dir_arg = dir.path().to_str().unwrap();
    let out = garden_artifacts(&["apply", "-f", dir_arg], &[]);
    let e = stderr(&out);
    assert!(
        e.contains("no GardenArtifact") && e.contains(dir_arg),
        "{e}"
    );
    assert!(tag_of("deep", "v1").is_none());
    let out = garden_artifacts(&["apply", "-R", "-f", dir_arg], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(tag_of("deep", "v1").is_some());

    // A file with no GardenArtifact in it is named on stderr.
    let other = write_manifest(
        dir.path(),
        "other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let out = garden_artifacts(&["apply", "-f", other.to_str().unwrap()], &[]);
    let e = stderr(&out);
    assert!(
        e.contains(&format!("{}: no GardenArtifact", other.display())),
        "{e}"
    );
}
