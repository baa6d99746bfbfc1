//! The healthy path, replayed: a harmless commit rolled out through every default step on a fleet
//! with ordinary traffic, to measure what a user of the defaults gets: how long each step takes to
//! be called healthy, how many rollouts are promoted with every step decided in its first bake,
//! and how many are rolled back for nothing. Side by side with Flagger's threshold policy, whose
//! promotion time is fixed by its settings (`interval × maxWeight / stepWeight`) and whose checks
//! are run on the same traffic for its false rollbacks.
//!
//! Setup: a fleet of [`FLEET`] pods behind an even load balancer, every pod at the same request
//! rate (Poisson), the same background 5xx share everywhere and nothing wrong with the canary.
//! The rollout strategy and the analysis are the defaults (`[1, 25%, 50%, 100%]`, a 3-minute
//! bake, 30-minute max bake); each step opens a new analysis window on the pods the step moves,
//! and the 100% step, which leaves no baseline pod, compares with the stable revision's record
//! of the last ten minutes (what the runner keeps). Counters are sampled every simulated second.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use super::rng::{Rng, derive_seed};
use super::traces::{Fault, Group, Tables};
use crate::analysis::{
    Analysis, Plan, Sequential, SequentialConfig, Threshold, ThresholdConfig, TrafficRecord,
    Verdict,
};
use crate::rollout::RolloutConfig;

/// Pods in the replayed fleet.
pub const FLEET: u32 = 5;
/// Request rates per pod replayed, requests per second.
pub const RATES: [f64; 5] = [1.0, 5.0, 20.0, 100.0, 1000.0];
/// Background 5xx shares replayed.
pub const BACKGROUNDS: [f64; 2] = [0.0, 0.01];
/// Other fleet sizes, replayed at 20 requests/s per pod and 1% background errors (the goal's
/// lowest traffic): a small fleet's first step has the least baseline to compare with.
pub const OTHER_FLEETS: [u32; 4] = [2, 3, 10, 50];
/// Seeded healthy rollouts per rate and background.
const RUNS: usize = 1000;

/// What became of one replayed rollout under the sequential method.
#[derive(Debug, Clone, Default)]
struct SequentialRun {
    /// Seconds each decided step took to be called healthy, in step order.
    steps: Vec<u64>,
    /// Promoted through every step.
    promoted: bool,
    /// Every step was called healthy at its first look (the end of its bake).
    in_one_bake: bool,
    /// Rolled back (a false rollback: nothing was wrong).
    rolled_back: bool,
}

/// One healthy rollout through the default steps.
fn sequential_run(rate: f64, background: f64, fleet: u32, seed: u64) -> SequentialRun {
    let strategy = RolloutConfig::default();
    let bake = strategy.bake;
    let bake_s = bake.as_secs().max(1).unsigned_abs();
    let max_s = strategy.max_bake.as_secs().max(1).unsigned_abs();
    let mut rng = Rng::new(seed);
    let tables = Tables::for_fault(Fault::None);
    let mut record = TrafficRecord::default();
    let mut clock = 0i64;
    let at = |t: i64| Timestamp::UNIX_EPOCH + SignedDuration::from_secs(t);
    let mut run = SequentialRun {
        in_one_bake: true,
        ..SequentialRun::default()
    };
    for step in &strategy.steps {
        let on = u32::try_from(step.of(fleet as usize)).unwrap_or(fleet);
        let mut canary = Group::new(on, Fault::None, background);
        let mut baseline = Group::new(fleet - on, Fault::None, background);
        let reference = (on == fleet).then(|| record.reference(at(clock))).flatten();
        let plan = Plan { bake, reference };
        let mut a = match Sequential::planned(SequentialConfig::default(), plan) {
            Ok(a) => a,
            Err(e) => unreachable!("the default sequential config was rejected: {e}"),
        };
        a.observe(&sample(clock, &canary, &baseline));
        let mut decided = None;
        for t in 1..=max_s {
            canary.step(&mut rng, &tables, rate);
            if on < fleet {
                baseline.step(&mut rng, &tables, rate);
                record.observe(at(clock + t as i64), [("baseline", &baseline.counters)]);
            }
            match a.observe(&sample(clock + t as i64, &canary, &baseline)) {
                Verdict::Healthy => {
                    decided = Some(t);
                    break;
                }
                Verdict::Failing(_) => {
                    run.rolled_back = true;
                    return run;
                }
                Verdict::Inconclusive { .. } => {}
            }
        }
        let Some(t) = decided else {
            // Held until maxBake: stalled, waiting for a person.
            run.in_one_bake = false;
            return run;
        };
        run.in_one_bake &= t <= bake_s;
        run.steps.push(t);
        clock += t as i64;
        // The next step's baseline group counts from zero again: its first read is a new
        // starting point, not a restart of this one.
        record.forget_pods();
    }
    run.promoted = true;
    run
}

fn sample(t: i64, canary: &Group, baseline: &Group) -> crate::analysis::Sample {
    crate::analysis::Sample {
        at: Timestamp::UNIX_EPOCH + SignedDuration::from_secs(t),
        canary: canary.counters.clone(),
        baseline: baseline.counters.clone(),
    }
}

/// Flagger's policy as its docs and tutorials set it: checks every `interval`, weight going up by
/// `step_weight` to `max_weight`, so promotion takes `max_weight / step_weight` passing checks.
#[derive(Debug, Clone, Copy)]
struct FlaggerSetup {
    label: &'static str,
    threshold: u32,
    max_weight: u32,
    step_weight: u32,
}

const FLAGGER: [FlaggerSetup; 3] = [
    FlaggerSetup {
        label: "threshold 60s x1, 50/10 (Flagger defaults)",
        threshold: 1,
        max_weight: 50,
        step_weight: 10,
    },
    FlaggerSetup {
        label: "threshold 1m x5, 50/10 (Flagger tutorials)",
        threshold: 5,
        max_weight: 50,
        step_weight: 10,
    },
    FlaggerSetup {
        label: "threshold 1m x10, 50/2 (Flagger docs)",
        threshold: 10,
        max_weight: 50,
        step_weight: 2,
    },
];

/// One healthy rollout under Flagger's policy: whether it was rolled back before its last check.
/// The canary serves one pod's share of the traffic throughout (Flagger's canary gets `weight`%
/// of it; a pod's share is what Switchback's first step gives, which keeps the comparison fair).
fn flagger_run(setup: FlaggerSetup, rate: f64, background: f64, seed: u64) -> bool {
    let config = ThresholdConfig::flagger_example(setup.threshold);
    let checks = u64::from(setup.max_weight / setup.step_weight);
    let horizon = checks * config.interval_secs;
    let mut a = match Threshold::new(config) {
        Ok(a) => a,
        Err(e) => unreachable!("Flagger's preset was rejected: {e}"),
    };
    let mut rng = Rng::new(seed);
    let tables = Tables::for_fault(Fault::None);
    let mut canary = Group::new(1, Fault::None, background);
    let baseline = Group::new(0, Fault::None, background);
    a.observe(&sample(0, &canary, &baseline));
    for t in 1..=horizon {
        canary.step(&mut rng, &tables, rate);
        if let Verdict::Failing(_) = a.observe(&sample(t as i64, &canary, &baseline)) {
            return true;
        }
    }
    false
}

/// One row of the promotion table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub fleet: u32,
    pub rate: f64,
    pub background: f64,
    pub method: &'static str,
    pub runs: usize,
    pub promoted: usize,
    pub in_one_bake: usize,
    pub false_rollbacks: usize,
    /// Median seconds to promote (all steps), over promoted runs.
    pub median_total: Option<u64>,
    /// Median seconds to a healthy verdict per step, over runs that reached the step.
    pub median_steps: Vec<Option<u64>>,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// Every row: the sequential method and Flagger's three setups at each rate and background on
/// [`FLEET`] pods, then the sequential method on [`OTHER_FLEETS`].
pub(crate) fn rows(seed: u64, runs: usize) -> Vec<Row> {
    let mut configs: Vec<Config> = Vec::new();
    for (ri, &rate) in RATES.iter().enumerate() {
        for (bi, &background) in BACKGROUNDS.iter().enumerate() {
            configs.push(Config {
                fleet: FLEET,
                key: [ri as u64, bi as u64],
                rate,
                background,
                flagger: true,
            });
        }
    }
    for (fi, &fleet) in OTHER_FLEETS.iter().enumerate() {
        configs.push(Config {
            fleet,
            key: [100 + fi as u64, 1],
            rate: 20.0,
            background: 0.01,
            flagger: false,
        });
    }
    // The configurations are independent and each is seeded on its own: spread them over two
    // threads (the replay is CPU-bound and the figures do not depend on the split).
    let (left, right) = configs.split_at(configs.len() / 2);
    let work = |part: &[Config]| -> Vec<Row> {
        part.iter()
            .flat_map(|c| config_rows(seed, c, runs))
            .collect()
    };
    let (mut a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| work(right));
        let mine = work(left);
        (mine, other.join().unwrap_or_default())
    });
    a.extend(b);
    a
}

/// One replayed configuration.
#[derive(Debug, Clone, Copy)]
struct Config {
    fleet: u32,
    /// Seed parts that name it.
    key: [u64; 2],
    rate: f64,
    background: f64,
    /// Replay Flagger's setups too.
    flagger: bool,
}

fn config_rows(seed: u64, c: &Config, runs: usize) -> Vec<Row> {
    let steps = RolloutConfig::default().steps.len();
    let [ri, bi] = c.key;
    let mut out = Vec::new();
    let results: Vec<SequentialRun> = (0..runs)
        .map(|r| {
            sequential_run(
                c.rate,
                c.background,
                c.fleet,
                derive_seed(&[seed, ri, bi, r as u64]),
            )
        })
        .collect();
    let promoted: Vec<&SequentialRun> = results.iter().filter(|r| r.promoted).collect();
    out.push(Row {
        fleet: c.fleet,
        rate: c.rate,
        background: c.background,
        method: "sequential (defaults)",
        runs,
        promoted: promoted.len(),
        in_one_bake: results
            .iter()
            .filter(|r| r.promoted && r.in_one_bake)
            .count(),
        false_rollbacks: results.iter().filter(|r| r.rolled_back).count(),
        median_total: median(promoted.iter().map(|r| r.steps.iter().sum()).collect()),
        median_steps: (0..steps)
            .map(|k| {
                median(
                    results
                        .iter()
                        .filter_map(|r| r.steps.get(k).copied())
                        .collect(),
                )
            })
            .collect(),
    });
    if !c.flagger {
        return out;
    }
    for (fi, setup) in FLAGGER.iter().enumerate() {
        let rolled_back = (0..runs)
            .filter(|&r| {
                let s = derive_seed(&[seed, ri, bi, r as u64, 1000 + fi as u64]);
                flagger_run(*setup, c.rate, c.background, s)
            })
            .count();
        let total = u64::from(setup.max_weight / setup.step_weight) * 60;
        out.push(Row {
            fleet: c.fleet,
            rate: c.rate,
            background: c.background,
            method: setup.label,
            runs,
            promoted: runs - rolled_back,
            in_one_bake: 0,
            false_rollbacks: rolled_back,
            median_total: (rolled_back < runs).then_some(total),
            median_steps: Vec::new(),
        });
    }
    out
}

/// The promotion table for `seed`, as plain text, with the goals of issue 12 checked, then the
/// power table (how much worse a canary can be and still pass a step).
pub fn promotion_table(seed: u64) -> String {
    let mut s = render(&rows(seed, RUNS), seed, RUNS);
    s.push('\n');
    s.push_str(&power_table(seed, 4000));
    s
}

/// Degradations of the power table: percentage points of bad responses added on the canary.
const DEGRADATIONS: [f64; 6] = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.05];

/// The false-promotion side, in numbers: the share of one-bake steps (1 canary pod of
/// [`FLEET`], one default bake of traffic) that the healthy test passes when the canary is worse
/// than its baseline by each of [`DEGRADATIONS`], per rate and background. By construction a
/// canary at the edge of the tolerance passes at most `healthy_alpha` of the time.
pub(crate) fn power_table(seed: u64, runs: usize) -> String {
    use crate::analysis::healthy::HealthyTest;
    use crate::analysis::noninferiority::{Tolerance, TwoGroups, look};
    let config = SequentialConfig::default();
    let (margin_level, level) = HealthyTest::first_look(&config);
    let tolerance = Tolerance {
        relative: config.healthy_relative_margin,
        absolute: config.healthy_absolute_margin,
    };
    let bake = RolloutConfig::default().bake.as_secs_f64();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "false-promotion side, seed {seed}: share of {runs} steps called healthy at the first \
         look (1 canary pod of {FLEET}, one {}-s bake of traffic), by how much worse the canary is",
        bake
    );
    let _ = write!(s, "{:>7} {:>4}", "rps/pod", "bg");
    for d in DEGRADATIONS {
        let _ = write!(s, " {:>9}", format!("+{:.2}pt", d * 100.0));
    }
    s.push('\n');
    for (ri, &rate) in RATES.iter().enumerate() {
        for (bi, &background) in BACKGROUNDS.iter().enumerate() {
            let _ = write!(
                s,
                "{:>7} {:>4}",
                rate,
                format!("{:.0}%", background * 100.0)
            );
            for (di, &d) in DEGRADATIONS.iter().enumerate() {
                let mut rng = Rng::new(derive_seed(&[seed, 7, ri as u64, bi as u64, di as u64]));
                let p_c = (background + d).min(1.0);
                let (mean_c, mean_b) = (rate * bake, rate * bake * f64::from(FLEET - 1));
                let mut passed = 0usize;
                for _ in 0..runs {
                    let (bad_c, bad_b) =
                        (rng.poisson(mean_c * p_c), rng.poisson(mean_b * background));
                    let g = TwoGroups {
                        canary_events: bad_c,
                        canary_total: bad_c + rng.poisson(mean_c * (1.0 - p_c)),
                        baseline_events: bad_b,
                        baseline_total: bad_b + rng.poisson(mean_b * (1.0 - background)),
                    };
                    let enough = g.canary_total >= config.min_requests
                        && g.baseline_total >= config.min_requests;
                    passed +=
                        usize::from(enough && look(&g, &tolerance, margin_level, level).healthy);
                }
                let _ = write!(
                    s,
                    " {:>9}",
                    format!("{:.1}%", 100.0 * passed as f64 / runs as f64)
                );
            }
            s.push('\n');
        }
    }
    let _ = writeln!(
        s,
        "tolerance: the canary may be {}x the baseline's odds or {:.1} points above it, whichever \
         is more; a canary beyond it passes a step with probability <= {} (healthy_alpha)",
        tolerance.relative,
        tolerance.absolute * 100.0,
        config.healthy_alpha
    );
    s
}

pub(crate) fn render(rows: &[Row], seed: u64, runs: usize) -> String {
    let mut s = String::new();
    let strategy = RolloutConfig::default();
    let steps: Vec<String> = strategy.steps.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "healthy promotion replay, seed {seed}: {FLEET} pods (then other fleet sizes), default \
         steps [{}], bake {}, maxBake {}, {runs} healthy rollouts per row, 1 s samples",
        steps.join(", "),
        strategy.bake,
        strategy.max_bake
    );
    let _ = writeln!(
        s,
        "promoted = through every step; in 1 bake = every step healthy at its bake's end; step \
         times = median seconds to a healthy verdict\n"
    );
    let _ = writeln!(
        s,
        "{:>4} {:>7} {:>4}  {:<42} {:>10} {:>9} {:>9} {:<22} {:>9}",
        "pods",
        "rps/pod",
        "bg",
        "method",
        "promoted",
        "in 1 bake",
        "promote",
        "step times (s)",
        "false rb"
    );
    let mut last = (0, f64::NAN, f64::NAN);
    for r in rows {
        if (r.fleet, r.rate, r.background) != last && !last.1.is_nan() {
            s.push('\n');
        }
        last = (r.fleet, r.rate, r.background);
        let sequential = !r.median_steps.is_empty();
        let steps = if sequential {
            r.median_steps
                .iter()
                .map(|m| m.map_or_else(|| "-".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join("/")
        } else {
            "-".to_string()
        };
        let one_bake = if sequential {
            format!("{:.1}%", 100.0 * r.in_one_bake as f64 / r.runs as f64)
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            s,
            "{:>4} {:>7} {:>4}  {:<42} {:>10} {:>9} {:>9} {:<22} {:>9}",
            r.fleet,
            r.rate,
            format!("{:.0}%", r.background * 100.0),
            r.method,
            format!("{}/{}", r.promoted, r.runs),
            one_bake,
            r.median_total.map_or_else(|| "never".to_string(), minutes),
            steps,
            format!("{}/{}", r.false_rollbacks, r.runs),
        );
    }
    s.push_str(&goals(rows));
    s
}

fn minutes(secs: u64) -> String {
    format!("{:.1} min", secs as f64 / 60.0)
}

/// The goals of issue 12, checked against this replay.
fn goals(rows: &[Row]) -> String {
    let mut s = String::from("\ngoals\n");
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let seq = |r: &&Row| r.method == "sequential (defaults)" && r.rate >= 20.0 && r.fleet == FLEET;
    let mut parts = Vec::new();
    let mut all = true;
    for r in rows.iter().filter(seq) {
        let ok = r.promoted == r.runs && r.false_rollbacks == 0;
        all &= ok;
        parts.push(format!(
            "{} rps {:.0}%: {}/{} promoted, {:.1}% in one bake each step",
            r.rate,
            r.background * 100.0,
            r.promoted,
            r.runs,
            100.0 * r.in_one_bake as f64 / r.runs as f64
        ));
    }
    let _ = writeln!(
        s,
        "- healthy, defaults, >= 20 rps/pod, 0% or 1% background: every run promoted, 0 false \
         rollbacks: {} ({})",
        verdict(all),
        parts.join("; ")
    );
    let mut parts = Vec::new();
    let mut all = true;
    for r in rows.iter().filter(seq) {
        let docs = rows.iter().find(|f| {
            f.fleet == r.fleet
                && f.rate == r.rate
                && f.background == r.background
                && f.method == "threshold 1m x10, 50/2 (Flagger docs)"
        });
        let (Some(ours), Some(theirs)) = (r.median_total, docs.and_then(|d| d.median_total)) else {
            all = false;
            continue;
        };
        let fr_ours = r.false_rollbacks as f64 / r.runs as f64;
        let fr_theirs = docs.map_or(0.0, |d| d.false_rollbacks as f64 / d.runs as f64);
        let ok =
            ours <= theirs && (fr_theirs == 0.0 && fr_ours == 0.0 || fr_ours * 10.0 <= fr_theirs);
        all &= ok;
        parts.push(format!(
            "{} rps {:.0}%: {} vs {}, false rollbacks {}/{} vs {}/{}",
            r.rate,
            r.background * 100.0,
            minutes(ours),
            minutes(theirs),
            r.false_rollbacks,
            r.runs,
            docs.map_or(0, |d| d.false_rollbacks),
            docs.map_or(0, |d| d.runs)
        ));
    }
    let _ = writeln!(
        s,
        "- promotes no slower than Flagger's documented example, at a false-rollback rate at \
         least 10x lower: {} ({})",
        verdict(all),
        parts.join("; ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_promotion_replay_is_deterministic_and_promotes_at_20_rps() {
        let a = rows(5, 6);
        let b = rows(5, 6);
        assert_eq!(render(&a, 5, 6), render(&b, 5, 6));
        let at = |rate: f64, bg: f64| {
            a.iter()
                .find(|r| {
                    r.fleet == FLEET
                        && r.rate == rate
                        && r.background == bg
                        && r.method.starts_with("sequential")
                })
                .expect("row")
        };
        for bg in BACKGROUNDS {
            let r = at(20.0, bg);
            assert_eq!((r.promoted, r.false_rollbacks), (6, 0), "{bg}: {r:?}");
            assert_eq!(r.median_steps.len(), 4);
        }
        // At 1 request/s per pod with 1% background errors no step is decided in one bake.
        assert_eq!(at(1.0, 0.01).in_one_bake, 0);
    }
}
