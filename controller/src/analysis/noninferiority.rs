//! The healthy side's test: is the canary's bad rate *not worse* than the baseline's by more than a
//! tolerance? It exists because the failing side's anytime-valid machinery is the wrong tool for
//! this question: separate anytime bounds on each rate pay twice (two bounds) and pay the anytime
//! price (every second is a look), so a healthy canary at 1% background errors needed 10,000 to
//! 20,000 requests. The bake's length is fixed in advance, so the healthy side looks only at a
//! few planned moments (see [`super::looks`]) and uses the sharpest fixed-sample test there is for
//! a difference of two proportions with a margin: Farrington and Manning's score test (1990),
//! the standard non-inferiority test for two binomial rates.
//!
//! H0: `p_c − p_b ≥ m` (the canary is worse by at least the margin `m`), H1: `p_c − p_b < m`.
//! The statistic is `Z = (p̂_c − p̂_b − m) / sqrt(p̃_c(1−p̃_c)/n_c + p̃_b(1−p̃_b)/n_b)`, where
//! `p̃` are the maximum-likelihood rates under the constraint `p_c − p_b = m`. Rejecting H0 when
//! `Z < −z_β` has level ≈ β; unlike the Wald test (which uses the observed rates in the variance)
//! it behaves at zero events, where the observed variance is 0. Its calibration on our rates
//! is checked by a property test (`healthy_verdicts_at_the_margin_stay_under_beta`).
//!
//! The margin comes from the baseline's rate (`max(relative, absolute)` tolerance); to keep the
//! test's level when the rate is only estimated, the margin is computed at a lower confidence
//! bound of the baseline's rate (the margin grows with the rate, so a lower rate gives a smaller,
//! safer margin).

use super::math::normal_quantile;

/// A tolerance: how much worse a canary may be. The larger of a relative margin (on the odds,
/// which for small rates is the ratio of the rates) and an absolute one (in proportion points).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tolerance {
    /// The canary's odds may be up to this multiple of the baseline's.
    pub relative: f64,
    /// The canary's rate may be up to this much above the baseline's.
    pub absolute: f64,
}

impl Tolerance {
    /// The highest canary rate within tolerance of a baseline at `baseline`.
    pub(crate) fn ceiling_for(&self, baseline: f64) -> f64 {
        let b = baseline.clamp(0.0, 1.0);
        let relative = if b >= 1.0 {
            1.0
        } else {
            let odds = self.relative * b / (1.0 - b);
            odds / (1.0 + odds)
        };
        relative.max(b + self.absolute).min(1.0)
    }

    /// The margin on the difference `p_c − p_b` at a baseline rate `baseline`.
    pub(crate) fn margin_at(&self, baseline: f64) -> f64 {
        self.ceiling_for(baseline) - baseline.clamp(0.0, 1.0)
    }
}

/// Counts of one signal in the two groups compared: events (bad or slow requests) of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TwoGroups {
    /// Canary events.
    pub canary_events: u64,
    /// Canary requests.
    pub canary_total: u64,
    /// Baseline (or reference) events.
    pub baseline_events: u64,
    /// Baseline (or reference) requests.
    pub baseline_total: u64,
}

impl TwoGroups {
    fn rates(&self) -> (f64, f64) {
        (
            super::eprocess::ratio(self.canary_events, self.canary_total),
            super::eprocess::ratio(self.baseline_events, self.baseline_total),
        )
    }
}

/// The Farrington–Manning statistic for H0 `p_c − p_b ≥ margin`; very negative means strong
/// evidence that the canary is within the margin. `None` when a group has no requests.
pub(crate) fn score(g: &TwoGroups, margin: f64) -> Option<f64> {
    if g.canary_total == 0 || g.baseline_total == 0 {
        return None;
    }
    let (nc, nb) = (g.canary_total as f64, g.baseline_total as f64);
    let (pc, pb) = g.rates();
    let (rc, rb) = restricted_rates(g, margin);
    let variance = rc * (1.0 - rc) / nc + rb * (1.0 - rb) / nb;
    if variance.is_nan() || variance <= 0.0 {
        // Both restricted rates sit at 0 or 1: only possible with a margin of 0 or 1, where
        // there is nothing to test.
        return None;
    }
    Some((pc - pb - margin) / variance.sqrt())
}

/// The rates that maximise the likelihood of the counts under `p_c = p_b + margin`: the variance
/// under the null, which is what makes the score test behave with few events.
fn restricted_rates(g: &TwoGroups, margin: f64) -> (f64, f64) {
    let (ec, nc) = (g.canary_events as f64, g.canary_total as f64);
    let (eb, nb) = (g.baseline_events as f64, g.baseline_total as f64);
    // The log-likelihood in p_b is concave on (0, 1 − margin); its derivative decreases, so the
    // root is found by bisection (64 halvings: exact to the last bit, and never fails).
    let derivative = |b: f64| {
        let c = b + margin;
        let mut d = 0.0;
        if ec > 0.0 {
            d += ec / c;
        }
        if nc > ec {
            d -= (nc - ec) / (1.0 - c);
        }
        if eb > 0.0 {
            d += eb / b;
        }
        if nb > eb {
            d -= (nb - eb) / (1.0 - b);
        }
        d
    };
    let (mut lo, mut hi) = (0.0f64, (1.0 - margin).max(0.0));
    if hi - lo <= 2.0 * f64::EPSILON {
        return (margin.min(1.0), 0.0);
    }
    // The optimum sits on an edge when the derivative does not change sign inside.
    if derivative(lo + f64::EPSILON) <= 0.0 {
        return (margin, 0.0);
    }
    if derivative(hi - f64::EPSILON) >= 0.0 {
        return (1.0, hi);
    }
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if derivative(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let b = 0.5 * (lo + hi);
    (b + margin, b)
}

/// The outcome of one look of the healthy test for one signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Look {
    /// Whether H0 ("worse by at least the margin") was rejected: the signal is healthy.
    pub healthy: bool,
    /// The margin tested, in proportion points.
    pub margin: f64,
    /// The statistic (`None`: a group had no requests).
    pub z: Option<f64>,
    /// The critical value at this look's level.
    pub critical: f64,
}

impl Look {
    /// How many times the traffic seen so far a look at `level` would need for this signal to
    /// be healthy, if the rates stay as observed: the statistic grows with the square root of
    /// the traffic. `None` when no amount would do (the canary's observed rate is already at or
    /// beyond the tolerance) or nothing was seen.
    pub(crate) fn traffic_factor_needed(&self, level: f64) -> Option<f64> {
        let z = self.z?;
        if z >= 0.0 {
            return None;
        }
        let needed = normal_quantile(1.0 - level);
        Some((needed / -z).powi(2).max(1.0))
    }
}

/// One look: the margin at the baseline's lower confidence bound (level `margin_level`), then
/// the score test at `level`.
pub(crate) fn look(g: &TwoGroups, tolerance: &Tolerance, margin_level: f64, level: f64) -> Look {
    let lower = super::math::rate_lower(g.baseline_events, g.baseline_total, margin_level);
    let margin = tolerance.margin_at(lower);
    let critical = normal_quantile(1.0 - level);
    let z = score(g, margin);
    Look {
        healthy: z.is_some_and(|z| z < -critical),
        margin,
        z,
        critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(ec: u64, nc: u64, eb: u64, nb: u64) -> TwoGroups {
        TwoGroups {
            canary_events: ec,
            canary_total: nc,
            baseline_events: eb,
            baseline_total: nb,
        }
    }

    #[test]
    fn the_restricted_rates_maximise_the_constrained_likelihood() {
        // Brute force over a fine grid agrees with the bisection.
        for (ec, nc, eb, nb, m) in [
            (12, 1000, 40, 4000, 0.01),
            (0, 500, 0, 900, 0.005),
            (3, 200, 0, 400, 0.02),
            (50, 100, 10, 100, 0.1),
        ] {
            let g = groups(ec, nc, eb, nb);
            let (rc, rb) = restricted_rates(&g, m);
            assert!((rc - rb - m).abs() < 1e-12);
            let ll = |b: f64| {
                let c = b + m;
                let term = |k: f64, n: f64, p: f64| {
                    let a = if k > 0.0 { k * p.ln() } else { 0.0 };
                    let z = if n > k { (n - k) * (1.0 - p).ln() } else { 0.0 };
                    a + z
                };
                term(ec as f64, nc as f64, c) + term(eb as f64, nb as f64, b)
            };
            let best = (1..100_000)
                .map(|i| f64::from(i) / 100_000.0 * (1.0 - m))
                .max_by(|a, b| ll(*a).total_cmp(&ll(*b)))
                .expect("grid");
            assert!(
                (best - rb).abs() < 2e-5,
                "{ec}/{nc} {eb}/{nb}: {best} vs {rb}"
            );
        }
    }

    #[test]
    fn zero_events_give_the_closed_form() {
        // With no events anywhere the constrained optimum is p_b = 0, p_c = m, and
        // Z = −sqrt(n_c·m/(1−m)).
        let g = groups(0, 600, 0, 1200);
        let z = score(&g, 0.01).expect("z");
        assert!((z + (600.0f64 * 0.01 / 0.99).sqrt()).abs() < 1e-9, "{z}");
    }

    #[test]
    fn equal_rates_with_enough_traffic_are_healthy_and_a_worse_canary_is_not() {
        let t = Tolerance {
            relative: 2.0,
            absolute: 0.01,
        };
        // 1% on both sides, 3,600 canary and 7,200 baseline requests (20 requests/s per pod,
        // 3 minutes, 1 canary pod of 3).
        let healthy = look(&groups(36, 3600, 72, 7200), &t, 0.005, 0.03);
        assert!(healthy.healthy, "{healthy:?}");
        // 3% on the canary: beyond the 1-point tolerance.
        let worse = look(&groups(108, 3600, 72, 7200), &t, 0.005, 0.03);
        assert!(!worse.healthy, "{worse:?}");
        assert_eq!(worse.traffic_factor_needed(0.03), None);
        // Too little traffic: not healthy yet, and the factor needed says how much more.
        let small = look(&groups(2, 200, 4, 400), &t, 0.005, 0.03);
        assert!(!small.healthy);
        let factor = small
            .traffic_factor_needed(0.03)
            .expect("some traffic would do");
        assert!(factor > 1.0);
        // Whole multiples of the counts keep the rates exactly as observed.
        let scaled = |k: f64| {
            let k = k as u64;
            look(&groups(2 * k, 200 * k, 4 * k, 400 * k), &t, 0.005, 0.03)
        };
        assert!(scaled((factor * 1.15).ceil()).healthy);
        assert!(!scaled((factor * 0.8).floor()).healthy);
    }

    #[test]
    fn the_tolerance_is_the_larger_of_its_two_margins() {
        let t = Tolerance {
            relative: 2.0,
            absolute: 0.01,
        };
        assert!((t.ceiling_for(0.0) - 0.01).abs() < 1e-12);
        assert!((t.ceiling_for(0.005) - 0.015).abs() < 1e-12);
        // At 5% the relative margin dominates: odds 2 × 0.0526 → 9.5%.
        assert!((t.ceiling_for(0.05) - 0.095_238).abs() < 1e-5);
        assert_eq!(t.ceiling_for(1.0), 1.0);
    }
}
