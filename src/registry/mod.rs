//! Everything that speaks the distribution API. `oci-client` supplies the manifest types; the
//! transport is ours because the engine needs what that crate's client does not give: HEAD with
//! media type and size, delete, mount with the 202 fallback, retries honouring Retry-After, tag
//! paging, and no extra `GET /v2/` probe before each request on registries without auth (which
//! would double the requests of a converged resync).
//!
//! [`Registry`] is the seam: [`RegistryClient`] speaks HTTP, [`memory::MemoryRegistry`] keeps
//! everything in memory for tests.

mod api;
mod auth;
mod blobs;
mod budget;
mod client;
pub mod credentials;
mod error;
mod headers;
pub mod layout;
mod manifests;
pub mod memory;
mod referrers;
mod tags;
mod transport;

pub use api::{BlobStream, Registry, UploadBody};
pub use blobs::UploadStart;
pub use budget::BudgetOptions;
pub use client::{ClientOptions, RegistryClient, is_loopback};
pub use credentials::{Credential, CredentialSource, DockerConfig, NoCredentials};
pub use error::{Error, ErrorClass, NeedsPerson};
pub use manifests::{ManifestHead, PutManifestOutcome, RawManifest};
pub use transport::{RequestStats, RetryPolicy};
