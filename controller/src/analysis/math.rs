//! The few numerical pieces the tests need, written out so the module stays dependency-free and
//! deterministic: `ln Γ`, a log-sum-exp, and anytime-valid confidence bounds for a Bernoulli rate.

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; relative error ~1e-15). Needed for beta-binomial
/// Bayes factors and the Poisson sampler.
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        let s = (std::f64::consts::PI * x).sin().abs();
        return std::f64::consts::PI.ln() - s.ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `ln B(a, b)`.
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Σ exp(v)` without overflow; `-inf` for an empty slice.
pub(crate) fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// `x ln y` with the convention `0 ln 0 = 0`.
fn xlny(x: f64, y: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x * y.ln() }
}

/// Prior of the Bernoulli confidence sequences: Jeffreys, Beta(1/2, 1/2). It puts more mass near 0
/// and 1 than a uniform prior, which is where error rates live, so bounds tighten sooner.
const PRIOR: f64 = 0.5;

/// Log Bayes factor of the beta-binomial mixture against the point `q`, after `k` successes in
/// `n` trials. Under `p = q` its exponential is a nonnegative martingale with mean 1 (Robbins'
/// mixture), so `{q : log_bf < ln(1/alpha)}` holds the true rate at all times with probability
/// ≥ 1 − alpha (Ville's inequality).
pub(crate) fn beta_binomial_log_bf(k: u64, n: u64, q: f64) -> f64 {
    let (k, n) = (k as f64, n as f64);
    ln_beta(PRIOR + k, PRIOR + n - k) - ln_beta(PRIOR, PRIOR) - xlny(k, q) - xlny(n - k, 1.0 - q)
}

/// Anytime-valid lower bound on a Bernoulli rate from `k` of `n` at level `alpha`: the smallest
/// `q` the mixture has not rejected. 0 when `k = 0` or `n = 0`.
pub(crate) fn rate_lower(k: u64, n: u64, alpha: f64) -> f64 {
    let k = k.min(n);
    if k == 0 {
        return 0.0;
    }
    let limit = (1.0 / alpha).ln();
    let mle = k as f64 / n as f64;
    solve(0.0, mle, false, |q| log_bf_and_slope(k, n, q, limit))
}

/// Anytime-valid upper bound on a Bernoulli rate from `k` of `n` at level `alpha`. 1 when
/// `k = n` (including `n = 0`).
pub(crate) fn rate_upper(k: u64, n: u64, alpha: f64) -> f64 {
    let k = k.min(n);
    if k == n {
        return 1.0;
    }
    let limit = (1.0 / alpha).ln();
    let mle = k as f64 / n as f64;
    solve(mle, 1.0, true, |q| log_bf_and_slope(k, n, q, limit))
}

/// Whether `q` lies above the upper bound (`above = true`) or below the lower bound of the
/// confidence sequence from `k` of `n` at level `alpha`: one Bayes-factor evaluation, cheaper than
/// computing the bound when only the comparison is needed.
pub(crate) fn rate_excludes(k: u64, n: u64, alpha: f64, q: f64, above: bool) -> bool {
    let k = k.min(n);
    if n == 0 {
        return false;
    }
    let mle = k as f64 / n as f64;
    if above && (q >= 1.0) {
        return k < n || q > 1.0;
    }
    if !above && q <= 0.0 {
        return k > 0 || q < 0.0;
    }
    let on_side = if above { q > mle } else { q < mle };
    on_side && beta_binomial_log_bf(k, n, q) >= (1.0 / alpha).ln()
}

/// `(log_bf(q) - limit, d/dq log_bf(q))`.
fn log_bf_and_slope(k: u64, n: u64, q: f64, limit: f64) -> (f64, f64) {
    let (kf, nf) = (k as f64, n as f64);
    let value = beta_binomial_log_bf(k, n, q) - limit;
    let slope = -kf / q + (nf - kf) / (1.0 - q);
    (value, slope)
}

/// Root of a monotone function on `(lo, hi)` by Newton steps kept inside a shrinking bracket
/// (bisection when a step leaves it). `rising` says whether `f` increases on the interval. The
/// log Bayes factor is convex, so Newton converges in a handful of steps; the bracket makes it
/// safe near 0 and 1 where the slope blows up.
fn solve(mut lo: f64, mut hi: f64, rising: bool, f: impl Fn(f64) -> (f64, f64)) -> f64 {
    let mut x = 0.5 * (lo + hi);
    for _ in 0..200 {
        let (fx, dfx) = f(x);
        if fx == 0.0 {
            return x;
        }
        if (fx > 0.0) == rising {
            hi = x;
        } else {
            lo = x;
        }
        let newton = x - fx / dfx;
        let next = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if (next - x).abs() <= 1e-13 * x.abs() || hi - lo <= 1e-13 * hi {
            return next;
        }
        x = next;
    }
    x
}

/// The standard normal quantile `Φ⁻¹(p)` for `p` in `(0, 1)` (Acklam's rational approximation,
/// relative error below 1.2e-9, plenty for a critical value). The healthy test's critical values
/// come from it; `p` outside `(0, 1)` gives ±infinity.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    const LOW: f64 = 0.024_25;
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Both anytime-valid bounds, each side at level `alpha`: `(lower, upper)`.
#[cfg(test)]
pub(crate) fn rate_bounds(k: u64, n: u64, alpha: f64) -> (f64, f64) {
    (rate_lower(k, n, alpha), rate_upper(k, n, alpha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 1.0f64;
        for n in 1..30u32 {
            fact *= f64::from(n);
            let got = ln_gamma(f64::from(n) + 1.0);
            assert!((got - fact.ln()).abs() < 1e-9 * fact.ln().max(1.0), "n={n}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn normal_quantiles_match_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.95, 1.644_853_627),
            (0.975, 1.959_963_985),
            (0.99, 2.326_347_874),
            (0.001, -3.090_232_306),
            (0.9999, 3.719_016_485),
        ] {
            assert!((normal_quantile(p) - z).abs() < 1e-8, "p={p}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
    }

    #[test]
    fn bounds_contain_the_estimate_and_shrink() {
        let (lo, hi) = rate_bounds(10, 1000, 0.01);
        assert!(lo < 0.01 && 0.01 < hi, "{lo} {hi}");
        let (lo2, hi2) = rate_bounds(100, 10_000, 0.01);
        assert!(lo2 > lo && hi2 < hi);
        assert_eq!(rate_bounds(0, 0, 0.01), (0.0, 1.0));
        let (lo, hi) = rate_bounds(0, 1000, 0.001);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0 && hi < 0.02, "{hi}");
        let (lo, hi) = rate_bounds(16, 16, 0.0005);
        assert_eq!(hi, 1.0);
        assert!(lo > 0.4, "{lo}");
    }

    #[test]
    fn bounds_sit_where_the_bayes_factor_crosses() {
        let limit = (1.0f64 / 0.001).ln();
        for (k, n) in [
            (1, 10),
            (3, 1000),
            (500, 1000),
            (999, 1000),
            (40, 4000),
            (7, 9),
        ] {
            let (lo, hi) = rate_bounds(k, n, 0.001);
            for q in [lo, hi] {
                if q > 0.0 && q < 1.0 {
                    let v = beta_binomial_log_bf(k, n, q);
                    assert!((v - limit).abs() < 1e-6, "k={k} n={n} q={q} v={v}");
                }
            }
            assert!(rate_excludes(k, n, 0.001, hi * 1.001 + 1e-9, true) || hi >= 0.999);
            assert!(!rate_excludes(k, n, 0.001, hi * 0.999, true));
            assert!(!rate_excludes(k, n, 0.001, lo * 1.001 + 1e-12, false));
        }
    }
}
