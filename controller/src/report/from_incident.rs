//! The report's input from what the engine recorded: every part of Switchback that rolls back
//! (the operator, the demo) builds its report the same way, and adds what only it knows (the
//! demo's client-side traffic, for instance) on top.

use super::{IncidentInput, PodTime, Reason, RevisionRef, Timeline, TrafficFigures};
use crate::render::Bundle;
use crate::rollout::{Incident, RollbackReason};
use crate::source::git::Revision;

/// What the report knows of the revision restored: the full revision when the caller has it
/// (commit time, author, subject), and its bundle for the config diff.
pub struct Restored<'a> {
    /// The restored revision, when known beyond its commit id.
    pub revision: Option<&'a Revision>,
    /// Its bundle.
    pub bundle: Option<&'a Bundle>,
}

/// `incident` of `rollout` as report input. `method` is the analysis method watching the
/// canary; the bundles give the config diff and the lint findings when known.
pub fn from_incident(
    rollout: &str,
    incident: &Incident,
    method: Option<&str>,
    restored: Restored<'_>,
    bad_bundle: Option<&Bundle>,
    entry: &str,
) -> IncidentInput {
    let t = &incident.timeline;
    let (reason, evidence) = match &incident.reason {
        RollbackReason::AnalysisFailed { evidence } => {
            (Reason::CanaryFailing, Some((**evidence).clone()))
        }
        RollbackReason::ApplyFailed { pods, message } => (
            Reason::ApplyFailed {
                pod: pods.first().cloned().unwrap_or_default(),
                message: message.clone(),
            },
            None,
        ),
        RollbackReason::Aborted { by } | RollbackReason::RollbackTo { by } => (
            Reason::ManualAbort {
                by: Some(by.clone()),
            },
            None,
        ),
        RollbackReason::Inconclusive { .. } | RollbackReason::Superseded { .. } => {
            (Reason::ManualAbort { by: None }, None)
        }
    };
    IncidentInput {
        rollout: rollout.to_string(),
        bad: RevisionRef {
            revision: incident.revision.revision.clone(),
            digest: incident.revision.digest,
        },
        restored: RevisionRef {
            revision: restored.revision.cloned().unwrap_or_else(|| Revision {
                commit: incident.restored_to.commit.clone(),
                committed_at: t.committed_at,
                author: String::new(),
                message: String::new(),
            }),
            digest: incident.restored_to.digest,
        },
        reason,
        method: method.map(str::to_string),
        evidence,
        timeline: Timeline {
            seen: t.seen_at,
            validated: t.validated_at,
            first_applied: t.first_applied.map(|at| PodTime {
                pod: "the canary".to_string(),
                at,
            }),
            first_bad_response: None,
            decision: t.decided_at.unwrap_or(t.committed_at),
            pods_restored: Vec::new(),
            all_restored: t.restored_at,
        },
        lint: bad_bundle
            .map(|b| crate::validate::check_static(b, entry).1)
            .unwrap_or_default(),
        stable_bundle: restored.bundle.cloned(),
        bad_bundle: bad_bundle.cloned(),
        traffic: None::<TrafficFigures>,
    }
}
