//! Token buckets, and shares of the body slots per source address. The receiver keeps two kinds
//! of bucket apart (issue 13, finding 8): one per hook id, taken only by authenticated requests,
//! so one noisy (or hostile) sender with the secret cannot make the controller fetch in a loop;
//! and one per source address, taken by requests that fail authentication, which only decides
//! whether they hear 401 or 429 and can never hold back a correctly signed request. Buckets are
//! dropped when idle and full past a bound, so neither map grows with made-up ids or addresses.
//!
//! [`SourceShares`] caps the bodies one source address may have in flight at once, so one
//! address sending slow bodies cannot take every slot from the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Past this many buckets, the full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 4096;

/// Per-hook token buckets: `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter allowing `burst` requests at once per hook and `per_second` on average.
    pub fn new(burst: u32, per_second: f64) -> RateLimiter {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(0.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `hook` at `now`; `false` when its bucket is empty.
    pub fn allow(&self, hook: &str, now: Instant) -> bool {
        // A poisoned lock only means another request panicked mid-update; the map is still sound.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(hook) {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, b| refill(*b, now, burst, per_second) < burst);
        }
        let bucket = buckets.entry(hook.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = refill(*bucket, now, self.burst, self.per_second);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Body reads in flight per source address, each at most `max`.
#[derive(Debug)]
pub struct SourceShares {
    max: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One body read of a source; dropping it gives the slot back.
#[derive(Debug)]
pub struct Share {
    key: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl SourceShares {
    /// At most `max` bodies in flight per source.
    pub fn new(max: usize) -> SourceShares {
        SourceShares {
            max: max.max(1),
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `source`, `None` when it has `max` in flight already.
    pub fn enter(&self, source: &str) -> Option<Share> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(source.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Share {
            key: source.to_string(),
            counts: Arc::clone(&self.counts),
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The tokens a bucket holds at `now`.
fn refill(bucket: Bucket, now: Instant, burst: f64, per_second: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_hook() {
        let limiter = RateLimiter::new(2, 1.0);
        let t0 = Instant::now();
        assert!(limiter.allow("a", t0));
        assert!(limiter.allow("a", t0));
        assert!(!limiter.allow("a", t0));
        assert!(limiter.allow("b", t0), "hooks have their own buckets");
        assert!(!limiter.allow("a", t0 + Duration::from_millis(500)));
        assert!(limiter.allow("a", t0 + Duration::from_millis(1600)));
        assert!(limiter.allow("a", t0 + Duration::from_secs(100)));
        assert!(limiter.allow("a", t0 + Duration::from_secs(100)));
        assert!(
            !limiter.allow("a", t0 + Duration::from_secs(100)),
            "capped at the burst"
        );
    }

    #[test]
    fn a_source_holds_at_most_its_share_of_slots() {
        let shares = SourceShares::new(2);
        let a1 = shares.enter("10.0.0.1");
        let a2 = shares.enter("10.0.0.1");
        assert!(a1.is_some() && a2.is_some());
        assert!(
            shares.enter("10.0.0.1").is_none(),
            "a third from the same source"
        );
        assert!(
            shares.enter("10.0.0.2").is_some(),
            "another source has its own"
        );
        drop(a1);
        assert!(shares.enter("10.0.0.1").is_some(), "a slot came back");
        drop(a2);
        let left = shares.counts.lock().map(|c| c.len()).unwrap_or(99);
        assert_eq!(left, 0, "empty entries are removed");
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = RateLimiter::new(1, 1.0);
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS * 2) {
            limiter.allow(&format!("h{i}"), t0 + Duration::from_secs(i as u64 * 2));
        }
        let len = limiter.buckets.lock().map(|b| b.len()).unwrap_or(0);
        assert!(len <= MAX_BUCKETS, "{len} buckets");
    }
}
