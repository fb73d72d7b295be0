//! Where file content comes from: local files (apply), URLs (pinned by digest), and bytes the
//! front end already holds (inline text, ConfigMap and Secret keys). Everything streams.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::http_client::{describe_transport, install_crypto_provider};

const READ_CHUNK: usize = 1024 * 1024;

/// Digest and size of a local file, read once in a blocking thread (hashing is CPU work that
/// must not stall the async executor).
pub async fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        // Sized to the file: thousands of small files must not each map and zero a megabyte.
        let mut buffer = vec![0u8; read_buffer_size(file.metadata()?.len())];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
        }
        Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A local file as a stream of chunks.
pub async fn file_stream(
    path: &Path,
) -> std::io::Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static> {
    let file = tokio::fs::File::open(path).await?;
    let capacity = read_buffer_size(file.metadata().await?.len());
    Ok(tokio_util::io::ReaderStream::with_capacity(file, capacity))
}

/// A read buffer for a file of `len` bytes: the whole file when small (one read, plus one to
/// see the end), at most `READ_CHUNK`.
fn read_buffer_size(len: u64) -> usize {
    usize::try_from(len.saturating_add(1))
        .unwrap_or(READ_CHUNK)
        .clamp(4096, READ_CHUNK)
}

/// Which URLs may be fetched. URL sources are fetched by the controller on behalf of whoever
/// may create GardenArtifacts, so an address inside the cluster or on the node must never be
/// reachable through them unless an operator says so.
#[derive(Clone, Debug)]
pub struct UrlPolicy {
    /// Hosts (`host` or `host:port`) that may be fetched from; `None`: any public host.
    pub allowed_hosts: Option<Vec<String>>,
    /// The most bytes one URL may deliver.
    pub max_bytes: u64,
}

/// 20 GiB: larger than any Garden Linux image.
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 20 * 1024 * 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

impl Default for UrlPolicy {
    fn default() -> Self {
        Self {
            allowed_hosts: None,
            max_bytes: DEFAULT_MAX_SOURCE_BYTES,
        }
    }
}

impl UrlPolicy {
    /// Nothing allowed: the controller's default.
    pub fn none() -> Self {
        Self {
            allowed_hosts: Some(Vec::new()),
            ..Self::default()
        }
    }

    fn explicitly_allowed(&self, host: &str, port: u16) -> bool {
        self.allowed_hosts.as_ref().is_some_and(|hosts| {
            hosts.iter().any(|allowed| {
                allowed.eq_ignore_ascii_case(host)
                    || allowed.eq_ignore_ascii_case(&format!("{host}:{port}"))
            })
        })
    }

    /// Checks one URL of a fetch (the first, or a redirect target) and returns the addresses it
    /// may be fetched from.
    pub async fn admit(&self, url: &reqwest::Url) -> Result<Vec<std::net::SocketAddr>, String> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("{url}: only http and https URLs are fetched"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{}: credentials in URLs are refused", redact(url)));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("{url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(443);
        let explicitly = self.explicitly_allowed(&host, port);
        if self.allowed_hosts.is_some() && !explicitly {
            return Err(format!(
                "{url}: host {host} is not allowed for URL sources (an operator allows hosts with --allow-source-host)"
            ));
        }
        if !explicitly && is_internal_name(&host) {
            return Err(format!(
                "{url}: {host} is a cluster-internal name; allow it explicitly with --allow-source-host"
            ));
        }
        let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{url}: {host} resolves to no address"));
        }
        if !explicitly
            && let Some(internal) = addresses.iter().find(|a| is_internal_address(a.ip()))
        {
            return Err(format!(
                "{url}: {host} resolves to {}, a loopback, link-local or private address; allow it explicitly with --allow-source-host",
                internal.ip()
            ));
        }
        Ok(addresses)
    }
}

/// Names that only mean something inside a cluster or on the node.
fn is_internal_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".svc")
        || host.contains(".svc.")
        || host.ends_with(".cluster.local")
        || host.ends_with(".internal")
        || !host.contains('.') && host.parse::<std::net::IpAddr>().is_err()
}

/// Loopback, link-local (cloud metadata lives there), private, shared and unspecified ranges.
pub fn is_internal_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal_address(v4.into()))
        }
    }
}

fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Fetches `url` sources under a [`UrlPolicy`]. Separate from the registry client: no registry
/// credential is ever sent to a URL host.
#[derive(Clone)]
pub struct UrlFetcher {
    policy: UrlPolicy,
}

/// Why a URL source cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL, the policy or the answer's size rules it out.
    #[error("url source: {0}")]
    Refused(String),
    /// No answer: the connection, TLS, a timeout.
    #[error("{method} {url}: {detail}")]
    Transport {
        method: &'static str,
        url: String,
        detail: String,
    },
    /// The server answered with an error status.
    #[error("{method} {url}: {status}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
    },
}

pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The two methods a URL source is read with, for messages.
fn method_name(method: &reqwest::Method) -> &'static str {
    if method == reqwest::Method::HEAD {
        "HEAD"
    } else {
        "GET"
    }
}

impl UrlFetcher {
    pub fn new(policy: UrlPolicy) -> Result<Self, String> {
        install_crypto_provider();
        Ok(Self { policy })
    }

    /// Sends `method` to `url`, following redirects (each target admitted by the policy again),
    /// and returns the first answer that is not a redirect, if it is a success.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::Response, FetchError> {
        let refused = FetchError::Refused;
        let mut current = reqwest::Url::parse(url).map_err(|e| refused(format!("{url}: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let addresses = self.policy.admit(&current).await.map_err(refused)?;
            let host = current.host_str().unwrap_or_default().to_string();
            let http = reqwest::Client::builder()
                .user_agent(concat!("garden-artifacts/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(120))
                .redirect(reqwest::redirect::Policy::none())
                .resolve_to_addrs(&host, &addresses)
                .build()
                .map_err(|e| refused(describe_transport(&e)))?;
            let shown = current.to_string();
            let transport = |e: reqwest::Error| FetchError::Transport {
                method: method_name(&method),
                url: shown.clone(),
                detail: describe_transport(&e),
            };
            let response = http
                .request(method.clone(), current.clone())
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| refused(format!("{current}: redirect without a Location")))?;
                current = current
                    .join(location)
                    .map_err(|e| refused(format!("{current}: bad redirect: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    method: method_name(&method),
                    url: current.to_string(),
                    status: status.as_u16(),
                });
            }
            return Ok(response);
        }
        Err(refused(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// The size the server announces for `url` (`Content-Length` of a HEAD), without its body.
    /// `None` when it announces none.
    pub async fn content_length(&self, url: &str) -> Result<Option<u64>, FetchError> {
        let response = self.send(reqwest::Method::HEAD, url).await?;
        Ok(response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Opens `url` for streaming: its announced length, if any, and the bytes, cut off (with
    /// an error) past the policy's size limit.
    pub async fn open(&self, url: &str) -> Result<(Option<u64>, ByteStream), FetchError> {
        let response = self.send(reqwest::Method::GET, url).await?;
        let current = response.url().clone();
        let length = response.content_length();
        let max = self.policy.max_bytes;
        if length.is_some_and(|n| n > max) {
            return Err(FetchError::Refused(format!(
                "{current}: {} bytes, more than the {max} a URL source may have",
                length.unwrap_or_default()
            )));
        }
        let mut seen = 0u64;
        let stream = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len() as u64;
            if seen > max {
                return Err(std::io::Error::other(format!(
                    "more than the {max} bytes a URL source may have"
                )));
            }
            Ok(chunk)
        });
        Ok((length, Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognized() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal_address(internal.parse().unwrap()), "{internal}");
        }
        for public in ["140.82.112.3", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal_address(public.parse().unwrap()), "{public}");
        }
        assert!(is_internal_name("kubernetes.default.svc"));
        assert!(is_internal_name("registry.ns.svc.cluster.local"));
        assert!(is_internal_name("metadata"));
        assert!(!is_internal_name("github.com"));
    }

    #[tokio::test]
    async fn the_policy_refuses_what_an_operator_did_not_allow() {
        let open = UrlPolicy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let err = open
            .admit(&url("http://127.0.0.1:8080/x"))
            .await
            .unwrap_err();
        assert!(err.contains("loopback, link-local or private"), "{err}");
        assert!(open.admit(&url("ftp://example.com/x")).await.is_err());
        let err = open
            .admit(&url("https://user:pw@example.com/x"))
            .await
            .unwrap_err();
        assert!(!err.contains("pw"), "{err}");
        assert!(
            open.admit(&url("http://kubernetes.default.svc/x"))
                .await
                .is_err()
        );

        let closed = UrlPolicy::none();
        let err = closed
            .admit(&url("https://github.com/x"))
            .await
            .unwrap_err();
        assert!(err.contains("--allow-source-host"), "{err}");

        let allowed = UrlPolicy {
            allowed_hosts: Some(vec!["127.0.0.1:8080".into()]),
            ..UrlPolicy::default()
        };
        assert!(allowed.admit(&url("http://127.0.0.1:8080/x")).await.is_ok());
        assert!(
            allowed
                .admit(&url("http://127.0.0.1:9090/x"))
                .await
                .is_err(),
            "another port"
        );
    }
}
