//! The sequential comparison of two event rates, one signal at a time (bad responses, or slow
//! responses). Kept apart from [`super::sequential`] because it is the part with the maths: a
//! mixture likelihood ratio that is a test supermartingale under "the canary is no worse", so
//! Ville's inequality bounds the chance it ever reaches `1/alpha` (derivation in
//! `docs/analysis.md`).
//!
//! Conditioning on the events: within one sampling interval, given that `x` events happened in
//! total, each came from the canary with probability `π = ψ·n_c / (ψ·n_c + n_b)`, where `n_c`, `n_b`
//! are the two groups' request counts and `ψ` is the canary's odds ratio against the baseline
//! (≈ rate ratio for small rates). Under the null `ψ ≤ ρ0` the canary's count is (stochastically
//! at most) Binomial(x, π(ρ0)). The baseline's own rate, and anything that moves both groups
//! together, cancels: a backend outage seen by every pod is not evidence against the canary.

use super::math::{log_sum_exp, rate_excludes};

/// Alternatives of the mixture, as multiples of the null odds ratio: 1.25 × 1.6^j for j in 0..20,
/// i.e. from 25% worse than the margin up to ~9,000× worse, equally weighted. A grid (instead of a
/// conjugate prior) because the traffic split changes from interval to interval; the product of
/// likelihood ratios for a fixed alternative is still a supermartingale, and a fixed-weight
/// average of those is one too.
const GRID: usize = 20;
const GRID_FIRST: f64 = 1.25;
const GRID_STEP: f64 = 1.6;

/// Running state of one signal's test: log likelihood ratio per alternative, and totals.
#[derive(Debug, Clone)]
pub(crate) struct RateComparison {
    ln_null: f64,
    ln_alts: [f64; GRID],
    log_lr: [f64; GRID],
    /// Canary events (bad or slow requests) since the start.
    pub canary_events: u64,
    /// Canary requests since the start.
    pub canary_total: u64,
    /// Baseline events since the start.
    pub baseline_events: u64,
    /// Baseline requests since the start.
    pub baseline_total: u64,
}

impl RateComparison {
    /// A fresh test of "canary odds ≤ `relative_margin` × baseline odds".
    pub(crate) fn new(relative_margin: f64) -> Self {
        let ln_null = relative_margin.ln();
        let mut ln_alts = [0.0; GRID];
        for (j, a) in ln_alts.iter_mut().enumerate() {
            *a = ln_null + GRID_FIRST.ln() + j as f64 * GRID_STEP.ln();
        }
        RateComparison {
            ln_null,
            ln_alts,
            log_lr: [0.0; GRID],
            canary_events: 0,
            canary_total: 0,
            baseline_events: 0,
            baseline_total: 0,
        }
    }

    /// Adds one interval: canary `ec` events of `nc` requests, baseline `eb` of `nb`.
    pub(crate) fn update(&mut self, ec: u64, nc: u64, eb: u64, nb: u64) {
        let (ec, eb) = (ec.min(nc), eb.min(nb));
        self.canary_events += ec;
        self.canary_total += nc;
        self.baseline_events += eb;
        self.baseline_total += nb;
        let x = ec + eb;
        // No events, or one group idle: the split carries no information about the odds ratio
        // (every factor below is exactly 1).
        if x == 0 || nc == 0 || nb == 0 {
            return;
        }
        let (ncf, nbf) = (nc as f64, nb as f64);
        let (ecf, xf) = (ec as f64, x as f64);
        // ln LR = ec·(ln ψ1 − ln ψ0) − x·(ln(ψ1·nc + nb) − ln(ψ0·nc + nb)).
        let null_norm = ln_add(self.ln_null + ncf.ln(), nbf.ln());
        for (lr, &ln_alt) in self.log_lr.iter_mut().zip(self.ln_alts.iter()) {
            let alt_norm = ln_add(ln_alt + ncf.ln(), nbf.ln());
            *lr += ecf * (ln_alt - self.ln_null) - xf * (alt_norm - null_norm);
        }
    }

    /// ln of the mixture e-value: the average of the alternatives' likelihood ratios.
    pub(crate) fn log_e_value(&self) -> f64 {
        log_sum_exp(&self.log_lr) - (GRID as f64).ln()
    }

    /// Share of bad (or slow) canary requests so far.
    pub(crate) fn canary_rate(&self) -> f64 {
        ratio(self.canary_events, self.canary_total)
    }

    /// Share of bad (or slow) baseline requests so far.
    pub(crate) fn baseline_rate(&self) -> f64 {
        ratio(self.baseline_events, self.baseline_total)
    }

    /// The absolute-margin half of a rejection: the anytime-valid lower bound of the canary's rate
    /// is more than `margin` above the upper bound of the baseline's, each bound at `alpha / 2`.
    /// If the true difference is at most `margin`, this is ever true with probability ≤ `alpha`.
    pub(crate) fn worse_by_absolute_margin(&self, margin: f64, alpha: f64) -> bool {
        let baseline_upper =
            super::math::rate_upper(self.baseline_events, self.baseline_total, alpha / 2.0);
        let floor = baseline_upper + margin;
        floor < 1.0
            && rate_excludes(
                self.canary_events,
                self.canary_total,
                alpha / 2.0,
                floor,
                false,
            )
    }
}

/// `ln(e^a + e^b)`.
fn ln_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// `num / den`, 0 when `den` is 0.
pub(crate) fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canary_event_with_a_silent_baseline_raises_the_e_value() {
        // 1 canary pod of 5: π = 0.2. Each canary-only bad response multiplies the top
        // alternative's ratio by about 1/π(1.5) ≈ 3.67.
        let mut t = RateComparison::new(1.5);
        let mut last = t.log_e_value();
        for _ in 0..10 {
            t.update(1, 1, 0, 4);
            let now = t.log_e_value();
            assert!(now > last);
            last = now;
        }
    }

    #[test]
    fn equal_shares_do_not_build_evidence() {
        let mut t = RateComparison::new(1.0);
        for _ in 0..1000 {
            // Exactly proportional: canary 1 of 100, baseline 4 of 400.
            t.update(1, 100, 4, 400);
        }
        assert!(t.log_e_value() < 0.0, "{}", t.log_e_value());
    }

    #[test]
    fn idle_groups_leave_the_test_unchanged() {
        let mut t = RateComparison::new(1.5);
        t.update(5, 5, 0, 0);
        t.update(0, 0, 5, 5);
        t.update(0, 10, 0, 10);
        assert_eq!(t.log_e_value(), 0.0);
        assert_eq!((t.canary_events, t.canary_total), (5, 15));
    }

    #[test]
    fn margins() {
        let mut t = RateComparison::new(1.5);
        t.update(300, 1000, 40, 4000);
        assert!(t.worse_by_absolute_margin(0.005, 0.001));
        assert!(!t.worse_by_absolute_margin(0.35, 0.001));
        // Equal 1% rates are never worse by any margin.
        let mut ok = RateComparison::new(1.5);
        ok.update(200, 20_000, 800, 80_000);
        assert!(!ok.worse_by_absolute_margin(0.0, 0.001));
    }
}
