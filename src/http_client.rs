//! What our HTTP clients share (the registry client, the URL fetcher); imports nothing of ours,
//! so both can use it without one importing the other.

/// Installs ring as rustls' crypto provider. Both kube and reqwest use rustls; whoever comes
/// first installs it, the rest is a no-op.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Renders a reqwest error without its URL's query (upload locations carry state tokens) and
/// with the chain of causes, which is where "connection refused" lives.
pub(crate) fn describe_transport(err: &reqwest::Error) -> String {
    let mut text = match err.url() {
        Some(url) => err.to_string().replace(url.as_str(), url.path()),
        None => err.to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
