//! Pure: the tags an object wrote in earlier rounds, read from its status, as the engine takes
//! them; and what becomes of those it no longer wants, by its `deletionPolicy`.

use crate::api::{DeletionPolicy, GardenArtifact};
use crate::engine::{Earlier, OnDrop, WrittenTag};
use crate::oci::{Digest, Repository, Tag};

/// The tags `object`'s status says it wrote, except those another object claims now (in the
/// same repository, by its identity): a tag handed over is the new claimant's, neither
/// removed nor released. `claimed_by_another(repository identity, tag)` asks the index.
pub fn earlier(
    object: &GardenArtifact,
    claimed_by_another: impl Fn(&str, &str) -> bool,
) -> Earlier {
    let on_drop = match object.spec.deletion_policy {
        DeletionPolicy::Delete => OnDrop::Remove,
        DeletionPolicy::Retain => OnDrop::Release,
    };
    let written_in = object
        .status
        .as_ref()
        .and_then(|s| s.repository.as_deref())
        .and_then(|r| Repository::parse(r).ok());
    // A status written before the repository was recorded: where its tags are is not known,
    // so none counts as dropped; the next converged round records it.
    let (Some(status), Some(repository)) = (&object.status, written_in) else {
        return Earlier {
            tags: Vec::new(),
            on_drop,
        };
    };
    let identity = repository.identity();
    let tags = status
        .tags
        .iter()
        .filter(|t| !claimed_by_another(&identity, &t.name))
        .filter_map(|t| {
            Some(WrittenTag {
                repository: repository.clone(),
                tag: Tag::parse(&t.name).ok()?,
                digest: Digest::parse(&t.digest).ok()?,
            })
        })
        .collect();
    Earlier { tags, on_drop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::repository_identity;
    use std::sync::Arc;

    /// Whether an object of `objects` other than `me` claims the tag, as the index answers.
    fn claims<'a>(
        objects: &'a [Arc<GardenArtifact>],
        me: &'a GardenArtifact,
    ) -> impl Fn(&str, &str) -> bool + 'a {
        move |repository, tag| {
            objects.iter().any(|other| {
                other.metadata.name != me.metadata.name
                    && other.spec.tags.iter().any(|t| t == tag)
                    && repository_identity(&other.spec.repository) == repository
            })
        }
    }

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn object(ns: &str, name: &str, spec: &str, status: serde_json::Value) -> Arc<GardenArtifact> {
        let mut o = GardenArtifact::new(name, serde_yaml::from_str(spec).unwrap());
        o.metadata.namespace = Some(ns.into());
        o.status = serde_json::from_value(status).unwrap();
        Arc::new(o)
    }

    fn names(earlier: &Earlier) -> Vec<String> {
        earlier
            .tags
            .iter()
            .map(|w| format!("{}:{}", w.repository, w.tag))
            .collect()
    }

    #[test]
    fn earlier_tags_come_from_the_status_and_exclude_tags_another_object_claims() {
        let mine = object(
            "r",
            "mine",
            "{repository: 'h:1/new', tags: [v1], deletionPolicy: Delete, source: {files: [{name: x.raw, content: x}]}}",
            serde_json::json!({
                "repository": "h:1/old",
                "tags": [
                    {"name": "v1", "digest": DIGEST},
                    {"name": "latest", "digest": DIGEST},
                ],
            }),
        );
        let alone = earlier(&mine, claims(&[Arc::clone(&mine)], &mine));
        assert_eq!(alone.on_drop, OnDrop::Remove);
        assert_eq!(names(&alone), ["h:1/old:v1", "h:1/old:latest"]);

        // Another object (in another namespace, another spelling of the registry) wants
        // `latest` of the old repository now: it is handed over.
        let taker = object(
            "s",
            "taker",
            "{repository: 'H:1/old', tags: [latest], source: {files: [{name: x.raw, content: y}]}}",
            serde_json::Value::Null,
        );
        let handed = earlier(&mine, claims(&[Arc::clone(&mine), taker], &mine));
        assert_eq!(names(&handed), ["h:1/old:v1"]);
    }

    #[test]
    fn without_the_recorded_repository_nothing_is_earlier() {
        let old = object(
            "r",
            "old",
            "{repository: 'h:1/a', tags: [v1], source: {files: [{name: x.raw, content: x}]}}",
            serde_json::json!({ "tags": [{"name": "v2", "digest": DIGEST}] }),
        );
        let earlier = earlier(&old, claims(&[Arc::clone(&old)], &old));
        assert!(earlier.tags.is_empty());
        assert_eq!(earlier.on_drop, OnDrop::Release);
    }
}
