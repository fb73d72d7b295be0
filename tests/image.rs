//! The container image (Containerfile, scripts/image.sh) and the chart against a real API
//! server, without running a container (this machine kind's cgroups do not allow it):
//! - the image is built here by scripts/image.sh with podman (private vfs storage, nothing
//!   pulled) and read from its OCI archive: config (non-root user, entrypoint, OCI labels) and
//!   the exact file list (the binary, the CA bundle, passwd/group, /tmp; no shell);
//! - the binary taken out of the image runs `--version`, and runs the controller with the
//!   chart's own arguments against the test cluster, under the chart's RBAC, until an artefact
//!   is Ready in a registry;
//! - `helm template` output is accepted by that API server (`kubectl apply --dry-run=server`,
//!   with kubectl's validation against the server's OpenAPI schemas).
//!
//! The image test builds the binary with the dev profile (static, crt-static): a cold
//! release build takes minutes longer, and what is checked here (the image's shape, a static
//! binary that starts and reconciles) does not depend on optimisation. The release workflow
//! builds the release profile with the same script.
//!
//! podman, file, tar, kubectl and helm come from scripts/install-test-deps.sh; a missing one
//! fails these tests with that hint, never skips them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use common::cluster::{SYSTEM_NAMESPACE, Scene, Watch, artifact_object, wait_for};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.current_dir(root());
    command
}

fn spawn_output(mut command: Command, program: &str) -> Output {
    command.output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): run scripts/install-test-deps.sh, which installs it")
    })
}

fn crate_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The image as scripts/image.sh built it, taken apart.
struct Image {
    /// The OCI image config (`config`, `architecture`, `os`, ...).
    config: Value,
    /// Every entry of every layer: path (without a leading `/`) -> `tar -tv` mode string.
    files: BTreeMap<String, String>,
    /// The layers unpacked into one folder.
    rootfs: PathBuf,
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("algorithm:hex");
    dir.join("blobs").join(algorithm).join(hex)
}

fn json_blob(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob(dir, digest)).expect("read blob"))
        .expect("a JSON blob")
}

/// Built once per test binary.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        // One folder per target dir, emptied at each run: a static is never dropped, so a
        // TempDir would leave an image behind per run.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the image test folder");
        let archive = dir.join("image.tar");
        // podman wants its run root under 50 characters: a short folder in /tmp.
        let storage = tempfile::Builder::new()
            .prefix("ga-podman.")
            .tempdir()
            .expect("temp dir for podman's storage");
        let mut build = command("scripts/image.sh");
        build
            .args(["--profile", "dev", "--archive"])
            .arg(&archive)
            .env("GA_PODMAN_ROOT", storage.path());
        let stdout = must(spawn_output(build, "scripts/image.sh"), "scripts/image.sh");
        drop(storage);
        assert_eq!(
            stdout.trim(),
            format!("localhost/garden-artifacts:{}", crate_version()),
            "the image's name and tag"
        );

        let oci = dir.join("oci");
        std::fs::create_dir_all(&oci).unwrap();
        let mut untar = command("tar");
        untar.arg("-xf").arg(&archive).arg("-C").arg(&oci);
        must(spawn_output(untar, "tar"), "unpacking the OCI archive");
        let index: Value =
            serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
        let manifests = index["manifests"].as_array().expect("index manifests");
        assert_eq!(manifests.len(), 1, "{index}");
        let manifest = json_blob(&oci, manifests[0]["digest"].as_str().unwrap());
        let config = json_blob(&oci, manifest["config"]["digest"].as_str().unwrap());

        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let mut files = BTreeMap::new();
        for layer in manifest["layers"].as_array().expect("layers") {
            let path = blob(&oci, layer["digest"].as_str().unwrap());
            let mut list = command("tar");
            list.arg("-tvf").arg(&path);
            for line in must(spawn_output(list, "tar"), "listing a layer").lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let name = fields.get(5).expect("tar -tv line").trim_end_matches('/');
                files.insert(
                    name.trim_start_matches("./").to_string(),
                    fields[0].to_string(),
                );
            }
            let mut unpack = command("tar");
            unpack.arg("-xf").arg(&path).arg("-C").arg(&rootfs);
            must(spawn_output(unpack, "tar"), "unpacking a layer");
        }
        let _ = std::fs::remove_dir_all(&oci);
        let _ = std::fs::remove_file(&archive);
        Image {
            config,
            files,
            rootfs,
        }
    })
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no image for {other}"),
    }
}

#[test]
fn image_runs_the_binary_as_nonroot_with_the_oci_labels() {
    let image = image();
    let config = &image.config;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], host_arch());
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "the chart's runAsUser");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/garden-artifacts"]));
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/gardenlinux/garden-artifacts"
    );
    assert_eq!(labels["org.opencontainers.image.version"], crate_version());
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        revision.as_str()
    );
}

#[test]
fn image_holds_the_binary_the_ca_bundle_and_nothing_to_run_a_shell_with() {
    let image = image();
    let paths: Vec<&str> = image.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "etc",
            "etc/group",
            "etc/passwd",
            "etc/ssl",
            "etc/ssl/certs",
            "etc/ssl/certs/ca-certificates.crt",
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/garden-artifacts",
        ],
        "the image's file system (no shell, no package manager, no libc)"
    );
    for (path, mode) in &image.files {
        let name = path.rsplit('/').next().unwrap();
        assert!(
            !["sh", "bash", "dash", "ash", "busybox"].contains(&name),
            "a shell in the image: {path}"
        );
        assert!(
            !mode.starts_with('l'),
            "{path} is a link ({mode}): nothing in the image needs one"
        );
    }
    assert_eq!(
        image.files["tmp"], "drwxrwxrwt",
        "/tmp is world-writable, sticky"
    );
    assert_eq!(
        image.files["usr/local/bin/garden-artifacts"], "-rwxr-xr-x",
        "the binary is executable and nobody's to change"
    );
    let bundle = std::fs::read_to_string(image.rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("the CA bundle");
    assert!(
        bundle.matches("-----BEGIN CERTIFICATE-----").count() > 50,
        "the CA bundle holds the system's roots"
    );
    let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");

    // Statically linked: FROM scratch has no loader and no libc.
    let binary = image.rootfs.join("usr/local/bin/garden-artifacts");
    let mut file = command("file");
    file.arg("-b").arg(&binary);
    let description = must(spawn_output(file, "file"), "file");
    assert!(
        description.contains("statically linked") || description.contains("static-pie linked"),
        "{description}"
    );
}

/// The chart's Deployment as `helm template` renders it with default values.
fn chart_documents(extra: &[&str]) -> Vec<Value> {
    let home = tempfile::tempdir().unwrap();
    let mut helm = command(&root().join("scripts/helm").to_string_lossy());
    helm.args([
        "template",
        "t",
        "charts/garden-artifacts",
        "--namespace",
        SYSTEM_NAMESPACE,
    ])
    .args(extra)
    .env("HELM_CONFIG_HOME", home.path().join("config"))
    .env("HELM_CACHE_HOME", home.path().join("cache"))
    .env("HELM_DATA_HOME", home.path().join("data"));
    let rendered = must(spawn_output(helm, "scripts/helm"), "helm template");
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&rendered) {
        let value = serde_yaml::Value::deserialize(doc).expect("helm renders YAML");
        if !value.is_null() {
            docs.push(serde_json::to_value(value).expect("JSON-compatible"));
        }
    }
    docs
}

#[test]
fn the_image_binary_runs_the_controller_with_the_charts_arguments() {
    let image = image();
    let binary = image.rootfs.join("usr/local/bin/garden-artifacts");
    let binary = binary.to_string_lossy().into_owned();
    let version = Command::new(&binary)
        .arg("--version")
        .env_clear()
        .output()
        .expect("the image's binary runs here");
    assert_eq!(
        text(&version.stdout).trim(),
        format!("garden-artifacts {}", crate_version())
    );

    // The container's arguments and environment, exactly as the chart renders them, but for
    // the metrics address: the harness gives each controller a loopback port of its own.
    let docs = chart_documents(&[]);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let image_ref = container["image"].as_str().unwrap();
    assert!(
        image_ref.ends_with(&format!(":{}", crate_version())),
        "the chart deploys the image of this version: {image_ref}"
    );
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "controller");
    let args: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--metrics-addr"))
        .collect();
    assert!(
        args.contains(&"--leader-elect"),
        "the chart's default elects a leader: {args:?}"
    );
    // The chart's environment as the kubelet would fill it in for a pod of this name.
    let pod_name = "garden-artifacts-image-test";
    let mut env = Vec::new();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("env name").to_string();
        let value = match (
            &var["value"],
            var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Value::String(value), _) => value.clone(),
            (_, Some("metadata.name")) => pod_name.to_string(),
            (_, Some("metadata.namespace")) => SYSTEM_NAMESPACE.to_string(),
            _ => panic!("an env var of the chart this test cannot fill in: {var}"),
        };
        env.push((name, value));
    }
    assert!(
        env.iter().any(|(name, _)| name == "POD_NAME"),
        "the chart names the pod for leader election: {env:?}"
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let mut scene = Scene::new(&["image-e2e"], Watch::AllNamespaces);
    scene.start_controller_binary("image", &binary, &args, &env);
    let ns = scene.ns().to_string();
    let repository = format!("{}/image/e2e", scene.registry.addr);
    let object = artifact_object(
        &ns,
        "from-the-image",
        &repository,
        &["v1"],
        "hello",
        json!({}),
    );
    scene.cluster.apply(&object.to_string());
    let ready = scene.wait_ready(&ns, "from-the-image");
    let digest = ready["status"]["digest"].as_str().expect("status.digest");
    assert_eq!(
        common::digest_of(&format!("{repository}:v1")).as_deref(),
        Some(digest),
        "the registry holds what the status says"
    );

    // It leads through the chart's Lease, under the pod name the chart gives it.
    let holder = wait_for(
        "the image's controller to hold the Lease",
        Duration::from_secs(30),
        || {
            let lease = scene
                .cluster
                .get(SYSTEM_NAMESPACE, "lease", "garden-artifacts")?;
            lease["spec"]["holderIdentity"]
                .as_str()
                .filter(|h| h.contains(pod_name))
                .map(str::to_string)
        },
    );
    assert!(holder.contains(pod_name));
    let metrics = scene.controller("image").metrics();
    assert!(metrics.contains("garden_artifacts"), "{metrics}");
}

// ---------------------------------------------------------------------------------------------
// The chart against the API server.

/// `kubectl apply --dry-run=server` of DOCS: the API server admits every object, and kubectl
/// validates each against the server's OpenAPI schemas first.
fn dry_run_output(scene: &Scene, docs: &[Value]) -> Output {
    let yaml: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("a document as YAML"))
        .collect();
    scene.cluster.kubectl_stdin(
        &["apply", "--dry-run=server", "--validate=true", "-f", "-"],
        &yaml.join("---\n"),
    )
}

fn dry_run(scene: &Scene, docs: &[Value]) -> String {
    must(
        dry_run_output(scene, docs),
        "kubectl apply --dry-run=server of the rendered chart",
    )
}

#[test]
fn rendered_chart_is_accepted_by_the_api_server() {
    let scene = Scene::new(&["chart-dry-run"], Watch::OwnNamespace);
    let ns = scene.ns().to_string();

    let defaults = chart_documents(&[]);
    let said = dry_run(&scene, &defaults);
    for kind in [
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "deployment.apps",
    ] {
        assert!(
            said.contains(&format!("{kind}/")),
            "the dry run did not cover a {kind}:\n{said}"
        );
    }

    // Every optional part switched on (the ServiceMonitor's CRD is not in this cluster: it
    // is left out; tests/chart.rs checks its shape).
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "watchNamespace: {ns}\n\
             registryCA:\n  secretName: registry-ca\n\
             registryQps: 2.5\nmaxSourceBytes: 53687091200\n\
             allowedSourceHosts: [downloads.example.com]\n\
             insecureRegistries: [\"registry.local:5000\"]\n\
             imagePullSecrets: [{{name: pull}}]\n\
             extraEnv: [{{name: RUST_LOG, value: debug}}]\n\
             podAnnotations: {{a: b}}\nnodeSelector: {{kubernetes.io/os: linux}}\n\
             tolerations: [{{key: k, operator: Exists, effect: NoSchedule}}]\n\
             serviceMonitor:\n  enabled: true\n"
        ),
    )
    .unwrap();
    let all: Vec<Value> = chart_documents(&["-f", values.to_str().unwrap()])
        .into_iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .collect();
    let said = dry_run(&scene, &all);
    assert!(said.contains("deployment.apps/"), "{said}");

    // `helm install` itself, against this API server: a typo in the values is refused before
    // anything is sent; the same install without it goes through (as a dry run).
    let home = tempfile::tempdir().unwrap();
    let install = |values: &Path| {
        let mut helm = command(&root().join("scripts/helm").to_string_lossy());
        helm.args([
            "install",
            "dry",
            "charts/garden-artifacts",
            "--dry-run",
            "--namespace",
        ])
        .arg(&ns)
        .arg("--kubeconfig")
        .arg(&scene.cluster.admin_kubeconfig)
        .arg("-f")
        .arg(values)
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"));
        spawn_output(helm, "scripts/helm")
    };
    std::fs::write(
        &values,
        "replicaCount: 1\nleaderElection:\n  enabled: false\n",
    )
    .unwrap();
    must(install(&values), "helm install --dry-run");
    std::fs::write(
        &values,
        "replicaCount: 1\nleaderElection:\n  enable: false\n",
    )
    .unwrap();
    let out = install(&values);
    assert!(
        !out.status.success()
            && text(&out.stderr).contains("Additional property enable is not allowed"),
        "helm install took a misspelt value: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The check can fail: a field the Deployment's schema does not have is refused.
    let mut broken = defaults.clone();
    let deployment = broken
        .iter_mut()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = json!("Always");
    let out = dry_run_output(&scene, &broken);
    assert!(
        !out.status.success() && text(&out.stderr).contains("imagePullPolice"),
        "a misspelt field passed validation: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
