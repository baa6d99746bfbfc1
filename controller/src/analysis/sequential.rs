//! The default analysis: an anytime-valid sequential test of the canary against the baseline over
//! the same seconds. It exists because a fixed-interval check either waits (and lets a broken
//! canary fail thousands of requests) or checks often (and rolls back healthy changes on noise);
//! a test whose false-alarm bound holds at every sample can look every second and still promise
//! at most `alpha` false rollbacks. Maths and assumptions: `docs/analysis.md`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ceiling::{Ceiling, CeilingWatch};
use super::counters::{BadDefinition, Counters};
use super::eprocess::RateComparison;
use super::{Analysis, ConfigError, Evidence, Sample, Verdict};

/// Settings of the sequential test. Defaults are argued in `docs/analysis.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SequentialConfig {
    /// Bound on the probability of ever failing a canary that is no worse than the baseline (by
    /// the margins below), over the whole bake. Default 0.001: each halving of alpha costs under
    /// one extra bad response on a hard failure, so a small alpha is cheap.
    pub alpha: f64,
    /// Relative margin: the canary's odds of a bad response must exceed this multiple of the
    /// baseline's before it can fail (odds ≈ rate for small rates). Default 1.5.
    pub relative_margin: f64,
    /// Absolute margin on the bad-response rate: the canary must also be worse by more than
    /// this (as a proportion; 0.005 = 0.5 percentage points). Default 0.005.
    pub absolute_margin: f64,
    /// What counts as a bad response.
    pub bad: BadDefinition,
    /// The latency signal; `None` tests bad responses only.
    pub latency: Option<LatencySignal>,
    /// Hard ceiling checked before any test; `None` disables it.
    pub ceiling: Option<Ceiling>,
    /// Requests each group needs before the verdict can be `Healthy` (and below which a
    /// no-decision is reported as too little traffic). Default 200.
    pub min_requests: u64,
    /// Level of the bounds behind a `Healthy` verdict: the canary's rate is, with this much
    /// room for error, within tolerance of the baseline's. Default 0.05.
    pub healthy_alpha: f64,
}

/// The latency signal: the share of requests at or above `slow_ms`, tested like bad responses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencySignal {
    /// A request this slow or slower is "slow". Rounded to the histogram's nearest bucket
    /// boundary (500 → 512 ms). Default 500 ms, Flagger's documented p99 example.
    pub slow_ms: f64,
    /// Absolute margin on the slow share. Default 0.01 (1 percentage point): latency is noisier
    /// than errors and a 1% tail shift rarely matters to users.
    pub absolute_margin: f64,
}

impl Default for LatencySignal {
    fn default() -> Self {
        LatencySignal {
            slow_ms: 500.0,
            absolute_margin: 0.01,
        }
    }
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig {
            alpha: 0.001,
            relative_margin: 1.5,
            absolute_margin: 0.005,
            bad: BadDefinition::default(),
            latency: Some(LatencySignal::default()),
            ceiling: Some(Ceiling::default()),
            min_requests: 200,
            healthy_alpha: 0.05,
        }
    }
}

impl SequentialConfig {
    /// Checks every setting against the range the maths allows.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let unit = "a probability strictly between 0 and 1";
        ConfigError::check(
            self.alpha > 0.0 && self.alpha < 1.0,
            "alpha",
            self.alpha,
            unit,
        )?;
        ConfigError::check(
            self.healthy_alpha > 0.0 && self.healthy_alpha < 1.0,
            "healthy_alpha",
            self.healthy_alpha,
            unit,
        )?;
        ConfigError::check(
            self.relative_margin >= 1.0 && self.relative_margin.is_finite(),
            "relative_margin",
            self.relative_margin,
            "a finite ratio of at least 1 (1 = no relative margin)",
        )?;
        ConfigError::check(
            (0.0..1.0).contains(&self.absolute_margin),
            "absolute_margin",
            self.absolute_margin,
            "a proportion in [0, 1)",
        )?;
        if let Some(l) = &self.latency {
            ConfigError::check(
                l.slow_ms > 0.0 && l.slow_ms.is_finite(),
                "latency.slow_ms",
                l.slow_ms,
                "a positive number of milliseconds",
            )?;
            ConfigError::check(
                (0.0..1.0).contains(&l.absolute_margin),
                "latency.absolute_margin",
                l.absolute_margin,
                "a proportion in [0, 1)",
            )?;
        }
        if let Some(c) = &self.ceiling {
            c.validate()?;
        }
        Ok(())
    }
}

/// One signal under test: which one, its margin, and its running comparison.
#[derive(Debug, Clone)]
struct Signal {
    name: &'static str,
    absolute_margin: f64,
    test: RateComparison,
}

/// The sequential analysis; see the module docs.
#[derive(Debug, Clone)]
pub struct Sequential {
    config: SequentialConfig,
    /// Alpha per signal: the budget is split evenly (union bound).
    alpha_each: f64,
    start: Option<Timestamp>,
    previous: Option<Sample>,
    errors: Signal,
    latency: Option<Signal>,
    ceiling: CeilingWatch,
    decided: Option<Evidence>,
}

impl Sequential {
    /// A test with `config`, waiting for its first sample.
    pub fn new(config: SequentialConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let signals = if config.latency.is_some() { 2.0 } else { 1.0 };
        let errors = Signal {
            name: "errors",
            absolute_margin: config.absolute_margin,
            test: RateComparison::new(config.relative_margin),
        };
        let latency = config.latency.map(|l| Signal {
            name: "latency",
            absolute_margin: l.absolute_margin,
            test: RateComparison::new(config.relative_margin),
        });
        Ok(Sequential {
            alpha_each: config.alpha / signals,
            config,
            start: None,
            previous: None,
            errors,
            latency,
            ceiling: CeilingWatch::default(),
            decided: None,
        })
    }

    /// ln of the e-value of the bad-response test so far (0 before any evidence). Exposed for
    /// the report and for tests of monotonicity.
    pub fn log_e_value(&self) -> f64 {
        self.errors.test.log_e_value()
    }

    /// Takes one window's counts; returns the failing evidence if this window decided. When the
    /// test and the ceiling decide on the same window the test's evidence is reported: it says
    /// more (the baseline's rate, the e-value).
    fn step(&mut self, canary: &Counters, baseline: &Counters, elapsed: f64) -> Option<Evidence> {
        let (nc, nb) = (canary.total(), baseline.total());
        let (bc, bb) = (canary.bad(&self.config.bad), baseline.bad(&self.config.bad));
        let ceiling = self
            .config
            .ceiling
            .and_then(|c| self.ceiling.push(&c, nc, bc).map(|hit| (c, hit)));
        self.errors.test.update(bc, nc, bb, nb);
        if let (Some(l), Some(sig)) = (&self.config.latency, &mut self.latency) {
            sig.test
                .update(canary.slow(l.slow_ms), nc, baseline.slow(l.slow_ms), nb);
        }
        let limit = (1.0 / self.alpha_each).ln();
        let alpha = self.alpha_each;
        for sig in std::iter::once(&self.errors).chain(self.latency.as_ref()) {
            let log_e = sig.test.log_e_value();
            if log_e >= limit
                && sig
                    .test
                    .worse_by_absolute_margin(sig.absolute_margin, alpha)
            {
                return Some(self.failing(sig, log_e, elapsed));
            }
        }
        let (ceiling, (bad, total)) = ceiling?;
        Some(ceiling.evidence(bad, total, elapsed))
    }

    fn failing(&self, sig: &Signal, log_e: f64, elapsed: f64) -> Evidence {
        let t = &sig.test;
        let what = if sig.name == "latency" {
            let slow = self.config.latency.map_or(0.0, |l| l.slow_ms);
            format!("share of requests ≥ {slow} ms")
        } else {
            "bad-response rate".to_string()
        };
        // Capped so it stays a finite number in JSON.
        let e_value = log_e.min(690.0).exp();
        Evidence {
            method: "sequential".into(),
            summary: format!(
                "canary {what} {:.2}% ({}/{}) vs baseline {:.2}% ({}/{}) over {elapsed:.0} s; \
                 e-value {e_value:.3e} ≥ {:.0} (alpha {})",
                t.canary_rate() * 100.0,
                t.canary_events,
                t.canary_total,
                t.baseline_rate() * 100.0,
                t.baseline_events,
                t.baseline_total,
                1.0 / self.alpha_each,
                self.config.alpha,
            ),
            canary_bad: t.canary_events,
            canary_total: t.canary_total,
            baseline_bad: t.baseline_events,
            baseline_total: t.baseline_total,
            signal: sig.name.into(),
            statistic: e_value,
            bound: 1.0 / self.alpha_each,
            elapsed_secs: elapsed,
        }
    }

    /// The verdict when nothing failed: too little traffic, healthy, or not yet.
    fn undecided(&self) -> Verdict {
        let e = &self.errors.test;
        let need = self.config.min_requests;
        if e.canary_total < need || e.baseline_total < need {
            return Verdict::Inconclusive {
                reason: format!(
                    "too little traffic: {} canary and {} baseline requests, need {need} of each",
                    e.canary_total, e.baseline_total
                ),
            };
        }
        let signals = if self.latency.is_some() { 2.0 } else { 1.0 };
        let alpha = self.config.healthy_alpha / signals;
        let healthy = std::iter::once(&self.errors)
            .chain(self.latency.as_ref())
            .all(|s| {
                s.test
                    .within_tolerance(self.config.relative_margin, s.absolute_margin, alpha)
            });
        if healthy {
            Verdict::Healthy
        } else {
            Verdict::Inconclusive {
                reason: format!(
                    "no decision yet: canary bad {:.2}% ({}/{}) vs baseline {:.2}% ({}/{}), \
                     e-value {:.3} of {:.0}",
                    e.canary_rate() * 100.0,
                    e.canary_events,
                    e.canary_total,
                    e.baseline_rate() * 100.0,
                    e.baseline_events,
                    e.baseline_total,
                    e.log_e_value().min(690.0).exp(),
                    1.0 / self.alpha_each
                ),
            }
        }
    }
}

impl Analysis for Sequential {
    fn name(&self) -> &'static str {
        "sequential"
    }

    fn observe(&mut self, sample: &Sample) -> Verdict {
        if let Some(ev) = &self.decided {
            return Verdict::Failing(ev.clone());
        }
        let Some(previous) = self.previous.replace(sample.clone()) else {
            self.start = Some(sample.at);
            return Verdict::Inconclusive {
                reason: "analysis started; waiting for traffic".into(),
            };
        };
        let window = sample.window_since(&previous);
        let elapsed = self
            .start
            .map_or(0.0, |s| sample.at.duration_since(s).as_secs_f64());
        if let Some(ev) = self.step(&window.canary, &window.baseline, elapsed) {
            self.decided = Some(ev.clone());
            return Verdict::Failing(ev);
        }
        self.undecided()
    }
}
