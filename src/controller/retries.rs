//! Per-object backoff after failed rounds: 10 s, doubling, capped at 5 min; reset by a round
//! that succeeds. A round refused by the registry for its credentials also waits out its
//! backoff against other triggers (its own status write, a dependency), unless what could fix
//! it changed: the spec (its generation) or the credentials Secret (its resourceVersion).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FIRST_RETRY: Duration = Duration::from_secs(10);
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Objects remembered at once; beyond it, the entry due first is forgotten (its next failure
/// starts again at the first retry).
const CAPACITY: usize = 4096;

/// What a person may change to fix refused credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basis {
    pub generation: Option<i64>,
    /// The resourceVersion of the credentials Secret; `None`: anonymous, or no such Secret.
    pub credentials: Option<String>,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    due: Instant,
    /// Set when the registry refused the credentials: a round before `due` waits unless the
    /// basis changed.
    refused: Option<Basis>,
}

#[derive(Debug, Default)]
pub struct Retries {
    entries: Mutex<HashMap<String, Entry>>,
}

/// The wait after the `failures`-th failure in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
}

impl Retries {
    /// Records a failure of `key`'s round; returns the wait before the next one. `refused`:
    /// the registry refused the credentials of this basis.
    pub fn failed(&self, key: &str, refused: Option<Basis>) -> Duration {
        self.failed_at(key, refused, Instant::now())
    }

    fn failed_at(&self, key: &str, refused: Option<Basis>, now: Instant) -> Duration {
        let mut entries = self.entries.lock().expect("not poisoned");
        if !entries.contains_key(key) && entries.len() >= CAPACITY {
            let first_due = entries
                .iter()
                .min_by_key(|(_, entry)| entry.due)
                .map(|(key, _)| key.clone());
            if let Some(first_due) = first_due {
                entries.remove(&first_due);
            }
        }
        let entry = entries.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            due: now,
            refused: None,
        });
        // A refusal of other credentials or another spec starts its own backoff.
        if refused.is_some() && entry.refused.is_some() && entry.refused != refused {
            entry.failures = 0;
        }
        entry.failures += 1;
        let wait = backoff(entry.failures);
        entry.due = now + wait;
        entry.refused = refused;
        wait
    }

    pub fn succeeded(&self, key: &str) {
        self.entries.lock().expect("not poisoned").remove(key);
    }

    /// True when `key`'s last round was refused its credentials and its retry is not yet due:
    /// [`Retries::wait`] decides, given the current basis.
    pub fn refused(&self, key: &str) -> bool {
        self.refused_at(key, Instant::now())
    }

    fn refused_at(&self, key: &str, now: Instant) -> bool {
        let entries = self.entries.lock().expect("not poisoned");
        entries
            .get(key)
            .is_some_and(|entry| entry.refused.is_some() && entry.due > now)
    }

    /// How long a round of `key` still waits for its retry, when its credentials were refused
    /// and `basis` is what was refused; `None`: go ahead. A changed basis forgets the backoff.
    pub fn wait(&self, key: &str, basis: &Basis) -> Option<Duration> {
        self.wait_at(key, basis, Instant::now())
    }

    fn wait_at(&self, key: &str, basis: &Basis, now: Instant) -> Option<Duration> {
        let mut entries = self.entries.lock().expect("not poisoned");
        let entry = entries.get(key)?;
        let refused = entry.refused.as_ref()?;
        if refused != basis {
            entries.remove(key);
            return None;
        }
        (entry.due > now).then(|| entry.due - now)
    }

    /// The wait after `key`'s last failure (the first retry when none is recorded).
    pub fn current(&self, key: &str) -> Duration {
        let entries = self.entries.lock().expect("not poisoned");
        entries
            .get(key)
            .map_or(FIRST_RETRY, |entry| backoff(entry.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis(credentials: &str) -> Basis {
        Basis {
            generation: Some(1),
            credentials: Some(credentials.to_string()),
        }
    }

    #[test]
    fn the_backoff_doubles_from_ten_seconds_to_five_minutes() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn failures_back_off_per_object_and_a_success_resets() {
        let retries = Retries::default();
        let now = Instant::now();
        assert_eq!(retries.failed_at("ns/a", None, now), FIRST_RETRY);
        assert_eq!(retries.failed_at("ns/a", None, now), FIRST_RETRY * 2);
        assert_eq!(retries.failed_at("ns/b", None, now), FIRST_RETRY);
        assert_eq!(retries.current("ns/a"), FIRST_RETRY * 2);
        retries.succeeded("ns/a");
        assert_eq!(retries.failed_at("ns/a", None, now), FIRST_RETRY);
    }

    #[test]
    fn refused_credentials_wait_out_their_backoff_unless_the_secret_changed() {
        let retries = Retries::default();
        let now = Instant::now();
        assert_eq!(
            retries.failed_at("ns/a", Some(basis("1")), now),
            FIRST_RETRY
        );
        assert!(retries.refused_at("ns/a", now));
        assert_eq!(
            retries.wait_at("ns/a", &basis("1"), now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            retries.wait_at("ns/a", &basis("1"), now + FIRST_RETRY),
            None
        );
        assert_eq!(
            retries.failed_at("ns/a", Some(basis("1")), now + FIRST_RETRY),
            FIRST_RETRY * 2
        );
        // The Secret changed: go at once, and start the backoff again.
        assert_eq!(
            retries.wait_at("ns/a", &basis("2"), now + FIRST_RETRY),
            None
        );
        assert!(!retries.refused_at("ns/a", now + FIRST_RETRY));
        assert_eq!(
            retries.failed_at("ns/a", Some(basis("2")), now + FIRST_RETRY),
            FIRST_RETRY
        );
        // So does a new generation of the spec.
        let next = Basis {
            generation: Some(2),
            ..basis("2")
        };
        assert_eq!(retries.wait_at("ns/a", &next, now + FIRST_RETRY), None);
    }

    #[test]
    fn other_failures_never_hold_a_round_back() {
        let retries = Retries::default();
        let now = Instant::now();
        retries.failed_at("ns/a", None, now);
        assert!(!retries.refused_at("ns/a", now));
        assert_eq!(retries.wait_at("ns/a", &basis("1"), now), None);
    }

    #[test]
    fn the_number_of_objects_remembered_is_bounded() {
        let retries = Retries::default();
        let now = Instant::now();
        for i in 0..CAPACITY + 10 {
            retries.failed_at(
                &format!("ns/{i}"),
                None,
                now + Duration::from_millis(i as u64),
            );
        }
        let entries = retries.entries.lock().unwrap();
        assert_eq!(entries.len(), CAPACITY);
        assert!(!entries.contains_key("ns/0"), "the entry due first went");
        assert!(entries.contains_key(&format!("ns/{}", CAPACITY + 9)));
    }
}
