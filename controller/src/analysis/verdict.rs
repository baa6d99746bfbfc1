//! What analysis concludes about a canary, and the evidence a person reads in the incident report.

use serde::{Deserialize, Serialize};

/// The outcome of analysing a canary over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The canary is no worse than the baseline, with enough evidence to say so.
    Healthy,
    /// The canary is worse: roll back.
    Failing(Evidence),
    /// Not enough traffic (or signal) to decide either way.
    Inconclusive {
        /// Why no decision could be made, for status and events: what was seen and, once the
        /// method has looked, what a verdict needs.
        reason: String,
        /// The method has not reached its first decision point yet (the sequential test's look
        /// at the bake's end, the threshold method's first check): no verdict is expected yet,
        /// so a step whose bake just ended is not "held" until the look has been made.
        #[serde(default)]
        pending: bool,
    },
}

/// Why a canary was judged failing, in numbers a person at 3 a.m. can check.
///
/// The counts cover the window the method judged: the whole analysis so far for `sequential`, the
/// last metric window for `threshold`, the last requests for `ceiling`. `Default` exists so
/// callers building evidence by hand (tests, other methods) can fill only what they know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Which method decided (`sequential`, `threshold`, `ceiling`).
    pub method: String,
    /// One line: what was seen, e.g. "canary 502 rate 85.0% (170/200) vs baseline 0.5% (4/800)".
    pub summary: String,
    /// Bad responses from the canary in the window.
    pub canary_bad: u64,
    /// All responses from the canary in the window.
    pub canary_total: u64,
    /// Bad responses from the baseline in the window.
    pub baseline_bad: u64,
    /// All responses from the baseline in the window.
    pub baseline_total: u64,
    /// Which signal decided: `errors` (bad responses) or `latency` (slow responses). For
    /// `latency`, the four counts above are slow responses rather than bad ones.
    #[serde(default)]
    pub signal: String,
    /// The method's statistic when it decided: the e-value (sequential), failed checks
    /// (threshold), the bad share (ceiling). Lets the report show how far past the bound it was.
    #[serde(default)]
    pub statistic: f64,
    /// The value `statistic` had to reach: `1/alpha`, the failed-checks threshold, the ceiling.
    #[serde(default)]
    pub bound: f64,
    /// Seconds from the first sample to the decision.
    #[serde(default)]
    pub elapsed_secs: f64,
}
