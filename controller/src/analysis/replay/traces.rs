//! Synthetic traffic: what a canary pod and its baseline pods would log, second by second, under
//! the failures Switchback exists for. Everything is drawn from a seeded [`Rng`], so a trace is
//! reproducible from its seed.
//!
//! Model: each pod receives Poisson traffic at `rate` requests per second (bursty traces switch
//! between 5× that rate and silence). Each request independently falls into a category (good,
//! background 5xx, the fault's 502, the fault's slow response) with fixed probabilities, and
//! takes a latency from a log-normal (median 20 ms, σ = 0.8, so p99 ≈ 130 ms) or that plus the
//! fault's delay. Category counts are independent Poissons, which is the same as drawing the
//! total and splitting it (Poisson splitting), so the counters stay consistent.

use crate::analysis::counters::Counters;
use crate::analysis::histogram::{BUCKETS, LatencyHistogram};

use super::rng::{Rng, normal_cdf};

/// Median of the healthy latency distribution, ms.
const MEDIAN_MS: f64 = 20.0;
/// Log-space standard deviation of the healthy latency distribution.
const SIGMA: f64 = 0.8;
/// A category with fewer expected requests per second than this is drawn request by request.
const PER_REQUEST_BELOW: f64 = 12.0;

/// What is wrong with the canary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    /// Nothing: a healthy change.
    None,
    /// This share of canary requests get 502 (from failed upstream connects, so each also logs an
    /// upstream connect error).
    Gateway502(f64),
    /// This share of canary requests take `add_ms` longer, with no errors.
    Slow { share: f64, add_ms: f64 },
}

/// How traffic arrives over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Traffic {
    /// Poisson at the nominal rate.
    Steady,
    /// `on_s` seconds at `period_s / on_s` times the nominal rate, then silence until the period
    /// ends: the same average, arriving in bursts.
    Bursty { period_s: u64, on_s: u64 },
}

/// One replayed scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trace {
    /// Name in the table.
    pub name: &'static str,
    /// The canary's fault.
    pub fault: Fault,
    /// Arrival pattern.
    pub traffic: Traffic,
    /// 5xx share on every pod, canary included, independent of the fault.
    pub background: f64,
    /// Seeded runs (healthy traces: the false-rollback sample size).
    pub runs: usize,
}

impl Trace {
    /// Whether a rollback of this trace is a false one.
    pub fn healthy(&self) -> bool {
        self.fault == Fault::None
    }
}

/// A response category: status, probability, latency table, and whether it logs a connect error.
#[derive(Debug, Clone)]
struct Category {
    status: u16,
    share: f64,
    slow: bool,
    connect_error: bool,
    /// Counted as harm done to users (a 5xx, or a fault-slowed response).
    harm: bool,
}

/// Per-bucket probabilities and their running sum for one latency distribution.
#[derive(Debug, Clone)]
struct LatencyTable {
    p: Vec<f64>,
    cdf: Vec<f64>,
}

impl LatencyTable {
    /// Log-normal latency plus `add_ms`, binned into the histogram's buckets.
    fn new(add_ms: f64) -> Self {
        let cdf_at = |ms: f64| {
            let x = ms - add_ms;
            if x <= 0.0 {
                0.0
            } else {
                normal_cdf((x / MEDIAN_MS).ln() / SIGMA)
            }
        };
        let p: Vec<f64> = (0..BUCKETS)
            .map(|i| {
                let hi = LatencyHistogram::upper_bound_ms(i);
                let hi = if hi.is_infinite() { 1.0 } else { cdf_at(hi) };
                (hi - cdf_at(LatencyHistogram::lower_bound_ms(i))).max(0.0)
            })
            .collect();
        let total: f64 = p.iter().sum();
        let p: Vec<f64> = p.iter().map(|x| x / total).collect();
        let mut acc = 0.0;
        let cdf = p
            .iter()
            .map(|x| {
                acc += x;
                acc
            })
            .collect();
        LatencyTable { p, cdf }
    }

    /// One request's bucket.
    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.uniform();
        self.cdf.partition_point(|&c| c <= u).min(BUCKETS - 1)
    }
}

/// Simulates one group of pods (the canary, or the baseline pods together).
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pods: f64,
    categories: Vec<Category>,
    /// Cumulative counters, as the agents would export them.
    pub counters: Counters,
    /// Requests harmed so far (5xx or fault-slowed).
    pub harmed: u64,
}

/// The two latency tables every group draws from.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    normal: LatencyTable,
    slow: LatencyTable,
}

impl Tables {
    /// Tables for a trace (the slow one only matters for the latency fault).
    pub(crate) fn for_fault(fault: Fault) -> Self {
        let add = match fault {
            Fault::Slow { add_ms, .. } => add_ms,
            _ => 0.0,
        };
        Tables {
            normal: LatencyTable::new(0.0),
            slow: LatencyTable::new(add),
        }
    }
}

impl Group {
    /// `pods` pods with `fault` (use [`Fault::None`] for the baseline) and `background` 5xx.
    pub(crate) fn new(pods: u32, fault: Fault, background: f64) -> Self {
        let cat = |status, share, slow, connect_error, harm| Category {
            status,
            share,
            slow,
            connect_error,
            harm,
        };
        let categories = match fault {
            Fault::None => vec![
                cat(200, 1.0 - background, false, false, false),
                cat(500, background, false, false, true),
            ],
            Fault::Gateway502(f) => vec![
                cat(200, (1.0 - f) * (1.0 - background), false, false, false),
                cat(500, (1.0 - f) * background, false, false, true),
                cat(502, f, false, true, true),
            ],
            Fault::Slow { share, .. } => vec![
                cat(200, (1.0 - share) * (1.0 - background), false, false, false),
                cat(200, share * (1.0 - background), true, false, true),
                cat(500, background, false, false, true),
            ],
        };
        Group {
            pods: f64::from(pods),
            categories,
            counters: Counters::default(),
            harmed: 0,
        }
    }

    /// One second of traffic at `rate` requests per pod per second.
    pub(crate) fn step(&mut self, rng: &mut Rng, tables: &Tables, rate: f64) {
        let lambda = rate * self.pods;
        for c in &self.categories {
            let mean = lambda * c.share;
            if mean <= 0.0 {
                continue;
            }
            let table = if c.slow { &tables.slow } else { &tables.normal };
            let mut n = 0u64;
            if mean < PER_REQUEST_BELOW {
                let k = rng.poisson(mean);
                for _ in 0..k {
                    self.counters.latency.add_to_bucket(table.draw(rng), 1);
                }
                n = k;
            } else {
                for (i, p) in table.p.iter().enumerate() {
                    let m = mean * p;
                    // Below 1e-9 expected per second the bucket is empty for the whole replay.
                    if m > 1e-9 {
                        let k = rng.poisson(m);
                        self.counters.latency.add_to_bucket(i, k);
                        n += k;
                    }
                }
            }
            add_status(&mut self.counters, c.status, n);
            if c.connect_error {
                self.counters.upstream_connect_errors += n;
            }
            if c.harm {
                self.harmed += n;
            }
        }
    }
}

/// Adds `n` responses of `status` to the status counters.
fn add_status(c: &mut Counters, status: u16, n: u64) {
    match status {
        200 => c.status_2xx += n,
        502 => {
            c.status_5xx += n;
            c.status_502 += n;
        }
        _ => c.status_5xx += n,
    }
}

/// Traffic multiplier at second `t` (0-based).
pub(crate) fn traffic_factor(traffic: Traffic, t: u64) -> f64 {
    match traffic {
        Traffic::Steady => 1.0,
        Traffic::Bursty { period_s, on_s } => {
            if t % period_s < on_s {
                period_s as f64 / on_s as f64
            } else {
                0.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_latency_has_the_documented_shape() {
        let mut rng = Rng::new(1);
        let tables = Tables::for_fault(Fault::None);
        let mut g = Group::new(4, Fault::None, 0.01);
        for _ in 0..100 {
            g.step(&mut rng, &tables, 250.0);
        }
        let h = &g.counters.latency;
        let p50 = h.quantile_ms(0.5).expect("traffic");
        let p99 = h.quantile_ms(0.99).expect("traffic");
        assert!((p50 / MEDIAN_MS - 1.0).abs() < 0.2, "p50 {p50}");
        assert!((100.0..170.0).contains(&p99), "p99 {p99}");
        let rate = g.counters.status_5xx as f64 / g.counters.total() as f64;
        assert!((rate - 0.01).abs() < 0.002, "{rate}");
        assert_eq!(g.counters.latency.total(), g.counters.total());
    }

    #[test]
    fn hard_failure_logs_connect_errors() {
        let mut rng = Rng::new(2);
        let tables = Tables::for_fault(Fault::Gateway502(1.0));
        let mut g = Group::new(1, Fault::Gateway502(1.0), 0.01);
        g.step(&mut rng, &tables, 100.0);
        let c = &g.counters;
        assert_eq!(c.status_502, c.total());
        assert_eq!(c.upstream_connect_errors, c.status_502);
        assert_eq!(g.harmed, c.total());
    }

    #[test]
    fn bursts_keep_the_average() {
        let t = Traffic::Bursty {
            period_s: 30,
            on_s: 6,
        };
        let sum: f64 = (0..30).map(|s| traffic_factor(t, s)).sum();
        assert!((sum - 30.0).abs() < 1e-9);
    }
}
