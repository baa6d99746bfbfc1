//! Incident reports: what happened, when, and why Switchback rolled back, for people and scripts
//! (DESIGN §3.8).
//!
//! Why a module of its own, and why pure: the report is written from facts the rollout engine
//! already holds (revisions, timestamps, evidence, lint findings, the two bundles), on every
//! rollback, into status, an Event and the CLI's output. Making it a function of plain data,
//! [`IncidentInput`] → [`Report`], with no clock, no I/O and no dependency on the rollout engine's
//! types, lets it be tested on a realistic example and reused by `switchback demo`, the operator
//! and `switchback history` alike. [`to_markdown`] is for the person paged at 3 a.m.;
//! [`to_json`] carries the same content with stable camelCase names for tools.

mod build;
pub mod diff;
mod format;
mod from_incident;
mod markdown;
#[cfg(test)]
mod tests;

use jiff::Timestamp;
use serde::Serialize;

use crate::analysis::Evidence;
use crate::render::{Bundle, Digest};
use crate::source::git::Revision;
use crate::validate::Diagnostic;

pub use build::{
    EventKind, EvidenceReport, Finding, Report, RevisionReport, TimelineEntry, TrafficReport,
};
pub use diff::{ChangeKind, ConfigDiff, FileChange, MAX_DIFF_LINES, diff_bundles};
pub use from_incident::{Restored, from_incident};

/// A revision as the report names it: the commit people know and the digest pods were told.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionRef {
    /// The commit (id, time, author, message).
    pub revision: Revision,
    /// The rendered bundle's digest.
    pub digest: Digest,
}

/// Why the rollout was rolled back. Serialised with a `kind` tag (`canaryFailing`,
/// `applyFailed`, `manualAbort`), which tools may match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Reason {
    /// Analysis judged the canary worse than the baseline (the evidence says how).
    CanaryFailing,
    /// A pod could not apply the bad revision (its `nginx -t` or reload failed).
    ApplyFailed {
        /// The pod that failed.
        pod: String,
        /// What the agent reported.
        message: String,
    },
    /// A person aborted the rollout.
    ManualAbort {
        /// Who, when known.
        by: Option<String>,
    },
}

/// A pod and when something happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTime {
    /// The pod's name.
    pub pod: String,
    /// When.
    pub at: Timestamp,
}

/// When each step of the incident happened. Only the decision is certain to exist; everything
/// else may be unknown (a manual abort before any pod applied, a report written while pods are
/// still being restored). The commit time is the bad revision's `committed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// Switchback first saw the bad commit.
    pub seen: Option<Timestamp>,
    /// Its rendered bundle passed validation.
    pub validated: Option<Timestamp>,
    /// The first pod reported it applied: the bad config was live from here.
    pub first_applied: Option<PodTime>,
    /// The first bad response counted against the canary.
    pub first_bad_response: Option<Timestamp>,
    /// The decision to roll back.
    pub decision: Timestamp,
    /// Each pod back on the restored revision, in any order.
    pub pods_restored: Vec<PodTime>,
    /// Every pod back on the restored revision.
    pub all_restored: Option<Timestamp>,
}

/// Requests seen by clients while the bad config was live (first applied → all restored), when
/// someone counted them (the demo's traffic generator does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficFigures {
    /// Requests sent during the incident.
    pub requests: u64,
    /// Of those, failed (5xx or no answer).
    pub failed: u64,
}

/// Everything a report is written from, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentInput {
    /// The rollout's name.
    pub rollout: String,
    /// The revision rolled back (now quarantined).
    pub bad: RevisionRef,
    /// The revision every pod went back to.
    pub restored: RevisionRef,
    /// Why.
    pub reason: Reason,
    /// The analysis method watching the canary, when there was one; falls back to the
    /// evidence's method.
    pub method: Option<String>,
    /// The analysis evidence, for [`Reason::CanaryFailing`].
    pub evidence: Option<Evidence>,
    /// When things happened.
    pub timeline: Timeline,
    /// Findings on the bad revision (warnings: a bundle with errors never reaches a pod).
    pub lint: Vec<Diagnostic>,
    /// The restored revision's rendered bundle, for the config diff.
    pub stable_bundle: Option<Bundle>,
    /// The bad revision's rendered bundle, for the config diff.
    pub bad_bundle: Option<Bundle>,
    /// Client-side request counts during the incident, if known.
    pub traffic: Option<TrafficFigures>,
}

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// JSON serialisation failed (not expected for this data; kept rather than a panic).
    #[error("cannot serialise the incident report of rollout `{rollout}` as JSON: {source}")]
    Json {
        /// The rollout the report is about.
        rollout: String,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// The report as Markdown, for people.
pub fn to_markdown(input: &IncidentInput) -> String {
    Report::build(input).to_markdown()
}

/// The report as pretty-printed JSON (a serialised [`Report`]), for tools.
pub fn to_json(input: &IncidentInput) -> Result<String, ReportError> {
    Report::build(input).to_json()
}
