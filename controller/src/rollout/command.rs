//! What the machine asks the edge to do. Commands say "make it so", not "do it once": telling a pod
//! the digest it already has, or recording an incident again with more of its timeline, is
//! harmless, so a controller that crashes between deciding and doing can simply do it again.

use std::fmt;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::revision::{Release, RevisionId};
use super::state::{RollbackReason, Timeline};
use super::status::Status;
use crate::analysis::Reference;
use crate::render::Digest;

/// One thing for the edge to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    /// Run the validation gates on this revision; answer with `ValidationFinished`.
    Validate {
        /// The commit, for messages.
        commit: String,
        /// The bundle to validate.
        digest: Digest,
    },
    /// Set these pods' desired digest (pod annotation) and nudge their agents.
    Tell {
        /// What they should serve.
        digest: Digest,
        /// Its commit, for the annotation people read.
        commit: String,
        /// Pod names, sorted.
        pods: Vec<String>,
    },
    /// Open an analysis window comparing the canary revision against the baseline from now on;
    /// answer with `Verdict` events naming the window.
    StartAnalysis {
        /// The window id.
        window: u64,
        /// The revision judged.
        canary: RevisionId,
        /// The revision it is compared against.
        baseline: RevisionId,
        /// The step's bake: the healthy test looks at its end.
        bake: SignedDuration,
        /// Pods on the baseline when the window opened. 0: the step leaves none, so the analysis
        /// compares with the stable revision's record; the edge takes one (when this carries
        /// none) and answers with `ReferenceTaken`.
        baseline_pods: usize,
        /// The record to compare with, when one was already taken (a resumed window).
        reference: Option<Box<Reference>>,
    },
    /// Close an analysis window; its later verdicts are ignored anyway.
    StopAnalysis {
        /// The window id.
        window: u64,
    },
    /// Write or update the incident report (upsert by id).
    RecordIncident(Box<Incident>),
    /// Emit a Kubernetes Event on the rollout object.
    Emit(Notice),
    /// Write this status (sent only when it changed, so status writes never hot-loop).
    UpdateStatus(Box<Status>),
}

/// A Kubernetes-style Event: a type, a CamelCase reason shared with conditions, and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Normal or Warning.
    pub kind: NoticeKind,
    /// Why, as a stable CamelCase word.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

impl Notice {
    /// A Normal event.
    pub fn normal(reason: Reason, message: impl Into<String>) -> Self {
        Notice {
            kind: NoticeKind::Normal,
            reason,
            message: message.into(),
        }
    }

    /// A Warning event.
    pub fn warning(reason: Reason, message: impl Into<String>) -> Self {
        Notice {
            kind: NoticeKind::Warning,
            reason,
            message: message.into(),
        }
    }
}

/// Kubernetes Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    /// Progress.
    Normal,
    /// Something a person may need to look at.
    Warning,
}

/// Event reasons: stable CamelCase words, because people grep for them and alerts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// A new revision is being validated.
    Validating,
    /// Validation found errors; the revision is quarantined.
    ValidationFailed,
    /// The first revision became stable without a canary (there was no baseline to compare with).
    Adopted,
    /// A new commit renders to a config already running or rolling out.
    NoConfigChange,
    /// A newer revision replaced the one in progress.
    Superseded,
    /// A revision waits for the current rollback or a pause to end.
    Queued,
    /// A revision was not rolled out because it (or its config) is quarantined.
    QuarantineBlocked,
    /// The first canary step began.
    CanaryStarted,
    /// Every pod of a step applied the target; its bake and analysis window began.
    AnalysisStarted,
    /// A step baked healthy; the next began.
    StepAdvanced,
    /// The target became stable.
    Promoted,
    /// A bake ended without a conclusive verdict (too little traffic or evidence); the step is
    /// held while analysis goes on. The message says what was seen and what a verdict needs.
    StepHeld,
    /// No conclusive verdict within maxBake; a person may need to decide.
    AnalysisStalled,
    /// A pod could not apply the target.
    ApplyFailed,
    /// A rollback began.
    RollingBack,
    /// Every pod is back on the known-good revision.
    RolledBack,
    /// A person paused the rollout.
    Paused,
    /// A person resumed it.
    Resumed,
    /// A person dropped the revision being validated.
    Aborted,
    /// A person took a commit out of quarantine.
    Retried,
    /// A manual verb could not be carried out; the message says why and what to do.
    VerbRejected,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What went wrong and when, for the report (DESIGN §3.8). The edge adds the diff and lint
/// findings, which need I/O.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Sequence number within the rollout; `RecordIncident` upserts by it.
    pub id: u64,
    /// The revision rolled back from.
    pub revision: Release,
    /// The revision restored.
    pub restored_to: RevisionId,
    /// Why, with the evidence.
    pub reason: RollbackReason,
    /// When things happened; `restored_at` is set by the second `RecordIncident`.
    pub timeline: Timeline,
    /// Most pods that were told the bad revision at once.
    pub peak_pods: usize,
}
