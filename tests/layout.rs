//! OCI image layout folders (`oci:PATH`), the air-gapped carrier: a registry mirrored into a
//! folder and the folder into another registry with digests, referrers and cosign tags kept;
//! layouts written here read by skopeo and podman, and layouts they write read here; broken
//! and hostile layouts refused without writing anything.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Registry, digest_of, run_fails, run_ok};
use serde_json::Value;

/// A work folder whose path is lowercase: podman names an image pulled from `oci:PATH` after
/// the path, and an image name may not have capitals (tempfile's random names do).
fn lowercase_tempdir() -> tempfile::TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    tempfile::Builder::new()
        .prefix(&format!("ga-layout-{}-{nanos}", std::process::id()))
        .rand_bytes(0)
        .tempdir()
        .unwrap()
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} does not run ({e}): run scripts/install-test-deps.sh")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with its own storage in `dir`, on the vfs driver (no overlay mounts needed).
fn podman(dir: &Path, args: &[&str]) -> String {
    let root = dir.join("root");
    let runroot = dir.join("run");
    let mut all = vec![
        "--storage-driver",
        "vfs",
        "--root",
        root.to_str().unwrap(),
        "--runroot",
        runroot.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    tool("podman", &all)
}

/// The digest skopeo reads for `oci:PATH:TAG`.
fn layout_digest(path: &Path, tag: &str) -> String {
    use sha2::Digest;
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:{tag}", path.display())])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw.stdout)))
}

/// A small container image built by podman from scratch, pushed to `reference`.
fn container_image(work: &Path, reference: &str) {
    let context = work.join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("hello.txt"), "hello from a layout\n").unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    podman(
        work,
        &[
            "build",
            "-q",
            "-t",
            "localhost/hello:1",
            context.to_str().unwrap(),
        ],
    );
    podman(
        work,
        &[
            "push",
            "--tls-verify=false",
            "localhost/hello:1",
            &format!("docker://{reference}"),
        ],
    );
}

#[test]
fn registry_to_folder_to_registry_keeps_digests_referrers_and_signatures() {
    let origin = Registry::start();
    let air_gapped = Registry::start();
    let work = lowercase_tempdir();
    let repo = format!("{}/gardenlinux/hello", origin.addr);
    container_image(work.path(), &format!("{repo}:1"));
    let image = digest_of(&format!("{repo}:1")).unwrap();
    // A referrer (fallback tag: Distribution has no referrers API) and a cosign signature tag.
    let notes = work.path().join("notes.txt");
    std::fs::write(&notes, "release notes\n").unwrap();
    let referrer: Value = serde_json::from_str(&run_ok(&[
        "push",
        &repo,
        &format!("{}:text/plain", notes.display()),
        "--subject",
        &format!("{repo}:1"),
        "-o",
        "json",
    ]))
    .unwrap();
    let sig_tag = format!("{}.sig", image.replacen(':', "-", 1));
    tool(
        "skopeo",
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{repo}:1"),
            &format!("docker://{repo}:{sig_tag}"),
        ],
    );

    // Into a folder.
    let folder = work.path().join("carry");
    let layout = format!("oci:{}", folder.display());
    let json: Value = serde_json::from_str(&run_ok(&[
        "mirror",
        &repo,
        &layout,
        "--referrers",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["copied"], 1, "{json:#}");
    assert_eq!(json["target"], layout.as_str());
    // skopeo and podman read it, digest unchanged.
    assert_eq!(layout_digest(&folder, "1"), image);
    assert_eq!(layout_digest(&folder, &sig_tag), image);
    podman(work.path(), &["pull", &format!("{layout}:1")]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(folder.join("index.json")).unwrap()).unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&referrer["digest"].as_str().unwrap()),
        "the referrer is listed in index.json: {index:#}"
    );
    let tree: Value =
        serde_json::from_str(&run_ok(&["discover", &format!("{layout}:1"), "-o", "json"])).unwrap();
    assert_eq!(
        tree["referrers"][0]["digest"], referrer["digest"],
        "{tree:#}"
    );

    // Out of the folder into another registry.
    let target = format!("{}/mirror/hello", air_gapped.addr);
    run_ok(&["mirror", &layout, &target, "--referrers"]);
    assert_eq!(
        digest_of(&format!("{target}:1")).as_deref(),
        Some(image.as_str())
    );
    assert_eq!(
        digest_of(&format!("{target}:{sig_tag}")).as_deref(),
        Some(image.as_str())
    );
    let tree: Value =
        serde_json::from_str(&run_ok(&["discover", &format!("{target}:1"), "-o", "json"])).unwrap();
    assert_eq!(
        tree["referrers"][0]["digest"], referrer["digest"],
        "{tree:#}"
    );
    // And the copy out of the registry, read back through a folder, is the same again.
    let pulled = work.path().join("pulled");
    run_ok(&[
        "copy",
        &format!("{target}:1"),
        &format!("oci:{}:again", pulled.display()),
    ]);
    assert_eq!(layout_digest(&pulled, "again"), image);
}

#[test]
fn layouts_written_by_skopeo_and_podman_are_read_here() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let from_podman = work.path().join("podman-layout");
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("a.txt"), "a\n").unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM scratch\nCOPY a.txt /a.txt\n",
    )
    .unwrap();
    podman(
        work.path(),
        &[
            "build",
            "-q",
            "-t",
            "localhost/a:1",
            context.to_str().unwrap(),
        ],
    );
    podman(
        work.path(),
        &[
            "push",
            "localhost/a:1",
            &format!("oci:{}:1.0", from_podman.display()),
        ],
    );
    let written = layout_digest(&from_podman, "1.0");
    let target = format!("{}/from/podman:1.0", registry.addr);
    run_ok(&[
        "copy",
        &format!("oci:{}:1.0", from_podman.display()),
        &target,
    ]);
    assert_eq!(digest_of(&target).as_deref(), Some(written.as_str()));

    // skopeo's layout of an artefact pushed here; pulled back out of it by title.
    let file = work.path().join("a.release");
    std::fs::write(&file, "ID=gardenlinux\n").unwrap();
    let source = format!("{}/gl/release:1877.5", registry.addr);
    run_ok(&["push", &source, file.to_str().unwrap()]);
    let from_skopeo = work.path().join("skopeo-layout");
    tool(
        "skopeo",
        &[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{source}"),
            &format!("oci:{}:1877.5", from_skopeo.display()),
        ],
    );
    let out = work.path().join("out");
    run_ok(&[
        "pull",
        &format!("oci:{}:1877.5", from_skopeo.display()),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(out.join("a.release")).unwrap(),
        b"ID=gardenlinux\n"
    );
}

#[test]
fn broken_and_hostile_layouts_are_refused_and_nothing_is_written() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let target = format!("{}/from/layout:1", registry.addr);

    // Arguments that name no layout artefact.
    let e = run_fails(&["copy", "oci:", &target], 2);
    assert!(e.contains("SRC") && e.contains("oci:PATH"), "{e}");
    let folder = work.path().join("l");
    let e = run_fails(&["copy", &target, &format!("oci:{}", folder.display())], 2);
    assert!(e.contains("DST") && e.contains("names no tag"), "{e}");

    // A blob whose bytes are not its digest.
    let file = work.path().join("a.release");
    std::fs::write(&file, "ID=gardenlinux\n").unwrap();
    let source = format!("{}/gl/a:1", registry.addr);
    run_ok(&["push", &source, file.to_str().unwrap()]);
    run_ok(&["copy", &source, &format!("oci:{}:1", folder.display())]);
    let blobs = folder.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == b"ID=gardenlinux\n")
        .expect("the layer is in the layout");
    std::fs::write(&layer, "ID=tampered\n").unwrap();
    let before = registry.requests().len();
    let e = run_fails(
        &["copy", &format!("oci:{}:1", folder.display()), &target],
        1,
    );
    assert!(e.contains("digest"), "{e}");
    assert_eq!(digest_of(&target), None, "no tag for a tampered copy");
    assert!(
        Registry::writes(&registry.requests().split_off(before))
            .iter()
            .all(|w| !w.uri.contains("/manifests/")),
        "no manifest was written"
    );

    // An index.json entry whose digest is a path.
    let hostile = work.path().join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    std::fs::write(
        hostile.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        hostile.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../../etc/passwd","size":1,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}"#,
    )
    .unwrap();
    let e = run_fails(
        &["copy", &format!("oci:{}:1", hostile.display()), &target],
        1,
    );
    assert!(e.contains(&hostile.display().to_string()), "{e}");
    // Not JSON at all.
    std::fs::write(hostile.join("index.json"), "not json").unwrap();
    let e = run_fails(
        &["copy", &format!("oci:{}:1", hostile.display()), &target],
        1,
    );
    assert!(e.contains("index.json"), "{e}");
    assert_eq!(digest_of(&target), None);
}

/// `apply` takes `oci:PATH` where a repository or an image reference goes, relative to the
/// manifest's folder: a mirror into a folder, a mirror out of it and an artefact copied out of
/// it, digests unchanged; a folder outside the manifest's is refused unless allowed, naming
/// the field, and the controller's validation refuses layouts.
#[test]
fn apply_carries_through_a_folder_named_in_the_manifests() {
    let origin = Registry::start();
    let air_gapped = Registry::start();
    let work = lowercase_tempdir();
    let repo = format!("{}/gardenlinux/hello", origin.addr);
    container_image(work.path(), &format!("{repo}:1"));
    let image = digest_of(&format!("{repo}:1")).unwrap();

    let outbound = work.path().join("outbound");
    std::fs::create_dir_all(&outbound).unwrap();
    std::fs::write(
        outbound.join("carry.yaml"),
        format!(
            r#"apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenMirror
metadata: {{name: to-folder, namespace: carry}}
spec:
  source: {{repository: "{repo}"}}
  repository: oci:carry
"#
        ),
    )
    .unwrap();
    let out: Value = serde_json::from_str(&run_ok(&[
        "apply",
        "-f",
        outbound.join("carry.yaml").to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    let folder = outbound.join("carry");
    assert_eq!(layout_digest(&folder, "1"), image, "{out:#}");
    assert!(
        out[0]["repository"].as_str().unwrap().starts_with("oci:")
            && out[0]["repository"].as_str().unwrap().ends_with("carry"),
        "the folder is named by its path: {out:#}"
    );

    // At the air-gapped site the folder sits beside the manifests.
    let inbound = work.path().join("inbound");
    std::fs::create_dir_all(&inbound).unwrap();
    std::fs::rename(&folder, inbound.join("carry")).unwrap();
    let target = format!("{}/mirror/hello", air_gapped.addr);
    std::fs::write(
        inbound.join("land.yaml"),
        format!(
            r#"apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenMirror
metadata: {{name: from-folder, namespace: carry}}
spec:
  source: {{repository: oci:./carry}}
  repository: "{target}"
---
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: pinned, namespace: carry}}
spec:
  repository: "{}/pinned/hello"
  tags: ["stable"]
  source:
    image: {{reference: "oci:carry@{image}"}}
"#,
            air_gapped.addr
        ),
    )
    .unwrap();
    run_ok(&["apply", "-f", inbound.join("land.yaml").to_str().unwrap()]);
    assert_eq!(
        digest_of(&format!("{target}:1")).as_deref(),
        Some(image.as_str())
    );
    assert_eq!(
        digest_of(&format!("{}/pinned/hello:stable", air_gapped.addr)).as_deref(),
        Some(image.as_str())
    );
    // A second apply writes nothing.
    let before = air_gapped.requests().len();
    run_ok(&["apply", "-f", inbound.join("land.yaml").to_str().unwrap()]);
    assert_eq!(
        Registry::writes(&air_gapped.requests().split_off(before)).len(),
        0,
        "a converged apply through a folder writes nothing"
    );

    // A folder outside the manifest's: refused, naming the object and the field.
    let hostile = work.path().join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    let escaping = format!(
        r#"apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenMirror
metadata: {{name: escape, namespace: carry}}
spec:
  source: {{repository: "oci:../inbound/carry"}}
  repository: "{}/escaped/hello"
"#,
        air_gapped.addr
    );
    std::fs::write(hostile.join("escape.yaml"), &escaping).unwrap();
    let manifest = hostile.join("escape.yaml");
    let e = run_fails(&["apply", "-f", manifest.to_str().unwrap()], 2);
    assert!(
        e.contains("carry/escape")
            && e.contains("spec.source.repository")
            && e.contains("--allow-path-outside"),
        "{e}"
    );
    assert_eq!(
        digest_of(&format!("{}/escaped/hello:1", air_gapped.addr)),
        None
    );
    run_ok(&[
        "apply",
        "-f",
        manifest.to_str().unwrap(),
        "--allow-path-outside",
    ]);
    assert_eq!(
        digest_of(&format!("{}/escaped/hello:1", air_gapped.addr)).as_deref(),
        Some(image.as_str())
    );
    // `oci:` without a folder, and a tag where a whole folder is meant.
    std::fs::write(
        hostile.join("empty.yaml"),
        escaping
            .replace("oci:../inbound/carry", "oci:")
            .replace("name: escape", "name: nofolder"),
    )
    .unwrap();
    let e = run_fails(
        &["apply", "-f", hostile.join("empty.yaml").to_str().unwrap()],
        2,
    );
    assert!(
        e.contains("spec.source.repository") && e.contains("oci:PATH"),
        "{e}"
    );
}
