//! Where file content comes from: local files (apply), URLs (pinned by digest), and bytes the
//! front end already holds (inline text, ConfigMap and Secret keys). Everything streams.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::registry::Error as RegistryError;

const READ_CHUNK: usize = 1024 * 1024;

/// Digest and size of a local file, read once in a blocking thread (hashing is CPU work that
/// must not stall the async executor).
pub async fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; READ_CHUNK];
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
    Ok(tokio_util::io::ReaderStream::with_capacity(
        file, READ_CHUNK,
    ))
}

/// Fetches `url` sources. Separate from the registry client: no registry credential is ever
/// sent to a URL host.
#[derive(Clone)]
pub struct UrlFetcher {
    http: reqwest::Client,
}

pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

impl UrlFetcher {
    pub fn new() -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("garden-artifacts/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| crate::registry::describe_transport(&e))?;
        Ok(Self { http })
    }

    /// Opens `url`: its announced length (if any) and its bytes.
    pub async fn open(&self, url: &str) -> Result<(Option<u64>, ByteStream), RegistryError> {
        let transport = |e: reqwest::Error| RegistryError::Transport {
            method: "GET".into(),
            url: url.to_string(),
            detail: crate::registry::describe_transport(&e),
        };
        let response = self.http.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(RegistryError::Status {
                method: "GET".into(),
                url: url.to_string(),
                status: status.as_u16(),
                code: None,
                message: None,
            });
        }
        let length = response.content_length();
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        Ok((length, Box::pin(stream)))
    }
}
