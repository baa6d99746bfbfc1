//! A latency histogram with fixed, log-spaced buckets. Fixed buckets are what make it useful here:
//! two histograms from different pods or different moments add and subtract bucket by bucket, so
//! the agent can export cumulative counts and the analysis can take window deltas, exactly like the
//! status counters. Log spacing keeps the relative error of a quantile estimate bounded (one bucket
//! is 2^(1/4) ≈ 19% wide) from 1 ms to 65 s with 66 buckets.

use serde::{Deserialize, Serialize};

/// Buckets per doubling of latency. Four gives a 19% bucket width: coarse enough to stay small,
/// fine enough that "p99 went from 120 ms to 480 ms" is visible.
const PER_DOUBLING: u32 = 4;
/// Doublings covered above 1 ms: 2^16 ms ≈ 65.5 s, past any sane proxy timeout.
const DOUBLINGS: u32 = 16;
/// Number of buckets: one underflow bucket `[0, 1 ms)`, the log-spaced ones, one overflow bucket.
pub const BUCKETS: usize = (PER_DOUBLING * DOUBLINGS) as usize + 2;

/// Counts of requests per latency bucket.
///
/// Bucket 0 is `[0, 1 ms)`; bucket `k` in `1..=64` is `[2^((k-1)/4), 2^(k/4))` ms; bucket 65 is
/// everything from 65.5 s up. Serialised as a plain list of counts; a shorter list (an older
/// sender) reads as zeros for the missing buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS],
        }
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bucket a latency (in milliseconds) falls into. Negative and NaN latencies count as 0,
    /// because a log line with a garbled time is still a request.
    pub fn bucket_of(latency_ms: f64) -> usize {
        if latency_ms.is_nan() || latency_ms < 1.0 {
            return 0;
        }
        let k = (latency_ms.log2() * f64::from(PER_DOUBLING)).floor();
        // `k` is finite and ≥ 0 here; the clamp keeps huge values in the overflow bucket.
        let k = k.min((BUCKETS - 2) as f64) as usize;
        k + 1
    }

    /// Lower bound of bucket `i` in milliseconds (0 for the underflow bucket).
    pub fn lower_bound_ms(i: usize) -> f64 {
        if i == 0 {
            0.0
        } else {
            2f64.powf((i - 1) as f64 / f64::from(PER_DOUBLING))
        }
    }

    /// Upper bound of bucket `i` in milliseconds (infinite for the overflow bucket).
    pub fn upper_bound_ms(i: usize) -> f64 {
        if i >= BUCKETS - 1 {
            f64::INFINITY
        } else {
            2f64.powf(i as f64 / f64::from(PER_DOUBLING))
        }
    }

    /// Records one request.
    pub fn record_ms(&mut self, latency_ms: f64) {
        self.add_to_bucket(Self::bucket_of(latency_ms), 1);
    }

    /// Adds `n` requests to bucket `i` (ignored when `i` is out of range). The simulator and an
    /// agent that pre-bins use this.
    pub fn add_to_bucket(&mut self, i: usize, n: u64) {
        self.normalise();
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(n);
        }
    }

    /// Count in bucket `i` (0 when out of range).
    pub fn bucket(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// Total number of requests recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The bucket boundary used for a latency threshold: the boundary nearest to `threshold_ms`
    /// (in log space). Counting "requests at or above 500 ms" really counts from this boundary,
    /// 2^(36/4) = 512 ms, and the docs say so.
    pub fn boundary_index(threshold_ms: f64) -> usize {
        if threshold_ms.is_nan() || threshold_ms <= 1.0 {
            return 1;
        }
        let k = (threshold_ms.log2() * f64::from(PER_DOUBLING)).round();
        (k.min((BUCKETS - 2) as f64) as usize) + 1
    }

    /// Requests at or above the bucket boundary nearest to `threshold_ms`.
    pub fn count_at_or_above(&self, threshold_ms: f64) -> u64 {
        let from = Self::boundary_index(threshold_ms);
        self.counts
            .iter()
            .skip(from)
            .fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Estimated `q`-quantile in milliseconds (`q` in `[0, 1]`), interpolating geometrically inside
    /// the bucket; `None` when empty. Error is at most one bucket width (19%), less in practice.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // Rank of the wanted observation, 1-based; at least 1.
        let rank = ((q * total as f64).ceil()).max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let before = seen as f64;
            seen = seen.saturating_add(c);
            if seen as f64 >= rank {
                let frac = ((rank - before) / c as f64).clamp(0.0, 1.0);
                let lo = Self::lower_bound_ms(i);
                let hi = Self::upper_bound_ms(i);
                return Some(if i == 0 {
                    frac * hi
                } else if hi.is_infinite() {
                    lo
                } else {
                    lo * (hi / lo).powf(frac)
                });
            }
        }
        Some(Self::lower_bound_ms(BUCKETS - 1))
    }

    /// Adds another histogram bucket by bucket (pods summed, or windows joined).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.normalise();
        for (i, c) in other.counts.iter().enumerate().take(BUCKETS) {
            self.counts[i] = self.counts[i].saturating_add(*c);
        }
    }

    /// `self - earlier`, bucket by bucket; `None` when any bucket went down (a counter reset).
    pub fn checked_sub(&self, earlier: &LatencyHistogram) -> Option<LatencyHistogram> {
        let mut out = LatencyHistogram::new();
        for (i, slot) in out.counts.iter_mut().enumerate() {
            *slot = self.bucket(i).checked_sub(earlier.bucket(i))?;
        }
        Some(out)
    }

    /// Pads a short (deserialised) count list to the full length so indexing is uniform.
    fn normalise(&mut self) {
        if self.counts.len() < BUCKETS {
            self.counts.resize(BUCKETS, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_spaced_and_cover_the_range() {
        assert_eq!(LatencyHistogram::bucket_of(0.5), 0);
        assert_eq!(LatencyHistogram::bucket_of(1.0), 1);
        assert_eq!(LatencyHistogram::bucket_of(1.18), 1);
        assert_eq!(LatencyHistogram::bucket_of(1.2), 2);
        assert_eq!(LatencyHistogram::bucket_of(512.0), 37);
        assert_eq!(LatencyHistogram::bucket_of(1e9), BUCKETS - 1);
        assert_eq!(LatencyHistogram::bucket_of(f64::NAN), 0);
        for i in 1..BUCKETS - 1 {
            let mid =
                (LatencyHistogram::lower_bound_ms(i) * LatencyHistogram::upper_bound_ms(i)).sqrt();
            assert_eq!(LatencyHistogram::bucket_of(mid), i, "bucket {i}");
        }
    }

    #[test]
    fn quantile_is_within_a_bucket_of_the_truth() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000 {
            h.record_ms(ms as f64);
        }
        for (q, truth) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let est = h.quantile_ms(q).expect("non-empty");
            assert!((est / truth - 1.0).abs() < 0.19, "q{q}: {est} vs {truth}");
        }
        assert_eq!(LatencyHistogram::new().quantile_ms(0.5), None);
    }

    #[test]
    fn merge_and_subtract_are_inverse() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record_ms(3.0);
        b.record_ms(700.0);
        b.record_ms(3.0);
        let mut sum = a.clone();
        sum.merge(&b);
        assert_eq!(sum.total(), 3);
        assert_eq!(sum.checked_sub(&b), Some(a.clone()));
        assert_eq!(a.checked_sub(&sum), None);
    }

    #[test]
    fn short_serialised_lists_read_as_zeros() {
        let h: LatencyHistogram = serde_json::from_str("[1, 2]").expect("valid json");
        assert_eq!(h.total(), 3);
        let mut full = LatencyHistogram::new();
        full.merge(&h);
        assert_eq!(full.bucket(1), 2);
        assert_eq!(full.checked_sub(&h).map(|d| d.total()), Some(0));
    }

    #[test]
    fn threshold_counts_from_the_nearest_boundary() {
        let mut h = LatencyHistogram::new();
        h.record_ms(400.0);
        h.record_ms(520.0);
        h.record_ms(5000.0);
        assert_eq!(
            LatencyHistogram::lower_bound_ms(LatencyHistogram::boundary_index(500.0)),
            512.0
        );
        assert_eq!(h.count_at_or_above(500.0), 2);
    }
}
