//! The status a person reads (`kubectl get proxyrollout`, `switchback status`): phase, revisions,
//! step, pod counts, stall, quarantine, history. Computed from the machine, never stored apart
//! from it, so it cannot drift from what the machine believes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Rollout;
use super::ledger::HistoryEntry;
use super::revision::RevisionId;
use super::state::Phase;

/// The summary written to the `ProxyRollout` status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Where the rollout is.
    pub phase: Phase,
    /// Whether a person paused it.
    pub paused: bool,
    /// The known-good revision.
    pub stable: Option<RevisionId>,
    /// The revision being validated, rolled out or rolled back from.
    pub target: Option<RevisionId>,
    /// The canary step, during a canary.
    pub step: Option<StepStatus>,
    /// Pods per revision.
    pub pods: PodCounts,
    /// Why the rollout is waiting for a person (the `Stalled` condition), when it is.
    pub stalled: Option<String>,
    /// A revision waiting for the current rollback or pause to end.
    pub pending: Option<RevisionId>,
    /// Quarantined revisions (newest `historyLimit`).
    pub quarantined: Vec<QuarantinedStatus>,
    /// The last incident: id and one line.
    pub last_incident: Option<IncidentStatus>,
    /// What became of recent revisions, newest last.
    pub history: Vec<HistoryEntry>,
}

/// The current canary step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// 1-based step number, for people.
    pub number: usize,
    /// How many steps there are.
    pub of: usize,
    /// Pods the step allows on the target now.
    pub pods_allowed: usize,
    /// When the bake began, once every pod of the step applied the target.
    pub baking_since: Option<Timestamp>,
    /// When the bake ended without a conclusive verdict and the step was held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<Timestamp>,
}

/// Pod counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// All pods.
    pub total: usize,
    /// Serving the stable revision.
    pub stable: usize,
    /// Serving the target.
    pub target: usize,
    /// Told something they have not applied yet.
    pub changing: usize,
    /// Could not apply what they were told.
    pub failed: usize,
}

/// A quarantined revision, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedStatus {
    /// Which.
    pub revision: RevisionId,
    /// Why.
    pub reason: String,
}

/// The last incident, as status shows it; the full report is `RecordIncident`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// Its id.
    pub id: u64,
    /// The revision rolled back from.
    pub revision: RevisionId,
    /// Why.
    pub summary: String,
    /// Whether every pod is back on the known-good revision.
    pub restored: bool,
}

impl Rollout {
    /// The status summary of the rollout as it is now.
    pub fn status(&self) -> Status {
        let state = &self.state;
        let stable = state.stable().map(|r| r.digest);
        let target = state.target().map(|r| r.digest);
        let mut pods = PodCounts {
            total: self.fleet.len(),
            ..PodCounts::default()
        };
        for (_, p) in self.fleet.iter() {
            pods.stable += usize::from(p.applied.is_some() && p.applied == stable);
            pods.target += usize::from(p.applied.is_some() && p.applied == target);
            pods.changing += usize::from(p.in_flight());
            pods.failed += usize::from(p.error.is_some());
        }
        let canary = state.canary();
        let limit = self.config.history_limit;
        let quarantined = self.ledger.quarantine.iter().rev().take(limit).rev();
        Status {
            phase: state.phase(),
            paused: state.is_paused(),
            stable: state.stable().map(|r| r.id()),
            target: state.target().map(|r| r.id()),
            step: canary.map(|c| StepStatus {
                number: c.step + 1,
                of: self.config.steps.len(),
                pods_allowed: self.config.allowed(c.step, self.fleet.len()),
                baking_since: c.bake.as_ref().map(|b| b.since),
                held_since: c.bake.as_ref().and_then(|b| b.held),
            }),
            pods,
            stalled: canary
                .and_then(|c| c.bake.as_ref())
                .filter(|b| b.stalled)
                .map(|b| {
                    format!(
                        "no conclusive verdict since {}: promote or abort, or wait for traffic",
                        b.since
                    )
                }),
            pending: self.pending.as_ref().map(|r| r.id()),
            quarantined: quarantined
                .map(|q| QuarantinedStatus {
                    revision: q.release.id(),
                    reason: q.reason.clone(),
                })
                .collect(),
            last_incident: self.ledger.last_incident.as_ref().map(|i| IncidentStatus {
                id: i.id,
                revision: i.revision.id(),
                summary: i.reason.summary(),
                restored: i.timeline.restored_at.is_some(),
            }),
            history: self.ledger.history.clone(),
        }
    }
}
