//! Authentication: the scheme a registry's 401 challenge asks for, credentials looked up once
//! per registry, and bearer tokens cached per registry and scope.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::client::RegistryClient;
use super::credentials::Credential;
use super::error::Error;
use crate::http_client::describe_transport;
use crate::oci::Repository;

const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub(super) enum AuthScheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

pub(super) struct CachedToken {
    value: String,
    expires: Instant,
}

/// The access a request needs; it becomes the bearer token scope.
#[derive(Clone, Debug)]
pub(super) enum Access<'a> {
    Pull(&'a Repository),
    Push(&'a Repository),
    /// Push to the first, pull from the second (cross-repository mount).
    PushMount(&'a Repository, &'a Repository),
}

impl Access<'_> {
    fn scope(&self) -> String {
        match self {
            Access::Pull(r) => format!("repository:{}:pull", r.name()),
            Access::Push(r) => format!("repository:{}:pull,push", r.name()),
            Access::PushMount(to, from) => {
                format!(
                    "repository:{}:pull,push repository:{}:pull",
                    to.name(),
                    from.name()
                )
            }
        }
    }
}

impl RegistryClient {
    async fn credential(&self, registry: &str) -> Result<Option<Credential>, Error> {
        if let Some(known) = self
            .resolved_credentials
            .lock()
            .expect("not poisoned")
            .get(registry)
        {
            return Ok(known.clone());
        }
        let source = Arc::clone(&self.credentials);
        let host = registry.to_string();
        let found = tokio::task::spawn_blocking(move || source.lookup(&host))
            .await
            .map_err(|e| Error::Auth {
                registry: registry.into(),
                detail: e.to_string(),
            })?
            .map_err(|detail| Error::Auth {
                registry: registry.into(),
                detail,
            })?;
        self.resolved_credentials
            .lock()
            .expect("not poisoned")
            .insert(registry.to_string(), found.clone());
        Ok(found)
    }

    /// The `Authorization` value for a request, if the registry is known to want one.
    pub(super) async fn authorization(
        &self,
        registry: &str,
        access: &Access<'_>,
    ) -> Result<Option<HeaderValue>, Error> {
        let scheme = self
            .schemes
            .lock()
            .expect("not poisoned")
            .get(registry)
            .cloned();
        match scheme {
            None => Ok(None),
            Some(AuthScheme::Basic) => match self.credential(registry).await? {
                Some(Credential::Basic { username, password }) => {
                    Ok(Some(basic_header(&username, &password)))
                }
                Some(Credential::IdentityToken(_)) => Err(Error::Auth {
                    registry: registry.into(),
                    detail:
                        "the registry asks for basic auth but only an identity token is configured"
                            .into(),
                }),
                None => Ok(None),
            },
            Some(AuthScheme::Bearer { realm, service }) => {
                let scope = access.scope();
                let key = (registry.to_string(), scope.clone());
                if let Some(token) = self.tokens.lock().expect("not poisoned").get(&key)
                    && token.expires > Instant::now()
                {
                    return Ok(Some(bearer_header(&token.value)));
                }
                let token = self
                    .fetch_token(registry, &realm, service.as_deref(), &scope)
                    .await?;
                let value = bearer_header(&token.value);
                self.tokens.lock().expect("not poisoned").insert(key, token);
                Ok(Some(value))
            }
        }
    }

    /// Drops the cached token of `access`, so the next request fetches a new one.
    pub(super) fn forget_token(&self, registry: &str, access: &Access<'_>) {
        self.tokens
            .lock()
            .expect("not poisoned")
            .remove(&(registry.to_string(), access.scope()));
    }

    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<CachedToken, Error> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let auth_error = |detail: String| Error::Auth {
            registry: registry.into(),
            detail,
        };
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        let request = match self.credential(registry).await? {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "garden-artifacts"),
                ];
                form.extend(query.iter().copied());
                let body = serde_urlencoded_form(&form);
                self.http
                    .post(realm)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            Some(Credential::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&query)
                .header(header::AUTHORIZATION, basic_header(&username, &password)),
            None => self.http.get(realm).query(&query),
        };
        let answer = request.send().await.map_err(|e| {
            auth_error(format!(
                "token request to {realm}: {}",
                describe_transport(&e)
            ))
        })?;
        let status = answer.status();
        self.count(&Method::GET, status.as_u16());
        if !status.is_success() {
            return Err(auth_error(format!(
                "token endpoint {realm} answered {status}"
            )));
        }
        let parsed: TokenAnswer = answer.json().await.map_err(|_| {
            auth_error(format!(
                "token endpoint {realm} answered something that is not a token"
            ))
        })?;
        let value = parsed.token.or(parsed.access_token).ok_or_else(|| {
            auth_error(format!("token endpoint {realm} answered without a token"))
        })?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(CachedToken {
            value,
            // Renew a little early so a token never expires mid-request.
            expires: Instant::now() + lifetime.saturating_sub(Duration::from_secs(10)),
        })
    }

    /// Learns the auth scheme from a 401; false when the challenge is one we cannot answer.
    pub(super) async fn learn_challenge(
        &self,
        registry: &str,
        headers: &HeaderMap,
    ) -> Result<bool, Error> {
        let Some(challenge) = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(false);
        };
        let scheme = parse_challenge(challenge);
        let Some(scheme) = scheme else {
            return Ok(false);
        };
        if matches!(scheme, AuthScheme::Basic) && self.credential(registry).await?.is_none() {
            return Ok(false);
        }
        self.schemes
            .lock()
            .expect("not poisoned")
            .insert(registry.to_string(), scheme);
        // Worth one more try: this request may have gone out before the scheme was known (a
        // concurrent request learned it first), or with a bearer token that just lapsed. The
        // caller tries once, so wrong credentials cost one extra request, not a loop.
        Ok(true)
    }
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    use base64::Engine;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is header-safe");
    value.set_sensitive(true);
    value
}

fn bearer_header(token: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    value.set_sensitive(true);
    value
}

fn serde_urlencoded_form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

/// `Bearer realm="...",service="..."` or `Basic realm="..."`.
fn parse_challenge(value: &str) -> Option<AuthScheme> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(AuthScheme::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = remaining;
    }
    Some(AuthScheme::Bearer {
        realm: realm?,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let parsed = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#,
        );
        match parsed {
            Some(AuthScheme::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.example.com/token");
                assert_eq!(service.as_deref(), Some("registry.example.com"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_challenge(r#"Basic realm="x""#),
            Some(AuthScheme::Basic)
        ));
        assert!(parse_challenge("Negotiate").is_none());
    }
}
