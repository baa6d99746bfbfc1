//! Per-revision health counters, the one input every analysis method reads.
//!
//! The agent keeps them cumulative (like Prometheus counters) because cumulative counts survive a
//! missed scrape: the next sample still carries everything. Analysis turns two cumulative samples
//! into a window by subtraction, and pods into a group by addition, so both operations live here.

use serde::{Deserialize, Serialize};

use super::histogram::LatencyHistogram;

/// Request counts of one pod (or one group of pods) on one revision.
///
/// Status classes partition all responses; `status_502..504` are a finer view inside `status_5xx`,
/// kept apart because a 502 spike is the signature of a broken `upstream` block.
/// `upstream_connect_errors` comes from the error log (`connect() failed ... while connecting to
/// upstream`), which also sees failures nginx hid by retrying another server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// 1xx responses.
    pub status_1xx: u64,
    /// 2xx responses.
    pub status_2xx: u64,
    /// 3xx responses.
    pub status_3xx: u64,
    /// 4xx responses.
    pub status_4xx: u64,
    /// 5xx responses (including the three below).
    pub status_5xx: u64,
    /// 502 Bad Gateway responses.
    pub status_502: u64,
    /// 503 Service Unavailable responses.
    pub status_503: u64,
    /// 504 Gateway Timeout responses.
    pub status_504: u64,
    /// Upstream connect errors seen in the error log.
    pub upstream_connect_errors: u64,
    /// Response latency histogram.
    pub latency: LatencyHistogram,
}

/// Which responses count as "bad" for the error-rate signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadStatuses {
    /// Every 5xx: what Flagger's `request-success-rate` counts, and our default.
    #[default]
    All5xx,
    /// Only 502/503/504: the proxy's own failures, ignoring 500s an application returns on
    /// purpose.
    GatewayOnly,
}

/// What makes a request bad: a status set and whether error-log connect errors add to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadDefinition {
    /// Which statuses are bad.
    pub statuses: BadStatuses,
    /// Also count upstream connect errors that did not surface as a 502/504 (nginx retried
    /// another server): a dead server in an `upstream` block shows up here before users see it.
    pub connect_errors: bool,
}

impl Default for BadDefinition {
    fn default() -> Self {
        BadDefinition {
            statuses: BadStatuses::All5xx,
            connect_errors: true,
        }
    }
}

impl Counters {
    /// Counts one response (status and latency) the way the agent's log ingestion does.
    pub fn record(&mut self, status: u16, latency_ms: f64) {
        match status {
            100..=199 => self.status_1xx += 1,
            200..=299 => self.status_2xx += 1,
            300..=399 => self.status_3xx += 1,
            400..=499 => self.status_4xx += 1,
            _ => {
                // Anything outside 1xx-4xx (including nginx's odd 0 for aborted requests) is a
                // server-side failure as far as the client is concerned.
                self.status_5xx += 1;
                match status {
                    502 => self.status_502 += 1,
                    503 => self.status_503 += 1,
                    504 => self.status_504 += 1,
                    _ => {}
                }
            }
        }
        self.latency.record_ms(latency_ms);
    }

    /// All responses.
    pub fn total(&self) -> u64 {
        self.status_1xx
            .saturating_add(self.status_2xx)
            .saturating_add(self.status_3xx)
            .saturating_add(self.status_4xx)
            .saturating_add(self.status_5xx)
    }

    /// Bad requests under `def`, never more than [`Counters::total`] so it is a proportion.
    ///
    /// Connect errors add only beyond the 502/504s already counted: a connect error that nginx
    /// could not recover from *is* one of those responses, and counting it twice would make bad
    /// events cluster in pairs, which the sequential test's independence assumption forbids.
    pub fn bad(&self, def: &BadDefinition) -> u64 {
        let statuses = match def.statuses {
            BadStatuses::All5xx => self.status_5xx,
            BadStatuses::GatewayOnly => self
                .status_502
                .saturating_add(self.status_503)
                .saturating_add(self.status_504),
        };
        let hidden = if def.connect_errors {
            self.upstream_connect_errors
                .saturating_sub(self.status_502.saturating_add(self.status_504))
        } else {
            0
        };
        statuses.saturating_add(hidden).min(self.total())
    }

    /// Requests at or above `threshold_ms` (rounded to the nearest bucket boundary).
    pub fn slow(&self, threshold_ms: f64) -> u64 {
        self.latency.count_at_or_above(threshold_ms)
    }

    /// Adds another pod's (or window's) counts.
    pub fn merge(&mut self, other: &Counters) {
        self.status_1xx = self.status_1xx.saturating_add(other.status_1xx);
        self.status_2xx = self.status_2xx.saturating_add(other.status_2xx);
        self.status_3xx = self.status_3xx.saturating_add(other.status_3xx);
        self.status_4xx = self.status_4xx.saturating_add(other.status_4xx);
        self.status_5xx = self.status_5xx.saturating_add(other.status_5xx);
        self.status_502 = self.status_502.saturating_add(other.status_502);
        self.status_503 = self.status_503.saturating_add(other.status_503);
        self.status_504 = self.status_504.saturating_add(other.status_504);
        self.upstream_connect_errors = self
            .upstream_connect_errors
            .saturating_add(other.upstream_connect_errors);
        self.latency.merge(&other.latency);
    }

    /// `self - earlier`, field by field; `None` if any counter went down (a restarted pod).
    pub fn checked_sub(&self, earlier: &Counters) -> Option<Counters> {
        Some(Counters {
            status_1xx: self.status_1xx.checked_sub(earlier.status_1xx)?,
            status_2xx: self.status_2xx.checked_sub(earlier.status_2xx)?,
            status_3xx: self.status_3xx.checked_sub(earlier.status_3xx)?,
            status_4xx: self.status_4xx.checked_sub(earlier.status_4xx)?,
            status_5xx: self.status_5xx.checked_sub(earlier.status_5xx)?,
            status_502: self.status_502.checked_sub(earlier.status_502)?,
            status_503: self.status_503.checked_sub(earlier.status_503)?,
            status_504: self.status_504.checked_sub(earlier.status_504)?,
            upstream_connect_errors: self
                .upstream_connect_errors
                .checked_sub(earlier.upstream_connect_errors)?,
            latency: self.latency.checked_sub(&earlier.latency)?,
        })
    }

    /// The increase from `earlier` to `self`, Prometheus-style: when any counter went down the
    /// source restarted from zero, so the whole of `self` is the increase. This loses what
    /// happened between the last sample and the restart, which is the best a sampler can do.
    pub fn delta_since(&self, earlier: &Counters) -> Counters {
        self.checked_sub(earlier).unwrap_or_else(|| self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        let mut c = Counters::default();
        for _ in 0..90 {
            c.record(200, 12.0);
        }
        for s in [404, 500, 502, 502, 503, 504, 301, 101] {
            c.record(s, 40.0);
        }
        c.upstream_connect_errors = 5;
        c
    }

    #[test]
    fn record_sorts_statuses_into_classes() {
        let c = sample();
        assert_eq!(c.total(), 98);
        assert_eq!(c.latency.total(), 98);
        assert_eq!(
            (c.status_5xx, c.status_502, c.status_503, c.status_504),
            (5, 2, 1, 1)
        );
        assert_eq!((c.status_1xx, c.status_3xx, c.status_4xx), (1, 1, 1));
    }

    #[test]
    fn bad_counts_hidden_connect_errors_once() {
        let c = sample();
        let all = BadDefinition::default();
        // 5 x 5xx + (5 connect errors - 3 of them already 502/504) = 7.
        assert_eq!(c.bad(&all), 7);
        let gw = BadDefinition {
            statuses: BadStatuses::GatewayOnly,
            connect_errors: false,
        };
        assert_eq!(c.bad(&gw), 4);
        let mut flood = Counters::default();
        flood.record(502, 1.0);
        flood.upstream_connect_errors = 50;
        assert_eq!(flood.bad(&all), 1, "never more bad than requests");
    }

    #[test]
    fn delta_since_handles_resets() {
        let a = sample();
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.delta_since(&a), a);
        let restarted = Counters::default();
        assert_eq!(restarted.delta_since(&a), Counters::default());
        assert_eq!(
            a.delta_since(&b),
            a,
            "went down: a restart, all of `a` is new"
        );
    }

    #[test]
    fn serde_round_trip() {
        let c = sample();
        let json = serde_json::to_string(&c).expect("serialise");
        let back: Counters = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, c);
        let sparse: Counters = serde_json::from_str(r#"{"status_2xx": 3}"#).expect("defaults");
        assert_eq!(sparse.total(), 3);
    }
}
