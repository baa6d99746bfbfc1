//! The agent's wall clock. The agent reads the time of day only to stamp what it reports
//! (`started_at`, `applied_at`, an apply's `finished_at`, a drift episode's `detected_at`,
//! `resolved_at`, `last_check`); every wait and pace runs on the monotonic clock (tokio's
//! `Instant`). The controller never compares these stamps with its own clock: it times its
//! reads with its own `Timestamp::now()` and tells drift episodes apart by equality of
//! `detected_at`. So a pod's clock skewed by seconds changes what it reports, never a decision.
//! This seam lets a test run an agent whose clock is off (issue 16's fault matrix) and prove it.

use jiff::{SignedDuration, Timestamp};

/// Where the agent reads the time of day: the system clock, or (tests) the system clock offset
/// by a fixed skew, as a pod whose node's clock is off would read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    skew: SignedDuration,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock off by `skew` (positive: ahead).
    pub fn skewed(skew: SignedDuration) -> Clock {
        Clock { skew }
    }

    /// The skew from the system clock.
    pub fn skew(&self) -> SignedDuration {
        self.skew
    }

    /// Now, as this clock reads it (the system's time when the skew would overflow).
    pub fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        now.checked_add(self.skew).unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_reads_the_system_time_offset_by_its_skew() {
        let ahead = Clock::skewed(SignedDuration::from_secs(30));
        let behind = Clock::skewed(SignedDuration::from_secs(-30));
        let before = Timestamp::now();
        let (a, b, s) = (ahead.now(), behind.now(), Clock::system().now());
        let after = Timestamp::now();
        let secs = |t: Timestamp, from: Timestamp| t.duration_since(from).as_secs();
        assert!((30..=31).contains(&secs(a, before)), "{a} vs {before}");
        assert!((-31..=-30).contains(&secs(b, after)), "{b} vs {after}");
        assert!(s >= before && s <= after);
        assert_eq!(ahead.skew(), SignedDuration::from_secs(30));
    }
}
