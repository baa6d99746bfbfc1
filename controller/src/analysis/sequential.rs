//! The default analysis: an anytime-valid sequential test of the canary against the baseline over
//! the same seconds. It exists because a fixed-interval check either waits (and lets a broken
//! canary fail thousands of requests) or checks often (and rolls back healthy changes on noise);
//! a test whose false-alarm bound holds at every sample can look every second and still promise
//! at most `alpha` false rollbacks. The healthy side is a fixed-horizon test at the bake's end
//! (`healthy.rs`); steps with no baseline pods compare with the stable revision's recorded
//! traffic (`reference.rs`). Maths and assumptions: `docs/analysis.md`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ceiling::{Ceiling, CeilingWatch};
use super::counters::{BadDefinition, Counters};
use super::eprocess::RateComparison;
use super::healthy::HealthyTest;
use super::noninferiority::Tolerance;
use super::reference::Reference;
use super::{Analysis, ConfigError, Evidence, Plan, Sample, Verdict};

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
    /// Bound on the chance that a step calls a canary healthy when it is worse than the
    /// tolerance below (the false-promotion bound per step). Default 0.05.
    pub healthy_alpha: f64,
    /// Tolerance of the healthy verdict, relative: the canary's odds of a bad response may be up
    /// to this multiple of the baseline's. Default 2.
    pub healthy_relative_margin: f64,
    /// Tolerance of the healthy verdict, absolute: the canary's bad rate may be up to this much
    /// above the baseline's (as a proportion). Default 0.01 (1 percentage point). Wider than the
    /// failing side's margins so a healthy canary is told apart from a bad one within one bake
    /// at 20 requests/s per pod (`docs/analysis.md`, "Defaults and why").
    pub healthy_absolute_margin: f64,
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
    /// The healthy verdict's absolute tolerance on the slow share. Default 0.02.
    pub healthy_absolute_margin: f64,
}

impl Default for LatencySignal {
    fn default() -> Self {
        LatencySignal {
            slow_ms: 500.0,
            absolute_margin: 0.01,
            healthy_absolute_margin: 0.02,
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
            healthy_relative_margin: 2.0,
            healthy_absolute_margin: 0.01,
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
        ConfigError::check(
            self.healthy_relative_margin >= 1.0 && self.healthy_relative_margin.is_finite(),
            "healthy_relative_margin",
            self.healthy_relative_margin,
            "a finite ratio of at least 1",
        )?;
        ConfigError::check(
            self.healthy_absolute_margin > 0.0 && self.healthy_absolute_margin < 1.0,
            "healthy_absolute_margin",
            self.healthy_absolute_margin,
            "a proportion strictly between 0 and 1 (0 could never be shown)",
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
            ConfigError::check(
                l.healthy_absolute_margin > 0.0 && l.healthy_absolute_margin < 1.0,
                "latency.healthy_absolute_margin",
                l.healthy_absolute_margin,
                "a proportion strictly between 0 and 1",
            )?;
        }
        if let Some(c) = &self.ceiling {
            c.validate()?;
        }
        Ok(())
    }
}

/// One signal under test: which one, its margins, its running comparison.
#[derive(Debug, Clone)]
pub(crate) struct Signal {
    /// `errors` or `latency`, as in [`Evidence::signal`].
    pub name: &'static str,
    /// The failing side's margins: worse by both to fail.
    pub failing: Tolerance,
    /// The healthy side's tolerance: within it to be healthy.
    pub healthy: Tolerance,
    /// `Some(ms)` for the latency signal: requests at or above it are the events.
    pub slow_ms: Option<f64>,
    /// The running e-process and totals against the concurrent baseline.
    pub test: RateComparison,
}

impl Signal {
    /// This signal's events in `c` (bad responses, or slow ones).
    pub(crate) fn events(&self, c: &Counters, bad: &BadDefinition) -> u64 {
        match self.slow_ms {
            Some(ms) => c.slow(ms),
            None => c.bad(bad),
        }
    }

    /// What the events are, for people.
    pub(crate) fn what(&self) -> String {
        match self.slow_ms {
            Some(ms) => format!("share of requests ≥ {ms} ms"),
            None => "bad-response rate".to_string(),
        }
    }
}

/// The sequential analysis; see the module docs.
#[derive(Debug, Clone)]
pub struct Sequential {
    config: SequentialConfig,
    /// Alpha per signal for the e-process (the budget is split evenly across signals, and
    /// halved again with the reference check when there is a reference).
    alpha_each: f64,
    start: Option<Timestamp>,
    previous: Option<Sample>,
    signals: Vec<Signal>,
    ceiling: CeilingWatch,
    decided: Option<Evidence>,
    healthy: HealthyTest,
    reference: Option<Reference>,
}

impl Sequential {
    /// A test with `config` for a window planned as the defaults plan it (default bake, a
    /// baseline of concurrent pods), waiting for its first sample.
    pub fn new(config: SequentialConfig) -> Result<Self, ConfigError> {
        Sequential::planned(config, Plan::default())
    }

    /// A test with `config` for the window `plan` describes: the healthy test looks at the
    /// bake's end, and a reference stands in for baseline pods the step does not have.
    pub fn planned(config: SequentialConfig, plan: Plan) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut signals = vec![Signal {
            name: "errors",
            failing: Tolerance {
                relative: config.relative_margin,
                absolute: config.absolute_margin,
            },
            healthy: Tolerance {
                relative: config.healthy_relative_margin,
                absolute: config.healthy_absolute_margin,
            },
            slow_ms: None,
            test: RateComparison::new(config.relative_margin),
        }];
        if let Some(l) = config.latency {
            signals.push(Signal {
                name: "latency",
                failing: Tolerance {
                    relative: config.relative_margin,
                    absolute: l.absolute_margin,
                },
                healthy: Tolerance {
                    relative: config.healthy_relative_margin,
                    absolute: l.healthy_absolute_margin,
                },
                slow_ms: Some(l.slow_ms),
                test: RateComparison::new(config.relative_margin),
            });
        }
        let split = if plan.reference.is_some() { 2.0 } else { 1.0 };
        Ok(Sequential {
            alpha_each: config.alpha / signals.len() as f64 / split,
            healthy: HealthyTest::new(&config, plan.bake),
            reference: plan.reference,
            config,
            start: None,
            previous: None,
            signals,
            ceiling: CeilingWatch::default(),
            decided: None,
        })
    }

    /// ln of the e-value of the bad-response test so far (0 before any evidence). Exposed for
    /// the report and for tests of monotonicity.
    pub fn log_e_value(&self) -> f64 {
        self.signals[0].test.log_e_value()
    }

    /// Takes one window's counts; returns the failing evidence if this window decided. When the
    /// test and the ceiling decide on the same window the test's evidence is reported: it says
    /// more (the baseline's rate, the e-value).
    fn step(&mut self, canary: &Counters, baseline: &Counters, elapsed: f64) -> Option<Evidence> {
        let bad = self.config.bad;
        let (nc, nb) = (canary.total(), baseline.total());
        let ceiling = self.config.ceiling.and_then(|c| {
            self.ceiling
                .push(&c, nc, canary.bad(&bad))
                .map(|hit| (c, hit))
        });
        for sig in &mut self.signals {
            let (ec, eb) = (sig.events(canary, &bad), sig.events(baseline, &bad));
            sig.test.update(ec, nc, eb, nb);
        }
        let limit = (1.0 / self.alpha_each).ln();
        let alpha = self.alpha_each;
        for sig in &self.signals {
            let log_e = sig.test.log_e_value();
            if log_e >= limit
                && sig
                    .test
                    .worse_by_absolute_margin(sig.failing.absolute, alpha)
            {
                return Some(self.failing(sig, log_e, elapsed));
            }
        }
        if let Some(ev) = self.against_reference(elapsed) {
            return Some(ev);
        }
        let (ceiling, (bad, total)) = ceiling?;
        Some(ceiling.evidence(bad, total, elapsed))
    }

    /// With no baseline pods at this step: fails a signal whose canary rate is, by its anytime
    /// lower bound, beyond the failing margins of the reference's upper bound (each at half the
    /// signal's share of alpha). The reference is a fixed sample, the canary's bound holds at
    /// every sample, so a canary no worse than the stable revision was fails with probability
    /// at most that share.
    fn against_reference(&self, elapsed: f64) -> Option<Evidence> {
        let r = self.reference.as_ref()?;
        let bad = self.config.bad;
        let half = self.alpha_each / 2.0;
        for sig in &self.signals {
            let t = &sig.test;
            if t.baseline_total >= self.config.min_requests {
                // Concurrent baseline traffic after all (a pod joined): the e-process judges.
                return None;
            }
            let (er, nr) = (sig.events(&r.counters, &bad), r.counters.total());
            if nr == 0 {
                return None;
            }
            let upper = super::math::rate_upper(er, nr, half);
            let floor = sig.failing.ceiling_for(upper);
            if floor < 1.0
                && super::math::rate_excludes(t.canary_events, t.canary_total, half, floor, false)
            {
                let lower = super::math::rate_lower(t.canary_events, t.canary_total, half);
                return Some(Evidence {
                    method: "sequential".into(),
                    summary: format!(
                        "canary {} {:.2}% ({}/{}) over {elapsed:.0} s vs the stable revision's \
                         record {:.2}% ({er}/{nr}, {} to {}; no baseline pods at this step): \
                         lower bound {:.2}% > tolerance {:.2}% (alpha {})",
                        sig.what(),
                        t.canary_rate() * 100.0,
                        t.canary_events,
                        t.canary_total,
                        super::eprocess::ratio(er, nr) * 100.0,
                        r.from,
                        r.to,
                        lower * 100.0,
                        floor * 100.0,
                        self.config.alpha,
                    ),
                    canary_bad: t.canary_events,
                    canary_total: t.canary_total,
                    baseline_bad: er,
                    baseline_total: nr,
                    signal: sig.name.into(),
                    statistic: lower,
                    bound: floor,
                    elapsed_secs: elapsed,
                });
            }
        }
        None
    }

    fn failing(&self, sig: &Signal, log_e: f64, elapsed: f64) -> Evidence {
        let t = &sig.test;
        // Capped so it stays a finite number in JSON.
        let e_value = log_e.min(690.0).exp();
        Evidence {
            method: "sequential".into(),
            summary: format!(
                "canary {} {:.2}% ({}/{}) vs baseline {:.2}% ({}/{}) over {elapsed:.0} s; \
                 e-value {e_value:.3e} ≥ {:.0} (alpha {})",
                sig.what(),
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
                pending: true,
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
        self.healthy.judge(
            &self.signals,
            self.reference.as_ref(),
            &self.config,
            elapsed,
        )
    }
}
