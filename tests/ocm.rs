//! GardenComponents published with `apply` to a real Distribution registry and read back with
//! Gardener's own OCM library (`gardener-ocm` from PyPI, installed by
//! scripts/install-test-deps.sh) through tests/ocm_read.py: what Gardener's delivery tooling
//! finds is what the spec says, pinned to the digests in the registry.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const COMPONENT: &str = "github.com/gardenlinux/gardenlinux";

/// The component version as gardener-ocm reads it (tests/ocm_read.py's JSON).
fn read_with_gardener_ocm(ocm_repository: &str, name: &str, version: &str) -> Value {
    let ok = Command::new("python3")
        .args(["-c", "import ocm.retrieve, jsonschema"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "gardener-ocm is not installed for python3: run scripts/install-test-deps.sh"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocm_read.py");
    let out = Command::new("python3")
        .arg(script)
        .args([ocm_repository, name, version])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "ocm_read.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ocm_read.py prints JSON")
}

/// The resource of `platform`, by its extra identity.
fn resource<'a>(read: &'a Value, platform: &str) -> &'a Value {
    read["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["extraIdentity"]["platform"] == platform)
        .unwrap_or_else(|| panic!("no resource for {platform}: {read:#}"))
}

fn digest_in(image_reference: &Value) -> &str {
    image_reference
        .as_str()
        .unwrap()
        .rsplit_once('@')
        .expect("pinned by digest")
        .1
}

#[test]
fn the_release_component_reads_back_with_gardeners_ocm_library_and_follows_its_flavours() {
    let registry = Registry::start();
    let examples = examples_with_containers_for(&registry);
    let dir = examples.path().to_str().unwrap();
    let apply = || run_ok(&["apply", "-f", dir]);
    let first = apply();
    assert!(
        first.contains("releases/gardenlinux-1877-5  ") && first.contains("  1877.5  created"),
        "{first}"
    );
    let ocm_repository = format!("{}/gardenlinux/ocm", registry.addr);

    let read = read_with_gardener_ocm(&ocm_repository, COMPONENT, "1877.5");
    assert_eq!(read["name"], COMPONENT);
    assert_eq!(read["version"], "1877.5");
    assert_eq!(read["provider"], "SAP SE");
    assert_eq!(read["schemaErrors"], serde_json::json!([]), "{read:#}");
    assert_eq!(
        read["tarMembers"],
        serde_json::json!(["component-descriptor.yaml"])
    );
    assert_eq!(
        read["configMediaType"],
        "application/vnd.ocm.software.component.config.v1+json"
    );
    assert_eq!(
        read["layerMediaType"],
        "application/vnd.ocm.software.component-descriptor.v2+yaml+tar"
    );
    assert_eq!(read["configLayerMediaType"], read["layerMediaType"]);
    assert_eq!(
        read["annotations"]["software.ocm.component.name"],
        COMPONENT
    );
    assert_eq!(
        read["annotations"]["software.ocm.component.version"],
        "1877.5"
    );
    assert_eq!(read["resources"].as_array().unwrap().len(), 3, "{read:#}");
    for (platform, architecture, tag) in [
        ("aws", "amd64", "1877.5-aws-gardener_prod-amd64"),
        ("azure", "amd64", "1877.5-azure-gardener_prod-amd64"),
        ("metal", "arm64", "1877.5-metal-gardener_prod-arm64"),
    ] {
        let r = resource(&read, platform);
        assert_eq!(r["name"], "gardenlinux");
        assert_eq!(r["version"], "1877.5");
        assert_eq!(r["type"], "virtual_machine_image");
        assert_eq!(r["extraIdentity"]["architecture"], architecture);
        assert!(
            r["extraIdentity"]["feature-flags"]
                .as_str()
                .unwrap()
                .contains(platform)
        );
        let flavour = format!("{}/gardenlinux/gardenlinux:{tag}", registry.addr);
        let digest = digest_of(&flavour).expect("the flavour is in the registry");
        assert_eq!(
            r["imageReference"],
            format!("{flavour}@{digest}"),
            "{platform}"
        );
        assert_eq!(digest_in(&r["imageReference"]), digest);
        assert_eq!(r["digest"], digest.trim_start_matches("sha256:"));
    }

    // discover shows the resources and where they point; pull writes the descriptor.
    let version_ref = format!("{ocm_repository}/component-descriptors/{COMPONENT}:1877.5");
    let tree = run_ok(&["discover", &version_ref]);
    assert!(
        tree.contains("[component] github.com/gardenlinux/gardenlinux:1877.5 (provider SAP SE)"),
        "{tree}"
    );
    let discovered: Value =
        serde_json::from_str(&run_ok(&["discover", &version_ref, "-o", "json"])).unwrap();
    let resources = discovered["component"]["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 3, "{discovered:#}");
    for r in resources {
        let platform = r["extraIdentity"]["platform"].as_str().unwrap();
        assert_eq!(
            r["access"]["imageReference"],
            resource(&read, platform)["imageReference"]
        );
        assert!(
            tree.contains(&format!(
                "-> {}",
                r["access"]["imageReference"].as_str().unwrap()
            )),
            "{tree}"
        );
    }
    let pulled = tempfile::tempdir().unwrap();
    let out = run_ok(&["pull", &version_ref, "-o", pulled.path().to_str().unwrap()]);
    let file = pulled.path().join("component-descriptor.yaml");
    assert_eq!(out.trim(), file.display().to_string());
    let descriptor: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(descriptor["meta"]["schemaVersion"], "v2");
    assert_eq!(descriptor["component"]["name"], COMPONENT);
    assert_eq!(
        descriptor["component"]["resources"][0]["digest"]["normalisationAlgorithm"],
        "ociArtifactDigest/v1"
    );
    assert_eq!(
        std::fs::read_dir(pulled.path()).unwrap().count(),
        1,
        "only the descriptor"
    );

    // Unchanged: the second apply writes nothing, and the component costs one HEAD (its
    // resources are pinned to what the run's GardenArtifacts published).
    let before = registry.requests().len();
    let again = apply();
    let second: Vec<_> = registry.requests().split_off(before);
    assert!(Registry::writes(&second).is_empty(), "{second:#?}");
    assert!(again.contains("  1877.5  unchanged"), "{again}");
    let component_requests: Vec<_> = second
        .iter()
        .filter(|r| r.uri.contains("/component-descriptors/"))
        .collect();
    assert_eq!(component_requests.len(), 1, "{component_requests:#?}");
    assert_eq!(component_requests[0].method, "HEAD");

    // A flavour rebuilt: the resource digest follows in the same apply.
    let release = examples.path().join("gardenlinux-release.yaml");
    let text = std::fs::read_to_string(&release).unwrap();
    std::fs::write(
        &release,
        text.replace("console=ttyAMA0", "console=ttyAMA0 quiet"),
    )
    .unwrap();
    let moved = apply();
    assert!(moved.contains("  1877.5  updated"), "{moved}");
    let metal = format!(
        "{}/gardenlinux/gardenlinux:1877.5-metal-gardener_prod-arm64",
        registry.addr
    );
    let metal_digest = digest_of(&metal).unwrap();
    let reread = read_with_gardener_ocm(&ocm_repository, COMPONENT, "1877.5");
    assert_eq!(
        digest_in(&resource(&reread, "metal")["imageReference"]),
        metal_digest
    );
    assert_eq!(
        resource(&reread, "aws")["imageReference"],
        resource(&read, "aws")["imageReference"]
    );
}

/// A component of references only (by tag and by digest), in the legacy `cnudie` format.
fn legacy_component(registry: &Registry, by_digest: &str) -> String {
    format!(
        r#"apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenComponent
metadata: {{name: legacy, namespace: releases}}
spec:
  repository: {addr}/legacy/ocm
  name: github.com/gardenlinux/gardenlinux
  version: "1877.5"
  provider: {{name: SAP SE}}
  format: cnudie
  componentReferences:
    - {{name: kernel, componentName: github.com/gardenlinux/kernel, version: "6.12.44"}}
  resources:
    - name: gardenlinux
      type: virtual_machine_image
      extraIdentity: {{feature-flags: "aws,gardener,_prod", architecture: amd64, platform: aws}}
      reference: {addr}/gardenlinux/gardenlinux:1877.5-aws-gardener_prod-amd64
    - name: gardenlinux
      type: virtual_machine_image
      extraIdentity: {{feature-flags: "metal,gardener,_prod", architecture: arm64, platform: metal}}
      reference: {addr}/gardenlinux/gardenlinux@{by_digest}
"#,
        addr = registry.addr
    )
}

#[test]
fn the_legacy_format_and_plain_references_read_back_too() {
    let registry = Registry::start();
    let examples = examples_with_containers_for(&registry);
    run_ok(&["apply", "-f", examples.path().to_str().unwrap()]);
    let metal = format!(
        "{}/gardenlinux/gardenlinux:1877.5-metal-gardener_prod-arm64",
        registry.addr
    );
    let metal_digest = digest_of(&metal).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write_manifest(
        dir.path(),
        "legacy.yaml",
        &legacy_component(&registry, &metal_digest),
    );
    run_ok(&["apply", "-f", file.to_str().unwrap()]);
    let read = read_with_gardener_ocm(
        &format!("{}/legacy/ocm", registry.addr),
        COMPONENT,
        "1877.5",
    );
    assert_eq!(read["schemaErrors"], serde_json::json!([]), "{read:#}");
    assert_eq!(
        read["configMediaType"],
        "application/vnd.gardener.cloud.cnudie.component.config.v1+json"
    );
    assert_eq!(
        read["layerMediaType"],
        "application/vnd.gardener.cloud.cnudie.component-descriptor.v2+yaml+tar"
    );
    assert_eq!(read["configLayerMediaType"], read["layerMediaType"]);
    assert_eq!(
        read["componentReferences"][0]["componentName"],
        "github.com/gardenlinux/kernel"
    );
    let aws = format!(
        "{}/gardenlinux/gardenlinux:1877.5-aws-gardener_prod-amd64",
        registry.addr
    );
    assert_eq!(
        resource(&read, "aws")["imageReference"],
        format!("{aws}@{}", digest_of(&aws).unwrap())
    );
    assert_eq!(
        resource(&read, "metal")["imageReference"],
        format!("{}/gardenlinux/gardenlinux@{metal_digest}", registry.addr)
    );

    // Unchanged: a HEAD of the tag referenced by tag, one of the version's tag, no write.
    let before = registry.requests().len();
    run_ok(&["apply", "-f", file.to_str().unwrap()]);
    let second: Vec<_> = registry.requests().split_off(before);
    assert!(Registry::writes(&second).is_empty(), "{second:#?}");
    assert_eq!(second.len(), 2, "{second:#?}");
    assert!(second.iter().all(|r| r.method == "HEAD"), "{second:#?}");
}

#[test]
fn bad_components_are_refused_naming_the_field_and_nothing_is_written() {
    let registry = Registry::start();
    let examples = examples_with_containers_for(&registry);
    run_ok(&["apply", "-f", examples.path().to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let good = legacy_component(&registry, &format!("sha256:{}", "a".repeat(64)));

    let bad = good
        .replace(
            "name: github.com/gardenlinux/gardenlinux",
            "name: GardenLinux",
        )
        .replace("version: \"1877.5\"", "version: \"latest\"")
        .replace("platform: metal}", "platform: aws}")
        .replace(
            "\"metal,gardener,_prod\", architecture: arm64",
            "\"aws,gardener,_prod\", architecture: amd64",
        );
    let file = write_manifest(dir.path(), "bad.yaml", &bad);
    let before = registry.requests().len();
    let err = run_fails(&["apply", "-f", file.to_str().unwrap()], 2);
    for field in [
        "releases/legacy: spec.name:",
        "releases/legacy: spec.version:",
        "releases/legacy: spec.resources[1].extraIdentity:",
    ] {
        assert!(err.contains(field), "{field} not in:\n{err}");
    }
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        registry.requests().split_off(before).is_empty(),
        "an invalid spec sends no request"
    );

    // Two objects publishing one version: the second is refused, nothing written.
    let twice = format!(
        "{good}---\n{}",
        good.replace("name: legacy,", "name: legacy-again,")
    );
    let file = write_manifest(dir.path(), "twice.yaml", &twice);
    let before = registry.requests().len();
    let err = run_fails(&["apply", "-f", file.to_str().unwrap()], 2);
    assert!(
        err.contains("releases/legacy-again:") && err.contains("is published by releases/legacy"),
        "{err}"
    );
    assert!(registry.requests().split_off(before).is_empty());

    // A reference to a tag that is not there: a clear error naming the field, nothing
    // written (every resource is resolved before the version is).
    let missing = good.replace(
        "gardenlinux:1877.5-aws-gardener_prod-amd64",
        "gardenlinux:1877.5-gone",
    );
    let file = write_manifest(dir.path(), "missing.yaml", &missing);
    let before = registry.requests().len();
    let out = garden_artifacts(&["apply", "-f", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("spec.resources[0].reference:")
            && text.contains("1877.5-gone does not exist"),
        "{text}"
    );
    let requests = registry.requests().split_off(before);
    assert!(Registry::writes(&requests).is_empty(), "{requests:#?}");
}

#[test]
fn ownership_referrers_land_on_each_resource_through_the_fallback_tag() {
    let registry = Registry::start();
    let examples = examples_with_containers_for(&registry);
    run_ok(&["apply", "-f", examples.path().to_str().unwrap()]);
    let metal = format!(
        "{}/gardenlinux/gardenlinux:1877.5-metal-gardener_prod-arm64",
        registry.addr
    );
    let metal_digest = digest_of(&metal).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}  ownershipReferrers: true\n",
        legacy_component(&registry, &metal_digest)
    );
    let file = write_manifest(dir.path(), "owned.yaml", &yaml);
    run_ok(&["apply", "-f", file.to_str().unwrap()]);
    let flavours = format!("{}/gardenlinux/gardenlinux", registry.addr);
    let aws = format!("{flavours}:1877.5-aws-gardener_prod-amd64");
    for (subject, platform) in [(digest_of(&aws).unwrap(), "aws"), (metal_digest, "metal")] {
        // Distribution 2 has no referrers API: the fallback tag lists the referrer.
        let index = fallback_index(&flavours, &subject).expect("a fallback index");
        let entries = index["manifests"].as_array().unwrap();
        let owner = entries
            .iter()
            .find(|e| e["artifactType"] == "application/vnd.ocm.software.ownership.v1+json")
            .unwrap_or_else(|| panic!("no ownership referrer on {platform}: {index:#}"));
        assert_eq!(
            owner["annotations"]["software.ocm.component.name"],
            COMPONENT
        );
        assert_eq!(
            owner["annotations"]["software.ocm.component.version"],
            "1877.5"
        );
        let artifact: Value = serde_json::from_str(
            owner["annotations"]["software.ocm.artifact"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(artifact["kind"], "resource");
        assert_eq!(artifact["identity"]["platform"], platform);
        let referrer = skopeo_json(&format!("{flavours}@{}", owner["digest"].as_str().unwrap()));
        assert_eq!(referrer["subject"]["digest"], subject.as_str());
    }
    // Unchanged: nothing written again.
    let before = registry.requests().len();
    run_ok(&["apply", "-f", file.to_str().unwrap()]);
    let second: Vec<_> = registry.requests().split_off(before);
    assert!(Registry::writes(&second).is_empty(), "{second:#?}");
}
