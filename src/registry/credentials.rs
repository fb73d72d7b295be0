//! Registry credentials from docker-style config files (`~/.docker/config.json`, podman's
//! `auth.json`, a `kubernetes.io/dockerconfigjson` Secret) and credential helpers.
//!
//! A [`Credential`] never prints its secret: `Debug` redacts it, and nothing implements
//! `Display`, so it cannot slip into a log line or an error message by accident.

use crate::oci::RegistryId;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Where the client asks for the credential of a registry host (`host[:port]`).
pub trait CredentialSource: Send + Sync + 'static {
    /// May block (credential helpers are processes); the client calls it off the executor.
    fn lookup(&self, registry: &str) -> Result<Option<Credential>, String>;
}

/// Anonymous access everywhere.
pub struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn lookup(&self, _registry: &str) -> Result<Option<Credential>, String> {
        Ok(None)
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// One or more docker config files, consulted in order: the first that knows a host answers.
#[derive(Default, Clone)]
pub struct DockerConfig {
    files: Vec<(String, ConfigFile)>,
}

impl DockerConfig {
    /// Parses one config (`origin` names it in error messages, e.g. a file path or a Secret).
    pub fn parse(origin: &str, json: &[u8]) -> Result<Self, String> {
        let file: ConfigFile = serde_json::from_slice(json).map_err(|e| {
            format!(
                "{origin}: not a docker config JSON document: {}",
                without_values(&e)
            )
        })?;
        for (host, entry) in &file.auths {
            if let Some(auth) = &entry.auth {
                decode_auth(auth).map_err(|e| format!("{origin}: auths[{host:?}].auth: {e}"))?;
            }
        }
        Ok(Self {
            files: vec![(origin.to_string(), file)],
        })
    }

    /// These files, then `later`'s: for a host both know, these answer.
    pub fn followed_by(mut self, later: DockerConfig) -> Self {
        self.files.extend(later.files);
        self
    }

    /// `REGISTRY_AUTH_FILE` (podman, skopeo), then `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`. Missing files are fine: anonymous access.
    pub fn load_default() -> Result<Self, String> {
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
            paths.push(file.into());
        }
        match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => paths.push(Path::new(&dir).join("config.json")),
            None => {
                if let Some(home) = std::env::var_os("HOME") {
                    paths.push(Path::new(&home).join(".docker/config.json"));
                }
            }
        }
        let mut config = DockerConfig::default();
        for path in paths {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let parsed = Self::parse(&path.display().to_string(), &bytes)?;
                    config.files.extend(parsed.files);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(config)
    }
}

impl DockerConfig {
    /// Which credentials a request to `registry` carries, named by where they come from and
    /// never by their value: for a 401 or 403 to say what was tried.
    pub fn describe_for(&self, registry: &str) -> String {
        for (origin, file) in &self.files {
            if let Some(helper) = file.cred_helpers.get(registry) {
                return format!(
                    "the credential helper docker-credential-{helper} that {origin} names for {registry}"
                );
            }
            if file.auths.keys().any(|key| normalize_host(key) == registry) {
                return format!("the credentials for {registry} in {origin}");
            }
            if let Some(store) = &file.creds_store {
                return format!(
                    "the credential store docker-credential-{store} that {origin} names"
                );
            }
        }
        if self.files.is_empty() {
            "anonymous (no docker config file was found)".to_string()
        } else {
            let origins: Vec<&str> = self
                .files
                .iter()
                .map(|(origin, _)| origin.as_str())
                .collect();
            format!(
                "anonymous (no credentials for {registry} in {})",
                origins.join(", ")
            )
        }
    }
}

impl CredentialSource for DockerConfig {
    fn lookup(&self, registry: &str) -> Result<Option<Credential>, String> {
        // A key names the registry in any of its spellings (`https://index.docker.io/v1/` is
        // Docker Hub's); the spelling the reference used wins when both are there.
        let id = RegistryId::of(registry);
        let same = |key: &str| RegistryId::of(normalize_host(key)) == id;
        for (origin, file) in &self.files {
            let helper = file.cred_helpers.get(registry).or_else(|| {
                file.cred_helpers
                    .iter()
                    .find(|(key, _)| same(key))
                    .map(|(_, helper)| helper)
            });
            if let Some(helper) = helper {
                return run_helper(helper, registry);
            }
            let entry = file
                .auths
                .iter()
                .find(|(key, _)| normalize_host(key) == registry)
                .or_else(|| file.auths.iter().find(|(key, _)| same(key)))
                .map(|(_, entry)| entry);
            if let Some(entry) = entry {
                return credential_from_entry(entry)
                    .map_err(|e| format!("{origin}: auths[{registry:?}]: {e}"));
            }
            if let Some(store) = &file.creds_store {
                return run_helper(store, registry);
            }
        }
        Ok(None)
    }
}

/// A JSON error without the values it quotes: serde_json says `invalid type: string "<value>",
/// expected struct AuthEntry`, and in a docker config that value may be a credential (an `auths`
/// entry written as a bare base64 string, a token where an object belongs). Errors end up in
/// logs, events and status conditions, which more people read than the Secret.
fn without_values(e: &serde_json::Error) -> String {
    let at = format!("at line {} column {}", e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => {
            let message = e.to_string();
            match message.split_once(", expected ") {
                Some((_, expected)) => format!("a value of the wrong type, expected {expected}"),
                None if !message.contains('"') => message,
                None => format!("a value of the wrong type {at}"),
            }
        }
        serde_json::error::Category::Syntax => format!("invalid JSON {at}"),
        serde_json::error::Category::Eof => format!("the JSON ends early {at}"),
        serde_json::error::Category::Io => e.to_string(),
    }
}

/// `https://index.docker.io/v1/` and `registry.example.com` name hosts the same way.
fn normalize_host(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "auth is not base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8".to_string())?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| "auth is not base64 of user:password".to_string())?;
    Ok((user.to_string(), password.to_string()))
}

fn credential_from_entry(entry: &AuthEntry) -> Result<Option<Credential>, String> {
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(token.clone())));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let (username, password) = decode_auth(auth)?;
        return Ok(Some(Credential::Basic { username, password }));
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Some(Credential::Basic {
            username: username.clone(),
            password: password.clone(),
        })),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the host on stdin, as docker does.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(registry.as_bytes())
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    if !output.status.success() {
        // Helpers answer "credentials not found" on stdout with a failure status.
        let said = String::from_utf8_lossy(&output.stdout);
        if said.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "credential helper {program} failed with {}",
            output.status
        ));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|_| {
        format!("credential helper {program} answered something that is not its JSON")
    })?;
    Ok(Some(if answer.username == "<token>" {
        Credential::IdentityToken(answer.secret)
    } else {
        Credential::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hosts_written_as_urls_and_decodes_auth() {
        let json = br#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"YWxpY2U6czNjcjN0"},
                        "ghcr.io":{"identitytoken":"tok"}}}"#;
        let config = DockerConfig::parse("test", json).unwrap();
        assert_eq!(
            config.lookup("127.0.0.1:5000").unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: "s3cr3t".into()
            })
        );
        assert_eq!(
            config.lookup("ghcr.io").unwrap(),
            Some(Credential::IdentityToken("tok".into()))
        );
        assert_eq!(config.lookup("quay.io").unwrap(), None);
    }

    #[test]
    fn an_entry_serves_every_spelling_of_its_registry() {
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcjN0"},
                        "LOCALHOST:5000":{"identitytoken":"loop"}}}"#;
        let config = DockerConfig::parse("test", json).unwrap();
        let alice = Some(Credential::Basic {
            username: "alice".into(),
            password: "s3cr3t".into(),
        });
        assert_eq!(config.lookup("docker.io").unwrap(), alice);
        assert_eq!(config.lookup("registry-1.docker.io").unwrap(), alice);
        let token = Some(Credential::IdentityToken("loop".into()));
        assert_eq!(config.lookup("127.0.0.1:5000").unwrap(), token);
        assert_eq!(config.lookup("[::1]:5000").unwrap(), token);
        assert_eq!(config.lookup("127.0.0.1:5001").unwrap(), None);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::Basic {
            username: "alice".into(),
            password: "s3cr3t".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok3n".into())).contains("tok3n"));
    }

    #[test]
    fn a_config_of_the_wrong_shape_is_refused_without_echoing_its_values() {
        // Found by fuzz/fuzz_targets/docker_config.rs: an auths entry that is a bare string.
        for json in [
            &br#"{"auths":{"ghcr.io":"YWxpY2U6czNjcjN0LXZhbHVl"}}"#[..],
            br#"{"auths":{"ghcr.io":{"auth":["YWxpY2U6czNjcjN0LXZhbHVl"]}}}"#,
            br#"{"auths":["YWxpY2U6czNjcjN0LXZhbHVl"]}"#,
            br#"{"auths":{"ghcr.io":{"identitytoken":{"t":"YWxpY2U6czNjcjN0LXZhbHVl"}}}}"#,
            br#"{"credsStore":"YWxpY2U6czNjcjN0LXZhbHVl","auths":7}"#,
        ] {
            let err = DockerConfig::parse("secret ns/regcred", json)
                .err()
                .unwrap();
            assert!(err.contains("secret ns/regcred"), "{err}");
            assert!(!err.contains("YWxpY2U6czNjcjN0LXZhbHVl"), "{err}");
        }
        let err = DockerConfig::parse("s", br#"{"auths":{"h":"x"}}"#)
            .err()
            .unwrap();
        assert!(err.contains("expected struct AuthEntry"), "{err}");
    }

    #[test]
    fn a_broken_auth_field_is_refused_without_echoing_it() {
        let err = DockerConfig::parse(
            "secret ns/regcred",
            br#"{"auths":{"h:1":{"auth":"!!notbase64"}}}"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("secret ns/regcred"), "{err}");
        assert!(!err.contains("notbase64"), "{err}");
    }
}
