//! The tags GardenMirrors own: those their status lists as written into their target. A
//! mirror earns a tag by writing it, so the first writer keeps it: a GardenArtifact that
//! claims it later is refused (a `TagConflict`, as between artefacts), and a mirror keeps the
//! tags it wrote even when an artefact claims them afterwards. Two mirrors that both list a
//! tag (they raced) leave it to the older one, by creation time, then namespace/name.
//!
//! Pure: the caller passes the mirrors out of the watch cache. The mirrors are few (one per
//! repository mirrored), so a scan per round costs next to nothing next to its HEAD.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use super::index::ObjectKey;
use crate::api::GardenMirror;
use crate::engine::claims::Conflict;

/// The GardenMirrors as their watch last saw them, and whether its first listing is in.
/// Readiness is a watch channel of our own: kube's `Store::wait_until_ready` lost the wake-up
/// of one of two rounds waiting at once (a GardenArtifact then never got past its first round).
#[derive(Clone)]
pub struct MirrorCache {
    store: Store<GardenMirror>,
    listed: watch::Receiver<bool>,
}

impl MirrorCache {
    /// `listed` turns true once the watch's first listing is in `store`.
    pub fn new(store: Store<GardenMirror>, listed: watch::Receiver<bool>) -> Self {
        Self { store, listed }
    }

    /// A cache with no mirror, listed (tests of the wiring that run no mirror watch).
    pub fn empty() -> Self {
        let (_, listed) = watch::channel(true);
        Self::new(kube::runtime::reflector::store().0, listed)
    }

    /// Waits until the first listing is in: before it, a mirror's tags would look free.
    pub async fn wait_until_listed(&self) {
        let mut listed = self.listed.clone();
        // A dropped sender (the watch ended) leaves what was listed.
        let _ = listed.wait_for(|listed| *listed).await;
    }

    pub fn state(&self) -> Vec<Arc<GardenMirror>> {
        self.store.state()
    }
}

/// The mirrors that wrote into `repository` (an identity), oldest first: creation time, then
/// namespace/name. Usually none, so an artefact's round pays for the filter only.
fn writers<'a>(mirrors: &'a [Arc<GardenMirror>], repository: &str) -> Vec<&'a GardenMirror> {
    let mut writers: Vec<&GardenMirror> = mirrors
        .iter()
        .map(AsRef::as_ref)
        .filter(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| s.repository.as_deref() == Some(repository))
        })
        .collect();
    writers.sort_by_key(|m| {
        (
            m.creation_timestamp().map(|t| t.0),
            m.namespace(),
            m.name_any(),
        )
    });
    writers
}

fn wrote(mirror: &GardenMirror, tag: &str) -> bool {
    mirror
        .status
        .iter()
        .flat_map(|s| &s.written)
        .any(|t| t.name == tag)
}

/// Each tag mirrors wrote into `repository` (an identity), with the mirror that owns it.
pub fn owners(mirrors: &[Arc<GardenMirror>], repository: &str) -> BTreeMap<String, ObjectKey> {
    let mut owners = BTreeMap::new();
    for mirror in writers(mirrors, repository) {
        for tag in mirror.status.iter().flat_map(|s| &s.written) {
            owners
                .entry(tag.name.clone())
                .or_insert_with(|| ObjectKey::of(mirror));
        }
    }
    owners
}

/// The tags of an artefact in `repository` that mirrors own. On every artefact round: it
/// looks up the artefact's few tags rather than gathering every tag a mirror wrote.
pub fn lost_to_mirrors(
    mirrors: &[Arc<GardenMirror>],
    repository: &str,
    tags: &[String],
) -> Vec<Conflict> {
    if tags.is_empty() {
        return Vec::new();
    }
    let writers = writers(mirrors, repository);
    tags.iter()
        .filter_map(|tag| {
            let owner = writers.iter().find(|m| wrote(m, tag))?;
            Some(Conflict {
                tag: tag.clone(),
                owner: format!("GardenMirror {}, which wrote it", ObjectKey::of(*owner)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn mirror(name: &str, created: i64, repository: &str, written: &[&str]) -> Arc<GardenMirror> {
        let mut m: GardenMirror = serde_json::from_value(json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "GardenMirror",
            "metadata": {"name": name, "namespace": "mirrors"},
            "spec": {"source": {"repository": "src.example/a"}, "repository": "dst.example/a"},
            "status": {
                "repository": repository,
                "written": written.iter().map(|t| json!({"name": t, "digest": "sha256:00"})).collect::<Vec<_>>(),
            },
        }))
        .unwrap();
        m.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        Arc::new(m)
    }

    #[test]
    fn the_oldest_writer_owns_a_tag_and_other_repositories_do_not_count() {
        let mirrors = [
            mirror("young", 20, "dst.example/a", &["1", "2"]),
            mirror("old", 10, "dst.example/a", &["2", "3"]),
            mirror("elsewhere", 1, "other.example/a", &["1", "2", "3"]),
        ];
        let owners = owners(&mirrors, "dst.example/a");
        let named: Vec<(&str, String)> = owners
            .iter()
            .map(|(tag, key)| (tag.as_str(), key.to_string()))
            .collect();
        assert_eq!(
            named,
            [
                ("1", "mirrors/young".to_string()),
                ("2", "mirrors/old".to_string()),
                ("3", "mirrors/old".to_string()),
            ]
        );
        // An artefact's lookup names the same owners.
        let lost = lost_to_mirrors(
            &mirrors,
            "dst.example/a",
            &["2".to_string(), "1".to_string()],
        );
        let named: Vec<String> = lost.iter().map(ToString::to_string).collect();
        assert_eq!(
            named,
            [
                "tag \"2\" is owned by GardenMirror mirrors/old, which wrote it",
                "tag \"1\" is owned by GardenMirror mirrors/young, which wrote it",
            ]
        );
    }

    #[test]
    fn an_artefact_loses_only_the_tags_a_mirror_wrote() {
        let mirrors = [mirror("m", 10, "dst.example/a", &["1877.5"])];
        let lost = lost_to_mirrors(
            &mirrors,
            "dst.example/a",
            &["1877.5".to_string(), "latest".to_string()],
        );
        assert_eq!(lost.len(), 1);
        assert_eq!(
            lost[0].to_string(),
            "tag \"1877.5\" is owned by GardenMirror mirrors/m, which wrote it"
        );
        assert!(lost_to_mirrors(&mirrors, "dst.example/b", &["1877.5".to_string()]).is_empty());
        // A mirror that has not written yet (no status) owns nothing.
        let fresh = [mirror("m", 10, "dst.example/a", &[])];
        assert!(lost_to_mirrors(&fresh, "dst.example/a", &["1877.5".to_string()]).is_empty());
    }
}
