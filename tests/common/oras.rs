//! Independent clients for the client-verb tests: the ORAS Python SDK (`oras` from PyPI,
//! installed by scripts/install-test-deps.sh) to push and pull, and curl to put blobs and
//! hand-written manifests (fallback-tag referrers, indexes, broken manifests) straight into a
//! registry.

use std::path::Path;
use std::process::{Command, Stdio};

use sha2::Digest;

use super::{Registry, require};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn require_oras_sdk() {
    require("python3");
    let ok = Command::new("python3")
        .args(["-c", "import oras.client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the ORAS Python SDK is not installed for python3: run scripts/install-test-deps.sh"
    );
}

/// Runs a Python snippet with the ORAS SDK; `args` arrive as `sys.argv[1:]`. Panics with the
/// snippet's stderr when it fails; returns its stdout.
fn python(cwd: &Path, script: &str, args: &[&str]) -> String {
    require_oras_sdk();
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python (ORAS SDK) failed:\n{script}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `OrasClient(insecure=True).push(...)` of `files` (names relative to `dir`, each optionally
/// `name:media/type`) with manifest annotations.
pub fn oras_push(reference: &str, dir: &Path, files: &[&str], annotations: &[(&str, &str)]) {
    let files = serde_json::to_string(files).unwrap();
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let annotations = serde_json::Value::Object(annotations).to_string();
    python(
        dir,
        r#"
import json, sys
import oras.client
client = oras.client.OrasClient(insecure=True)
response = client.push(
    target=sys.argv[1],
    files=json.loads(sys.argv[2]),
    manifest_annotations=json.loads(sys.argv[3]) or None,
    disable_path_validation=True,
)
assert response.status_code == 201, response.status_code
"#,
        &[reference, &files, &annotations],
    );
}

/// `OrasClient(insecure=True).pull(target=..., outdir=...)`: the paths it wrote.
pub fn oras_pull(reference: &str, outdir: &Path) -> Vec<String> {
    let out = python(
        outdir,
        r#"
import json, sys
import oras.client
client = oras.client.OrasClient(insecure=True)
print(json.dumps(client.pull(target=sys.argv[1], outdir=sys.argv[2])))
"#,
        &[reference, outdir.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn curl(args: &[&str], body: Option<&[u8]>) -> (u16, String) {
    require("curl");
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{location}",
        ])
        .args(args);
    let dir = tempfile::tempdir().unwrap();
    if let Some(body) = body {
        let file = dir.path().join("body");
        std::fs::write(&file, body).unwrap();
        command
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
    }
    let out = command.output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, location) = text.split_once(' ').unwrap_or((&text, ""));
    (status.parse().unwrap(), location.trim().to_string())
}

/// Uploads a blob by curl (POST, then a monolithic PUT) to the registry at `addr`; its digest.
pub fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let base = format!("http://{addr}");
    let (status, location) = curl(
        &["-X", "POST", &format!("{base}/v2/{repo}/blobs/uploads/")],
        None,
    );
    assert_eq!(status, 202, "POST upload for {repo}");
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let (status, _) = curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{location}{separator}digest={digest}"),
        ],
        Some(bytes),
    );
    assert_eq!(status, 201, "PUT blob {digest} into {repo}");
    digest
}

/// PUTs manifest bytes by curl under `reference` (a tag or the digest); the digest.
pub fn put_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let (status, _) = curl(
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
        ],
        Some(bytes),
    );
    assert_eq!(status, 201, "PUT manifest {repo}:{reference}");
    sha256(bytes)
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": sha256(bytes),
        "size": bytes.len(),
    })
}

/// Overwrites a stored blob's bytes on disk, behind the registry's back: it serves what is
/// stored without checking, which is how a corrupted blob reaches a client.
pub fn corrupt_blob(registry: &Registry, digest: &str, bytes: &[u8]) {
    let hex = digest.trim_start_matches("sha256:");
    let data = registry
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    assert!(data.is_file(), "{} is not stored", data.display());
    std::fs::write(data, bytes).unwrap();
}
