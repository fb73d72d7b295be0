//! Linking coherent components against a real Distribution registry (no referrers API, so the
//! fallback tag scheme): the Garden Linux release example walked the way consumers walk it,
//! concurrent referrers, and re-linking when a referenced tag moves.

mod common;

use std::process::Command;

use common::*;

fn blob(registry: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sfL"])
        .arg(format!("http://{}/v2/{repo}/blobs/{digest}", registry.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "GET blob {digest}");
    out.stdout
}

/// The fallback index of `subject` in `registry`'s `repo`, which must exist.
fn fallback_index_in(registry: &Registry, repo: &str, subject: &str) -> serde_json::Value {
    fallback_index(&format!("{}/{repo}", registry.addr), subject)
        .unwrap_or_else(|| panic!("no fallback index of {subject} in {repo}"))
}

#[test]
fn the_release_example_is_found_the_way_gardenlinux_update_finds_it() {
    let registry = Registry::start();
    let examples = examples_with_containers_for(&registry);
    let dir = examples.path().to_str().unwrap();
    let out = garden_artifacts(&["apply", "-f", dir], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // tag -> index -> entry by cname prefix -> manifest -> layer by media type.
    let repo = "gardenlinux/gardenlinux";
    let index = skopeo_json(&format!("{}/{repo}:1877.5", registry.addr));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{index:#}");
    // As on ghcr.io: the flavours are the annotated entries, the rest are container images.
    let (flavours, containers): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        entries.iter().partition(|e| e.get("annotations").is_some());
    assert_eq!(flavours.len(), 3);
    for entry in &flavours {
        assert_eq!(entry["platform"]["os"], "gardenlinux");
        assert_eq!(entry["platform"]["os.version"], "1877.5");
        assert!(
            entry["annotations"]["feature_set"]
                .as_str()
                .unwrap()
                .contains("gardener")
        );
    }
    the_container_entries_are_real_images_of_their_platform(&registry, repo, &containers);
    let metal = entries
        .iter()
        .filter(|e| e.get("annotations").is_some())
        .find(|e| {
            e["annotations"]["cname"]
                .as_str()
                .unwrap()
                .starts_with("metal-gardener_prod-arm64")
        })
        .expect("an entry for the metal flavour");
    assert_eq!(metal["annotations"]["architecture"], "arm64");
    assert_eq!(metal["platform"]["architecture"], "arm64");
    let manifest = skopeo_json(&format!(
        "{}/{repo}@{}",
        registry.addr,
        metal["digest"].as_str().unwrap()
    ));
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/io.gardenlinux.release")
        .expect("a release layer");
    let content = blob(&registry, repo, layer["digest"].as_str().unwrap());
    assert!(
        String::from_utf8_lossy(&content)
            .contains("GARDENLINUX_CNAME=metal-gardener_prod-arm64-1877.5-60d819dd")
    );

    // `latest` and the major version are the same index; the release notes are linked.
    let index_digest = digest_of(&format!("{}/{repo}:1877.5", registry.addr)).unwrap();
    for tag in ["latest", "1877", "1877.5.0"] {
        assert_eq!(
            digest_of(&format!("{}/{repo}:{tag}", registry.addr)).unwrap(),
            index_digest
        );
    }
    assert_eq!(
        index["annotations"]["io.gardenlinux.link.release-notes"],
        "https://github.com/gardenlinux/gardenlinux/releases/tag/1877.5"
    );

    // The SBOM hangs off the AWS flavour through the fallback tag, and names it as subject.
    let aws = digest_of(&format!(
        "{}/{repo}:1877.5-aws-gardener_prod-amd64",
        registry.addr
    ))
    .unwrap();
    let referrers = fallback_index_in(&registry, repo, &aws);
    let sboms: Vec<_> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"] == "application/vnd.cyclonedx+json")
        .collect();
    assert_eq!(sboms.len(), 1, "{referrers}");
    let sbom = skopeo_json(&format!(
        "{}/{repo}@{}",
        registry.addr,
        sboms[0]["digest"].as_str().unwrap()
    ));
    assert_eq!(sbom["subject"]["digest"], aws.as_str());
    assert_eq!(
        sbom["layers"][0]["mediaType"],
        "application/vnd.cyclonedx+json"
    );

    // Converged: a second run writes nothing.
    let before = registry.requests().len();
    let out = garden_artifacts(&["apply", "-f", dir], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).lines().all(|l| l.ends_with("unchanged")),
        "{}",
        stdout(&out)
    );
    let second = registry.requests().split_off(before);
    assert!(Registry::writes(&second).is_empty(), "{second:#?}");
}

/// The release index's container entries (`platform.os: linux`, no annotations) are the
/// images `amd64-1877.5` and `arm64-1877.5` that examples/containers/build.sh built: skopeo and
/// podman pick them from the index by platform, and each is a container image whose config
/// names its platform and whose layers hash, uncompressed, to the config's diff_ids.
fn the_container_entries_are_real_images_of_their_platform(
    registry: &Registry,
    repo: &str,
    containers: &[&serde_json::Value],
) {
    let platforms: Vec<&serde_json::Value> = containers.iter().map(|e| &e["platform"]).collect();
    assert_eq!(
        platforms,
        [
            &serde_json::json!({"os": "linux", "architecture": "amd64"}),
            &serde_json::json!({"os": "linux", "architecture": "arm64"}),
        ],
        "the container entries of the release index"
    );
    let release = format!("{}/{repo}:1877.5", registry.addr);
    for entry in containers {
        let arch = entry["platform"]["architecture"].as_str().unwrap();
        let digest = entry["digest"].as_str().unwrap();
        assert_eq!(
            entry["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let tag = format!("{}/{repo}:{arch}-1877.5", registry.addr);
        assert_eq!(digest_of(&tag).as_deref(), Some(digest), "{tag}");

        // skopeo reads the tag as an image of its platform, and picks it from the index.
        let by_tag = skopeo_inspect(&tag, &[]);
        assert_eq!(by_tag["Os"], "linux", "{tag}: {by_tag:#}");
        assert_eq!(by_tag["Architecture"], arch, "{tag}: {by_tag:#}");
        let from_index = skopeo_inspect(&release, &["--override-arch", arch]);
        assert_eq!(from_index["Architecture"], arch, "{from_index:#}");
        assert_eq!(
            from_index["Layers"], by_tag["Layers"],
            "{release} for {arch}"
        );

        // The config's diff_ids are the sha256 of the uncompressed layers.
        let manifest = skopeo_json(&format!("{}/{repo}@{digest}", registry.addr));
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        let config: serde_json::Value = serde_json::from_slice(&blob(
            registry,
            repo,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], arch);
        let layers = manifest["layers"].as_array().unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert!(!layers.is_empty());
        assert_eq!(layers.len(), diff_ids.len(), "{manifest:#} {config:#}");
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
            let tar = gunzip(&blob(registry, repo, layer["digest"].as_str().unwrap()));
            assert_eq!(
                diff_id.as_str(),
                Some(sha256(&tar).as_str()),
                "{tag}: {layer}"
            );
            let os_release = file_in_tar(&tar, "etc/os-release");
            assert!(
                os_release.contains(&format!("GARDENLINUX_CNAME=container-{arch}-1877.5")),
                "{tag}: {os_release}"
            );
        }

        // podman pulls the image of the platform it asks for from the release index.
        let podman = tempfile::Builder::new()
            .prefix("ga-podman.")
            .tempdir_in("/tmp")
            .unwrap();
        let pulled = podman_in(
            podman.path(),
            &["pull", "-q", "--tls-verify=false", "--arch", arch, &release],
        );
        let image: serde_json::Value = serde_json::from_str(&podman_in(
            podman.path(),
            &["image", "inspect", pulled.trim()],
        ))
        .unwrap();
        assert_eq!(image[0]["Architecture"], arch, "{image:#}");
        assert!(
            image[0]["RepoDigests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d.as_str().is_some_and(|d| d.ends_with(digest))),
            "podman pulled {arch} from {release}: {image:#}"
        );
    }
}

/// `skopeo inspect` (not raw): the image as skopeo resolves it for a platform.
fn skopeo_inspect(reference: &str, options: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(options)
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {options:?} {reference}: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// podman with its own storage in `dir`, on the vfs driver; its stdout.
fn podman_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .expect("podman runs (scripts/install-test-deps.sh installs it)");
    assert!(out.status.success(), "podman {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "gzip -dc: {}", stderr(&out));
    out.stdout
}

/// The content of `path` in a tar archive (`tar -xO`).
fn file_in_tar(tar: &[u8], path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("layer.tar");
    std::fs::write(&archive, tar).unwrap();
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: no {path}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn fifty_concurrent_referrers_all_land_in_the_fallback_index() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let subject = write_manifest(
        dir.path(),
        "subject.yaml",
        &format!(
            "apiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {{name: subject}}\nspec: {{repository: {r}/gl, tags: [flavour], source: {{files: [{{name: a.release, content: subject}}]}}}}\n"
        ),
    );
    let out = garden_artifacts(&["apply", "-f", subject.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Five processes at once, ten referrers each: writers that do not share a lock.
    for p in 0..5 {
        let mut docs = String::new();
        for i in 0..10 {
            docs.push_str(&format!(
                "---\napiVersion: oci.gardenlinux.io/v1alpha1\nkind: GardenArtifact\nmetadata: {{name: sig-{p}-{i}}}\nspec:\n  repository: {r}/gl\n  artifactType: application/vnd.example.signature\n  subject: {{reference: flavour}}\n  source: {{files: [{{name: sig-{p}-{i}.log, content: \"signature {p} {i}\"}}]}}\n"
            ));
        }
        write_manifest(dir.path(), &format!("referrers-{p}.yaml"), &docs);
    }
    let handles: Vec<_> = (0..5)
        .map(|p| {
            let file = dir.path().join(format!("referrers-{p}.yaml"));
            std::thread::spawn(move || {
                let empty_config = tempfile::tempdir().unwrap();
                Command::new(BINARY)
                    .args(["apply", "-f", file.to_str().unwrap(), "--concurrency", "10"])
                    .env("DOCKER_CONFIG", empty_config.path())
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for handle in handles {
        let out = handle.join().unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    }

    let subject_digest = digest_of(&format!("{r}/gl:flavour")).unwrap();
    let index = fallback_index_in(&registry, "gl", &subject_digest);
    let mut digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    digests.sort_unstable();
    digests.dedup();
    assert_eq!(digests.len(), 50, "{index}");
    for digest in digests {
        let referrer = skopeo_json(&format!("{r}/gl@{digest}"));
        assert_eq!(referrer["subject"]["digest"], subject_digest.as_str());
    }
}

#[test]
fn when_a_referenced_tag_moves_the_index_and_the_referrer_follow() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let manifests = |content: &str| {
        format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: flavour}}
spec: {{repository: {r}/gl, tags: [flavour], source: {{files: [{{name: a.release, content: "{content}"}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: release}}
spec:
  repository: {r}/gl
  tags: [release]
  source: {{index: {{manifests: [{{reference: flavour, annotations: {{cname: a}}}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: sbom}}
spec:
  repository: {r}/gl
  subject: {{reference: flavour}}
  source: {{files: [{{name: a.sbom, content: "{{}}"}}]}}
"#
        )
    };
    let file = write_manifest(dir.path(), "m.yaml", &manifests("one"));
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let first = digest_of(&format!("{r}/gl:flavour")).unwrap();

    write_manifest(dir.path(), "m.yaml", &manifests("two"));
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap(), "-o", "json"], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let second = digest_of(&format!("{r}/gl:flavour")).unwrap();
    assert_ne!(first, second);
    let index = skopeo_json(&format!("{r}/gl:release"));
    assert_eq!(
        index["manifests"][0]["digest"],
        second.as_str(),
        "the index points at the moved tag"
    );
    let referrers = fallback_index_in(&registry, "gl", &second);
    assert_eq!(
        referrers["manifests"].as_array().unwrap().len(),
        1,
        "the SBOM hangs off the new flavour"
    );
}

#[test]
fn a_subject_in_another_repository_is_refused_with_the_field() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &registry.addr;
    let file = write_manifest(
        dir.path(),
        "m.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: flavour}}
spec: {{repository: {r}/a, tags: [t], source: {{files: [{{name: a.release, content: x}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: sbom}}
spec: {{repository: {r}/b, subject: {{reference: "{r}/a:t"}}, source: {{files: [{{name: a.sbom, content: x}}]}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("default/sbom "))
        .unwrap();
    assert!(
        line.contains("failed: spec.subject:") && line.contains("share one repository"),
        "{line}"
    );
}

#[test]
fn on_a_registry_with_the_referrers_api_no_fallback_tag_is_written() {
    let ferro = common::ferro::Ferro::start();
    let dir = tempfile::tempdir().unwrap();
    let r = &ferro.addr;
    let file = write_manifest(
        dir.path(),
        "m.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: flavour}}
spec: {{repository: {r}/gl, tags: [flavour], source: {{files: [{{name: a.release, content: x}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: sbom}}
spec:
  repository: {r}/gl
  artifactType: application/vnd.cyclonedx+json
  subject: {{artifactRef: {{name: flavour}}}}
  source: {{files: [{{name: a.sbom, content: "{{}}"}}]}}
"#
        ),
    );
    for round in 0..2 {
        let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let subject = digest_of(&format!("{r}/gl:flavour")).unwrap();
    let referrers = ferro.referrers("gl", &subject, None);
    let listed = referrers["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{referrers}");
    assert_eq!(listed[0]["artifactType"], "application/vnd.cyclonedx+json");
    let tags = Command::new("curl")
        .args(["-sf"])
        .arg(format!("http://{r}/v2/gl/tags/list"))
        .output()
        .unwrap();
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(
        tags["tags"],
        serde_json::json!(["flavour"]),
        "no sha256-... fallback tag"
    );
}

#[test]
fn a_mirror_with_referrers_brings_signatures_and_sboms_along() {
    let source = Registry::start();
    let fallback_target = Registry::start();
    let api_target = common::ferro::Ferro::start();
    let dir = tempfile::tempdir().unwrap();
    let s = &source.addr;
    let origin = write_manifest(
        dir.path(),
        "origin.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: flavour}}
spec: {{repository: {s}/gl, tags: [flavour], source: {{files: [{{name: a.release, content: x}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: sbom}}
spec:
  repository: {s}/gl
  artifactType: application/vnd.cyclonedx+json
  subject: {{artifactRef: {{name: flavour}}}}
  source: {{files: [{{name: a.sbom, content: "{{}}"}}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: legacy-signature}}
spec:
  repository: {s}/gl
  tags: [legacy-signature]
  source: {{files: [{{name: signature, mediaType: application/vnd.dev.cosign.simplesigning.v1+json, content: "{{}}"}}]}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", origin.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The legacy cosign tag is named after the flavour's digest. garden-artifacts refuses to
    // write a tag of that shape, so skopeo puts it there, as cosign would.
    let flavour = digest_of(&format!("{s}/gl:flavour")).unwrap();
    let sig_tag = format!("{}.sig", flavour.replacen(':', "-", 1));
    let copied = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{s}/gl:legacy-signature"))
        .arg(format!("docker://{s}/gl:{sig_tag}"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    let sbom = fallback_index_in(&source, "gl", &flavour)["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    for target in [fallback_target.addr.clone(), api_target.addr.clone()] {
        let mirror = write_manifest(
            dir.path(),
            "mirror.yaml",
            &format!(
                r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: mirror}}
spec:
  repository: {target}/mirror/gl
  tags: [flavour]
  source: {{image: {{reference: "{s}/gl:flavour", referrers: true}}}}
"#
            ),
        );
        for round in 0..2 {
            let out = garden_artifacts(&["apply", "-f", mirror.to_str().unwrap()], &[]);
            assert!(
                out.status.success(),
                "{target} round {round}: {}{}",
                stdout(&out),
                stderr(&out)
            );
        }
        assert_eq!(
            digest_of(&format!("{target}/mirror/gl:flavour")).unwrap(),
            flavour
        );
        let copied_sbom = skopeo_json(&format!("{target}/mirror/gl@{sbom}"));
        assert_eq!(copied_sbom["subject"]["digest"], flavour.as_str());
        assert!(
            skopeo_raw(&format!("{target}/mirror/gl:{sig_tag}")).is_some(),
            "cosign tag copied to {target}"
        );
    }
    // Linked the way each target supports: the fallback tag here, the API there.
    let index = fallback_index_in(&fallback_target, "mirror/gl", &flavour);
    assert_eq!(index["manifests"][0]["digest"], sbom.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.cyclonedx+json"
    );
    let listed = api_target.referrers("mirror/gl", &flavour, None);
    assert!(
        listed["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == sbom.as_str()),
        "{listed}"
    );
}

/// A source registry with the referrers API may still hold a fallback index that older clients
/// wrote, listing referrers the API does not know (here: an attachment pushed without a
/// `subject`, listed by hand under `sha256-<hex>`). A mirror with `referrers: true` copies both
/// kinds, each once.
#[test]
fn a_mirror_reads_the_referrers_api_and_the_fallback_tag_of_its_source() {
    let source = common::ferro::Ferro::start();
    let target = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let s = &source.addr;
    let file = write_manifest(
        dir.path(),
        "origin.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: flavour}}
spec: {{repository: {s}/gl, tags: [flavour], source: {{files: [{{name: a.release, content: x}}]}}}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: sbom}}
spec:
  repository: {s}/gl
  artifactType: application/vnd.cyclonedx+json
  subject: {{artifactRef: {{name: flavour}}}}
  source: {{files: [{{name: a.sbom, content: "{{}}"}}]}}
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: legacy}}
spec:
  repository: {s}/gl
  tags: [legacy-notes]
  artifactType: text/plain
  source: {{files: [{{name: notes.txt, mediaType: text/plain, content: "old notes"}}]}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let flavour = digest_of(&format!("{s}/gl:flavour")).unwrap();
    let api_listed = source.referrers("gl", &flavour, None);
    let sbom = api_listed["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let legacy_raw = skopeo_raw(&format!("{s}/gl:legacy-notes")).unwrap();
    let legacy = digest_of(&format!("{s}/gl:legacy-notes")).unwrap();
    // The fallback index an older client would have written.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": legacy,
            "size": legacy_raw.len(),
            "artifactType": "text/plain",
        }],
    });
    let put = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H"])
        .arg("Content-Type: application/vnd.oci.image.index.v1+json")
        .arg("--data-binary")
        .arg(index.to_string())
        .arg(format!(
            "http://{s}/v2/gl/manifests/{}",
            flavour.replacen(':', "-", 1)
        ))
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let api_now = source.referrers("gl", &flavour, None);
    assert!(
        api_now["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["digest"] != legacy.as_str()),
        "precondition: the API does not know the legacy attachment: {api_now}"
    );

    let t = &target.addr;
    let mirror = write_manifest(
        dir.path(),
        "mirror.yaml",
        &format!(
            r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: mirror}}
spec:
  repository: {t}/mirror/gl
  tags: [flavour]
  source: {{image: {{reference: "{s}/gl:flavour", referrers: true}}}}
"#
        ),
    );
    let out = garden_artifacts(&["apply", "-f", mirror.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let copied: Vec<String> = fallback_index_in(&target, "mirror/gl", &flavour)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(
        copied.contains(&sbom) && copied.contains(&legacy),
        "{copied:?}"
    );
    assert_eq!(
        skopeo_raw(&format!("{t}/mirror/gl@{legacy}")).as_deref(),
        Some(legacy_raw.as_slice()),
        "the attachment copied byte for byte"
    );
}
