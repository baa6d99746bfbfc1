//! When the healthy test looks at the evidence, and with how much of its error budget. The bake's
//! length is fixed before the canary starts, so the healthy side need not pay for looking every
//! second: it looks once at the bake's end with most of its budget, and, should that look find
//! too little evidence, once per further bake with less each time (a Bonferroni spending plan). The levels of all looks add up to the budget, so the chance that a canary worse than
//! the tolerance is ever called healthy in a step stays within it, however long the step is held.

/// The look plan of one analysis window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Looks {
    /// Seconds between looks: the bake.
    every_secs: f64,
    /// The error budget the looks share.
    budget: f64,
}

/// Share of the budget spent at the first look (the bake's end); look `k ≥ 2` gets
/// `2/(k(k+1))` of the rest, which sums to all of it. 3/4 keeps the first look within 10% of the
/// critical value a single look with the whole budget would have (1.83 vs 1.70 at β = 0.045).
/// The later shares shrink like `1/k²` while the evidence grows like `√k`, so a step held for
/// more traffic still passes a later look (a halving plan made the tenth look need z = 4.1
/// where this one needs 3.5).
const FIRST_SHARE: f64 = 0.75;

impl Looks {
    /// Looks every `every_secs` (at least a second) sharing `budget`.
    pub(crate) fn new(every_secs: f64, budget: f64) -> Self {
        Looks {
            every_secs: every_secs.max(1.0),
            budget,
        }
    }

    /// The look due `elapsed` seconds into the window when `done` looks have been made: the
    /// number of the latest look whose time has come, if it has not been made. Looks whose time
    /// passed unobserved (no sample in between) are skipped, which only spends less.
    pub(crate) fn due(&self, elapsed: f64, done: u32) -> Option<u32> {
        let reached = (elapsed / self.every_secs).floor();
        let reached = if reached >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            reached as u32
        };
        (reached > done).then_some(reached)
    }

    /// The level of look `k` (1-based): `budget·3/4` for the first, `budget·(1/4)·2/(k(k+1))`
    /// after. Summed over every `k` they make the budget.
    pub(crate) fn level(&self, k: u32) -> f64 {
        match k {
            0 => 0.0,
            1 => self.budget * FIRST_SHARE,
            k => {
                let k = f64::from(k);
                self.budget * (1.0 - FIRST_SHARE) * 2.0 / (k * (k + 1.0))
            }
        }
    }

    /// Seconds into the window at which look `k` is due.
    pub(crate) fn at(&self, k: u32) -> f64 {
        f64::from(k) * self.every_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_spend_no_more_than_the_budget() {
        let looks = Looks::new(180.0, 0.045);
        let total: f64 = (1..100_000).map(|k| looks.level(k)).sum();
        assert!(total <= 0.045 + 1e-15, "{total}");
        assert!(total > 0.045 * 0.9999, "nearly all of it is spent: {total}");
        assert!((looks.level(1) - 0.033_75).abs() < 1e-15);
        assert!(looks.level(2) > looks.level(3));
    }

    #[test]
    fn a_look_is_due_once_its_time_has_come() {
        let looks = Looks::new(60.0, 0.05);
        assert_eq!(looks.due(59.9, 0), None);
        assert_eq!(looks.due(60.0, 0), Some(1));
        assert_eq!(looks.due(61.0, 1), None);
        // A long gap between samples skips to the latest look.
        assert_eq!(looks.due(250.0, 1), Some(4));
        assert_eq!(looks.at(2), 120.0);
    }
}
