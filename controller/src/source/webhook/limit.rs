//! A token bucket per hook id, so one noisy (or hostile) sender cannot make the controller fetch
//! in a loop or spend its CPU on HMACs. Buckets exist only for hook ids that have a secret, and
//! idle full buckets are dropped past a bound, so the map cannot grow with made-up ids.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
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
