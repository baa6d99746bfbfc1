//! The hard ceiling: a canary whose recent requests are mostly failing is rolled back at once,
//! whatever the baseline does and before any test has to weigh evidence. It is the rule a person
//! would apply by eye ("half of its responses are 502s, pull it"), and it bounds the damage when
//! the statistics cannot help (no baseline traffic, or a test configured very conservatively).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Evidence};

/// Fail when the canary's bad share over its most recent `min_requests` (or more) requests is
/// above `max_bad_share`.
///
/// Defaults: 50% over at least 20 requests. At a true 1% error rate the chance that 11 or more of
/// 20 requests fail is about 1e-17, so the ceiling never fires on a healthy canary; at 100% 502 it
/// fires on the 20th request. (DESIGN §3.5 mentions 5%: over 20 requests that would be one bad
/// response in twenty, which a pod with 1% background errors hits about once every 60 windows,
/// so a low ceiling needs a much larger `min_requests`.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ceiling {
    /// Largest tolerated bad share, in `(0, 1)`.
    pub max_bad_share: f64,
    /// Requests the share is measured over, at least 1.
    pub min_requests: u64,
}

impl Default for Ceiling {
    fn default() -> Self {
        Ceiling {
            max_bad_share: 0.5,
            min_requests: 20,
        }
    }
}

impl Ceiling {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            self.max_bad_share > 0.0 && self.max_bad_share < 1.0,
            "ceiling.max_bad_share",
            self.max_bad_share,
            "a share strictly between 0 and 1",
        )?;
        ConfigError::check(
            self.min_requests >= 1,
            "ceiling.min_requests",
            self.min_requests,
            "at least 1",
        )
    }
}

impl Ceiling {
    /// The evidence for a breach of `bad` of `total` recent requests, `elapsed_secs` in.
    pub(crate) fn evidence(&self, bad: u64, total: u64, elapsed_secs: f64) -> Evidence {
        let share = if total == 0 {
            0.0
        } else {
            bad as f64 / total as f64
        };
        Evidence {
            method: "ceiling".into(),
            summary: format!(
                "canary bad share {:.1}% ({bad}/{total} recent requests) is over the ceiling of \
                 {:.1}%",
                share * 100.0,
                self.max_bad_share * 100.0
            ),
            canary_bad: bad,
            canary_total: total,
            signal: "errors".into(),
            statistic: share,
            bound: self.max_bad_share,
            elapsed_secs,
            ..Evidence::default()
        }
    }
}

/// The ceiling's running state: the shortest run of recent samples holding `min_requests`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CeilingWatch {
    recent: VecDeque<(u64, u64)>,
    total: u64,
    bad: u64,
}

impl CeilingWatch {
    /// Adds one sample's canary `(total, bad)` and says whether the ceiling is breached, with the
    /// `(bad, total)` it judged.
    pub(crate) fn push(&mut self, ceiling: &Ceiling, total: u64, bad: u64) -> Option<(u64, u64)> {
        if total == 0 {
            return None;
        }
        self.recent.push_back((total, bad));
        self.total += total;
        self.bad += bad;
        // Drop old samples while what is left still covers `min_requests`.
        while let Some(&(t, b)) = self.recent.front() {
            if self.total - t >= ceiling.min_requests {
                self.total -= t;
                self.bad -= b;
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let breached = self.total >= ceiling.min_requests
            && self.bad as f64 > ceiling.max_bad_share * self.total as f64;
        breached.then_some((self.bad, self.total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_the_request_that_fills_the_window() {
        let c = Ceiling::default();
        let mut w = CeilingWatch::default();
        for i in 1..20 {
            assert_eq!(w.push(&c, 1, 1), None, "request {i}");
        }
        assert_eq!(w.push(&c, 1, 1), Some((20, 20)));
    }

    #[test]
    fn judges_recent_requests_not_the_whole_history() {
        let c = Ceiling::default();
        let mut w = CeilingWatch::default();
        assert_eq!(w.push(&c, 10_000, 0), None);
        // A late failure is not diluted by the 10,000 good requests before it.
        assert_eq!(w.push(&c, 30, 30), Some((30, 30)));
        assert!(
            Ceiling {
                max_bad_share: 1.0,
                ..c
            }
            .validate()
            .is_err()
        );
    }
}
