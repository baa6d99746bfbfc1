//! The states of one rollout. Each variant carries only what that state needs (STYLE rule 4), so
//! "a canary without a stable revision to return to" cannot be written down.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::revision::{Release, RevisionId};
use crate::analysis::{Evidence, Reference, Verdict};

/// Where a rollout is. Serialisable so a restarted controller resumes from status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum State {
    /// Nothing in progress: every pod is on (or being brought to) `stable`. `None` only before the
    /// first revision is adopted.
    Idle {
        /// The last known-good revision.
        stable: Option<Release>,
    },
    /// A revision is being validated; no pod has been told it.
    Validating {
        /// The revision under validation.
        target: Release,
        /// Where pods stay meanwhile.
        stable: Option<Release>,
        /// When it was seen, for the incident timeline.
        since: Timestamp,
    },
    /// The target is on a share of the pods, baking under analysis.
    Canary(Box<Canary>),
    /// Every pod is being put back on `to`.
    RollingBack(Box<RollingBack>),
    /// A person stopped progress; `resume` is the state to continue from. Safety stays armed: a
    /// failing verdict or apply failure still rolls back.
    Paused {
        /// The state that was paused (never `Paused` or `RollingBack`).
        resume: Box<State>,
        /// When.
        since: Timestamp,
        /// Who, as the verb named them.
        by: String,
    },
}

/// A canary in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// What is being rolled out.
    pub target: Release,
    /// What the other pods run and what a rollback restores.
    pub stable: Release,
    /// Index into the configured steps.
    pub step: usize,
    /// When this step began (pods first told).
    pub step_started: Timestamp,
    /// The analysis window, once every pod of the step has applied the target.
    pub bake: Option<Bake>,
    /// Pods that failed to apply the target; they went back to stable and are not chosen again.
    pub excluded: BTreeSet<String>,
    /// What happened when, for the incident report.
    pub timeline: Timeline,
    /// Most pods that were told the target at once (the blast radius, for the report).
    pub peak_pods: usize,
}

/// One step's analysis window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bake {
    /// Names the window in `StartAnalysis`/`StopAnalysis` and in verdicts, so a late verdict from
    /// an earlier step cannot promote this one.
    pub window: u64,
    /// When the window opened.
    pub since: Timestamp,
    /// The latest verdict for this window.
    pub verdict: Option<Verdict>,
    /// Whether the "stalled" warning has been emitted (once per window).
    pub stalled: bool,
    /// When the bake ended without a conclusive verdict and the step was held (the `StepHeld`
    /// notice is emitted once per window, at that moment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Timestamp>,
    /// Pods left on the baseline when the window opened. `Some(0)`: nothing to compare with
    /// concurrently, so the analysis compares with the stable revision's record. `None` in
    /// checkpoints written before this was kept (read as "has baseline pods").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_pods: Option<usize>,
    /// The stable revision's record the analysis compares with, once the edge took it, so a
    /// restarted controller resumes with the same comparison (nothing serves stable any more
    /// to record it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Box<Reference>>,
}

/// A rollback in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingBack {
    /// The revision being left.
    pub from: Release,
    /// The known-good revision being restored.
    pub to: Release,
    /// Why.
    pub reason: RollbackReason,
    /// The incident recorded for it, completed when every pod is restored.
    pub incident: Option<u64>,
}

/// Why a rollback started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RollbackReason {
    /// Analysis judged the canary worse than the baseline.
    AnalysisFailed {
        /// The numbers.
        evidence: Box<Evidence>,
    },
    /// Pods could not apply the target (or did not in time).
    ApplyFailed {
        /// The pods.
        pods: Vec<String>,
        /// What the first of them reported.
        message: String,
    },
    /// No conclusive verdict within `maxBake` and the policy is to roll back.
    Inconclusive {
        /// The last reason analysis gave.
        reason: String,
    },
    /// A person aborted.
    Aborted {
        /// Who.
        by: String,
    },
    /// A person asked for an earlier known-good revision.
    RollbackTo {
        /// Who.
        by: String,
    },
    /// A newer revision arrived; the canary makes way. Not the target's fault: no quarantine.
    Superseded {
        /// The newer revision.
        by: RevisionId,
    },
}

impl RollbackReason {
    /// Whether the revision rolled back from is quarantined and an incident recorded. Everything
    /// but a supersede: the others mean someone (analysis, a pod, a person) judged it bad, and
    /// without quarantine the next poll of the same head would roll it out again.
    pub fn is_incident(&self) -> bool {
        !matches!(self, RollbackReason::Superseded { .. })
    }

    /// One line for events and status.
    pub fn summary(&self) -> String {
        match self {
            RollbackReason::AnalysisFailed { evidence } => {
                format!(
                    "analysis ({}) failed: {}",
                    evidence.method, evidence.summary
                )
            }
            RollbackReason::ApplyFailed { pods, message } => {
                format!("{} pod(s) failed to apply: {message}", pods.len())
            }
            RollbackReason::Inconclusive { reason } => {
                format!("no conclusive verdict within maxBake: {reason}")
            }
            RollbackReason::Aborted { by } => format!("aborted by {by}"),
            RollbackReason::RollbackTo { by } => format!("rollback requested by {by}"),
            RollbackReason::Superseded { by } => format!("superseded by {by}"),
        }
    }
}

/// When things happened to one revision: what DESIGN §3.8 asks an incident report to show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The commit time (from git).
    pub committed_at: Timestamp,
    /// When the controller first saw it.
    pub seen_at: Option<Timestamp>,
    /// When validation passed.
    pub validated_at: Option<Timestamp>,
    /// When the first pod applied it.
    pub first_applied: Option<Timestamp>,
    /// When the rollback was decided (the failing verdict, failure or person).
    pub decided_at: Option<Timestamp>,
    /// When every pod was back on the known-good revision.
    pub restored_at: Option<Timestamp>,
}

impl Timeline {
    /// A timeline that knows only the commit time.
    pub fn of(release: &Release) -> Self {
        Timeline {
            committed_at: release.revision.committed_at,
            seen_at: None,
            validated_at: None,
            first_applied: None,
            decided_at: None,
            restored_at: None,
        }
    }
}

/// The phase shown in status (`kubectl get` column): the state without its data. A paused
/// rollout shows the phase it is paused in, with `paused: true` beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum Phase {
    /// See [`State::Idle`].
    Idle,
    /// See [`State::Validating`].
    Validating,
    /// See [`State::Canary`].
    Canary,
    /// See [`State::RollingBack`].
    RollingBack,
}

impl State {
    /// The state progress continues from: itself, or what a pause holds.
    pub fn active(&self) -> &State {
        match self {
            State::Paused { resume, .. } => resume,
            other => other,
        }
    }

    /// Mutable [`State::active`].
    pub(crate) fn active_mut(&mut self) -> &mut State {
        match self {
            State::Paused { resume, .. } => resume,
            other => other,
        }
    }

    /// Whether a person paused it.
    pub fn is_paused(&self) -> bool {
        matches!(self, State::Paused { .. })
    }

    /// The phase, looking through a pause.
    pub fn phase(&self) -> Phase {
        match self.active() {
            State::Idle { .. } | State::Paused { .. } => Phase::Idle,
            State::Validating { .. } => Phase::Validating,
            State::Canary(_) => Phase::Canary,
            State::RollingBack(_) => Phase::RollingBack,
        }
    }

    /// The revision pods fall back to: stable, or what a rollback restores.
    pub fn stable(&self) -> Option<&Release> {
        match self.active() {
            State::Idle { stable } | State::Validating { stable, .. } => stable.as_ref(),
            State::Canary(c) => Some(&c.stable),
            State::RollingBack(r) => Some(&r.to),
            State::Paused { .. } => None,
        }
    }

    /// The revision being rolled out, validated or rolled back from.
    pub fn target(&self) -> Option<&Release> {
        match self.active() {
            State::Validating { target, .. } => Some(target),
            State::Canary(c) => Some(&c.target),
            State::RollingBack(r) => Some(&r.from),
            State::Idle { .. } | State::Paused { .. } => None,
        }
    }

    /// The canary, looking through a pause.
    pub fn canary(&self) -> Option<&Canary> {
        match self.active() {
            State::Canary(c) => Some(c),
            _ => None,
        }
    }
}
