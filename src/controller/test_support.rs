//! What the controller's unit tests share: a Context on a fake API server, objects, and the
//! events the fake server was asked to create.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store, store::Writer};
use serde_json::json;

use super::context::{Caches, Context};
use super::fake_api::FakeApi;
use super::index::SharedIndex;
use super::reconcile::FINALIZER;
use crate::api::{API_VERSION, GardenArtifact, KIND};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::registry::{ClientOptions, NoCredentials, RegistryClient};
use crate::sources::{UrlFetcher, UrlPolicy};

/// A Context whose caches hold nothing (and, their writers gone, never will).
pub fn context(client: kube::Client) -> Arc<Context> {
    let (secrets, _) = reflector::store();
    let (config_maps, _) = reflector::store();
    context_with(client, secrets, config_maps)
}

/// A Context whose caches of Secrets and ConfigMaps are still listing, until the writers
/// returned are dropped.
pub fn context_with_unfilled_caches(
    client: kube::Client,
) -> (Arc<Context>, (Writer<Secret>, Writer<ConfigMap>)) {
    let (secrets, secrets_writer) = reflector::store();
    let (config_maps, config_maps_writer) = reflector::store();
    let ctx = context_with(client, secrets, config_maps);
    (ctx, (secrets_writer, config_maps_writer))
}

fn context_with(
    client: kube::Client,
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
) -> Arc<Context> {
    let registry = RegistryClient::new(ClientOptions::default(), Arc::new(NoCredentials))
        .expect("a registry client");
    let urls = UrlFetcher::new(UrlPolicy::default()).expect("a URL fetcher");
    let registry = Arc::new(registry);
    let engine = Arc::new(Engine::new(Arc::clone(&registry) as _, urls, 1));
    let (store, _writer) = reflector::store();
    Arc::new(Context::new(
        client,
        registry,
        engine,
        Reporter::from("garden-artifacts"),
        Arc::new(Metrics::default()),
        Caches {
            objects: store,
            index: Arc::new(SharedIndex::ready_with(&[])),
            secrets,
            config_maps,
            mirrors: super::mirror_claims::MirrorCache::empty(),
        },
    ))
}

/// `e2e/a` in namespace `ns`, with the finalizer already set.
pub fn object(spec: serde_json::Value, status: serde_json::Value) -> GardenArtifact {
    serde_json::from_value(json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": "a", "namespace": "ns", "uid": "0000-a", "resourceVersion": "7",
            "generation": 1, "finalizers": [FINALIZER],
        },
        "spec": spec,
        "status": status,
    }))
    .expect("a GardenArtifact")
}

/// Events the fake API server was asked to create: (type, reason, note).
pub fn events(api: &FakeApi) -> Vec<(String, String, String)> {
    api.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/events"))
        .map(|r| {
            let event: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
            let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
            (field("type"), field("reason"), field("note"))
        })
        .collect()
}

/// Deleted (deletionPolicy Delete) after its credentials Secret `gone`.
pub fn deleted_with_credentials(subject: bool) -> GardenArtifact {
    let digest = format!("sha256:{}", "1".repeat(64));
    let mut status = json!({
        "observedGeneration": 1,
        "digest": digest,
        "tags": [{ "name": "v1", "digest": digest }, { "name": "latest", "digest": digest }],
    });
    if subject {
        status["subject"] =
            json!({ "digest": format!("sha256:{}", "2".repeat(64)), "via": "referrers" });
    }
    let mut object = object(
        json!({
            "repository": "registry.example.com/e2e/a",
            "tags": ["v1", "latest"],
            "source": { "files": [{ "name": "a.txt", "content": "a", "mediaType": "text/plain" }] },
            "credentials": { "secretRef": { "name": "gone" } },
            "deletionPolicy": "Delete",
        }),
        status,
    );
    object.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    object
}
