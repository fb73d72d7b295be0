//! Transport and credentials, against real Distribution registries: HTTPS with a private CA
//! (`--ca-file`), plain HTTP only for loopback or `--insecure-registry`, basic auth with
//! credentials from `REGISTRY_AUTH_FILE` and from a docker credential helper, bearer tokens
//! from a token server written here (RS256 JWTs signed with openssl, whose certificate the
//! registry trusts), and the password never showing in any output or log.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::faults::Distribution;
use common::*;
use tempfile::TempDir;

const USER: &str = "gardener";
const PASSWORD: &str = "Pw-7q2XkT9vLm4z";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate it signed (`server.crt`, `server.key`) for `host`
/// and 127.0.0.1, in `dir`.
fn make_ca_and_server_cert(dir: &Path, host: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=garden-artifacts test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={host}"),
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=DNS:{host},IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// A host name that does not look like loopback (so garden-artifacts speaks HTTPS to it) but
/// resolves to a loopback address (so the test server stays on loopback): this machine's own
/// name, which Debian's /etc/hosts maps to 127.0.1.1 (here: 127.0.0.1). `None` when it does
/// not resolve to loopback.
fn loopback_host_name() -> Option<(String, IpAddr)> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()?
        .trim()
        .to_string();
    if name.is_empty() || name == "localhost" || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let ip = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() && ip.is_loopback())?;
    Some((name, ip))
}

fn object(name: &str, repository: &str, content: &str) -> String {
    format!(
        r#"
apiVersion: oci.gardenlinux.io/v1alpha1
kind: GardenArtifact
metadata: {{name: {name}}}
spec: {{repository: {repository}, tags: [v1], source: {{files: [{{name: app.release, content: "{content}"}}]}}}}
"#
    )
}

fn all_output(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn result_of(out: &Output) -> serde_json::Value {
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", all_output(out)));
    results[0].clone()
}

/// HTTPS with a private CA: without the CA the run fails on the certificate and not one HTTP
/// request reaches the registry; with `--ca-file` it converges, read back by skopeo over
/// verified TLS. And a plain-HTTP registry under that non-loopback name needs
/// `--insecure-registry`: without it the client insists on TLS.
///
/// Runs on every machine: under `localhost`, named with `--secure-registry` (how a registry
/// reached through a port-forward is named), and also under this machine's own name when it
/// resolves to loopback (no flag needed: the client speaks TLS to every name that is not
/// loopback).
#[test]
fn https_with_a_private_ca_and_plain_http_only_when_named_insecure() {
    private_ca_and_plain_http(
        "localhost",
        IpAddr::from([127, 0, 0, 1]),
        Naming::SecureFlag,
    );
    match loopback_host_name() {
        Some((host, ip)) => private_ca_and_plain_http(&host, ip, Naming::NotLoopback),
        None => println!(
            "this machine's host name does not resolve to loopback: ran under localhost only"
        ),
    }
}

/// How the registry under test is told to be spoken to over TLS.
#[derive(Clone, Copy, PartialEq)]
enum Naming {
    /// A loopback name, with `--secure-registry`.
    SecureFlag,
    /// A name that is not loopback: TLS without any flag.
    NotLoopback,
}

fn private_ca_and_plain_http(host: &str, ip: IpAddr, naming: Naming) {
    let host = host.to_string();
    let certs = tempfile::tempdir().unwrap();
    make_ca_and_server_cert(certs.path(), &host);
    let cert = certs.path().join("server.crt");
    let key = certs.path().join("server.key");
    let ca = certs.path().join("ca.pem");
    let registry = Distribution::start_on(
        &ip.to_string(),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ),
        "",
    );
    let port = registry.addr.rsplit(':').next().unwrap();
    let name = format!("{host}:{port}");
    let dir = tempfile::tempdir().unwrap();
    let file = write_manifest(
        dir.path(),
        "tls.yaml",
        &object("tls", &format!("{name}/tls/app"), "ID=tls"),
    );
    let file = file.to_str().unwrap();
    // Every run against the TLS registry names it secure when its name is loopback.
    let tls_run = |args: &[&str]| {
        let mut args = args.to_vec();
        if naming == Naming::SecureFlag {
            args.extend(["--secure-registry", &name]);
        }
        garden_artifacts(&args, &[])
    };

    // Without the CA: the certificate is refused, nothing is sent.
    let out = tls_run(&["apply", "-f", file, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let tls_error = result_of(&out)["error"].as_str().unwrap().to_string();
    let lower = tls_error.to_lowercase();
    assert!(
        lower.contains("certificate")
            && (lower.contains("unknownissuer") || lower.contains("unknown issuer")),
        "{tls_error}"
    );
    assert!(
        tls_error.contains(&format!("https://{name}/v2/")),
        "{tls_error}"
    );
    assert!(registry.requests().is_empty(), "{:#?}", registry.requests());

    // A CA file that is not PEM is refused before anything happens.
    let out = tls_run(&["apply", "-f", file, "--ca-file", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(stderr(&out).contains("--ca-file"), "{}", all_output(&out));

    // With it: converges, then is unchanged.
    let ca_arg = ca.to_str().unwrap();
    let out = tls_run(&["apply", "-f", file, "--ca-file", ca_arg, "-o", "json"]);
    assert!(out.status.success(), "{}", all_output(&out));
    let result = result_of(&out);
    assert_eq!(result["result"], "created");
    let cert_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, cert_dir.path().join("ca.crt")).unwrap();
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(cert_dir.path())
        .arg(format!("docker://{name}/tls/app:v1"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "skopeo over TLS: {}", stderr(&raw));
    use sha2::Digest;
    assert_eq!(
        result["digest"].as_str().unwrap(),
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw.stdout)))
    );
    let out = tls_run(&["apply", "-f", file, "--ca-file", ca_arg]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        stdout(&out).trim_end().ends_with("unchanged"),
        "{}",
        stdout(&out)
    );
    assert!(
        registry.requests().iter().all(|r| r.status != 400),
        "{:#?}",
        registry.requests()
    );

    // Plain HTTP under a name that is not loopback: only with --insecure-registry.
    let plain = Distribution::start_on(&ip.to_string(), "", "");
    let port = plain.addr.rsplit(':').next().unwrap();
    let plain_name = format!("{host}:{port}");
    let file = write_manifest(
        dir.path(),
        "plain.yaml",
        &object("plain", &format!("{plain_name}/plain/app"), "ID=plain"),
    );
    let file = file.to_str().unwrap();
    let mut insisting_on_tls = vec!["apply", "-f", file, "-o", "json"];
    if naming == Naming::SecureFlag {
        insisting_on_tls.extend(["--secure-registry", &plain_name]);
    }
    let out = garden_artifacts(&insisting_on_tls, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let error = result_of(&out)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!("https://{plain_name}/v2/")),
        "{error}"
    );
    assert!(
        plain.requests().is_empty(),
        "no request went out in plain text: {:#?}",
        plain.requests()
    );
    let out = garden_artifacts(
        &[
            "apply",
            "-f",
            file,
            "--insecure-registry",
            &plain_name,
            "-o",
            "json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(result_of(&out)["result"], "created");
    assert!(
        digest_of(&format!("{plain_name}/plain/app:v1")).is_some(),
        "skopeo reads it over plain HTTP"
    );
    println!(
        "TLS registry {name} ({ip})\nwithout the CA: {tls_error}\nplain HTTP without --insecure-registry: {error}"
    );
}

/// podman's auth.json (`REGISTRY_AUTH_FILE`): converges. Without credentials, or with a wrong
/// password: exit 1 with the registry's 401.
#[test]
fn basic_auth_with_credentials_from_registry_auth_file() {
    let registry = Registry::start_with_basic_auth(USER, PASSWORD);
    let r = &registry.addr;
    let dir = tempfile::tempdir().unwrap();
    let file = write_manifest(
        dir.path(),
        "a.yaml",
        &object("basic", &format!("{r}/basic/app"), "ID=basic"),
    );
    let file = file.to_str().unwrap();

    let out = garden_artifacts(&["apply", "-f", file, "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let error = result_of(&out)["error"].as_str().unwrap().to_string();
    assert!(
        error.ends_with("/v2/basic/app/manifests/v1: 401"),
        "{error}"
    );

    let wrong = dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(
            r#"{{"auths": {{"{r}": {{"auth": "{}"}}}}}}"#,
            b64(&format!("{USER}:not-{PASSWORD}"))
        ),
    )
    .unwrap();
    let out = garden_artifacts(
        &["apply", "-f", file],
        &[("REGISTRY_AUTH_FILE", wrong.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(
        stdout(&out).contains("/v2/basic/app/manifests/v1: 401"),
        "{}",
        all_output(&out)
    );
    assert!(!all_output(&out).contains(PASSWORD), "{}", all_output(&out));

    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"{r}": {{"auth": "{}"}}}}}}"#,
            b64(&format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    let before = registry.requests().len();
    let out = garden_artifacts(
        &["apply", "-f", file, "-o", "json"],
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(result_of(&out)["result"], "created");
    let run = registry.requests().split_off(before);
    // One challenge, then every request authorised.
    assert_eq!(
        run.iter().filter(|r| r.status == 401).count(),
        1,
        "{run:#?}"
    );
    assert!(
        run.iter().any(|r| r.method == "PUT" && r.status == 201),
        "{run:#?}"
    );
}

/// A docker credential helper named in `credHelpers` of `$DOCKER_CONFIG/config.json`, found on
/// PATH, asked with the registry host on stdin.
#[test]
fn basic_auth_with_credentials_from_a_credential_helper() {
    let registry = Registry::start_with_basic_auth(USER, PASSWORD);
    let r = &registry.addr;
    let dir = tempfile::tempdir().unwrap();
    let (config, path, asked) = credential_helper(dir.path(), r);
    let file = write_manifest(
        dir.path(),
        "h.yaml",
        &object("helper", &format!("{r}/helper/app"), "ID=helper"),
    );
    let out = garden_artifacts(
        &["apply", "-f", file.to_str().unwrap(), "-o", "json"],
        &[("DOCKER_CONFIG", config.to_str().unwrap()), ("PATH", &path)],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(result_of(&out)["result"], "created");
    let asked = std::fs::read_to_string(asked).unwrap_or_default();
    assert!(!asked.is_empty(), "the helper was never asked");
    assert!(asked.lines().all(|l| l == r), "{asked:?}");
    assert_eq!(
        skopeo_digest_with_creds(&format!("{r}/helper/app:v1")),
        result_of(&out)["digest"].as_str().unwrap()
    );
}

/// The digest of what skopeo reads with the test's credentials.
fn skopeo_digest_with_creds(reference: &str) -> String {
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "skopeo: {}", stderr(&raw));
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw.stdout)))
}

/// Writes `docker-credential-testhelper` into `dir/bin` and a docker config naming it for
/// `registry`. Returns the config folder, a PATH with the helper first, and the file the
/// helper notes each host it was asked for in.
fn credential_helper(dir: &Path, registry: &str) -> (PathBuf, String, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = dir.join("helper-asked.txt");
    let helper = bin.join("docker-credential-testhelper");
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
[ "$1" = get ] || exit 1
read -r host || true
echo "$host" >> '{}'
if [ "$host" = '{registry}' ]; then
  printf '{{"ServerURL":"%s","Username":"%s","Secret":"%s"}}\n' "$host" '{USER}' '{PASSWORD}'
else
  echo "credentials not found in native keychain"
  exit 1
fi
"#,
            asked.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("docker");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        format!(r#"{{"credHelpers": {{"{registry}": "testhelper"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (config, path, asked)
}

/// What the token server was asked.
#[derive(Clone, Debug)]
struct TokenRequest {
    authorized: bool,
    service: Option<String>,
    scopes: Vec<String>,
}

/// A token server in the style of docker's `auth.token` realm: `GET /token?service=..&scope=..`
/// with basic auth; answers an RS256 JWT, signed by openssl with a key whose self-signed
/// certificate the registry trusts (`rootcertbundle`) and carries in the `x5c` header.
struct TokenServer {
    realm: String,
    dir: TempDir,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    issued: Arc<Mutex<Vec<String>>>,
}

const ISSUER: &str = "garden-artifacts-test-issuer";
const SERVICE: &str = "garden-artifacts-test-registry";

impl TokenServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "signer.key",
                "-out",
                "signer.crt",
                "-days",
                "2",
                "-subj",
                "/CN=garden-artifacts token signer",
            ],
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-in",
                "signer.crt",
                "-outform",
                "DER",
                "-out",
                "signer.der",
            ],
        );
        let der = std::fs::read(dir.path().join("signer.der")).unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
        let issued: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let key = dir.path().join("signer.key");
            let (requests, issued) = (requests.clone(), issued.clone());
            std::thread::spawn(move || {
                for connection in listener.incoming().flatten() {
                    let _ = answer_token_request(connection, &key, &x5c, &requests, &issued);
                }
            });
        }
        TokenServer {
            realm,
            dir,
            requests,
            issued,
        }
    }

    fn auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.dir.path().join("signer.crt").display()
        )
    }
}

fn answer_token_request(
    connection: TcpStream,
    key: &Path,
    x5c: &str,
    requests: &Mutex<Vec<TokenRequest>>,
    issued: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(connection.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let expected = format!("Basic {}", b64(&format!("{USER}:{PASSWORD}")));
    let authorized = authorization.as_deref() == Some(expected.as_str());
    let request = TokenRequest {
        authorized,
        service: pairs
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone()),
        scopes: pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    requests.lock().unwrap().push(request.clone());
    let mut writer = connection;
    if !authorized {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(
            writer,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    // Every scope asked for is granted: `repository:NAME:ACTIONS`.
    let access: Vec<serde_json::Value> = request
        .scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
            }))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", issued.lock().unwrap().len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64url(&signature));
    issued.lock().unwrap().push(token.clone());
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        writer,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// Bearer tokens: the registry challenges, the client asks the token server with basic auth
/// for exactly the scope each request needs, and the registry accepts the signed token.
/// Anonymous: the token server refuses and the run says so.
#[test]
fn bearer_tokens_from_a_token_server_the_registry_trusts() {
    let tokens = TokenServer::start();
    let registry = Distribution::start("", &tokens.auth_config());
    let r = &registry.addr;
    let dir = tempfile::tempdir().unwrap();
    let file = write_manifest(
        dir.path(),
        "t.yaml",
        &object("bearer", &format!("{r}/bearer/app"), "ID=bearer"),
    );
    let file = file.to_str().unwrap();

    let out = garden_artifacts(&["apply", "-f", file, "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let error = result_of(&out)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!(
            "authentication with {r} failed: token endpoint {}",
            tokens.realm
        )) && error.contains("401"),
        "{error}"
    );
    assert!(registry.requests().iter().all(|r| r.status == 401));

    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(r#"{{"auths": {{"{r}": {{"username": "{USER}", "password": "{PASSWORD}"}}}}}}"#),
    )
    .unwrap();
    tokens.requests.lock().unwrap().clear();
    let before = registry.requests().len();
    let out = garden_artifacts(
        &["apply", "-f", file, "-o", "json"],
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    let result = result_of(&out);
    assert_eq!(result["result"], "created");
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(asked.iter().all(|t| t.authorized), "{asked:#?}");
    assert!(
        asked.iter().all(|t| t.service.as_deref() == Some(SERVICE)),
        "{asked:#?}"
    );
    let scopes: Vec<&str> = asked
        .iter()
        .flat_map(|t| t.scopes.iter().map(String::as_str))
        .collect();
    assert!(scopes.contains(&"repository:bearer/app:pull"), "{scopes:?}");
    assert!(
        scopes.contains(&"repository:bearer/app:pull,push"),
        "{scopes:?}"
    );
    let run = registry.requests().split_off(before);
    assert!(
        run.iter()
            .any(|r| r.method == "PUT" && r.uri.contains("/manifests/v1") && r.status == 201),
        "{run:#?}"
    );

    // Read back by skopeo, which does its own token dance.
    assert_eq!(
        skopeo_digest_with_creds(&format!("{r}/bearer/app:v1")),
        result["digest"].as_str().unwrap()
    );
}

/// Every verb, with basic auth and with bearer tokens, as text, as JSON, and with
/// `RUST_LOG=trace`: neither the password, nor `user:password` in base64 (the Basic header),
/// nor the password in base64, nor any token the token server issued shows anywhere.
#[test]
fn credentials_never_appear_in_output_or_logs() {
    let basic = Registry::start_with_basic_auth(USER, PASSWORD);
    let tokens = TokenServer::start();
    let bearer = Distribution::start("", &tokens.auth_config());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.release"), "ID=notes\n").unwrap();
    let (helper_config, path, _) = credential_helper(dir.path(), &basic.addr);
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}, "{}": {{"username": "{USER}", "password": "{PASSWORD}"}}}}}}"#,
            basic.addr,
            b64(&format!("{USER}:{PASSWORD}")),
            bearer.addr
        ),
    )
    .unwrap();
    let auth = auth.to_str().unwrap();
    let pulled = dir.path().join("pulled");
    let pulled = pulled.to_str().unwrap();
    let notes = dir.path().join("notes.release");
    let notes = notes.to_str().unwrap();

    let mut outputs: Vec<(String, Output)> = Vec::new();
    for registry in [basic.addr.as_str(), bearer.addr.as_str()] {
        let file = write_manifest(
            dir.path(),
            "leak.yaml",
            &object("leak", &format!("{registry}/leak/app"), "ID=leak"),
        );
        let file = file.to_str().unwrap();
        let reference = format!("{registry}/leak/app:v1");
        let pushed = format!("{registry}/leak/pushed:v1");
        let runs: Vec<(Vec<&str>, bool)> = vec![
            (vec!["apply", "-f", file], false),
            (vec!["apply", "-f", file, "-o", "json"], true),
            (vec!["apply", "-f", file, "--dry-run", "-o", "json"], true),
            (vec!["push", &pushed, notes], true),
            (vec!["push", &pushed, notes, "-o", "json"], true),
            (vec!["pull", &reference, "-o", pulled], true),
            (
                vec!["pull", &pushed, "-o", pulled, "--format", "json"],
                true,
            ),
            (vec!["discover", &reference], true),
            (vec!["discover", &reference, "--format", "json"], true),
        ];
        for (args, trace_too) in runs {
            let levels: &[Option<&str>] = if trace_too {
                &[None, Some("trace")]
            } else {
                &[None]
            };
            for level in levels {
                let mut env = vec![("REGISTRY_AUTH_FILE", auth)];
                if let Some(level) = level {
                    env.push(("RUST_LOG", level));
                }
                let out = garden_artifacts(&args, &env);
                assert!(
                    out.status.success(),
                    "{args:?} {level:?}: {}",
                    all_output(&out)
                );
                outputs.push((format!("{args:?} RUST_LOG={level:?}"), out));
            }
        }
        // Failures too: a wrong password, with everything logged.
        let wrong = dir.path().join("wrong.json");
        std::fs::write(
            &wrong,
            format!(
                r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
                b64(&format!("{USER}:{PASSWORD}-but-wrong"))
            ),
        )
        .unwrap();
        let out = garden_artifacts(
            &["apply", "-f", file, "-o", "json"],
            &[
                ("REGISTRY_AUTH_FILE", wrong.to_str().unwrap()),
                ("RUST_LOG", "trace"),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
        outputs.push((format!("wrong password on {registry}"), out));
    }
    // The credential helper, traced.
    let file = write_manifest(
        dir.path(),
        "helper.yaml",
        &object(
            "helper",
            &format!("{}/leak/helper", basic.addr),
            "ID=helper",
        ),
    );
    let out = garden_artifacts(
        &["apply", "-f", file.to_str().unwrap(), "-o", "json"],
        &[
            ("DOCKER_CONFIG", helper_config.to_str().unwrap()),
            ("PATH", &path),
            ("RUST_LOG", "trace"),
        ],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    outputs.push(("credential helper".into(), out));

    let issued = tokens.issued.lock().unwrap().clone();
    assert!(
        !issued.is_empty(),
        "no token was issued: the bearer runs prove nothing"
    );
    let mut secrets = vec![
        ("the password".to_string(), PASSWORD.to_string()),
        (
            "user:password in base64".to_string(),
            b64(&format!("{USER}:{PASSWORD}")),
        ),
        ("the password in base64".to_string(), b64(PASSWORD)),
    ];
    for token in &issued {
        // A token's signature is what makes it a credential.
        let signature = token.rsplit('.').next().unwrap().to_string();
        secrets.push(("a bearer token".to_string(), signature));
    }
    let mut traced_bytes = 0;
    for (what, out) in &outputs {
        let text = all_output(out);
        if what.contains("trace") {
            traced_bytes += text.len();
        }
        for (name, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{name} appears in the output of {what}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret.as_str()))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert!(
        traced_bytes > 10_000,
        "RUST_LOG=trace logged next to nothing ({traced_bytes} bytes)"
    );
    println!(
        "{} runs, {} bytes of trace output, {} tokens issued; no secret in any of them",
        outputs.len(),
        traced_bytes,
        issued.len()
    );
}
