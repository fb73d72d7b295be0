//! Mirroring what hangs off an artefact (`source.image.referrers: true`): its OCI 1.1
//! referrers, found through the source's referrers API and its fallback tag, and the legacy
//! cosign tags `sha256-<hex>.sig`, `.att`, `.sbom`. Each is planned as a byte-for-byte copy
//! linked in the target the way the target supports; `execute` carries the copies out.

use serde_json::Value;

use super::desired::{Desired, Manifest};
use super::links::fallback_tag;
use super::plan::{self, Plan, ReferrerCopy};
use super::source_listing::SourceListing;
use super::{Engine, EngineError};
use crate::intent::FieldPath;
use crate::oci::Repository;

/// The suffixes of the tags cosign writes next to a signed manifest.
const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// What a mirror of referrers wrote (or, in a dry run, would write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirroredReferrers {
    pub referrers: usize,
    pub cosign_tags: usize,
}

impl MirroredReferrers {
    /// What the copies of a plan store (or, in a dry run, would store).
    pub fn planned(copies: &[ReferrerCopy]) -> Self {
        let storing = |cosign: bool| {
            copies
                .iter()
                .filter(|copy| copy.cosign_tag == cosign && !copy.plan.stores_nothing())
                .count()
        };
        Self {
            referrers: storing(false),
            cosign_tags: storing(true),
        }
    }
}

impl Engine {
    /// Plans the copies of the referrers of every manifest of `root` (the index and its
    /// children) from `source` into `target`, each linked there the way the target supports.
    pub(super) async fn plan_mirror(
        &self,
        source_field: &FieldPath,
        source: &Repository,
        target: &Repository,
        root: &Manifest,
        listing: Option<&SourceListing>,
    ) -> Result<Vec<ReferrerCopy>, EngineError> {
        let mut copies = Vec::new();
        let mut subjects = vec![root];
        subjects.extend(root.children.iter());
        // Without a listing, every tag may exist and the referrers API may be there.
        let may_exist = |tag: &str| listing.is_none_or(|l| l.may_exist(tag));
        let ask_api = listing.is_none_or(SourceListing::referrers_api);
        for subject in subjects {
            let referrers = self
                .referrers_of(source, &subject.digest, ask_api, &may_exist)
                .await?;
            if !referrers.is_empty() {
                // The target's links of this subject, read once for all its referrers.
                let links = self.links_of(target, &subject.digest).await?;
                for entry in referrers {
                    let Some(digest) = entry.get("digest").and_then(Value::as_str) else {
                        continue;
                    };
                    let Some(raw) = self.registry.get_manifest(source, digest).await? else {
                        continue;
                    };
                    let copy = Box::pin(self.copied_manifest(source_field, source, raw, 1)).await?;
                    let desired = Desired {
                        repository: target.clone(),
                        tags: Vec::new(),
                        manifest: copy,
                    };
                    let mut plan = self.plan_store(&desired).await?;
                    let (_, link) = links.link(target, &subject.digest, &entry);
                    plan.fallback_indexes.extend(link);
                    copies.push(ReferrerCopy {
                        desired,
                        plan,
                        cosign_tag: false,
                    });
                }
            }
            for suffix in COSIGN_SUFFIXES {
                let tag = format!("{}{suffix}", fallback_tag(&subject.digest));
                if !may_exist(&tag) {
                    continue;
                }
                let Some(raw) = self.registry.get_manifest(source, &tag).await? else {
                    continue;
                };
                let copy = Box::pin(self.copied_manifest(source_field, source, raw, 1)).await?;
                let desired = Desired {
                    repository: target.clone(),
                    tags: vec![tag],
                    manifest: copy,
                };
                let plan = self.plan_store(&desired).await?;
                copies.push(ReferrerCopy {
                    desired,
                    plan,
                    cosign_tag: true,
                });
            }
        }
        Ok(copies)
    }

    /// The referrer descriptors of `digest` in `repo`: those the referrers API lists and those
    /// of the fallback tag, once each. A registry with the API may still hold a fallback index
    /// that older clients wrote (or that predates the API), so both are read.
    /// `ask_api` false: the source is known to lack the API; `may_exist` tells which tags are
    /// worth a request.
    async fn referrers_of(
        &self,
        repo: &Repository,
        digest: &str,
        ask_api: bool,
        may_exist: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<Value>, EngineError> {
        let descriptors = |bytes: &[u8]| {
            serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|i| i.get("manifests").and_then(Value::as_array).cloned())
                .unwrap_or_default()
        };
        let mut found = match ask_api {
            true => match self.registry.referrers(repo, digest).await? {
                Some(bytes) => descriptors(&bytes),
                None => Vec::new(),
            },
            false => Vec::new(),
        };
        let index_tag = fallback_tag(digest);
        let fallback = match may_exist(&index_tag) {
            true => self.registry.get_manifest(repo, &index_tag).await?,
            false => None,
        };
        if let Some(raw) = fallback {
            for entry in descriptors(&raw.bytes) {
                let known = found.iter().any(|e| e.get("digest") == entry.get("digest"));
                if !known {
                    found.push(entry);
                }
            }
        }
        Ok(found)
    }

    /// The plan that stores one copied manifest (under its tags, or by digest).
    async fn plan_store(&self, desired: &Desired) -> Result<Plan, EngineError> {
        let observed = self
            .observe(
                desired,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await?;
        Ok(plan::plan(desired, &observed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::Mode;
    use crate::engine::links::fallback_tag;
    use crate::engine::test_support::{engine, reconcile_yaml, repo, seed_image, seed_referrer};
    use crate::oci::media_types::{OCI_INDEX, OCI_MANIFEST};
    use crate::registry::Registry;
    use crate::registry::memory::{MemoryOptions, MemoryRegistry, Operation};

    #[tokio::test]
    async fn referrers_of_a_source_arrive_in_the_target() {
        let registry = Arc::new(MemoryRegistry::default());
        let engine = engine(&registry);
        let (a, b) = (repo("a"), repo("b"));
        let image = seed_image(&registry, &a, "v1", &["layer"]);
        let signature = seed_referrer(&registry, &a, &image.digest, "signed");
        let cosign = seed_image(&registry, &a, "cosign", &["cosign signature"]);
        let cosign_tag = format!("{}.sig", fallback_tag(&image.digest));
        let cosign_bytes = registry.manifest(&a, &cosign.digest).unwrap().bytes;
        registry.insert_manifest(&a, Some(&cosign_tag), OCI_MANIFEST, cosign_bytes);

        let report = reconcile_yaml(
            &engine,
            r#"
repository: memory.test/b
tags: [v1]
source:
  image:
    reference: memory.test/a:v1
    referrers: true
"#,
            Mode::Apply,
        )
        .await
        .unwrap();
        assert_eq!(report.mirrored.referrers, 1);
        assert_eq!(report.mirrored.cosign_tags, 1);
        assert_eq!(registry.tag(&b, "v1"), Some(image.digest.clone()));
        let copied = registry
            .manifest(&b, &signature)
            .expect("the referrer is copied");
        assert_eq!(
            copied.bytes,
            registry.manifest(&a, &signature).unwrap().bytes
        );
        let listed = registry
            .referrers(&b, &image.digest)
            .await
            .unwrap()
            .unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
        assert_eq!(listed["manifests"][0]["digest"], signature.as_str());
        assert_eq!(registry.tag(&b, &cosign_tag), Some(cosign.digest));
    }

    /// A target without the referrers API: every referrer lands in the fallback index, which
    /// each round reads once per subject, not once per referrer.
    #[tokio::test(start_paused = true)]
    async fn a_target_fallback_index_is_read_once_for_all_referrers_of_a_subject() {
        let registry = Arc::new(MemoryRegistry::new(MemoryOptions::distribution_2()));
        let engine = engine(&registry);
        let (a, b) = (repo("a"), repo("b"));
        let image = seed_image(&registry, &a, "v1", &["layer"]);
        let signatures: Vec<String> = ["one", "two", "three"]
            .into_iter()
            .map(|name| seed_referrer(&registry, &a, &image.digest, name))
            .collect();
        let index_tag = fallback_tag(&image.digest);
        // The source is a Distribution too: its referrers are in its own fallback index.
        let descriptors: Vec<serde_json::Value> = signatures
            .iter()
            .map(|digest| {
                let size = registry.manifest(&a, digest).unwrap().bytes.len();
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size})
            })
            .collect();
        let source_index = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors,
        });
        registry.insert_manifest(
            &a,
            Some(&index_tag),
            OCI_INDEX,
            bytes::Bytes::from(serde_json::to_vec(&source_index).unwrap()),
        );
        let mirror = r#"
repository: memory.test/b
tags: [v1]
source:
  image:
    reference: memory.test/a:v1
    referrers: true
"#;
        for round in 0..2 {
            let before = registry.calls().len();
            let report = reconcile_yaml(&engine, mirror, Mode::Apply).await.unwrap();
            let target_index_reads = registry.calls()[before..]
                .iter()
                .filter(|c| {
                    c.operation == Operation::GetManifest
                        && c.repository == b.to_string()
                        && c.reference == index_tag
                })
                .count();
            // Planning reads it once. Each change written (first round only) reads it before
            // its write and at the three settle re-checks after it.
            let changes = if round == 0 { 3 } else { 0 };
            assert_eq!(
                target_index_reads,
                1 + changes * 4,
                "round {round}: {:?}",
                registry.calls()[before..].to_vec()
            );
            assert_eq!(report.mirrored.referrers, if round == 0 { 3 } else { 0 });
        }
        let index = registry.manifest(&b, &index_tag).expect("a fallback index");
        let index: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
        let mut listed: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap())
            .collect();
        listed.sort_unstable();
        let mut expected: Vec<&str> = signatures.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }
}
