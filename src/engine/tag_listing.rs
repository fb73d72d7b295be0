//! One tag listing instead of a HEAD per new tag. When many tags of one repository turn out
//! to be missing (a fan-out push, a first mirror), `GET /v2/<name>/tags/list` answers for all
//! of them at once: a tag the listing lacks needs no HEAD before it is written. A converged
//! repository is never listed, because its HEADs find their tags, so a resync stays at exactly
//! one HEAD per tag.
//!
//! Pure bookkeeping; the engine asks it before each tag HEAD and does the listing itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::oci::Repository;

/// HEADs of one repository that found no tag, within one [`LISTING_LIFETIME`], before it is
/// listed: a burst of new tags, not the odd deleted tag of a long-running controller.
pub const MISSES_BEFORE_LISTING: u32 = 16;
/// A listing longer than this many pages of 1000 tags costs more than the HEADs it saves.
pub const MAX_LISTING_PAGES: usize = 10;
/// How long a listing may stand in for HEADs. A tag someone else creates after the listing
/// would be overwritten as "created" instead of "moved"; the overwrite itself would happen
/// anyway (the object wants the tag), so only the wording can be that stale, and not for long.
pub const LISTING_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct TagListings {
    repositories: HashMap<Repository, RepositoryState>,
}

#[derive(Debug, Default)]
struct RepositoryState {
    /// Misses since `first_miss`.
    misses: u32,
    first_miss: Option<Instant>,
    listing_running: bool,
    listing: Option<Listing>,
}

#[derive(Debug)]
struct Listing {
    taken: Instant,
    tags: HashSet<String>,
}

impl TagListings {
    /// True when a listing younger than [`LISTING_LIFETIME`] lacks `tag`: no HEAD needed.
    pub fn known_absent(&mut self, repo: &Repository, tag: &str, now: Instant) -> bool {
        let Some(state) = self.repositories.get_mut(repo) else {
            return false;
        };
        match &state.listing {
            Some(listing) if now.duration_since(listing.taken) < LISTING_LIFETIME => {
                !listing.tags.contains(tag)
            }
            Some(_) => {
                // Expired: start counting afresh.
                *state = RepositoryState::default();
                false
            }
            None => false,
        }
    }

    /// Notes a HEAD that found no tag; true when the caller should list the repository now
    /// (then exactly one caller is told so, until it reports back).
    pub fn missed(&mut self, repo: &Repository, now: Instant) -> bool {
        let state = self.repositories.entry(repo.clone()).or_default();
        match state.first_miss {
            Some(first) if now.duration_since(first) < LISTING_LIFETIME => {}
            _ => {
                state.first_miss = Some(now);
                state.misses = 0;
            }
        }
        state.misses += 1;
        let list_now = state.misses >= MISSES_BEFORE_LISTING
            && !state.listing_running
            && state.listing.is_none();
        if list_now {
            state.listing_running = true;
        }
        list_now
    }

    /// The listing that [`TagListings::missed`] asked for, taken at `taken` (when the request
    /// was sent: a tag created while it ran may or may not be in it).
    pub fn listed(&mut self, repo: &Repository, tags: Vec<String>, taken: Instant) {
        let state = self.repositories.entry(repo.clone()).or_default();
        state.listing_running = false;
        state.listing = Some(Listing {
            taken,
            tags: tags.into_iter().collect(),
        });
    }

    /// The listing could not be taken: go on with HEADs, and try again after as many misses.
    pub fn listing_failed(&mut self, repo: &Repository) {
        let state = self.repositories.entry(repo.clone()).or_default();
        state.listing_running = false;
        state.misses = 0;
        state.first_miss = None;
    }

    /// A tag this process just wrote: no listing taken before may call it absent.
    pub fn written(&mut self, repo: &Repository, tag: &str) {
        if let Some(listing) = self
            .repositories
            .get_mut(repo)
            .and_then(|state| state.listing.as_mut())
        {
            listing.tags.insert(tag.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> Repository {
        Repository::parse(&format!("127.0.0.1:5000/{name}")).unwrap()
    }

    #[test]
    fn a_repository_is_listed_once_after_enough_misses() {
        let mut listings = TagListings::default();
        let r = repo("fan/out");
        let now = Instant::now();
        let asked: Vec<bool> = (0..40).map(|_| listings.missed(&r, now)).collect();
        assert_eq!(asked.iter().filter(|&&a| a).count(), 1, "one caller lists");
        assert!(asked[MISSES_BEFORE_LISTING as usize - 1]);
        assert!(
            !listings.known_absent(&r, "v1", Instant::now()),
            "not listed yet"
        );
    }

    #[test]
    fn a_listing_answers_for_the_tags_it_lacks_and_only_while_young() {
        let mut listings = TagListings::default();
        let r = repo("fan/out");
        let start = Instant::now();
        listings.listed(&r, vec!["old".into()], start);
        assert!(listings.known_absent(&r, "new", start));
        assert!(
            !listings.known_absent(&r, "old", start),
            "a listed tag is HEADed"
        );
        assert!(!listings.known_absent(&repo("other"), "new", start));
        let later = start + LISTING_LIFETIME;
        assert!(!listings.known_absent(&r, "new", later), "expired");
        // After expiry the count starts again.
        let asked = (0..MISSES_BEFORE_LISTING)
            .filter(|_| listings.missed(&r, later))
            .count();
        assert_eq!(asked, 1);
    }

    #[test]
    fn misses_spread_over_time_never_add_up_to_a_listing() {
        let mut listings = TagListings::default();
        let r = repo("long/running");
        let start = Instant::now();
        let asked = (0..10 * MISSES_BEFORE_LISTING)
            .filter(|&i| {
                // One miss every few seconds: fewer than the threshold in any lifetime.
                let at = start + LISTING_LIFETIME / MISSES_BEFORE_LISTING * 2 * i;
                listings.missed(&r, at)
            })
            .count();
        assert_eq!(asked, 0);
    }

    #[test]
    fn a_tag_written_after_the_listing_is_not_called_absent() {
        let mut listings = TagListings::default();
        let r = repo("fan/out");
        let now = Instant::now();
        listings.listed(&r, Vec::new(), now);
        listings.written(&r, "v1");
        assert!(!listings.known_absent(&r, "v1", now));
        assert!(listings.known_absent(&r, "v2", now));
    }

    #[test]
    fn a_failed_listing_falls_back_to_heads_and_is_tried_again_later() {
        let mut listings = TagListings::default();
        let r = repo("fan/out");
        let now = Instant::now();
        let first = (0..MISSES_BEFORE_LISTING)
            .filter(|_| listings.missed(&r, now))
            .count();
        assert_eq!(first, 1);
        listings.listing_failed(&r);
        assert!(!listings.known_absent(&r, "v1", now));
        let again = (0..MISSES_BEFORE_LISTING)
            .filter(|_| listings.missed(&r, now))
            .count();
        assert_eq!(again, 1);
    }
}
