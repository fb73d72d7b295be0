//! What a repository mirror knows of its source for one round, so that the copy of each tag
//! with `referrers` asks only what the listing cannot answer. The round lists every tag of
//! the source anyway: a fallback tag (`sha256-<hex>`) or a cosign tag (`.sig`, `.att`,
//! `.sbom`) exists only if it was listed, and whether the source has the referrers API is
//! asked once, of the first selected tag. Without either, a converged tag is its two HEADs
//! like any copy, instead of a GET of the source manifest and six probes.

use std::collections::BTreeSet;

use super::links::fallback_tag;

#[derive(Clone, Debug)]
pub struct SourceListing {
    /// The listed tags in the shape of a fallback or cosign tag; the others are not asked.
    digest_tags: BTreeSet<String>,
    referrers_api: bool,
}

impl SourceListing {
    pub fn new<'a>(listed: impl IntoIterator<Item = &'a str>, referrers_api: bool) -> Self {
        Self {
            digest_tags: listed
                .into_iter()
                .filter(|t| t.starts_with("sha256-"))
                .map(str::to_string)
                .collect(),
            referrers_api,
        }
    }

    pub fn referrers_api(&self) -> bool {
        self.referrers_api
    }

    /// Whether `tag` may exist in the source (it was listed).
    pub fn may_exist(&self, tag: &str) -> bool {
        !tag.starts_with("sha256-") || self.digest_tags.contains(tag)
    }

    /// True when nothing can hang off `digest` in the source: no referrers API, and no
    /// fallback or cosign tag of it listed. An index's children have digests of their own,
    /// unknown until it is read, so for an index no tag of any digest may be listed.
    pub fn nothing_hangs_off(&self, digest: &str, is_index: bool) -> bool {
        if self.referrers_api {
            return false;
        }
        if is_index {
            return self.digest_tags.is_empty();
        }
        let own = fallback_tag(digest);
        !self
            .digest_tags
            .range(own.clone()..)
            .next()
            .is_some_and(|t| t.starts_with(&own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const E: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_listed_fallback_or_cosign_tag_means_something_hangs_off_its_digest() {
        let signed = format!("{}.sig", fallback_tag(D));
        let listing = SourceListing::new(["1877.5", signed.as_str()], false);
        assert!(!listing.nothing_hangs_off(D, false));
        assert!(listing.nothing_hangs_off(E, false));
        // An index's children are unknown: one digest tag listed anywhere is enough.
        assert!(!listing.nothing_hangs_off(E, true));
        assert!(listing.may_exist(&signed));
        assert!(!listing.may_exist(&fallback_tag(D)));
        assert!(listing.may_exist("1877.5"));
    }

    #[test]
    fn with_the_referrers_api_anything_may_hang_off_anything() {
        let listing = SourceListing::new(["1877.5"], true);
        assert!(!listing.nothing_hangs_off(D, false));
        let without = SourceListing::new(["1877.5"], false);
        assert!(without.nothing_hangs_off(D, false));
        assert!(without.nothing_hangs_off(D, true));
    }
}
