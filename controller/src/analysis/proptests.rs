//! Property tests of the promises the analysis makes: the sequential test's false-alarm bound
//! under a canary identical to the baseline (checked by simulation with the seeded generator),
//! fast failure of a canary that answers every request with 502, and monotonicity (a worse canary
//! never looks better).

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::eprocess::RateComparison;
use super::noninferiority::Tolerance;
use super::replay::rng::{Rng, derive_seed};
use super::{Analysis, Counters, Plan, Sample, Sequential, SequentialConfig, Verdict};

/// Feeds per-interval counts to an analysis as cumulative samples, one per second.
struct Feed {
    canary: Counters,
    baseline: Counters,
    t: i64,
}

impl Feed {
    /// A feed whose first (zero) sample has been observed by `a`.
    fn start(a: &mut dyn Analysis) -> Self {
        let f = Feed {
            canary: Counters::default(),
            baseline: Counters::default(),
            t: 0,
        };
        a.observe(&f.sample());
        f
    }

    fn sample(&self) -> Sample {
        Sample {
            at: Timestamp::UNIX_EPOCH + SignedDuration::from_secs(self.t),
            canary: self.canary.clone(),
            baseline: self.baseline.clone(),
        }
    }

    /// One interval: canary `bc` bad of `nc`, baseline `bb` bad of `nb`.
    fn push(&mut self, a: &mut dyn Analysis, nc: u64, bc: u64, nb: u64, bb: u64) -> Verdict {
        self.t += 1;
        self.canary.status_2xx += nc - bc;
        self.canary.status_5xx += bc;
        self.baseline.status_2xx += nb - bb;
        self.baseline.status_5xx += bb;
        a.observe(&self.sample())
    }
}

/// The core test with nothing that makes it more conservative: no margins, no ceiling, errors
/// only. If the bound holds for this, it holds for the defaults.
fn bare(alpha: f64) -> SequentialConfig {
    SequentialConfig {
        alpha,
        relative_margin: 1.0,
        absolute_margin: 0.0,
        latency: None,
        ceiling: None,
        ..SequentialConfig::default()
    }
}

/// A binomial draw by summing Bernoullis (small `n` only).
fn binomial(rng: &mut Rng, n: u64, p: f64) -> u64 {
    (0..n).filter(|_| rng.uniform() < p).count() as u64
}

/// Odds multiplied by `factor`, back as a probability.
fn scale_odds(p: f64, factor: f64) -> f64 {
    let o = factor * p / (1.0 - p);
    o / (1.0 + o)
}

/// Alarms of one null run: whether the e-process alone ever reached `1/alpha`, and whether the
/// whole test ever failed the canary.
#[derive(Debug, Clone, Copy, Default)]
struct Alarms {
    e_process: bool,
    test: bool,
}

/// One null run: the canary's odds of a bad response are `canary_odds` times the baseline's every
/// second (1: the same rate; the relative margin: the edge of the null), and the shared rate may
/// spike for everyone at once.
#[allow(clippy::too_many_arguments)]
fn null_run(
    cfg: &SequentialConfig,
    canary_odds: f64,
    seed: u64,
    p: f64,
    rate: f64,
    pods_c: u32,
    pods_b: u32,
    spikes: bool,
    bernoulli: bool,
    steps: u32,
) -> Alarms {
    let mut rng = Rng::new(seed);
    let mut a = match Sequential::new(cfg.clone()) {
        Ok(a) => a,
        Err(e) => panic!("config: {e}"),
    };
    let mut e = RateComparison::new(cfg.relative_margin);
    let limit = (1.0 / cfg.alpha).ln();
    let mut feed = Feed::start(&mut a);
    let mut alarms = Alarms::default();
    for _ in 0..steps {
        let p_b = if spikes && rng.uniform() < 0.05 {
            (p * 20.0).min(0.9)
        } else {
            p
        };
        let p_c = scale_odds(p_b, canary_odds);
        let (lc, lb) = (rate * f64::from(pods_c), rate * f64::from(pods_b));
        let (nc, bc, nb, bb) = if bernoulli {
            // Fixed request counts, each request bad with its probability: the conditional law
            // of the canary's share is (noncentral) hypergeometric, not binomial.
            let (nc, nb) = (lc as u64, lb as u64);
            (
                nc,
                binomial(&mut rng, nc, p_c),
                nb,
                binomial(&mut rng, nb, p_b),
            )
        } else {
            let (gc, bc) = (rng.poisson(lc * (1.0 - p_c)), rng.poisson(lc * p_c));
            let (gb, bb) = (rng.poisson(lb * (1.0 - p_b)), rng.poisson(lb * p_b));
            (gc + bc, bc, gb + bb, bb)
        };
        e.update(bc, nc, bb, nb);
        alarms.e_process |= e.log_e_value() >= limit;
        if !alarms.test {
            alarms.test = matches!(feed.push(&mut a, nc, bc, nb, bb), Verdict::Failing(_));
        }
        if alarms.e_process && alarms.test {
            break;
        }
    }
    alarms
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Canary ≡ baseline (or exactly at the relative margin): the share of runs in which the
    /// e-process alone ever reaches 1/alpha, and the share in which the whole test fails the
    /// canary, stay under alpha (plus binomial noise on 200 runs). alpha = 0.05 so that the
    /// bound is testable with few runs; no absolute margin and no ceiling.
    #[test]
    fn null_false_alarms_stay_under_alpha(
        seed in any::<u64>(),
        p in 0.002f64..0.3,
        rate in prop::sample::select(vec![3.0, 10.0, 40.0]),
        pods_c in 1u32..=3,
        pods_b in 1u32..=6,
        spikes in any::<bool>(),
        bernoulli in any::<bool>(),
        relative_margin in prop::sample::select(vec![1.0, 1.5]),
    ) {
        let alpha = 0.05;
        let runs = 200u32;
        let cfg = SequentialConfig { relative_margin, ..bare(alpha) };
        let (mut e_alarms, mut test_alarms) = (0u32, 0u32);
        for r in 0..runs {
            let s = derive_seed(&[seed, u64::from(r)]);
            let a = null_run(&cfg, relative_margin, s, p, rate, pods_c, pods_b, spikes, bernoulli, 150);
            e_alarms += u32::from(a.e_process);
            test_alarms += u32::from(a.test);
        }
        let expected = alpha * f64::from(runs);
        let bound = expected + 3.0 * (expected * (1.0 - alpha)).sqrt();
        prop_assert!(f64::from(e_alarms) <= bound, "e-process: {e_alarms} alarms in {runs} runs");
        prop_assert!(f64::from(test_alarms) <= bound, "test: {test_alarms} alarms in {runs} runs");
    }

    /// A canary answering every request with 502 against a baseline with no errors at all
    /// fails within 25 canary requests by the test alone (no ceiling), whatever the canary's
    /// share of traffic between 1/11 and 1/2, and within 20 with the default ceiling.
    #[test]
    fn all_502_fails_within_a_handful_of_requests(baseline_per_canary in 1u64..=10) {
        for (cfg, limit) in [
            (SequentialConfig { ceiling: None, ..SequentialConfig::default() }, 25),
            (SequentialConfig::default(), 20),
        ] {
            let mut a = match Sequential::new(cfg) {
                Ok(a) => a,
                Err(e) => panic!("config: {e}"),
            };
            let mut feed = Feed::start(&mut a);
            let mut failed_at = None;
            for k in 1..=100u64 {
                if let Verdict::Failing(_) = feed.push(&mut a, 1, 1, baseline_per_canary, 0) {
                    failed_at = Some(k);
                    break;
                }
            }
            prop_assert!(failed_at.is_some_and(|k| k <= limit), "failed at {failed_at:?}");
        }
    }

    /// Turning canary successes into failures, or baseline failures into successes, never
    /// lowers the e-value and never delays a failure.
    #[test]
    fn a_worse_canary_never_looks_better(
        intervals in prop::collection::vec((1u64..60, 0u64..60, 1u64..200, 0u64..200, 0u64..10, 0u64..10), 1..60),
    ) {
        let cfg = SequentialConfig::default();
        let (mut a, mut b) = match (Sequential::new(cfg.clone()), Sequential::new(cfg)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => panic!("default config rejected"),
        };
        let (mut fa, mut fb) = (Feed::start(&mut a), Feed::start(&mut b));
        let mut a_failed = false;
        for (nc, bc, nb, bb, more_c, fewer_b) in intervals {
            let (bc, bb) = (bc.min(nc), bb.min(nb));
            let worse_c = (bc + more_c).min(nc);
            let better_b = bb.saturating_sub(fewer_b);
            let va = fa.push(&mut a, nc, bc, nb, bb);
            let vb = fb.push(&mut b, nc, worse_c, nb, better_b);
            a_failed |= matches!(va, Verdict::Failing(_));
            if a_failed {
                prop_assert!(matches!(vb, Verdict::Failing(_)), "original failed, worse did not");
            } else {
                prop_assert!(b.log_e_value() >= a.log_e_value() - 1e-9);
            }
        }
    }
}

/// One run of a canary exactly at the edge of the healthy tolerance (its rate is the baseline's
/// plus the tolerance's margin, the worst canary that must not be called healthy more often than
/// `healthy_alpha`), for `bakes` bakes of `bake_s` seconds each with a look at every bake's end.
/// Returns whether it was ever called healthy.
fn edge_run(
    cfg: &SequentialConfig,
    seed: u64,
    p: f64,
    rate: f64,
    pods_b: u32,
    bake_s: i64,
    bakes: i64,
) -> bool {
    let plan = Plan {
        bake: SignedDuration::from_secs(bake_s),
        reference: None,
    };
    let mut a = match Sequential::planned(cfg.clone(), plan) {
        Ok(a) => a,
        Err(e) => panic!("config: {e}"),
    };
    let tolerance = Tolerance {
        relative: cfg.healthy_relative_margin,
        absolute: cfg.healthy_absolute_margin,
    };
    let p_c = tolerance.ceiling_for(p);
    let mut rng = Rng::new(seed);
    let mut feed = Feed::start(&mut a);
    for _ in 0..bake_s * bakes {
        let lb = rate * f64::from(pods_b);
        let (gc, bc) = (rng.poisson(rate * (1.0 - p_c)), rng.poisson(rate * p_c));
        let (gb, bb) = (rng.poisson(lb * (1.0 - p)), rng.poisson(lb * p));
        if feed.push(&mut a, gc + bc, bc, gb + bb, bb) == Verdict::Healthy {
            return true;
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// The false-promotion bound: a canary exactly at the tolerance's edge is called healthy
    /// in at most `healthy_alpha` of the runs (plus binomial noise on 300 runs), at low and
    /// high background rates, with few or many requests, over up to five looks. The ceiling
    /// and latency are off so the healthy side is tested alone (the failing side would only
    /// make healthy verdicts rarer).
    #[test]
    fn healthy_verdicts_at_the_edge_of_the_tolerance_stay_under_beta(
        seed in any::<u64>(),
        p in prop::sample::select(vec![0.0, 0.001, 0.01, 0.03, 0.1]),
        rate in prop::sample::select(vec![5.0, 20.0, 100.0]),
        pods_b in 1u32..=6,
        bakes in 1i64..=5,
    ) {
        let cfg = SequentialConfig {
            ceiling: None,
            latency: None,
            absolute_margin: 0.9,
            ..SequentialConfig::default()
        };
        let runs = 300u32;
        let mut healthy = 0u32;
        for r in 0..runs {
            let s = derive_seed(&[seed, u64::from(r)]);
            healthy += u32::from(edge_run(&cfg, s, p, rate, pods_b, 30, bakes));
        }
        let beta = cfg.healthy_alpha;
        let expected = beta * f64::from(runs);
        let bound = expected + 3.0 * (expected * (1.0 - beta)).sqrt();
        prop_assert!(f64::from(healthy) <= bound, "{healthy} healthy of {runs} at the edge");
    }
}

#[test]
fn defaults_do_not_fail_a_healthy_canary_with_background_errors() {
    // 1% bad everywhere, 1 canary pod of 5 at 100 rps for 5 minutes, 50 runs: the default
    // alpha is 0.001, so even one alarm here would be a surprise.
    let cfg = SequentialConfig::default();
    for r in 0..50u64 {
        let alarms = null_run(&cfg, 1.0, 1000 + r, 0.01, 100.0, 1, 4, false, false, 300);
        assert!(!alarms.test, "run {r}");
    }
}

#[test]
fn all_502_against_a_clean_baseline_fails_on_the_eighth_request() {
    // The figure quoted in docs/analysis.md: 1 canary pod and 4 baseline pods, defaults minus
    // the ceiling, one canary request (a 502) and four clean baseline requests per sample.
    let mut a = match Sequential::new(SequentialConfig {
        ceiling: None,
        ..SequentialConfig::default()
    }) {
        Ok(a) => a,
        Err(e) => panic!("config: {e}"),
    };
    let mut feed = Feed::start(&mut a);
    let mut failed_at = None;
    for k in 1..=50u64 {
        if let Verdict::Failing(ev) = feed.push(&mut a, 1, 1, 4, 0) {
            assert_eq!(ev.method, "sequential");
            failed_at = Some(k);
            break;
        }
    }
    assert_eq!(failed_at, Some(8));
}
