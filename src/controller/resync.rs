//! When a converged object is checked again. Objects created together with one `interval`
//! would otherwise all fall due in the same second, every interval, and the controller would
//! work in bursts it cannot keep up with; each object's period is stretched or shrunk by up to
//! a tenth, by a fraction hashed from its uid, so such a batch spreads over a fifth of the
//! interval at once and drifts further apart with every round (client-go and Flux jitter their
//! resyncs the same way).

use std::time::Duration;

/// The share of the interval by which an object's period may differ from it, either way.
const JITTER: f64 = 0.1;

/// `interval`, changed by the object's own fraction of it in [-10 %, +10 %). The same uid gets
/// the same period on every replica and after a restart.
pub fn jittered(interval: Duration, uid: &str) -> Duration {
    let unit = fnv1a(uid.as_bytes()) as f64 / u64::MAX as f64;
    interval.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0))
}

/// FNV-1a, 64 bits: stable across processes and Rust versions, unlike std's hasher; then one
/// round of a 64-bit finalizer, since uids that differ only at the end would otherwise land
/// close together.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes uids are version-4 UUIDs; these differ like consecutive ones would.
    fn uid(i: u32) -> String {
        format!("6f1c{i:04x}-3b2a-4c1d-9e8f-0a1b2c3d{i:04x}")
    }

    #[test]
    fn a_thousand_objects_of_one_interval_spread_over_a_fifth_of_it() {
        let interval = Duration::from_secs(60);
        let periods: Vec<Duration> = (0..1000).map(|i| jittered(interval, &uid(i))).collect();
        let (low, high) = (interval.mul_f64(0.9), interval.mul_f64(1.1));
        assert!(
            periods.iter().all(|p| (low..high).contains(p)),
            "{periods:?}"
        );
        // Twelve one-second buckets from 54 s to 66 s: about 83 objects in each, none empty,
        // none with twice its share.
        let mut buckets = [0u32; 12];
        for period in &periods {
            let bucket = (period.as_secs_f64() - 54.0).floor() as usize;
            buckets[bucket.min(11)] += 1;
        }
        assert!(
            buckets.iter().all(|n| (40..=125).contains(n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn an_object_keeps_its_period() {
        let interval = Duration::from_secs(600);
        assert_eq!(jittered(interval, &uid(7)), jittered(interval, &uid(7)));
        assert_ne!(jittered(interval, &uid(7)), jittered(interval, &uid(8)));
    }
}
