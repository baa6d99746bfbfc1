//! The healthy side of the sequential analysis: when the canary may be called healthy, and what
//! to say when it cannot be yet. A healthy verdict moves a rollout forward, so it needs evidence
//! that the canary is within tolerance of its baseline; but unlike the failing side it need not
//! be ready every second. It looks at the bake's end (`looks.rs`) with the non-inferiority score
//! test (`noninferiority.rs`); every signal must pass. A step that ends without enough evidence
//! gets a reason that says what was seen, what a verdict needs at the traffic seen, and why.

use super::eprocess::ratio;
use super::looks::Looks;
use super::noninferiority::{Look, TwoGroups, look};
use super::reference::Reference;
use super::sequential::{SequentialConfig, Signal};
use super::{DEFAULT_BAKE, Verdict};

/// Share of the healthy budget spent on the baseline rate's lower bound (the margin is computed
/// at it); the looks share the rest.
const MARGIN_SHARE: f64 = 0.1;

/// The healthy test's state in one window.
#[derive(Debug, Clone)]
pub(crate) struct HealthyTest {
    looks: Looks,
    margin_level: f64,
    /// Looks made so far.
    done: u32,
    /// A look passed: the verdict stays `Healthy` (unless the failing side decides).
    passed: bool,
}

/// What the canary is compared with in one signal.
struct Compared {
    groups: TwoGroups,
    /// "baseline" or the reference's description.
    label: String,
}

impl HealthyTest {
    /// The test for a window whose step bakes `bake`.
    pub(crate) fn new(config: &SequentialConfig, bake: jiff::SignedDuration) -> Self {
        let bake = if bake.is_positive() {
            bake
        } else {
            DEFAULT_BAKE
        };
        let budget = config.healthy_alpha;
        HealthyTest {
            looks: Looks::new(bake.as_secs_f64(), budget * (1.0 - MARGIN_SHARE)),
            margin_level: budget * MARGIN_SHARE,
            done: 0,
            passed: false,
        }
    }

    /// The levels of the first look, `(margin, test)`: what a step decided at its bake's end
    /// was judged with (the replay's power table uses them).
    pub(crate) fn first_look(config: &SequentialConfig) -> (f64, f64) {
        let t = HealthyTest::new(config, DEFAULT_BAKE);
        (t.margin_level, t.looks.level(1))
    }

    /// The verdict when nothing failed, `elapsed` seconds into the window: `Healthy` once a look
    /// has passed, else `Inconclusive` with what was seen and what is needed.
    pub(crate) fn judge(
        &mut self,
        signals: &[Signal],
        reference: Option<&Reference>,
        config: &SequentialConfig,
        elapsed: f64,
    ) -> Verdict {
        if self.passed {
            return Verdict::Healthy;
        }
        let compared: Vec<Option<Compared>> = signals
            .iter()
            .map(|s| compare(s, reference, config))
            .collect();
        let canary_total = signals[0].test.canary_total;
        let enough = canary_total >= config.min_requests && compared.iter().all(Option::is_some);
        let looks_at = |level: f64| -> Vec<Look> {
            signals
                .iter()
                .zip(&compared)
                .filter_map(|(s, c)| {
                    c.as_ref()
                        .map(|c| look(&c.groups, &s.healthy, self.margin_level, level))
                })
                .collect()
        };
        if let Some(k) = self.looks.due(elapsed, self.done) {
            self.done = k;
            if enough && looks_at(self.looks.level(k)).iter().all(|l| l.healthy) {
                self.passed = true;
                return Verdict::Healthy;
            }
        }
        // Once a look has been made, the reason weighs today's counts at the next look's level:
        // what that look would need.
        let forecast = (self.done > 0 && enough).then(|| looks_at(self.looks.level(self.done + 1)));
        let reason = self.reason(signals, &compared, config, elapsed, forecast.as_deref());
        Verdict::Inconclusive {
            reason,
            pending: self.done == 0,
        }
    }

    /// Why there is no verdict yet, in one line a person can act on.
    fn reason(
        &self,
        signals: &[Signal],
        compared: &[Option<Compared>],
        config: &SequentialConfig,
        elapsed: f64,
        looked: Option<&[Look]>,
    ) -> String {
        let errors = &signals[0].test;
        let nc = errors.canary_total;
        let rate = if elapsed > 0.0 {
            nc as f64 / elapsed
        } else {
            0.0
        };
        let first_look = self.looks.at(1);
        let when = if self.done == 0 {
            format!("; first look at {}", human(first_look))
        } else {
            String::new()
        };
        if nc == 0 {
            return format!("no requests reached the canary in {}{when}", human(elapsed));
        }
        let Some(c) = &compared[0] else {
            return format!("{}{when}", no_baseline(signals, config));
        };
        let min = config.min_requests;
        let g = &c.groups;
        let seen = format!(
            "canary {:.2}% bad ({}/{nc}, {}) vs {} {:.2}% ({}/{})",
            errors.canary_rate() * 100.0,
            errors.canary_events,
            per_second(rate),
            c.label,
            ratio(g.baseline_events, g.baseline_total) * 100.0,
            g.baseline_events,
            g.baseline_total,
        );
        if nc < min || g.baseline_total < min {
            let more = min.saturating_sub(nc);
            return format!(
                "too little traffic: {seen}; need {min} requests in each{}{when}",
                if more > 0 && rate > 0.0 {
                    format!(", ~{} more at this rate", human(more as f64 / rate))
                } else {
                    String::new()
                }
            );
        }
        let Some(results) = looked else {
            return format!("collecting: {seen}{when}");
        };
        // The next look's level: what a verdict will need.
        let next = self.looks.level(self.done + 1);
        let mut factor: f64 = 1.0;
        for ((sig, result), c) in signals.iter().zip(results).zip(compared.iter().flatten()) {
            match result.traffic_factor_needed(next) {
                Some(f) => factor = factor.max(f),
                None => {
                    let t = &sig.test;
                    let base = ratio(c.groups.baseline_events, c.groups.baseline_total);
                    return format!(
                        "not within tolerance: canary {} {:.2}% ({}/{}) vs {} {:.2}%; healthy \
                         needs at most {:.2}%, so more traffic will not make it healthy: \
                         promote or abort",
                        sig.what(),
                        t.canary_rate() * 100.0,
                        t.canary_events,
                        t.canary_total,
                        c.label,
                        base * 100.0,
                        (base + result.margin) * 100.0
                    );
                }
            }
        }
        let need = (factor * nc as f64).ceil() as u64;
        format!(
            "too little evidence: {seen}; a healthy verdict needs about {need} canary requests \
             at these rates, ~{} more at {}",
            human((need.saturating_sub(nc)) as f64 / rate),
            per_second(rate)
        )
    }
}

/// The comparison for one signal: the concurrent baseline when it has enough traffic, else the
/// reference when there is one with enough.
fn compare(
    sig: &Signal,
    reference: Option<&Reference>,
    config: &SequentialConfig,
) -> Option<Compared> {
    let t = &sig.test;
    let min = config.min_requests;
    let concurrent = Compared {
        groups: TwoGroups {
            canary_events: t.canary_events,
            canary_total: t.canary_total,
            baseline_events: t.baseline_events,
            baseline_total: t.baseline_total,
        },
        label: "baseline".to_string(),
    };
    if t.baseline_total >= min {
        return Some(concurrent);
    }
    match reference {
        Some(r) if r.counters.total() >= min => Some(Compared {
            groups: TwoGroups {
                canary_events: t.canary_events,
                canary_total: t.canary_total,
                baseline_events: sig.events(&r.counters, &config.bad),
                baseline_total: r.counters.total(),
            },
            label: "the stable revision's record".to_string(),
        }),
        Some(_) => None,
        // No reference: a baseline with little traffic still says "too little traffic".
        None if t.baseline_total > 0 => Some(concurrent),
        None => None,
    }
}

/// The reason when there is nothing to compare the canary with.
fn no_baseline(signals: &[Signal], config: &SequentialConfig) -> String {
    let t = &signals[0].test;
    format!(
        "no baseline to compare with: {} baseline requests and no record of the stable \
         revision with {} requests or more (this step leaves no pod on the stable revision, or \
         the controller has not seen it serve traffic yet)",
        t.baseline_total, config.min_requests
    )
}

/// A duration for people: seconds, minutes or hours.
pub(crate) fn human(secs: f64) -> String {
    if !secs.is_finite() {
        return "forever".to_string();
    }
    let secs = secs.max(0.0);
    if secs < 90.0 {
        format!("{secs:.0}s")
    } else if secs < 90.0 * 60.0 {
        format!("{:.0}m", secs / 60.0)
    } else {
        format!("{:.1}h", secs / 3600.0)
    }
}

/// A request rate for people.
fn per_second(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}/s")
    } else {
        format!("{rate:.1}/s")
    }
}
