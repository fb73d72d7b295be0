//! Docker configs (a file, or a `kubernetes.io/dockerconfigjson` Secret written by anyone with
//! access to the namespace): parsing and lookups never panic, and an error never repeats a
//! credential, because errors end up in logs, events and status conditions.
#![no_main]

use garden_artifacts::registry::{Credential, CredentialSource, DockerConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Every string value under `auths` (the keys are host names, not secrets).
fn secrets(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| secrets(v, out)),
        Value::Object(map) => map.values().for_each(|v| secrets(v, out)),
        _ => {}
    }
}

/// `hosts` are the keys under `auths`: an error may name its entry's host, so a secret that
/// also occurs in some host name proves nothing when the error contains it.
fn check(error: &str, secrets: &[String], hosts: &[String]) {
    for secret in secrets {
        let in_a_host_name = hosts.iter().any(|host| host.contains(secret.as_str()));
        // Short strings match by accident ("a" is in every message).
        if secret.len() >= 6 && !in_a_host_name {
            assert!(
                !error.contains(secret.as_str()),
                "the error repeats a credential: {error}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let value = serde_json::from_slice::<Value>(data).ok();
    let mut found = Vec::new();
    if let Some(auths) = value.as_ref().and_then(|v| v.get("auths")) {
        secrets(auths, &mut found);
    }
    let mut hosts: Vec<String> = value
        .as_ref()
        .and_then(|v| v.get("auths"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let config = match DockerConfig::parse("secret ns/regcred", data) {
        Ok(config) => config,
        Err(e) => {
            check(&e, &found, &hosts);
            return;
        }
    };
    // Credential helpers are processes: leave them out of the loop.
    let runs_helpers = value
        .as_ref()
        .is_some_and(|v| v.get("credHelpers").is_some() || v.get("credsStore").is_some());
    if runs_helpers {
        return;
    }
    let auth_hosts = hosts.clone();
    hosts.push("registry.example.com".into());
    for host in &hosts {
        for candidate in [
            host.as_str(),
            host.trim_start_matches("https://")
                .trim_start_matches("http://"),
            host.split('/').next().unwrap_or_default(),
        ] {
            match config.lookup(candidate) {
                Ok(Some(credential)) => {
                    // Debug shows the user name and never the secret.
                    let shown = format!("{credential:?}");
                    let expected = match &credential {
                        Credential::Basic { username, .. } => {
                            format!("Basic {{ username: {username:?}, password: \"<redacted>\" }}")
                        }
                        Credential::IdentityToken(_) => "IdentityToken(<redacted>)".to_string(),
                    };
                    assert_eq!(shown, expected);
                }
                Ok(None) => {}
                Err(e) => check(&e, &found, &auth_hosts),
            }
        }
    }
});
