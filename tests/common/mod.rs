//! The test harness: real servers on loopback, started per test and stopped on drop.
//! Nothing here is mocked: the Distribution registry from Debian, skopeo as an independent
//! reader, Python's http.server for URL sources.
#![allow(dead_code)]

pub mod cluster;
pub mod faults;
pub mod ferro;
pub mod oras;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BINARY: &str = env!("CARGO_BIN_EXE_garden-artifacts");

/// The binary the CLI tests run: `GARDEN_ARTIFACTS_BIN` when set (a copy taken right after
/// the build, for a target directory that other checkouts build into as well), else cargo's.
pub fn binary() -> String {
    std::env::var("GARDEN_ARTIFACTS_BIN").unwrap_or_else(|_| BINARY.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until our own child says it listens and the port answers. Checking the child's log,
/// not only the port, matters: tests run in parallel, and a port picked by `free_port` may be
/// taken by another test's server in between. `false`: the child exited (port taken).
fn wait_until_listening(
    child: &mut Child,
    port: u16,
    needle: &str,
    what: &str,
    log: &Path,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if said.contains(needle) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not listen on 127.0.0.1:{port}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not installed: run scripts/install-test-deps.sh"
    );
}

/// A Distribution registry (`docker-registry`, Debian) with its own storage and access log.
pub struct Registry {
    pub addr: String,
    child: Child,
    dir: TempDir,
    log: PathBuf,
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub status: u16,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with_auth(None)
    }

    /// With htpasswd basic auth for one user.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_with_auth(Some((user, password)))
    }

    fn start_with_auth(auth: Option<(&str, &str)>) -> Self {
        require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let auth_section = match auth {
            Some((user, password)) => {
                require("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd runs");
                assert!(out.status.success());
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: garden-artifacts-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_section}",
                dir.path().join("data").display()
            );
            let config_file = dir.path().join("config.yml");
            std::fs::write(&config_file, config).unwrap();
            let log = dir.path().join("registry.log");
            let log_file = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_file)
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("docker-registry starts");
            let needle = format!("listening on 127.0.0.1:{port}");
            if wait_until_listening(&mut child, port, &needle, "docker-registry", &log) {
                return Registry {
                    addr: format!("127.0.0.1:{port}"),
                    child,
                    dir,
                    log,
                };
            }
        }
        panic!("docker-registry could not get a free port in 5 attempts");
    }

    /// Every request the registry answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        // Access log lines: 127.0.0.1 - - [date] "HEAD /v2/a/manifests/t HTTP/1.1" 200 ...
        let re = regex::Regex::new(r#""([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3})"#).unwrap();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| re.captures(line))
            .map(|c| Request {
                method: c[1].to_string(),
                uri: c[2].to_string(),
                status: c[3].parse().unwrap(),
            })
            .collect()
    }

    /// Every request the registry answered so far, in order, with the second it was logged
    /// at (seconds since the epoch; the access log has no finer time).
    pub fn timed_requests(&self) -> Vec<(i64, Request)> {
        // 127.0.0.1 - - [30/Nov/2026:19:40:00 +0000] "HEAD /v2/a/manifests/t HTTP/1.1" 200 ...
        let re =
            regex::Regex::new(r#"\[([^\]]+)\] "([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3})"#).unwrap();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| re.captures(line))
            .map(|c| {
                let at = k8s_openapi::jiff::Timestamp::strptime("%d/%b/%Y:%H:%M:%S %z", &c[1])
                    .unwrap_or_else(|e| panic!("an access log time, not {:?}: {e}", &c[1]));
                let request = Request {
                    method: c[2].to_string(),
                    uri: c[3].to_string(),
                    status: c[4].parse().unwrap(),
                };
                (at.as_second(), request)
            })
            .collect()
    }

    /// Requests that change the registry.
    pub fn writes(requests: &[Request]) -> Vec<Request> {
        requests
            .iter()
            .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
            .cloned()
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's http.server over a folder, for `url` sources.
pub struct FileServer {
    pub base_url: String,
    pub dir: TempDir,
    child: Child,
}

impl FileServer {
    pub fn start() -> Self {
        require("python3");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(".server.log");
        for _ in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("python3")
                .args(["-u", "-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .arg("--directory")
                .arg(dir.path())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("python3 starts");
            let needle = format!("port {port}");
            if wait_until_listening(&mut child, port, &needle, "python3 -m http.server", &log) {
                return FileServer {
                    base_url: format!("http://127.0.0.1:{port}"),
                    dir,
                    child,
                };
            }
        }
        panic!("python3 -m http.server could not get a free port in 5 attempts");
    }

    pub fn put(&self, name: &str, content: &[u8]) -> String {
        std::fs::write(self.dir.path().join(name), content).unwrap();
        format!("{}/{name}", self.base_url)
    }

    /// Every request the server answered so far, from its log (`"HEAD /a.raw HTTP/1.1" 200`).
    pub fn requests(&self) -> Vec<Request> {
        let re = regex::Regex::new(r#""([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3})"#).unwrap();
        let text = std::fs::read_to_string(self.dir.path().join(".server.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| re.captures(line))
            .map(|c| Request {
                method: c[1].to_string(),
                uri: c[2].to_string(),
                status: c[3].parse().unwrap(),
            })
            .collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `garden-artifacts ARGS` with an empty docker config (anonymous) unless `env` says otherwise.
pub fn garden_artifacts(args: &[&str], env: &[(&str, &str)]) -> Output {
    let empty_config = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("DOCKER_CONFIG", empty_config.path())
        .env_remove("REGISTRY_AUTH_FILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("garden-artifacts runs")
}

/// Runs a verb that must succeed; its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = garden_artifacts(args, &[]);
    assert!(
        out.status.success(),
        "garden-artifacts {args:?} failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs a verb that must fail with `code`; its stderr.
pub fn run_fails(args: &[&str], code: i32) -> String {
    let out = garden_artifacts(args, &[]);
    assert_eq!(
        out.status.code(),
        Some(code),
        "garden-artifacts {args:?}:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `skopeo inspect --raw`: the manifest as the registry serves it, read by another client.
pub fn skopeo_raw(reference: &str) -> Option<Vec<u8>> {
    require("skopeo");
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ])
        .output()
        .expect("skopeo runs");
    out.status.success().then_some(out.stdout)
}

pub fn skopeo_json(reference: &str) -> serde_json::Value {
    let raw = skopeo_raw(reference).unwrap_or_else(|| panic!("skopeo cannot read {reference}"));
    serde_json::from_slice(&raw).unwrap()
}

/// The digest a tag resolves to, read by skopeo.
pub fn digest_of(reference: &str) -> Option<String> {
    skopeo_raw(reference).map(|raw| {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(raw)))
    })
}

/// The fallback index of `subject` in `repository` (`sha256-<hex>`), `None` when absent.
pub fn fallback_index(repository: &str, subject: &str) -> Option<serde_json::Value> {
    let (host, path) = repository.split_once('/').unwrap();
    let tag = subject.replacen(':', "-", 1);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{host}/v2/{path}/manifests/{tag}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
    match code {
        "200" => Some(
            serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{repository}:{tag}: {e}: {body}")),
        ),
        "404" => None,
        other => panic!("GET {repository}:{tag}: HTTP {other}: {body}"),
    }
}

/// The digests the fallback index lists, in order (duplicates kept).
pub fn listed_digests(index: Option<&serde_json::Value>) -> Vec<String> {
    index
        .and_then(|i| i["manifests"].as_array())
        .into_iter()
        .flatten()
        .map(|m| m["digest"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// [`examples_for`], once the example's container images are in `registry`: what applying the
/// whole folder needs, since the release example publishes them from there (`scripts/run.sh`
/// pushes them the same way).
pub fn examples_with_containers_for(registry: &Registry) -> TempDir {
    push_example_containers(&registry.addr);
    examples_for(registry)
}

/// Copies `examples/` into a temporary folder with the registry address replaced.
pub fn examples_for(registry: &Registry) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .as_path(),
        dir.path(),
        &|text| text.replace("127.0.0.1:5000", &registry.addr),
    );
    dir
}

/// `examples/containers/build.sh --push ADDR` with the binary under test: podman builds the
/// example's linux/amd64 and linux/arm64 images, garden-artifacts pushes them to `addr`.
pub fn push_example_containers(addr: &str) {
    require("podman");
    let empty_config = tempfile::tempdir().unwrap();
    let out =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/containers/build.sh"))
            .args(["--push", addr])
            .env("GARDEN_ARTIFACTS", binary())
            .env("DOCKER_CONFIG", empty_config.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .expect("examples/containers/build.sh runs");
    assert!(
        out.status.success(),
        "examples/containers/build.sh --push {addr}:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

fn copy_tree(from: &Path, to: &Path, rewrite: &dyn Fn(&str) -> String) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, rewrite);
        } else if entry.path().extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, rewrite(&text)).unwrap();
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Writes a manifest file into `dir`.
pub fn write_manifest(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}
