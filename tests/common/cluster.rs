//! A real Kubernetes control plane for end-to-end tests: etcd and kube-apiserver v1.20.2 started
//! by `scripts/dev-env.sh up` with a state dir and ports of their own, so it never meets a
//! developer's running environment or another test binary. One cluster per test binary,
//! started on first use; tests share it through namespaces of their own.
//!
//! The controller runs as a child process with the Helm chart's RBAC (its ServiceAccount,
//! (Cluster)Roles and bindings, applied from `helm template`), authenticated by a token from the
//! TokenRequest API, so it cannot do more than the chart allows.
//!
//! Teardown: the cluster's processes are daemons (own session), so nothing of the test
//! process' own exit would stop them. A reaper (`sh`, in a process group of its own, so a
//! Ctrl-C on the test does not reach it) reads a pipe that only this process holds open; when
//! this process ends, however it ends (normal exit, failed test, panic, SIGKILL), the pipe
//! closes and the reaper kills the test's children still listed in the state dir (controllers,
//! registries: the processes a test would stop on drop, had it not been killed) and runs
//! `dev-env.sh down --purge`. At a normal exit an `atexit` hook closes the pipe first and waits
//! for the reaper, so `cargo test` returns only after the cluster is gone.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Registry, free_port};

/// The release namespace of the chart, as in tests/chart.rs; the Lease lives here.
pub const SYSTEM_NAMESPACE: &str = "garden-artifacts";
const CRD_NAME: &str = "gardenartifacts.oci.gardenlinux.io";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dev_env_script() -> PathBuf {
    root().join("scripts/dev-env.sh")
}

pub struct Cluster {
    pub state_dir: PathBuf,
    /// system:masters, for the tests themselves.
    pub admin_kubeconfig: PathBuf,
    /// The chart's ServiceAccount, for the controller.
    pub controller_kubeconfig: PathBuf,
    pub server: String,
    pub service_account: String,
    kube_cache: PathBuf,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static REAPER: Mutex<Option<(Child, ChildStdin)>> = Mutex::new(None);

/// The cluster of this test binary, started on first use. A failed start fails every test
/// that asks for it, with the same message, without trying again.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("the test cluster could not be started:\n{e}"),
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn stop_cluster_at_exit() {
    let taken = match REAPER.lock() {
        Ok(mut reaper) => reaper.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some((mut child, stdin)) = taken {
        drop(stdin);
        let _ = child.wait();
    }
}

/// Starts the reaper for `state_dir` (see the module comment).
fn start_reaper(state_dir: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    const SCRIPT: &str = r#"
cat >/dev/null
for f in "$GA_STATE_DIR"/children/*.pid; do
  [ -f "$f" ] || continue
  { read -r pid; read -r needle; } <"$f" || continue
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"; then
    kill -9 "$pid" 2>/dev/null || true
  fi
done
exec "$1" down --purge
"#;
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "ga-e2e-reaper"])
        .arg(dev_env_script())
        .env("GA_STATE_DIR", state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the reaper: {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    *REAPER.lock().unwrap_or_else(|p| p.into_inner()) = Some((child, stdin));
    // SAFETY: registers a plain function with no captured state; it runs once at exit.
    let registered = unsafe { atexit(stop_cluster_at_exit) };
    if registered != 0 {
        return Err("atexit refused the teardown hook".into());
    }
    Ok(())
}

/// `dev-env.sh ARGS` for this cluster's state dir (never the developer's default one).
fn dev_env(state_dir: &Path, ports: &[(&str, u16)], args: &[&str]) -> Output {
    let mut command = Command::new(dev_env_script());
    command
        .args(args)
        .env("GA_STATE_DIR", state_dir)
        .env_remove("KUBECONFIG");
    for (var, port) in ports {
        command.env(var, port.to_string());
    }
    command.output().expect("scripts/dev-env.sh runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let started = Instant::now();
        let state_dir = tempfile::Builder::new()
            .prefix("ga-e2e-cluster.")
            .tempdir()
            .map_err(|e| format!("creating the state dir: {e}"))?
            .keep();
        for dir in ["controllers", "children"] {
            std::fs::create_dir_all(state_dir.join(dir)).map_err(|e| e.to_string())?;
        }
        start_reaper(&state_dir)?;

        let mut failures = String::new();
        let mut up = None;
        for attempt in 1..=3 {
            let ports = [
                ("GA_ETCD_PORT", free_port()),
                ("GA_ETCD_PEER_PORT", free_port()),
                ("GA_APISERVER_PORT", free_port()),
                ("GA_REGISTRY_PORT", free_port()),
            ];
            let out = dev_env(&state_dir, &ports, &["up"]);
            if out.status.success() {
                up = Some(ports);
                break;
            }
            // A port taken in between by someone else: stop what did start, try other ports.
            failures.push_str(&format!(
                "attempt {attempt}: dev-env.sh up failed:\n{}{}\n",
                text(&out.stdout),
                text(&out.stderr)
            ));
            dev_env(&state_dir, &[], &["down"]);
        }
        let Some(ports) = up else {
            return Err(failures);
        };
        let env_out = dev_env(&state_dir, &ports, &["env"]);
        if !env_out.status.success() {
            return Err(format!("dev-env.sh env: {}", text(&env_out.stderr)));
        }
        let exports = parse_exports(&text(&env_out.stdout));
        let get = |k: &str| {
            exports
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("dev-env.sh env printed no {k}"))
        };
        let admin_kubeconfig = PathBuf::from(get("KUBECONFIG")?);
        let server = get("GA_KUBE_APISERVER_URL")?;
        let ca_file = PathBuf::from(get("GA_KUBE_CA_FILE")?);

        let mut cluster = Cluster {
            controller_kubeconfig: state_dir.join("controller.kubeconfig"),
            kube_cache: state_dir.join("kube-cache"),
            state_dir,
            admin_kubeconfig,
            server,
            service_account: String::new(),
        };
        cluster.install_chart_rbac_and_crd()?;
        cluster.write_controller_kubeconfig(&ca_file)?;
        eprintln!(
            "[e2e] cluster up in {:.1}s: {} (state dir {})",
            started.elapsed().as_secs_f64(),
            cluster.server,
            cluster.state_dir.display()
        );
        Ok(cluster)
    }

    /// The CRD from the chart's crds/, and of `helm template` only what grants permissions:
    /// the ServiceAccount, (Cluster)Roles and their bindings. No Deployment: the controller
    /// runs here as a process.
    fn install_chart_rbac_and_crd(&mut self) -> Result<(), String> {
        let must = |out: Output, what: &str| -> Result<String, String> {
            if out.status.success() {
                Ok(text(&out.stdout))
            } else {
                Err(format!(
                    "{what} failed:\n{}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                ))
            }
        };
        must(
            self.kubectl(&["create", "namespace", SYSTEM_NAMESPACE]),
            "creating the release namespace",
        )?;
        let crds = root().join("charts/garden-artifacts/crds");
        must(
            self.kubectl(&["apply", "-f", &crds.to_string_lossy()]),
            "applying the CRD",
        )?;
        must(
            self.kubectl(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{CRD_NAME}"),
                "--timeout=60s",
            ]),
            "waiting for the CRD",
        )?;

        let helm_home = self.state_dir.join("helm");
        let rendered = Command::new(root().join("scripts/helm"))
            .args([
                "template",
                "t",
                "charts/garden-artifacts",
                "--namespace",
                SYSTEM_NAMESPACE,
            ])
            .current_dir(root())
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .output()
            .map_err(|e| format!("running scripts/helm: {e}"))?;
        let rendered = must(rendered, "scripts/helm template")?;
        const RBAC_KINDS: [&str; 5] = [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ];
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&rendered) {
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| e.to_string())?;
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind == "ServiceAccount" {
                self.service_account = value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            if RBAC_KINDS.contains(&kind) {
                docs.push(serde_yaml::to_string(&value).map_err(|e| e.to_string())?);
            }
        }
        if self.service_account.is_empty() {
            return Err(format!("the chart rendered no ServiceAccount:\n{rendered}"));
        }
        let out = self.kubectl_stdin(&["apply", "-f", "-"], &docs.join("---\n"));
        let applied = must(out, "applying the chart's RBAC")?;
        for kind in ["clusterrole", "clusterrolebinding", "role", "rolebinding"] {
            if !applied.contains(&format!("{kind}.rbac.authorization.k8s.io/")) {
                return Err(format!("the chart's RBAC has no {kind}:\n{applied}"));
            }
        }
        Ok(())
    }

    /// A kubeconfig with the API server and CA of the admin one and a ServiceAccount token.
    fn write_controller_kubeconfig(&self, ca_file: &Path) -> Result<(), String> {
        let sa = &self.service_account;
        let out = self.kubectl(&[
            "create",
            "token",
            sa,
            "-n",
            SYSTEM_NAMESPACE,
            "--duration=1h",
        ]);
        let token = if out.status.success() {
            text(&out.stdout).trim().to_string()
        } else {
            // Older kubectl: the TokenRequest API directly.
            let token_file = self.state_dir.join("pki/admin.token");
            let admin_token = std::fs::read_to_string(&token_file).map_err(|e| e.to_string())?;
            let url = format!(
                "{}/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts/{sa}/token",
                self.server
            );
            let curl = Command::new("curl")
                .args(["-fsS", "-X", "POST", "--cacert"])
                .arg(ca_file)
                .args([
                    "-H",
                    &format!("Authorization: Bearer {}", admin_token.trim()),
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#,
                    &url,
                ])
                .output()
                .map_err(|e| e.to_string())?;
            if !curl.status.success() {
                return Err(format!(
                    "no token for {sa}: kubectl create token: {}; TokenRequest: {}",
                    text(&out.stderr),
                    text(&curl.stderr)
                ));
            }
            let answer: Value = serde_json::from_slice(&curl.stdout).map_err(|e| e.to_string())?;
            answer["status"]["token"]
                .as_str()
                .ok_or("TokenRequest answered without a token")?
                .to_string()
        };
        if token.is_empty() {
            return Err("kubectl create token printed nothing".into());
        }
        use base64::Engine as _;
        let ca = std::fs::read(ca_file).map_err(|e| e.to_string())?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {sa}\n    namespace: {SYSTEM_NAMESPACE}\ncurrent-context: e2e\n",
            self.server,
            base64::engine::general_purpose::STANDARD.encode(ca)
        );
        write_private(&self.controller_kubeconfig, kubeconfig.as_bytes())?;

        // The controller's identity is the ServiceAccount, and it is no admin.
        let can = |args: &[&str]| {
            let mut all = vec!["--kubeconfig"];
            let path = self.controller_kubeconfig.to_string_lossy().into_owned();
            all.push(&path);
            all.extend_from_slice(args);
            text(&self.kubectl_raw(&all).stdout).trim().to_string()
        };
        let watch = can(&["auth", "can-i", "watch", CRD_NAME, "--all-namespaces"]);
        let create_secrets = can(&["auth", "can-i", "create", "secrets", "-n", "default"]);
        if watch != "yes" || create_secrets != "no" {
            return Err(format!(
                "the controller's kubeconfig has unexpected rights: watch gardenartifacts: {watch:?}, create secrets: {create_secrets:?}"
            ));
        }
        Ok(())
    }

    fn kubectl_raw(&self, args: &[&str]) -> Output {
        self.kubectl_raw_stdin(args, None)
    }

    fn kubectl_raw_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut command = Command::new("kubectl");
        command
            .arg("--cache-dir")
            .arg(&self.kube_cache)
            .arg("--request-timeout=30s")
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl runs");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// `kubectl ARGS` as admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin_opt(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        self.kubectl_stdin_opt(args, Some(input))
    }

    fn kubectl_stdin_opt(&self, args: &[&str], input: Option<&str>) -> Output {
        let path = self.admin_kubeconfig.to_string_lossy().into_owned();
        let mut all = vec!["--kubeconfig", path.as_str()];
        all.extend_from_slice(args);
        self.kubectl_raw_stdin(&all, input)
    }

    /// `kubectl ARGS` as admin; its stdout, or a failed test with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `kubectl apply -f -` of YAML text.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}{}\n--- manifest ---\n{yaml}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// One object as JSON; `None` when it does not exist.
    pub fn get(&self, namespace: &str, resource: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", resource, name, "-n", namespace, "-o", "json"]);
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"));
        }
        let err = text(&out.stderr);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "kubectl get {resource} {name} -n {namespace}: {err}"
        );
        None
    }

    /// A GardenArtifact that must exist.
    pub fn artifact(&self, namespace: &str, name: &str) -> Value {
        self.get(namespace, "gardenartifact", name)
            .unwrap_or_else(|| panic!("GardenArtifact {namespace}/{name} does not exist"))
    }

    /// The kube-apiserver's pid from dev-env.sh's pid file, when that process lives and is a
    /// kube-apiserver (a reused pid is not).
    pub fn apiserver_pid(&self) -> Option<u32> {
        let pidfile = self.state_dir.join("pids/kube-apiserver.pid");
        let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (!matches!(state, 'Z' | 'X') && text(&cmdline).contains("kube-apiserver")).then_some(pid)
    }

    /// Whether the API server answers `/readyz` with ok (admin token, the cluster's CA).
    pub fn apiserver_ready(&self) -> bool {
        let pki = self.state_dir.join("pki");
        let Ok(token) = std::fs::read_to_string(pki.join("admin.token")) else {
            return false;
        };
        Command::new("curl")
            .args(["-fsS", "--max-time", "2", "--cacert"])
            .arg(pki.join("ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .arg(format!("{}/readyz", self.server))
            .output()
            .is_ok_and(|o| o.status.success() && text(&o.stdout).starts_with("ok"))
    }

    /// Stops the kube-apiserver as `dev-env.sh down` would (SIGTERM, SIGKILL after 10 s), and
    /// only it: etcd and its data stay. Returns once the process is gone; true when it took
    /// the SIGKILL (a 1.20 API server stops listening at once on SIGTERM, but waits for open
    /// requests such as watches before it exits).
    pub fn stop_apiserver(&self) -> bool {
        let pid = self
            .apiserver_pid()
            .expect("the kube-apiserver of the cluster runs");
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.apiserver_pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.apiserver_pid().is_none() {
            return false;
        }
        signal("-KILL");
        wait_for(
            "the kube-apiserver to exit after SIGKILL",
            Duration::from_secs(10),
            || self.apiserver_pid().is_none().then_some(()),
        );
        true
    }

    /// Starts the kube-apiserver again, with the flags, ports and certificates it had:
    /// `dev-env.sh up` is idempotent and starts only what does not run (here, only the API
    /// server), then waits for `/readyz`.
    pub fn start_apiserver(&self) {
        let out = dev_env(&self.state_dir, &[], &["up"]);
        assert!(
            out.status.success(),
            "dev-env.sh up (restarting the kube-apiserver) failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        wait_for(
            "the restarted kube-apiserver to be ready",
            Duration::from_secs(60),
            || self.apiserver_ready().then_some(()),
        );
    }

    /// Every events.k8s.io/v1 Event of a namespace.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let out = self.kubectl_ok(&["get", "events.events.k8s.io", "-n", namespace, "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

fn write_private(path: &Path, content: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(content).map_err(|e| e.to_string())
}

/// `export K=V` lines as printed by `dev-env.sh env` (bash `%q` quoting of plain paths).
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v)
                .replace("\\ ", " ");
            (k.to_string(), v)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Conditions and waiting.

/// The condition `type_` of an object's status.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `status` of condition `type_`, e.g. "True".
pub fn condition_status(object: &Value, type_: &str) -> Option<String> {
    condition(object, type_).and_then(|c| c["status"].as_str().map(str::to_string))
}

/// Polls `check` until it returns `Some`, or fails the test after `timeout`, naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Lists a child process for the reaper: killed at exit if `/proc/PID/cmdline` still contains
/// `needle` (so a reused pid is never hit).
fn register_child(pidfile: &Path, pid: u32, needle: &str) {
    std::fs::write(pidfile, format!("{pid}\n{needle}\n")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The controller process.

/// `garden-artifacts controller` as a child process with the ServiceAccount's kubeconfig.
pub struct Controller {
    pub name: String,
    pub metrics_addr: String,
    pub log: PathBuf,
    child: Option<Child>,
    pidfile: PathBuf,
}

fn strip_ansi(text: &str) -> String {
    let re = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    re.replace_all(text, "").into_owned()
}

impl Controller {
    /// Starts `garden-artifacts controller --metrics-addr 127.0.0.1:<free> --log-format text
    /// ARGS` (no `--log-format text` when ARGS choose one) and waits until it serves /metrics. `name` must be unique in the test binary: it
    /// names the log and the pid file (which the reaper reads).
    /// A controller that is meant to be the only writer of its test: `--leader-elect=false`
    /// unless ARGS say otherwise, so that a restarted controller need not wait for the Lease of
    /// the one it replaces, nor tests in parallel for each other's.
    pub fn start(cluster: &Cluster, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut args = args.to_vec();
        if !args.iter().any(|a| a.starts_with("--leader-elect")) {
            args.push("--leader-elect=false");
        }
        Self::start_as_given(cluster, name, &args, env)
    }

    /// As [`Controller::start`], with the controller's own defaults for what ARGS do not say
    /// (leader election on, its Lease in the kubeconfig's namespace, the chart's release
    /// namespace, as a pod of the chart would have it).
    pub fn start_as_given(
        cluster: &Cluster,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_binary(cluster, name, &super::binary(), args, env)
    }

    /// [`Controller::start_as_given`] with another garden-artifacts executable (e.g. the one
    /// of the image).
    pub fn start_binary(
        cluster: &Cluster,
        name: &str,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = cluster.state_dir.join("controllers");
        let log = dir.join(format!("{name}.log"));
        let pidfile = cluster.state_dir.join(format!("children/{name}.pid"));
        for _ in 0..5 {
            let port = free_port();
            let metrics_addr = format!("127.0.0.1:{port}");
            let log_file = std::fs::File::create(&log).unwrap();
            let mut command = Command::new(binary);
            command.args(["controller", "--metrics-addr", &metrics_addr]);
            if !args
                .iter()
                .any(|a| *a == "--log-format" || a.starts_with("--log-format="))
            {
                command.args(["--log-format", "text"]);
            }
            command
                .args(args)
                .env("KUBECONFIG", &cluster.controller_kubeconfig)
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .env_remove("POD_NAMESPACE")
                .env_remove("POD_NAME")
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env_remove("KUBERNETES_SERVICE_PORT")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file);
            // To debug a test: its controllers log at this level.
            if let Ok(filter) = std::env::var("GA_TEST_CONTROLLER_LOG") {
                command.env("RUST_LOG", filter);
            }
            for (k, v) in env {
                command.env(k, v);
            }
            let child = command.spawn().expect("the controller starts");
            register_child(&pidfile, child.id(), binary);
            let mut controller = Controller {
                name: name.to_string(),
                metrics_addr,
                log: log.clone(),
                child: Some(child),
                pidfile: pidfile.clone(),
            };
            // The "serving /metrics" line, in the text or the JSON log format.
            let needles = [
                format!("addr=127.0.0.1:{port}"),
                format!("\"addr\":\"127.0.0.1:{port}\""),
            ];
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut listening = false;
            while Instant::now() < deadline {
                if !controller.running() {
                    break;
                }
                let said = controller.log_text();
                if needles.iter().any(|needle| said.contains(needle))
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    listening = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if listening {
                return controller;
            }
            let said = controller.log_text();
            controller.kill();
            // The metrics server does not log a failed bind; a port taken in between looks
            // like silence. Another port, then.
            if said.contains("controller stopped") || said.contains("Error") {
                panic!("controller {name} exited at start:\n{said}");
            }
        }
        panic!("controller {name} did not serve /metrics in 5 attempts");
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }

    /// The whole log, without colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "5"])
            .arg(format!("http://{}/metrics", self.metrics_addr))
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "GET /metrics of controller {}: {}",
            self.name,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The sum of all samples of `metric` (every label set), 0 when absent.
    pub fn metric(&self, metric: &str) -> f64 {
        sum_metric(&self.metrics(), metric)
    }
}

/// Sums the samples of a metric in Prometheus text format, over all label sets.
pub fn sum_metric(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let bare = name.split('{').next()?;
            (bare == metric)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// One test's world.

/// Tests whose controller watches all namespaces would reconcile the objects of every other
/// test; they hold this lock for writing, namespace-scoped tests for reading.
static ALL_NAMESPACES: RwLock<()> = RwLock::new(());

pub enum Watch {
    /// The test's controllers watch only its namespace (`--namespace`); runs in parallel.
    OwnNamespace,
    /// The test's controller watches all namespaces; runs alone.
    AllNamespaces,
}

enum Guard {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// Namespaces, a registry and controllers of one test. On drop: when the test failed, the
/// controllers' log tails, the objects and events of its namespaces and the registry's last
/// requests on stderr; always, the controllers stopped and the test's objects removed (their
/// finalizers dropped), so that a later all-namespaces controller does not find them. A test
/// that passed still fails when the API server refused its controller anything (RBAC).
pub struct Scene {
    pub cluster: &'static Cluster,
    pub namespaces: Vec<String>,
    pub registry: Registry,
    pub controllers: Vec<Controller>,
    registry_pidfile: PathBuf,
    /// Periods (UTC, `YYYY-MM-DDTHH:MM:SS`, inclusive) whose refusals are not the chart's.
    excused_refusals: Vec<(String, String)>,
    _guard: Guard,
}

impl Scene {
    pub fn new(namespaces: &[&str], watch: Watch) -> Self {
        Self::with_registry(namespaces, watch, Registry::start)
    }

    /// With the registry `start` returns, started once the cluster is up.
    pub fn with_registry(
        namespaces: &[&str],
        watch: Watch,
        start: impl FnOnce() -> Registry,
    ) -> Self {
        let cluster = cluster();
        let registry = start();
        // The registry stops on drop; should this process be killed, the reaper stops it.
        // Listed before waiting for the lock, which may take a while.
        let registry_pidfile = cluster
            .state_dir
            .join(format!("children/{}.registry.pid", namespaces[0]));
        let config = registry.dir.path().join("config.yml");
        register_child(
            &registry_pidfile,
            registry.child.id(),
            &config.to_string_lossy(),
        );
        let guard = match watch {
            Watch::OwnNamespace => {
                Guard::Shared(ALL_NAMESPACES.read().unwrap_or_else(|p| p.into_inner()))
            }
            Watch::AllNamespaces => {
                Guard::Exclusive(ALL_NAMESPACES.write().unwrap_or_else(|p| p.into_inner()))
            }
        };
        for ns in namespaces {
            cluster.kubectl_ok(&["create", "namespace", ns]);
        }
        Scene {
            registry_pidfile,
            cluster,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            registry,
            controllers: Vec::new(),
            excused_refusals: Vec::new(),
            _guard: guard,
        }
    }

    /// The first namespace.
    pub fn ns(&self) -> &str {
        &self.namespaces[0]
    }

    /// Starts a controller; `name` finds it again.
    pub fn start_controller(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let mut controller =
            Controller::start(self.cluster, &format!("{}.{name}", self.ns()), args, env);
        controller.name = name.to_string();
        self.controllers.push(controller);
    }

    /// Starts a controller from another garden-artifacts executable.
    pub fn start_controller_binary(
        &mut self,
        name: &str,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        let mut controller = Controller::start_binary(
            self.cluster,
            &format!("{}.{name}", self.ns()),
            binary,
            args,
            env,
        );
        controller.name = name.to_string();
        self.controllers.push(controller);
    }

    /// Starts a controller with its own defaults for what `args` do not say (leader election).
    pub fn start_controller_as_given(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let mut controller =
            Controller::start_as_given(self.cluster, &format!("{}.{name}", self.ns()), args, env);
        controller.name = name.to_string();
        self.controllers.push(controller);
    }

    /// A controller watching only the scene's first namespace.
    pub fn start_namespaced_controller(&mut self, name: &str) {
        let ns = self.ns().to_string();
        self.start_controller(name, &["--namespace", &ns], &[]);
    }

    pub fn controller(&self, name: &str) -> &Controller {
        self.controllers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no controller {name}"))
    }

    pub fn controller_mut(&mut self, name: &str) -> &mut Controller {
        self.controllers
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no controller {name}"))
    }

    /// Waits until condition `type_` of the object has `status`; returns the object.
    pub fn wait_condition(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        wait_for(
            &format!("{namespace}/{name} to have {type_}={status}"),
            timeout,
            || {
                let object = self.cluster.get(namespace, "gardenartifact", name)?;
                (condition_status(&object, type_).as_deref() == Some(status)).then_some(object)
            },
        )
    }

    pub fn wait_ready(&self, namespace: &str, name: &str) -> Value {
        self.wait_condition(namespace, name, "Ready", "True", Duration::from_secs(60))
    }

    fn dump(&self) {
        let mut out = String::from("\n======== e2e diagnostics ========\n");
        for c in &self.controllers {
            out.push_str(&format!(
                "--- controller {} (log tail, {}) ---\n{}\n",
                c.name,
                c.log.display(),
                c.log_tail(80)
            ));
        }
        for ns in &self.namespaces {
            let ga = self.cluster.kubectl(&["get", "ga", "-n", ns, "-o", "yaml"]);
            out.push_str(&format!(
                "--- kubectl get ga -n {ns} -o yaml ---\n{}{}\n",
                text(&ga.stdout),
                text(&ga.stderr)
            ));
            let ev = self.cluster.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                ns,
                "-o",
                "custom-columns=TIME:.eventTime,TYPE:.type,REASON:.reason,OBJECT:.regarding.name,NOTE:.note",
            ]);
            out.push_str(&format!(
                "--- events in {ns} ---\n{}{}\n",
                text(&ev.stdout),
                text(&ev.stderr)
            ));
        }
        let requests = self.registry.requests();
        let tail: Vec<String> = requests
            .iter()
            .skip(requests.len().saturating_sub(40))
            .map(|r| format!("{} {} {}", r.method, r.uri, r.status))
            .collect();
        out.push_str(&format!(
            "--- registry {} (last {} of {} requests) ---\n{}\n",
            self.registry.addr,
            tail.len(),
            requests.len(),
            tail.join("\n")
        ));
        eprintln!("{out}================================");
    }

    fn clean_up(&mut self) {
        for c in &mut self.controllers {
            c.kill();
        }
        for ns in &self.namespaces {
            let names = self.cluster.kubectl(&["get", "ga", "-n", ns, "-o", "name"]);
            for name in text(&names.stdout).lines().filter(|l| !l.is_empty()) {
                let _ = self.cluster.kubectl(&[
                    "patch",
                    name,
                    "-n",
                    ns,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
            let _ = self
                .cluster
                .kubectl(&["delete", "ga", "--all", "-n", ns, "--wait=false"]);
            let _ = self.cluster.kubectl(&[
                "delete",
                "gardenmirrors",
                "--all",
                "-n",
                ns,
                "--wait=false",
            ]);
        }
    }
}

impl Scene {
    /// Refusals logged between `from` and `to` (whole seconds, both included) are no missing
    /// permission: a restarted kube-apiserver may refuse everyone but system:masters until its
    /// RBAC cache has been filled (seen once for ~14 s after a restart, on a loaded machine).
    pub fn excuse_refusals_between(
        &mut self,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
    ) {
        let second = |t: std::time::SystemTime| {
            k8s_openapi::jiff::Timestamp::try_from(t)
                .expect("a time after 1970")
                .strftime("%Y-%m-%dT%H:%M:%S")
                .to_string()
        };
        self.excused_refusals.push((second(from), second(to)));
    }

    /// Log lines where the API server refused the controller: the chart's RBAC lacks a
    /// permission. Some refusals (an event) only reach the log; this catches them too.
    fn forbidden(&self) -> Vec<String> {
        // Log lines start with an RFC 3339 UTC timestamp; its first 19 bytes compare as text.
        let excused = |line: &str| {
            line.get(..19).is_some_and(|at| {
                self.excused_refusals
                    .iter()
                    .any(|(from, to)| from.as_str() <= at && at <= to.as_str())
            })
        };
        self.controllers
            .iter()
            .flat_map(|c| {
                c.log_text()
                    .lines()
                    .filter(|l| l.contains("is forbidden: User") && !excused(l))
                    .map(|l| format!("{}: {l}", c.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let forbidden = if failed { Vec::new() } else { self.forbidden() };
        if failed || !forbidden.is_empty() {
            self.dump();
        }
        self.clean_up();
        let _ = std::fs::remove_file(&self.registry_pidfile);
        if !forbidden.is_empty() {
            panic!(
                "the API server refused the controller (a permission missing in the chart's RBAC):\n{}",
                forbidden.join("\n")
            );
        }
    }
}

/// A GardenArtifact with one inline text file, as JSON (which kubectl takes as YAML). The
/// fields of `spec` are set on top.
pub fn artifact_object(
    ns: &str,
    name: &str,
    repository: &str,
    tags: &[&str],
    content: &str,
    spec: Value,
) -> Value {
    let mut object = json!({
        "apiVersion": "oci.gardenlinux.io/v1alpha1",
        "kind": "GardenArtifact",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "repository": repository,
            "tags": tags,
            "source": {
                "files": [{
                    "name": format!("{name}.txt"),
                    "content": content,
                    "mediaType": "text/plain",
                }],
            },
        },
    });
    for (key, value) in spec.as_object().expect("spec is an object") {
        object["spec"][key] = value.clone();
    }
    object
}
