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
    /// Hosts that may be fetched from; `None`: any public host.
    pub allowed_hosts: Option<Vec<AllowedHost>>,
    /// The most bytes one URL may deliver.
    pub max_bytes: u64,
}

/// One `--allow-source-host` entry: a host name or an IP address, and optionally the one port
/// it is allowed on. IPv6 addresses with a port are written in brackets (`[::1]:8080`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    host: AllowedHostName,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AllowedHostName {
    Name(String),
    Address(std::net::IpAddr),
}

impl std::str::FromStr for AllowedHost {
    type Err = String;

    /// Refuses an entry that no URL could ever match, saying why.
    fn from_str(text: &str) -> Result<Self, String> {
        let never = |why: &str| Err(format!("{text:?} can never match a URL: {why}"));
        if text.is_empty() {
            return never("it is empty");
        }
        if text.contains("://") || text.contains('/') || text.contains('?') || text.contains('#') {
            return never("expected HOST, HOST:PORT or [IPv6]:PORT, without scheme or path");
        }
        if text.contains('@') {
            return never("credentials in URLs are refused, so no URL has them");
        }
        let port_of = |port: &str| {
            port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                format!("{text:?} can never match a URL: port {port:?} is not 1-65535")
            })
        };
        if let Some(rest) = text.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return never("an opening [ without its ]");
            };
            let Ok(address) = inside.parse::<std::net::Ipv6Addr>() else {
                return never("only an IPv6 address goes between [ and ]");
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port_of(port)?),
                    None => return never("expected :PORT after ]"),
                },
            };
            return Ok(Self {
                host: AllowedHostName::Address(address.into()),
                port,
            });
        }
        if let Ok(address) = text.parse::<std::net::IpAddr>() {
            return Ok(Self {
                host: AllowedHostName::Address(address),
                port: None,
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port_of(port)?)),
            None => (text, None),
        };
        if host.contains(':') {
            return never("an IPv6 address with a port is written [ADDRESS]:PORT");
        }
        if let Ok(address) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Self {
                host: AllowedHostName::Address(address.into()),
                port,
            });
        }
        let valid_name = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid_name {
            return never("not a host name or IP address");
        }
        Ok(Self {
            host: AllowedHostName::Name(host.to_ascii_lowercase()),
            port,
        })
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.port) {
            (AllowedHostName::Name(name), _) => f.write_str(name)?,
            (AllowedHostName::Address(std::net::IpAddr::V6(v6)), Some(_)) => write!(f, "[{v6}]")?,
            (AllowedHostName::Address(address), _) => write!(f, "{address}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl AllowedHost {
    fn matches(&self, host: &url::Host<&str>, port: u16) -> bool {
        let host_matches = match (&self.host, host) {
            (AllowedHostName::Name(allowed), url::Host::Domain(name)) => {
                allowed.eq_ignore_ascii_case(name)
            }
            (AllowedHostName::Address(allowed), url::Host::Ipv4(v4)) => *allowed == *v4,
            (AllowedHostName::Address(allowed), url::Host::Ipv6(v6)) => *allowed == *v6,
            _ => false,
        };
        host_matches && self.port.is_none_or(|allowed| allowed == port)
    }
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

    fn explicitly_allowed(&self, host: &url::Host<&str>, port: u16) -> bool {
        self.allowed_hosts
            .as_ref()
            .is_some_and(|hosts| hosts.iter().any(|allowed| allowed.matches(host, port)))
    }

    /// Checks one URL of a fetch (the first, or a redirect target) and returns the addresses it
    /// may be fetched from.
    pub async fn admit(&self, url: &reqwest::Url) -> Result<Vec<std::net::SocketAddr>, FetchError> {
        use FetchError::{NotAllowed, Refused};
        let url_shown = shown(url);
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Refused(format!(
                "{url_shown}: only http and https URLs are fetched"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused(format!(
                "{}: credentials in URLs are refused",
                shown(url)
            )));
        }
        let url_host = url
            .host()
            .ok_or_else(|| Refused(format!("{url_shown}: no host")))?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(443);
        let explicitly = self.explicitly_allowed(&url_host, port);
        if self.allowed_hosts.is_some() && !explicitly {
            return Err(NotAllowed(format!(
                "{url_shown}: host {host} is not allowed for URL sources (an operator allows hosts with --allow-source-host)"
            )));
        }
        if !explicitly && is_internal_name(&host) {
            return Err(NotAllowed(format!(
                "{url_shown}: {host} is a cluster-internal name; allow it explicitly with --allow-source-host"
            )));
        }
        let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Refused(format!("{url_shown}: cannot resolve {host}: {e}")))?
            .collect();
        if addresses.is_empty() {
            return Err(Refused(format!(
                "{url_shown}: {host} resolves to no address"
            )));
        }
        if !explicitly
            && let Some(internal) = addresses.iter().find(|a| is_internal_address(a.ip()))
        {
            return Err(NotAllowed(format!(
                "{url_shown}: {host} resolves to {}, a loopback, link-local or private address or another special-purpose range; allow it explicitly with --allow-source-host",
                internal.ip()
            )));
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

/// Every range of IANA's IPv4 and IPv6 special-purpose address registries (loopback,
/// link-local where cloud metadata lives, private, shared, benchmarking, documentation,
/// reserved), multicast and broadcast. IPv6 forms that carry an IPv4 address (mapped,
/// compatible, NAT64, 6to4, Teredo) are judged by that address: the packet ends up there.
pub fn is_internal_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => is_special_v4(v4),
        std::net::IpAddr::V6(v6) => is_special_v6(v6),
    }
}

fn is_special_v4(v4: std::net::Ipv4Addr) -> bool {
    let bits = u32::from(v4);
    const RANGES: [(u32, u32); 17] = [
        (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
        (0x0a00_0000, 8),  // 10.0.0.0/8 private
        (0x6440_0000, 10), // 100.64.0.0/10 shared (carrier-grade NAT)
        (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
        (0xa9fe_0000, 16), // 169.254.0.0/16 link-local
        (0xac10_0000, 12), // 172.16.0.0/12 private
        (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
        (0xc000_0200, 24), // 192.0.2.0/24 documentation
        (0xc01f_c400, 24), // 192.31.196.0/24 AS112
        (0xc034_c100, 24), // 192.52.193.0/24 AMT
        (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast
        (0xc0a8_0000, 16), // 192.168.0.0/16 private
        (0xc0af_3000, 24), // 192.175.48.0/24 direct delegation AS112
        (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
        (0xc633_6400, 24), // 198.51.100.0/24 documentation
        (0xcb00_7100, 24), // 203.0.113.0/24 documentation
        (0xe000_0000, 3),  // 224.0.0.0/4 multicast, 240.0.0.0/4 reserved, broadcast
    ];
    RANGES
        .iter()
        .any(|&(network, prefix)| bits >> (32 - prefix) == network >> (32 - prefix))
}

fn is_special_v6(v6: std::net::Ipv6Addr) -> bool {
    let bits = u128::from(v6);
    let within = |network: u128, prefix: u32| bits >> (128 - prefix) == network >> (128 - prefix);
    let embedded = |shift: u32| std::net::Ipv4Addr::from((bits >> shift) as u32);
    if v6.is_unspecified() || v6.is_loopback() {
        return true;
    }
    // ::ffff:0:0/96 mapped, ::/96 compatible, 64:ff9b::/96 NAT64: the last 32 bits.
    if within(0xffff_0000_0000, 96) || within(0, 96) || within(0x0064_ff9b << 96, 96) {
        return is_special_v4(embedded(0));
    }
    // 2002::/16 6to4: the 32 bits after the prefix.
    if within(0x2002 << 112, 16) {
        return is_special_v4(embedded(80));
    }
    // 2001::/32 Teredo: the server after the prefix, the client inverted in the last 32 bits.
    if within(0x2001_0000 << 96, 32) {
        let client = std::net::Ipv4Addr::from(!(bits as u32));
        return is_special_v4(embedded(64)) || is_special_v4(client);
    }
    const RANGES: [(u128, u32); 10] = [
        (0x0064_ff9b_0001 << 80, 48), // 64:ff9b:1::/48 local-use NAT64
        (0x0100 << 112, 64),          // 100::/64 discard-only
        (0x2001 << 112, 23),          // 2001::/23 IETF protocol assignments
        (0x2001_0db8 << 96, 32),      // 2001:db8::/32 documentation
        (0x2620_004f_8000 << 80, 48), // 2620:4f:8000::/48 AS112
        (0x3fff << 112, 20),          // 3fff::/20 documentation
        (0x5f00 << 112, 16),          // 5f00::/16 segment routing
        (0xfc00 << 112, 7),           // fc00::/7 unique local
        (0xfe80 << 112, 9),           // fe80::/10 link-local, fec0::/10 site-local
        (0xff00 << 112, 8),           // ff00::/8 multicast
    ];
    RANGES
        .iter()
        .any(|&(network, prefix)| within(network, prefix))
}

/// A URL as messages show it: without user-info, query and fragment, which is where pre-signed
/// URLs carry their signatures (`X-Amz-Signature=…`) and other hosts their tokens.
pub fn shown(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// [`shown`] for text that may not parse as a URL.
fn shown_text(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => shown(&parsed),
        Err(_) => {
            let cut = url.find(['?', '#']).unwrap_or(url.len());
            let without_query = &url[..cut];
            match without_query.rsplit_once('@') {
                Some((_, after)) => format!("…@{after}"),
                None => without_query.to_string(),
            }
        }
    }
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
    /// The operator's policy does not allow this URL's host or address (`--allow-source-host`,
    /// loopback, private and cluster-internal addresses), nor a size beyond `--max-source-bytes`.
    #[error("url source: {0}")]
    NotAllowed(String),
    /// The URL or the answer cannot be used (a scheme other than http(s), credentials in the
    /// URL, a host that does not resolve, a broken redirect).
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
        let mut current =
            reqwest::Url::parse(url).map_err(|e| refused(format!("{}: {e}", shown_text(url))))?;
        for _ in 0..=MAX_REDIRECTS {
            let addresses = self.policy.admit(&current).await?;
            let host = current.host_str().unwrap_or_default().to_string();
            let http = reqwest::Client::builder()
                .user_agent(concat!("garden-artifacts/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(120))
                .redirect(reqwest::redirect::Policy::none())
                .resolve_to_addrs(&host, &addresses)
                .build()
                .map_err(|e| refused(describe_transport(&e)))?;
            let current_shown = shown(&current);
            let transport = |e: reqwest::Error| FetchError::Transport {
                method: method_name(&method),
                url: current_shown.clone(),
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
                    .ok_or_else(|| {
                        refused(format!("{current_shown}: redirect without a Location"))
                    })?;
                current = current
                    .join(location)
                    .map_err(|e| refused(format!("{current_shown}: bad redirect: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    method: method_name(&method),
                    url: current_shown,
                    status: status.as_u16(),
                });
            }
            return Ok(response);
        }
        Err(refused(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            shown_text(url)
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
        let current = shown(response.url());
        let length = response.content_length();
        let max = self.policy.max_bytes;
        if length.is_some_and(|n| n > max) {
            return Err(FetchError::NotAllowed(format!(
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
        assert!(matches!(err, FetchError::NotAllowed(_)), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("loopback, link-local or private"), "{err}");
        assert!(open.admit(&url("ftp://example.com/x")).await.is_err());
        let err = open
            .admit(&url("https://user:pw@example.com/x"))
            .await
            .unwrap_err()
            .to_string();
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
        assert!(matches!(err, FetchError::NotAllowed(_)), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("--allow-source-host"), "{err}");

        let allowed = UrlPolicy {
            allowed_hosts: Some(vec!["127.0.0.1:8080".parse().unwrap()]),
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

    #[test]
    fn every_special_purpose_range_is_internal_and_embedded_ipv4_is_judged() {
        for special in [
            "0.1.2.3",
            "100.127.255.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            // NAT64, local-use NAT64, 6to4, Teredo, IPv4-compatible: embedding internal ones.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001:0:a00:1::1",
            "::127.0.0.1",
            "::a9fe:a9fe",
            "100::1",
            "2001:db8::1",
            "2001:2::1",
            "3fff::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(is_internal_address(special.parse().unwrap()), "{special}");
        }
        for public in [
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::8.8.8.8",
            "::ffff:8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "198.20.0.1",
        ] {
            assert!(!is_internal_address(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn allowed_hosts_take_bracketed_ipv6_and_refuse_entries_that_can_never_match() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let policy = |entries: &[&str]| UrlPolicy {
            allowed_hosts: Some(entries.iter().map(|e| e.parse().unwrap()).collect()),
            ..UrlPolicy::default()
        };
        let with_port = policy(&["[::1]:8080"]);
        assert!(with_port.admit(&url("http://[::1]:8080/x")).await.is_ok());
        assert!(with_port.admit(&url("http://[::1]:9090/x")).await.is_err());
        let any_port = policy(&["[::1]", "localhost:8080"]);
        assert!(any_port.admit(&url("http://[::1]:9090/x")).await.is_ok());
        assert!(
            any_port
                .admit(&url("http://LOCALHOST:8080/x"))
                .await
                .is_ok()
        );
        assert!(
            any_port
                .admit(&url("http://localhost:8081/x"))
                .await
                .is_err()
        );
        let bare = policy(&["::1"]);
        assert!(bare.admit(&url("http://[::1]:1234/x")).await.is_ok());
        assert_eq!(
            "[FD00::1]:443".parse::<AllowedHost>().unwrap().to_string(),
            "[fd00::1]:443"
        );
        for never in [
            "",
            "https://example.com",
            "example.com/path",
            "[::1",
            "[example.com]",
            "[::1]8080",
            "host:http",
            "host:0",
            "host:70000",
            "user@host",
            "bad host",
        ] {
            let err = never.parse::<AllowedHost>().unwrap_err();
            assert!(err.contains("can never match"), "{never}: {err}");
        }
    }

    #[tokio::test]
    async fn messages_show_urls_without_query_or_user_info() {
        let url = reqwest::Url::parse(
            "http://127.0.0.1:8080/disk.raw?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA#frag",
        )
        .unwrap();
        let err = UrlPolicy::default()
            .admit(&url)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://127.0.0.1:8080/disk.raw"), "{err}");
        assert!(!err.contains("deadbeef") && !err.contains("AKIA"), "{err}");
        let fetcher = UrlFetcher::new(UrlPolicy::none()).unwrap();
        let err = fetcher
            .open("https://user:pw@example.com/x?token=s3cr3t")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("s3cr3t") && !err.contains("pw"), "{err}");
        assert_eq!(shown_text("not a url?sig=1"), "not a url");
    }
}
