//! garden-artifacts: OCI registries made declarative.
//!
//! - [`oci`]: OCI basics (media types, digests, references); imports nothing of ours.
//! - [`api`]: the `GardenArtifact` resource and its validation.
//! - [`engine`]: spec → desired manifests → plan → execution; no kube, no CLI.
//! - [`registry`]: the distribution API client.
//! - `http_client`: what the registry client and the URL fetcher share; imports nothing of ours.
//! - [`sources`]: where file content comes from.
//! - [`manifests`]: reading GardenArtifact YAML files (for `apply`).
//! - [`controller`]: the Kubernetes front end (kube at the edge).
//! - [`cli`]: the command line.

pub mod api;
pub mod cli;
pub mod controller;
pub mod engine;
pub mod http;
mod http_client;
pub mod intent;
pub mod manifests;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod sources;
pub mod telemetry;
