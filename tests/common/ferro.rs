//! ferro-oci-server: a second real registry, one WITH the OCI 1.1 referrers API
//! (`GET /v2/<name>/referrers/<digest>`, `OCI-Subject` on a manifest PUT with a subject).
//! Built once per machine from crates.io by scripts/lib/ferro.sh (`ensure_ferro`); what it does
//! and does not do is written down in tests/REGISTRIES.md. It has no access log (its log only
//! says that it started), so unlike `Registry` there is no `requests()`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

use super::{free_port, require, wait_until_listening};

/// The ferro-oci-server binary: `GA_FERRO_BIN` when set, otherwise what `ensure_ferro` prints
/// (the cached build, built first when missing: 1-2 minutes once per machine, flock-guarded so
/// parallel tests build it once). Panics, never skips, when it cannot be had.
pub fn ferro_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GA_FERRO_BIN").filter(|v| !v.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "GA_FERRO_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/ferro.sh");
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"set -euo pipefail; source "$1"; ensure_ferro"#)
            .arg("ensure_ferro")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().unwrap_or("").trim().to_string();
        assert!(
            out.status.success() && !path.is_empty(),
            "could not get ferro-oci-server (scripts/lib/ferro.sh: cargo install --locked \
             ferro-oci-server into the cache; run scripts/install-test-deps.sh, or set \
             GA_FERRO_BIN). Exit {}.\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(path)
    })
}

/// A ferro-oci-server on a free loopback port, blobs and metadata in its own temporary
/// folder; stopped on drop.
pub struct Ferro {
    /// `127.0.0.1:PORT`, as a registry host in references (`{addr}/repo:tag`).
    pub addr: String,
    child: Child,
    dir: TempDir,
    log: PathBuf,
}

impl Ferro {
    pub fn start() -> Self {
        let bin = ferro_binary();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ferro.log");
        for _ in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(bin)
                // Its default listen address is 0.0.0.0:8080: always set it.
                .env("FERRO_OCI_LISTEN", format!("127.0.0.1:{port}"))
                .env("FERRO_OCI_STORAGE_DIR", dir.path().join("storage"))
                // The readiness line below is an info line without colour codes.
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("ferro-oci-server starts");
            // A port taken in between makes it exit with "Address already in use": retry.
            let needle = format!("listening addr=127.0.0.1:{port}");
            if wait_until_listening(&mut child, port, &needle, "ferro-oci-server", &log) {
                return Ferro {
                    addr: format!("127.0.0.1:{port}"),
                    child,
                    dir,
                    log,
                };
            }
        }
        panic!(
            "ferro-oci-server could not get a free port in 5 attempts; its last log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server logged (start-up lines and errors only: it has no access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /v2/<repository>/referrers/<digest>[?artifactType=T]`, read with curl: the image
    /// index the server answers with (its `manifests` are the referrers).
    pub fn referrers(
        &self,
        repository: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> serde_json::Value {
        require("curl");
        let mut url = format!("{}/v2/{repository}/referrers/{digest}", self.url());
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.push_str(t);
        }
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", &url])
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "GET {url} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e})"))
    }
}

impl Drop for Ferro {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
