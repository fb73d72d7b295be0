//! Content digests: the one type that says "this is a digest" ([`Digest`]), and a stream
//! adaptor that verifies one while the bytes flow, so content is never held whole in memory and
//! never committed when it does not match.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest as _, Sha256};

use super::grammar::DIGEST_RE;

/// `algorithm:hex`, for the algorithms the distribution spec registers (sha256, sha512), with
/// lower-case hex of the right length. Every "is this a digest?" in the crate is
/// [`Digest::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, String> {
        if DIGEST_RE.is_match(s) {
            Ok(Self(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a digest (sha256: and 64 lower-case hex digits, or sha512: and 128)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Passes bytes through, hashing and counting them; at the end of the input it yields an error
/// instead of the end when the digest (or the size, when known) differs from the expected one.
/// An HTTP upload fed by it is aborted, so the registry never completes the blob.
/// `size_only` counts without hashing, for a receiver that verifies the digest itself.
pub struct VerifyingStream<S> {
    inner: S,
    /// `None`: only the size is checked (someone downstream verifies the digest).
    hasher: Option<Sha256>,
    seen: u64,
    expected_digest: String,
    expected_size: Option<u64>,
    done: bool,
}

impl<S> VerifyingStream<S> {
    pub fn new(inner: S, expected_digest: &str, expected_size: Option<u64>) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            seen: 0,
            expected_digest: expected_digest.to_string(),
            expected_size,
            done: false,
        }
    }

    /// Checks the length only, for content whose digest the receiver verifies anyway.
    pub fn size_only(inner: S, expected_size: u64) -> Self {
        Self {
            inner,
            hasher: None,
            seen: 0,
            expected_digest: String::new(),
            expected_size: Some(expected_size),
            done: false,
        }
    }
}

impl<S> VerifyingStream<S> {
    fn check_digest(&self) -> Result<(), DigestMismatch> {
        let Some(hasher) = &self.hasher else {
            return Ok(());
        };
        let actual = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
        if actual == self.expected_digest {
            Ok(())
        } else {
            Err(DigestMismatch {
                expected: self.expected_digest.clone(),
                actual,
            })
        }
    }
}

impl<S, E> Stream for VerifyingStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if let Some(size) = self.expected_size
                    && self.seen > size
                {
                    self.done = true;
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "content is longer than the expected {size} bytes"
                    )))));
                }
                if let Some(hasher) = &mut self.hasher {
                    hasher.update(&chunk);
                }
                // With a known size, judge on the last chunk instead of after it: a body with a
                // Content-Length is complete once that chunk is sent, and must not be.
                if self.expected_size == Some(self.seen)
                    && let Err(mismatch) = self.check_digest()
                {
                    self.done = true;
                    return Poll::Ready(Some(Err(std::io::Error::other(mismatch))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => {
                self.done = true;
                if let Err(mismatch) = self.check_digest() {
                    return Poll::Ready(Some(Err(std::io::Error::other(mismatch))));
                }
                if let Some(size) = self.expected_size
                    && self.seen != size
                {
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "content is {} bytes, expected {size}",
                        self.seen
                    )))));
                }
                Poll::Ready(None)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("content digest is {actual}, expected {expected}")]
pub struct DigestMismatch {
    pub expected: String,
    pub actual: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_a_registered_algorithm_and_hex_of_its_length() {
        let sha256 = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&sha256).unwrap().as_str(), sha256);
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            format!("md5:{}", "a".repeat(32)),
            "sha256:".to_string(),
            format!(" sha256:{}", "a".repeat(64)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} must be refused");
        }
        assert!(Digest::parse(&sha256_digest(b"")).is_ok());
    }
    use futures::{StreamExt, stream};

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn passes_matching_content_through() {
        let digest = sha256_digest(b"hello world");
        let out: Vec<_> = VerifyingStream::new(chunks(&["hello ", "world"]), &digest, Some(11))
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn with_a_known_size_the_last_chunk_is_withheld_on_mismatch() {
        let digest = sha256_digest(b"hellO");
        let out: Vec<_> = VerifyingStream::new(chunks(&["hel", "lo"]), &digest, Some(5))
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok());
        assert!(
            out[1].is_err(),
            "the chunk that completes the body is replaced by the error"
        );
    }

    #[tokio::test]
    async fn ends_in_an_error_when_the_digest_differs() {
        let digest = sha256_digest(b"something else");
        let out: Vec<_> = VerifyingStream::new(chunks(&["hello"]), &digest, None)
            .collect()
            .await;
        let err = out.last().unwrap().as_ref().unwrap_err();
        assert!(err.to_string().contains("expected sha256:"), "{err}");
    }

    #[tokio::test]
    async fn size_only_passes_any_content_of_the_right_length() {
        let out: Vec<_> = VerifyingStream::size_only(chunks(&["hel", "lo"]), 5)
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn size_only_still_refuses_short_or_long_content() {
        let short: Vec<_> = VerifyingStream::size_only(chunks(&["hel"]), 5)
            .collect()
            .await;
        let err = short.last().unwrap().as_ref().unwrap_err();
        assert!(err.to_string().contains("3 bytes, expected 5"), "{err}");
        let long: Vec<_> = VerifyingStream::size_only(chunks(&["hello", "!"]), 5)
            .collect()
            .await;
        assert!(long.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn stops_as_soon_as_content_is_too_long() {
        let digest = sha256_digest(b"ab");
        let out: Vec<_> = VerifyingStream::new(chunks(&["ab", "c", "d"]), &digest, Some(2))
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out[1].is_err());
    }
}
