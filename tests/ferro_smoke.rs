//! The ferro-oci-server harness works, and the server does what the interop tests rely on:
//! a manifest pushed with a `subject` is answered with `OCI-Subject` and listed by the
//! referrers API (also when filtered by artifactType). Spoken to with plain curl, so this test
//! checks the server and the harness, not our client.

mod common;

use std::path::Path;
use std::process::Command;

use common::ferro::Ferro;
use sha2::Digest as _;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

struct Response {
    status: u16,
    /// Header lines, names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// curl METHOD URL [--data-binary @body] [-H header]...
fn curl(method: &str, url: &str, body: Option<&[u8]>, headers: &[&str]) -> Response {
    let dir = tempfile::tempdir().unwrap();
    let header_file = dir.path().join("headers");
    let body_file = dir.path().join("body");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-X", method, "-o"])
        .arg(&body_file)
        .arg("-D")
        .arg(&header_file)
        .args(["-w", "%{http_code}"]);
    for h in headers {
        command.args(["-H", h]);
    }
    if let Some(bytes) = body {
        let request_body = dir.path().join("request");
        std::fs::write(&request_body, bytes).unwrap();
        command
            .arg("--data-binary")
            .arg(format!("@{}", request_body.display()));
    }
    let out = command.arg(url).output().expect("curl runs");
    assert!(
        out.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let headers = read_headers(&header_file);
    let body = std::fs::read(&body_file).unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}

fn read_headers(file: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn put_manifest(ferro: &Ferro, repository: &str, reference: &str, bytes: &[u8]) -> Response {
    let response = curl(
        "PUT",
        &format!("{}/v2/{repository}/manifests/{reference}", ferro.url()),
        Some(bytes),
        &[&format!("Content-Type: {MANIFEST}")],
    );
    assert_eq!(
        response.status,
        201,
        "PUT manifest {reference}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response
}

#[test]
fn a_manifest_with_a_subject_is_listed_by_the_referrers_api() {
    let ferro = Ferro::start();
    let repository = "gardenlinux/smoke";

    // A blob, monolithic (POST ?digest=).
    let layer = b"ID=gardenlinux\n";
    let layer_digest = sha256(layer);
    let blob = curl(
        "POST",
        &format!(
            "{}/v2/{repository}/blobs/uploads/?digest={layer_digest}",
            ferro.url()
        ),
        Some(layer),
        &["Content-Type: application/octet-stream"],
    );
    assert_eq!(blob.status, 201, "{}", String::from_utf8_lossy(&blob.body));

    // The artefact, by tag.
    let artefact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.gardenlinux.smoke",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{
            "mediaType": "text/plain",
            "digest": layer_digest,
            "size": layer.len(),
            "annotations": {"org.opencontainers.image.title": "smoke.release"},
        }],
    }))
    .unwrap();
    let artefact_digest = sha256(&artefact);
    let pushed = put_manifest(&ferro, repository, "v1", &artefact);
    assert_eq!(
        pushed.header("docker-content-digest"),
        Some(artefact_digest.as_str())
    );
    assert_eq!(pushed.header("oci-subject"), None);

    // A referrer of it, by digest.
    let signature = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2}],
        "subject": {"mediaType": MANIFEST, "digest": artefact_digest, "size": artefact.len()},
        "annotations": {"org.example.signed-by": "smoke"},
    }))
    .unwrap();
    let signature_digest = sha256(&signature);
    let pushed = put_manifest(&ferro, repository, &signature_digest, &signature);
    assert_eq!(pushed.header("oci-subject"), Some(artefact_digest.as_str()));

    // Listed, with the descriptor fields the spec asks for.
    let index = ferro.referrers(repository, &artefact_digest, None);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().expect("manifests array");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["digest"], signature_digest.as_str());
    assert_eq!(manifests[0]["mediaType"], MANIFEST);
    assert_eq!(manifests[0]["size"], signature.len());
    assert_eq!(
        manifests[0]["artifactType"],
        "application/vnd.example.signature"
    );
    assert_eq!(
        manifests[0]["annotations"]["org.example.signed-by"],
        "smoke"
    );

    // Filtered by artifactType: kept, or filtered out.
    let kept = ferro.referrers(
        repository,
        &artefact_digest,
        Some("application/vnd.example.signature"),
    );
    assert_eq!(kept["manifests"].as_array().unwrap().len(), 1, "{kept}");
    let other = ferro.referrers(
        repository,
        &artefact_digest,
        Some("application/vnd.example.sbom"),
    );
    assert_eq!(other["manifests"].as_array().unwrap().len(), 0, "{other}");

    // The artefact itself is served byte for byte, and the tag lists.
    let got = curl(
        "GET",
        &format!("{}/v2/{repository}/manifests/v1", ferro.url()),
        None,
        &[&format!("Accept: {MANIFEST}")],
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body, artefact);
    assert_eq!(got.header("content-type"), Some(MANIFEST));
    let tags = curl(
        "GET",
        &format!("{}/v2/{repository}/tags/list", ferro.url()),
        None,
        &[],
    );
    let tags: serde_json::Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

#[test]
fn two_servers_start_side_by_side() {
    // Parallel tests each get their own port and storage.
    let a = Ferro::start();
    let b = Ferro::start();
    assert_ne!(a.addr, b.addr);
    for ferro in [&a, &b] {
        let response = curl("GET", &format!("{}/v2/", ferro.url()), None, &[]);
        assert_eq!(response.status, 200, "{}", ferro.log());
    }
}
