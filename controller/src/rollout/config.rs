//! How a rollout moves: the steps, how long each bakes, how many pods may change at once, and what
//! to do when analysis cannot decide. One type the CRD spec maps onto, checked once, so a bad spec
//! is refused before any pod is touched instead of half-way through a canary.

use std::fmt;
use std::str::FromStr;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

/// A share of the fleet: an absolute pod count or a percentage. Steps and the surge limit are both
/// written this way (`1`, `"25%"`), so a spec reads the same as Argo Rollouts or Flagger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "AmountRepr", into = "AmountRepr")]
pub enum Amount {
    /// This many pods (never more than the fleet has).
    Pods(u32),
    /// This percentage of the fleet, 1..=100, rounded up.
    Percent(u8),
}

impl Amount {
    /// Pods this amount means in a fleet of `fleet` pods. Never more than the fleet; a percentage
    /// rounds up, so `1%` of a small fleet is one canary pod rather than none (a step that moves no
    /// pod would bake nothing and promote untested config).
    pub fn of(self, fleet: usize) -> usize {
        let n = match self {
            Amount::Pods(k) => k as usize,
            Amount::Percent(p) => (fleet * usize::from(p)).div_ceil(100),
        };
        n.min(fleet)
    }

    /// Refuses amounts that can never make progress (0) or mean more than everything (>100%).
    pub fn check(self) -> Result<(), AmountError> {
        match self {
            Amount::Pods(0) | Amount::Percent(0) => Err(AmountError::Zero),
            Amount::Percent(p) if p > 100 => Err(AmountError::OverHundred(u32::from(p))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Pods(k) => write!(f, "{k}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Why a string is not a step or surge amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Neither `N` nor `N%`.
    #[error("{0:?} is not a pod count or a percentage: write e.g. 3 or \"25%\"")]
    NotANumber(String),
    /// Zero pods or 0%: a step that moves nothing never finishes.
    #[error("an amount of zero never makes progress: use at least 1 pod or 1%")]
    Zero,
    /// More than 100%.
    #[error("{0}% is more than the whole fleet: use at most \"100%\"")]
    OverHundred(u32),
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let not_a_number = || AmountError::NotANumber(s.to_string());
        let amount = match t.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| not_a_number())?;
                let p = u8::try_from(p).map_err(|_| AmountError::OverHundred(p))?;
                Amount::Percent(p)
            }
            None => Amount::Pods(t.parse().map_err(|_| not_a_number())?),
        };
        amount.check()?;
        Ok(amount)
    }
}

/// The wire form: a bare integer is a pod count, a string is `N` or `N%`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum AmountRepr {
    Count(u32),
    Text(String),
}

impl TryFrom<AmountRepr> for Amount {
    type Error = AmountError;

    fn try_from(r: AmountRepr) -> Result<Self, Self::Error> {
        match r {
            AmountRepr::Count(k) => {
                let a = Amount::Pods(k);
                a.check()?;
                Ok(a)
            }
            AmountRepr::Text(s) => s.parse(),
        }
    }
}

impl From<Amount> for AmountRepr {
    fn from(a: Amount) -> Self {
        match a {
            Amount::Pods(k) => AmountRepr::Count(k),
            Amount::Percent(_) => AmountRepr::Text(a.to_string()),
        }
    }
}

/// What a bake that ends without a conclusive verdict does. Low traffic (a quiet night, a small
/// site) gives `Inconclusive`, not `Healthy`, so this decides how a rollout behaves when nobody is
/// using the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InconclusivePolicy {
    /// Keep the step and keep analysing. Past `max_bake` the rollout reports itself stalled (a
    /// Warning event and `status.stalled`) and waits for a conclusive verdict or a person
    /// (`promote` / `abort`). The default: it neither spreads unverified config nor throws away and
    /// quarantines a change that nothing showed to be bad.
    #[default]
    Hold,
    /// Treat an explicit `Inconclusive` at the end of the bake as a pass. For sites that accept
    /// the risk; a missing verdict (analysis not running) still never promotes.
    Promote,
    /// Past `max_bake` without a conclusive verdict, roll back and quarantine, as for a failure.
    RollBack,
}

/// The rollout strategy of one `ProxyRollout` (`spec.strategy`), with defaults a first user can
/// keep: `[1, 25%, 50%, 100%]`, 3 minutes per step (`switchback local` and the operator share
/// them). With them a healthy commit on a fleet serving 20 requests/s per pod or more, with up
/// to a few percent background errors, is promoted through every step without anyone touching
/// it, and a quieter fleet is held with a message that says so (`docs/analysis.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RolloutConfig {
    /// How many pods run the target at each step; each step bakes before the next. Steps need not
    /// end at 100%: after the last bake the rest of the fleet follows, `max_surge` at a time.
    pub steps: Vec<Amount>,
    /// How long each step runs under analysis before it may move on.
    pub bake: SignedDuration,
    /// How long a step may go on without a conclusive verdict before `on_inconclusive` acts.
    pub max_bake: SignedDuration,
    /// Most pods changing config at once (told a digest they have not applied yet), like
    /// `maxUnavailable`: an nginx reload is cheap but not free, and a bad apply should hit few pods.
    /// Rollbacks ignore it: restoring known-good config is never throttled.
    pub max_surge: Amount,
    /// See [`InconclusivePolicy`].
    pub on_inconclusive: InconclusivePolicy,
    /// Pods that may fail to apply the target (or not apply it within `apply_timeout`) before the
    /// rollout rolls back. 0: the first failure rolls back. Pods that fail go back to stable.
    pub max_apply_failures: u32,
    /// How long a pod may take to apply what it was told. A target not applied in time counts as
    /// an apply failure; any other digest is told again.
    pub apply_timeout: SignedDuration,
    /// Entries of history (and known-good revisions for `rollback-to`) kept in status.
    pub history_limit: usize,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            steps: vec![
                Amount::Pods(1),
                Amount::Percent(25),
                Amount::Percent(50),
                Amount::Percent(100),
            ],
            bake: crate::analysis::DEFAULT_BAKE,
            max_bake: SignedDuration::from_mins(30),
            max_surge: Amount::Percent(25),
            on_inconclusive: InconclusivePolicy::Hold,
            max_apply_failures: 0,
            apply_timeout: SignedDuration::from_mins(2),
            history_limit: 20,
        }
    }
}

impl RolloutConfig {
    /// Refuses a strategy that could never finish or never bake, naming the field to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.steps.is_empty() {
            return Err(ConfigError::NoSteps);
        }
        for (index, step) in self.steps.iter().enumerate() {
            step.check()
                .map_err(|source| ConfigError::Step { index, source })?;
        }
        self.max_surge.check().map_err(ConfigError::Surge)?;
        if !self.bake.is_positive() {
            return Err(ConfigError::NotPositive {
                field: "bake",
                value: self.bake,
            });
        }
        if !self.apply_timeout.is_positive() {
            return Err(ConfigError::NotPositive {
                field: "applyTimeout",
                value: self.apply_timeout,
            });
        }
        if self.max_bake < self.bake {
            return Err(ConfigError::MaxBakeTooShort {
                bake: self.bake,
                max_bake: self.max_bake,
            });
        }
        if self.history_limit == 0 {
            return Err(ConfigError::NoHistory);
        }
        Ok(())
    }

    /// Pods allowed to change at once in a fleet of `fleet`: at least one, or nothing would move.
    pub fn surge(&self, fleet: usize) -> usize {
        self.max_surge.of(fleet).max(1)
    }

    /// Pods allowed on the target at step `step` (clamped to the last step).
    pub fn allowed(&self, step: usize, fleet: usize) -> usize {
        let last = self.steps.len().saturating_sub(1);
        self.steps.get(step.min(last)).map_or(0, |a| a.of(fleet))
    }
}

/// Why a rollout strategy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No steps at all.
    #[error("strategy.canary.steps is empty: give at least one step, e.g. [1, \"25%\", \"100%\"]")]
    NoSteps,
    /// One step is zero or over 100%.
    #[error("strategy.canary.steps[{index}]: {source}")]
    Step {
        /// 0-based position in the list.
        index: usize,
        /// What is wrong with it.
        source: AmountError,
    },
    /// The surge limit is zero or over 100%.
    #[error("strategy.canary.maxSurge: {0}")]
    Surge(AmountError),
    /// A duration that must be positive is not.
    #[error("strategy.canary.{field} is {value}: it must be positive")]
    NotPositive {
        /// The field.
        field: &'static str,
        /// Its value.
        value: SignedDuration,
    },
    /// `maxBake` shorter than `bake`: the rollout would stall before the first bake ended.
    #[error(
        "strategy.canary.maxBake ({max_bake}) is shorter than bake ({bake}): make it at least as long"
    )]
    MaxBakeTooShort {
        /// The bake.
        bake: SignedDuration,
        /// The max bake.
        max_bake: SignedDuration,
    },
    /// `historyLimit` of zero would forget every known-good revision, so `rollback-to` could not work.
    #[error("historyLimit must be at least 1: rollback-to needs known-good revisions")]
    NoHistory,
}
