//! Canary analysis: health signals of the canary and baseline pods → a verdict (DESIGN §3.5). Pure:
//! counters in, verdict out; no I/O, no clock (time is passed in with every [`Sample`]), no
//! randomness. The maths and the comparison with Flagger's policy are in `docs/analysis.md`.
//!
//! The shape: the engine samples the agents' cumulative [`Counters`] (canary pods summed, baseline
//! pods summed) every few seconds and feeds each [`Sample`] to one [`Analysis`]; the analysis
//! keeps whatever state its method needs and answers with a [`Verdict`] every time. Cumulative
//! samples rather than pre-cut windows mean a missed sample loses nothing and each method cuts the
//! windows it needs.
//!
//! Two methods, chosen by [`AnalysisConfig`]:
//! - [`Sequential`] (default): an anytime-valid test of the canary's bad-response share against the
//!   baseline's over the same seconds, with a proven false-alarm bound `alpha`;
//! - [`Threshold`]: Flagger's policy (check every `interval`, roll back after `threshold` failed
//!   checks), kept so both can be compared on the same traffic ([`replay`]).

pub mod ceiling;
pub mod counters;
pub(crate) mod eprocess;
mod healthy;
pub mod histogram;
mod looks;
pub(crate) mod math;
pub(crate) mod noninferiority;
pub mod reference;
pub mod replay;
pub mod sequential;
pub mod threshold;
pub mod verdict;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod purity_test;
#[cfg(test)]
mod tests;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

pub use ceiling::Ceiling;
pub use counters::{BadDefinition, BadStatuses, Counters};
pub use histogram::LatencyHistogram;
pub use reference::{Reference, TrafficRecord};
pub use replay::replay_table;
pub use sequential::{LatencySignal, Sequential, SequentialConfig};
pub use threshold::{Threshold, ThresholdConfig};
pub use verdict::{Evidence, Verdict};

/// Cumulative counters of the canary group and the baseline group, read at the same moment.
///
/// The first sample an analysis sees is the start of its window: take it when the canary starts
/// serving the new revision. Both groups are sampled together so that every window compares the
/// same seconds of traffic, which is what makes shared trouble (a backend hiccup hitting every
/// pod) cancel out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the counters were read (the caller's clock; analysis never reads one).
    pub at: Timestamp,
    /// Sum over the canary pods.
    pub canary: Counters,
    /// Sum over the baseline pods (those still on the stable revision).
    pub baseline: Counters,
}

/// What happened between two samples: the canary's and the baseline's traffic over the same span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Start of the window.
    pub from: Timestamp,
    /// End of the window.
    pub to: Timestamp,
    /// Canary requests in the window.
    pub canary: Counters,
    /// Baseline requests in the window.
    pub baseline: Counters,
}

impl Sample {
    /// The window from `earlier` to `self`. A group whose counters went down restarted; its
    /// window is then its current counts (see [`Counters::delta_since`]).
    pub fn window_since(&self, earlier: &Sample) -> Window {
        Window {
            from: earlier.at,
            to: self.at,
            canary: self.canary.delta_since(&earlier.canary),
            baseline: self.baseline.delta_since(&earlier.baseline),
        }
    }
}

impl Window {
    /// Length of the window in seconds (0 when the clock went backwards).
    pub fn seconds(&self) -> f64 {
        self.to.duration_since(self.from).as_secs_f64().max(0.0)
    }
}

/// One analysis method, fed samples in time order.
///
/// Why a stateful trait rather than a pure function over all samples: the sequential test's
/// statistic is a running product, and the threshold method counts failed checks; keeping that
/// state makes each call O(1) in the length of the bake. The state is plain data (no clock, no
/// I/O), so a restarted controller rebuilds it by replaying its recorded samples.
pub trait Analysis {
    /// The method's name as it appears in [`Evidence::method`] and in status.
    fn name(&self) -> &'static str;

    /// Takes the next sample (samples must come in time order) and says what is known now.
    /// A `Failing` verdict is final: later samples return the same evidence.
    fn observe(&mut self, sample: &Sample) -> Verdict;
}

/// The bake a window is planned with when nobody says otherwise, and the default of
/// `strategy.bake`: three minutes, long enough that a healthy canary pod at 20 requests/s with
/// 1% background errors is told apart from one a percentage point worse in one bake
/// (`docs/analysis.md`, "Defaults and why").
pub const DEFAULT_BAKE: SignedDuration = SignedDuration::from_mins(3);

/// What the engine knows about an analysis window when it opens it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// How long the step bakes: the sequential method's healthy test looks at its end, and
    /// once per further bake while the step is held.
    pub bake: SignedDuration,
    /// The stable revision's recorded traffic, for a step that leaves no pod on the baseline
    /// (`None`: the baseline pods' own traffic is the comparison).
    pub reference: Option<Reference>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            bake: DEFAULT_BAKE,
            reference: None,
        }
    }
}

/// Which method analyses a canary, with its settings; what a rollout's spec carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum AnalysisConfig {
    /// The sequential test (default).
    Sequential(SequentialConfig),
    /// Flagger's interval/threshold policy.
    Threshold(ThresholdConfig),
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig::Sequential(SequentialConfig::default())
    }
}

impl AnalysisConfig {
    /// Builds the analysis for a window planned as `plan`, checking the settings first.
    pub fn start(&self, plan: Plan) -> Result<Box<dyn Analysis + Send>, ConfigError> {
        Ok(match self {
            AnalysisConfig::Sequential(c) => Box::new(Sequential::planned(c.clone(), plan)?),
            AnalysisConfig::Threshold(c) => Box::new(Threshold::new(c.clone())?),
        })
    }

    /// Checks the settings without starting anything.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.start(Plan::default()).map(drop)
    }
}

/// A setting outside the range the maths (or common sense) allows; names the field so the
/// person editing the rollout spec can fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("analysis setting `{field}` = {value} is invalid: {expected}")]
pub struct ConfigError {
    /// The offending field, as spelled in the spec.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// What it must be.
    pub expected: &'static str,
}

impl ConfigError {
    /// Checks `ok`, else names the field; keeps the validation code one line per rule.
    pub(crate) fn check(
        ok: bool,
        field: &'static str,
        value: impl std::fmt::Display,
        expected: &'static str,
    ) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(ConfigError {
                field,
                value: value.to_string(),
                expected,
            })
        }
    }
}
