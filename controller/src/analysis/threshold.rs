//! Flagger's analysis policy, reproduced so Switchback can be compared with it on the same traffic
//! and offered to teams who already think in its terms.
//!
//! What Flagger does (sources in `docs/analysis.md`): every `analysis.interval` (default 60 s,
//! never below 10 s) it queries each metric over its own `interval` (default `1m`), e.g. the
//! canary's `request-success-rate` (non-5xx share, in percent) against `thresholdRange.min` and
//! `request-duration` (p99, ms) against `thresholdRange.max`. Any failing metric, or a query with
//! no values (no traffic), increments `status.failedChecks`; a passing check does not reset it.
//! When `failedChecks >= analysis.threshold` (default 1 when unset) it rolls back. Only the
//! canary's own numbers are read: the baseline plays no part.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::ceiling::{Ceiling, CeilingWatch};
use super::counters::{BadDefinition, BadStatuses, Counters};
use super::eprocess::ratio;
use super::{Analysis, ConfigError, Evidence, Sample, Verdict};

/// Settings of the threshold method, named after Flagger's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThresholdConfig {
    /// Seconds between checks (`analysis.interval`). Flagger: default 60 s, minimum 10 s.
    pub interval_secs: u64,
    /// Failed checks before rollback (`analysis.threshold`); cumulative, not consecutive.
    /// Flagger: 1 when unset.
    pub threshold: u32,
    /// Largest error rate in percent: `100 - thresholdRange.min` of `request-success-rate`.
    /// Flagger has no default; its docs' example is `min: 99`, i.e. 1%.
    pub max_error_rate_percent: f64,
    /// Largest p99 latency in ms (`request-duration` `thresholdRange.max`); `None` skips it.
    /// Flagger's docs' example: 500.
    pub max_p99_ms: Option<f64>,
    /// Window each metric is computed over (`metrics[].interval`). Flagger: default `1m`.
    pub metric_window_secs: u64,
    /// A check with no canary requests in its window counts as failed, as Flagger's "no values
    /// found" does. Default true.
    pub empty_window_fails: bool,
    /// What counts as an error. Flagger's `request-success-rate` counts every 5xx and cannot see
    /// the error log, so the default is all 5xx without connect errors.
    pub bad: BadDefinition,
    /// Switchback's hard ceiling, if wanted on top; Flagger has none, so `None` by default.
    pub ceiling: Option<Ceiling>,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig::flagger_defaults()
    }
}

impl ThresholdConfig {
    /// Flagger with everything left at its defaults: interval 60 s, threshold 1, 1-minute
    /// metric window, plus the docs' example metric ranges (success ≥ 99%, p99 ≤ 500 ms), since
    /// Flagger has no default range for a metric.
    pub fn flagger_defaults() -> Self {
        ThresholdConfig {
            interval_secs: 60,
            threshold: 1,
            max_error_rate_percent: 1.0,
            max_p99_ms: Some(500.0),
            metric_window_secs: 60,
            empty_window_fails: true,
            bad: BadDefinition {
                statuses: BadStatuses::All5xx,
                connect_errors: false,
            },
            ceiling: None,
        }
    }

    /// Flagger's documented example (`interval: 1m`, `threshold: 5` in the tutorials, `10` in
    /// the deployment-strategies page) with the same metric ranges.
    pub fn flagger_example(threshold: u32) -> Self {
        ThresholdConfig {
            threshold,
            ..ThresholdConfig::flagger_defaults()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            self.interval_secs >= 1,
            "interval_secs",
            self.interval_secs,
            "at least 1 second (Flagger itself raises anything under 10 s to 10 s)",
        )?;
        ConfigError::check(
            self.threshold >= 1,
            "threshold",
            self.threshold,
            "at least 1",
        )?;
        ConfigError::check(
            (0.0..100.0).contains(&self.max_error_rate_percent),
            "max_error_rate_percent",
            self.max_error_rate_percent,
            "a percentage in [0, 100)",
        )?;
        ConfigError::check(
            self.metric_window_secs >= 1,
            "metric_window_secs",
            self.metric_window_secs,
            "at least 1 second",
        )?;
        if let Some(p) = self.max_p99_ms {
            ConfigError::check(
                p > 0.0,
                "max_p99_ms",
                p,
                "a positive number of milliseconds",
            )?;
        }
        if let Some(c) = &self.ceiling {
            c.validate()?;
        }
        Ok(())
    }
}

/// The threshold analysis; see the module docs.
#[derive(Debug, Clone)]
pub struct Threshold {
    config: ThresholdConfig,
    start: Option<Timestamp>,
    next_check: Option<Timestamp>,
    /// Samples back to one metric window before the latest (the latest at the back), to cut
    /// windows from.
    history: VecDeque<Sample>,
    failed_checks: u32,
    /// Outcome of the latest check: `Ok(summary)` or `Err(why it failed)`.
    last: Option<Result<String, String>>,
    ceiling: CeilingWatch,
    decided: Option<Evidence>,
}

/// What one check found.
struct Check {
    /// `Ok(summary)` when it passed, `Err(why)` when it failed.
    result: Result<String, String>,
    /// Which signal failed it (`errors` also for an empty window).
    signal: &'static str,
    /// The canary's and the baseline's traffic in the metric window.
    canary: Counters,
    baseline: Counters,
}

impl Threshold {
    /// A threshold analysis with `config`, waiting for its first sample.
    pub fn new(config: ThresholdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Threshold {
            config,
            start: None,
            next_check: None,
            history: VecDeque::new(),
            failed_checks: 0,
            last: None,
            ceiling: CeilingWatch::default(),
            decided: None,
        })
    }

    /// Failed checks so far (Flagger's `status.failedChecks`).
    pub fn failed_checks(&self) -> u32 {
        self.failed_checks
    }

    /// One check over the metric window ending at `sample` (already at the back of `history`).
    fn check(&self, sample: &Sample) -> Check {
        let window_start =
            sample.at - SignedDuration::from_secs(secs(self.config.metric_window_secs));
        // The latest sample at or before the window start; the first sample if none is that old.
        let from = self
            .history
            .iter()
            .rev()
            .find(|s| s.at <= window_start)
            .or_else(|| self.history.front())
            .unwrap_or(sample);
        let canary = sample.canary.delta_since(&from.canary);
        let baseline = sample.baseline.delta_since(&from.baseline);
        let n = canary.total();
        let bad = canary.bad(&self.config.bad);
        let rate = 100.0 * ratio(bad, n);
        let p99 = canary.latency.quantile_ms(0.99);
        let max_rate = self.config.max_error_rate_percent;
        let (result, signal) = if n == 0 {
            let msg = "no canary requests in the metric window".to_string();
            let result = if self.config.empty_window_fails {
                Err(msg)
            } else {
                Ok(msg)
            };
            (result, "errors")
        } else if rate > max_rate {
            let why = format!("canary error rate {rate:.2}% ({bad}/{n}) > {max_rate}%");
            (Err(why), "errors")
        } else {
            match (self.config.max_p99_ms, p99) {
                (Some(max), Some(p)) if p > max => {
                    (Err(format!("canary p99 {p:.0} ms > {max} ms")), "latency")
                }
                (_, Some(p)) => (
                    Ok(format!("canary error rate {rate:.2}%, p99 {p:.0} ms")),
                    "errors",
                ),
                (_, None) => (Ok(format!("canary error rate {rate:.2}%")), "errors"),
            }
        };
        Check {
            result,
            signal,
            canary,
            baseline,
        }
    }
}

/// Seconds as the `i64` jiff wants; saturates (a bake of 2^63 s never happens).
fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

impl Analysis for Threshold {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn observe(&mut self, sample: &Sample) -> Verdict {
        if let Some(ev) = &self.decided {
            return Verdict::Failing(ev.clone());
        }
        let start = *self.start.get_or_insert(sample.at);
        let elapsed = sample.at.duration_since(start).as_secs_f64();
        let interval = SignedDuration::from_secs(secs(self.config.interval_secs));
        let next = *self.next_check.get_or_insert(start + interval);
        if let (Some(ceiling), Some(prev)) = (&self.config.ceiling, self.history.back()) {
            let d = sample.canary.delta_since(&prev.canary);
            let breach = self
                .ceiling
                .push(ceiling, d.total(), d.bad(&self.config.bad));
            if let Some((bad, total)) = breach {
                let ev = ceiling.evidence(bad, total, elapsed);
                self.decided = Some(ev.clone());
                return Verdict::Failing(ev);
            }
        }
        self.history.push_back(sample.clone());
        let keep_from = sample.at - SignedDuration::from_secs(secs(self.config.metric_window_secs));
        while self.history.len() > 1 && self.history.get(1).is_some_and(|s| s.at <= keep_from) {
            self.history.pop_front();
        }
        if sample.at >= next {
            // Flagger's ticker: one check per tick; ticks missed between samples are skipped.
            let mut n = next;
            while n <= sample.at {
                n += interval;
            }
            self.next_check = Some(n);
            let check = self.check(sample);
            if check.result.is_err() {
                self.failed_checks += 1;
            }
            if self.failed_checks >= self.config.threshold {
                let (Err(why) | Ok(why)) = &check.result;
                let ev = Evidence {
                    method: "threshold".into(),
                    summary: format!(
                        "{why}; failed checks {}/{} (interval {} s)",
                        self.failed_checks, self.config.threshold, self.config.interval_secs
                    ),
                    canary_bad: check.canary.bad(&self.config.bad),
                    canary_total: check.canary.total(),
                    baseline_bad: check.baseline.bad(&self.config.bad),
                    baseline_total: check.baseline.total(),
                    signal: check.signal.into(),
                    statistic: f64::from(self.failed_checks),
                    bound: f64::from(self.config.threshold),
                    elapsed_secs: elapsed,
                };
                self.decided = Some(ev.clone());
                return Verdict::Failing(ev);
            }
            self.last = Some(check.result);
        }
        match &self.last {
            None => Verdict::Inconclusive {
                reason: format!("first check at {} s", self.config.interval_secs),
                pending: true,
            },
            Some(Ok(_)) => Verdict::Healthy,
            Some(Err(why)) => Verdict::Inconclusive {
                reason: format!(
                    "last check failed ({why}); {}/{} failed checks",
                    self.failed_checks, self.config.threshold
                ),
                pending: false,
            },
        }
    }
}
