//! Trace replay: both analysis methods fed the same synthetic traffic, so their figures (time to
//! detect, requests failed before the decision, false rollbacks) can be compared on equal terms.
//! Pure and deterministic: the traffic comes from a seeded generator and time is simulated, one
//! sample per simulated second. `switchback bench analysis` and `cargo bench --bench analysis`
//! print [`replay_table`].
//!
//! Setup: 1 canary pod and 4 baseline pods behind an even load balancer (the canary gets 20% of
//! requests), every pod at the same request rate, counters sampled every second for at most
//! [`HORIZON_S`] seconds. Figures for failing traces are medians over the seeded runs.

pub mod promotion;
pub(crate) mod rng;
pub(crate) mod traces;

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use self::rng::{Rng, derive_seed};
use self::traces::{Fault, Group, Tables, Trace, Traffic, traffic_factor};
use super::{Analysis, Sample, Sequential, SequentialConfig, Threshold, ThresholdConfig, Verdict};

/// Simulated seconds per run: ten minutes, long enough for Flagger's `interval: 1m` with
/// `threshold: 10` to decide, and a typical bake.
pub const HORIZON_S: u64 = 600;
/// Request rates per pod replayed, requests per second.
pub const RATES: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];
/// Seeded runs of each failing trace (figures are medians over them).
const FAILING_RUNS: usize = 25;
/// Seeded runs of each healthy trace: the sample behind a false-rollback count.
const HEALTHY_RUNS: usize = 1000;

/// The scenarios, in table order.
fn traces(healthy_runs: usize, failing_runs: usize) -> Vec<Trace> {
    let steady = Traffic::Steady;
    let bursty = Traffic::Bursty {
        period_s: 30,
        on_s: 6,
    };
    let t = |name, fault, traffic, runs| Trace {
        name,
        fault,
        traffic,
        background: 0.01,
        runs,
    };
    vec![
        t("hard-502", Fault::Gateway502(1.0), steady, failing_runs),
        t(
            "seed-85%-502",
            Fault::Gateway502(0.85),
            steady,
            failing_runs,
        ),
        t("partial-10%", Fault::Gateway502(0.10), steady, failing_runs),
        t("partial-2%", Fault::Gateway502(0.02), steady, failing_runs),
        t(
            "latency+1s-20%",
            Fault::Slow {
                share: 0.2,
                add_ms: 1000.0,
            },
            steady,
            failing_runs,
        ),
        t(
            "bursty-85%-502",
            Fault::Gateway502(0.85),
            bursty,
            failing_runs,
        ),
        t("healthy-1%-5xx", Fault::None, steady, healthy_runs),
        t("healthy-bursty", Fault::None, bursty, healthy_runs / 5),
    ]
}

/// Builds a fresh analysis for one run.
type Factory = fn() -> Box<dyn Analysis>;

/// The methods compared, with their labels.
fn methods() -> [(&'static str, Factory); 5] {
    fn seq(c: SequentialConfig) -> Box<dyn Analysis> {
        // The configs are the validated defaults; `new` cannot fail on them.
        match Sequential::new(c) {
            Ok(s) => Box::new(s),
            Err(e) => unreachable!("default sequential config rejected: {e}"),
        }
    }
    fn thr(c: ThresholdConfig) -> Box<dyn Analysis> {
        match Threshold::new(c) {
            Ok(t) => Box::new(t),
            Err(e) => unreachable!("Flagger preset rejected: {e}"),
        }
    }
    [
        ("sequential", || seq(SequentialConfig::default())),
        ("sequential, no ceiling", || {
            seq(SequentialConfig {
                ceiling: None,
                ..SequentialConfig::default()
            })
        }),
        ("threshold 60s x1 (Flagger defaults)", || {
            thr(ThresholdConfig::flagger_defaults())
        }),
        ("threshold 1m x5 (Flagger tutorials)", || {
            thr(ThresholdConfig::flagger_example(5))
        }),
        ("threshold 1m x10 (Flagger docs)", || {
            thr(ThresholdConfig::flagger_example(10))
        }),
    ]
}

/// What one method did on one run.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// Second of the first `Failing` verdict.
    detected_at: Option<u64>,
    /// Canary requests harmed (5xx, or fault-slowed) up to and including that second.
    harmed: u64,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub trace: &'static str,
    pub healthy: bool,
    pub rate: f64,
    pub method: &'static str,
    pub runs: usize,
    pub detected: usize,
    pub median_time: Option<u64>,
    pub median_harmed: Option<u64>,
}

/// Runs one trace once at one rate, feeding every method the same samples.
fn run_once(trace: &Trace, rate: f64, seed: u64, factories: &[Factory]) -> Vec<Outcome> {
    let mut rng = Rng::new(seed);
    let tables = Tables::for_fault(trace.fault);
    let mut canary = Group::new(1, trace.fault, trace.background);
    let mut baseline = Group::new(4, Fault::None, trace.background);
    let mut analyses: Vec<Box<dyn Analysis>> = factories.iter().map(|f| f()).collect();
    let mut outcomes = vec![
        Outcome {
            detected_at: None,
            harmed: 0
        };
        analyses.len()
    ];
    let at = |t: u64| Timestamp::UNIX_EPOCH + SignedDuration::from_secs(t as i64);
    let start = Sample {
        at: at(0),
        canary: canary.counters.clone(),
        baseline: baseline.counters.clone(),
    };
    for a in analyses.iter_mut() {
        a.observe(&start);
    }
    let mut open = analyses.len();
    for t in 1..=HORIZON_S {
        let r = rate * traffic_factor(trace.traffic, t - 1);
        canary.step(&mut rng, &tables, r);
        baseline.step(&mut rng, &tables, r);
        let sample = Sample {
            at: at(t),
            canary: canary.counters.clone(),
            baseline: baseline.counters.clone(),
        };
        for (a, o) in analyses.iter_mut().zip(outcomes.iter_mut()) {
            if o.detected_at.is_some() {
                continue;
            }
            if let Verdict::Failing(_) = a.observe(&sample) {
                o.detected_at = Some(t);
                o.harmed = canary.harmed;
                open -= 1;
            }
        }
        if open == 0 {
            break;
        }
    }
    outcomes
}

/// Median of a list (lower middle for even lengths); `None` when empty.
fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// All rows: every trace at every rate under every method.
pub(crate) fn rows(seed: u64, healthy_runs: usize, failing_runs: usize) -> Vec<Row> {
    let methods = methods();
    let factories: Vec<Factory> = methods.iter().map(|(_, f)| *f).collect();
    let mut out = Vec::new();
    for (ti, trace) in traces(healthy_runs, failing_runs).iter().enumerate() {
        for (ri, &rate) in RATES.iter().enumerate() {
            let mut per_method: Vec<Vec<Outcome>> = vec![Vec::new(); methods.len()];
            for run in 0..trace.runs {
                let s = derive_seed(&[seed, ti as u64, ri as u64, run as u64]);
                for (m, o) in run_once(trace, rate, s, &factories).into_iter().enumerate() {
                    per_method[m].push(o);
                }
            }
            for (m, outcomes) in per_method.into_iter().enumerate() {
                let hits: Vec<Outcome> = outcomes
                    .iter()
                    .copied()
                    .filter(|o| o.detected_at.is_some())
                    .collect();
                out.push(Row {
                    trace: trace.name,
                    healthy: trace.healthy(),
                    rate,
                    method: methods[m].0,
                    runs: trace.runs,
                    detected: hits.len(),
                    median_time: median(hits.iter().filter_map(|o| o.detected_at).collect()),
                    median_harmed: median(hits.iter().map(|o| o.harmed).collect()),
                });
            }
        }
    }
    out
}

/// The comparison tables for `seed`, as plain text: detection (one row per trace, rate and
/// method, then the goals and whether this replay met them), then the healthy path (a harmless
/// commit through every default step, [`promotion`]). Deterministic: the same seed prints the
/// same tables.
pub fn replay_table(seed: u64) -> String {
    let mut s = render(&rows(seed, HEALTHY_RUNS, FAILING_RUNS), seed);
    s.push('\n');
    s.push_str(&promotion::promotion_table(seed));
    s
}

/// Formats rows and the goal summary.
pub(crate) fn render(rows: &[Row], seed: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "analysis replay, seed {seed}: 1 canary + 4 baseline pods, 1 s samples, {HORIZON_S} s \
         horizon, 1% background 5xx on every pod"
    );
    let _ = writeln!(
        s,
        "failing traces: medians over detecting runs; harmed = canary 5xx (or fault-slowed) \
         responses up to the decision\n"
    );
    let _ = writeln!(
        s,
        "{:<16} {:>6}  {:<36} {:>9} {:>9} {:>9} {:>10}",
        "trace", "rps/pod", "method", "detected", "time (s)", "harmed", "false rb"
    );
    let mut last = "";
    for r in rows {
        if r.trace != last && !last.is_empty() {
            s.push('\n');
        }
        last = r.trace;
        let dash = || "-".to_string();
        let (detected, fr) = if r.healthy {
            (dash(), format!("{}/{}", r.detected, r.runs))
        } else {
            (format!("{}/{}", r.detected, r.runs), dash())
        };
        let (time, harmed) = if r.healthy {
            (dash(), dash())
        } else {
            (
                r.median_time
                    .map_or_else(|| format!(">{HORIZON_S}"), |t| t.to_string()),
                r.median_harmed.map_or_else(dash, |h| h.to_string()),
            )
        };
        let _ = writeln!(
            s,
            "{:<16} {:>6}  {:<36} {:>9} {:>9} {:>9} {:>10}",
            r.trace, r.rate, r.method, detected, time, harmed, fr
        );
    }
    s.push_str(&goals(rows));
    s
}

/// Finds a row.
fn find<'a>(rows: &'a [Row], trace: &str, rate: f64, method: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.trace == trace && r.rate == rate && r.method == method)
}

/// The goals of issue 4, checked against this replay's figures.
fn goals(rows: &[Row]) -> String {
    let mut s = String::from("\ngoals\n");
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    // 1. Hard failure at 100 rps detected in ≤ 2 s.
    let t = find(rows, "hard-502", 100.0, "sequential").and_then(|r| r.median_time);
    let t_nc = find(rows, "hard-502", 100.0, "sequential, no ceiling").and_then(|r| r.median_time);
    let _ = writeln!(
        s,
        "- sequential detects hard-502 at 100 rps in <= 2 s: {} (median {} s; {} s without the ceiling)",
        verdict(t.is_some_and(|t| t <= 2)),
        fmt_opt(t),
        fmt_opt(t_nc)
    );
    // 2. ≥ 20× fewer harmed requests than Flagger defaults on hard and 85% traces.
    for trace in ["hard-502", "seed-85%-502"] {
        let mut parts = Vec::new();
        let mut all = true;
        for &rate in &RATES {
            let seq = find(rows, trace, rate, "sequential").and_then(|r| r.median_harmed);
            let thr = find(rows, trace, rate, "threshold 60s x1 (Flagger defaults)")
                .and_then(|r| r.median_harmed);
            let ratio = match (seq, thr) {
                (Some(a), Some(b)) => b as f64 / (a.max(1)) as f64,
                _ => 0.0,
            };
            all &= ratio >= 20.0;
            parts.push(format!(
                "{rate} rps: {} vs {} = {ratio:.0}x",
                fmt_opt(seq),
                fmt_opt(thr)
            ));
        }
        let _ = writeln!(
            s,
            "- sequential harms >= 20x fewer requests than Flagger defaults on {trace}: {} ({})",
            verdict(all),
            parts.join("; ")
        );
    }
    // 3. No false rollbacks on 1,000 healthy runs with 1% background 5xx.
    let mut parts = Vec::new();
    let mut total = 0;
    for &rate in &RATES {
        if let Some(r) = find(rows, "healthy-1%-5xx", rate, "sequential") {
            total += r.detected;
            parts.push(format!("{rate} rps: {}/{}", r.detected, r.runs));
        }
    }
    let _ = writeln!(
        s,
        "- sequential: 0 false rollbacks on healthy-1%-5xx: {} ({})",
        verdict(total == 0),
        parts.join("; ")
    );
    s
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_replay_is_deterministic_and_sane() {
        let a = rows(9, 3, 2);
        let b = rows(9, 3, 2);
        assert_eq!(render(&a, 9), render(&b, 9));
        // The hard failure at 100 rps is caught by the sequential method within 2 s.
        let hard = find(&a, "hard-502", 100.0, "sequential").expect("row");
        assert_eq!(hard.detected, 2);
        assert!(hard.median_time.is_some_and(|t| t <= 2));
        // Flagger's defaults decide at the first check, a minute in.
        let flagger =
            find(&a, "hard-502", 100.0, "threshold 60s x1 (Flagger defaults)").expect("row");
        assert_eq!(flagger.median_time, Some(60));
    }
}
