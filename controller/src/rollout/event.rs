//! What the edge tells the machine: what it observed (a new head, a validation result, pods and
//! what they applied, a verdict, the passing of time) and what a person asked for. Observations
//! are facts, so handling one twice is harmless; the machine decides what they mean.

use serde::{Deserialize, Serialize};

use crate::analysis::{Reference, Verdict};
use crate::render::Digest;
use crate::source::git::Revision;

/// One input to [`super::Rollout::handle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// The branch head, rendered. The edge may send it on every poll: the same head twice is
    /// ignored, a different head is a new revision.
    RevisionSeen {
        /// The commit.
        revision: Revision,
        /// Its rendered digest.
        digest: Digest,
    },
    /// The result of a `Validate` command, matched by digest (same digest, same config).
    ValidationFinished {
        /// The bundle validated.
        digest: Digest,
        /// Passed or not.
        outcome: ValidationOutcome,
    },
    /// A pod matching the selector exists (new, or seen again after a restart).
    PodAppeared {
        /// Pod name.
        pod: String,
        /// What it already runs, when its agent says.
        applied: Option<Digest>,
    },
    /// A pod is gone (deleted, evicted, no longer matches).
    PodGone {
        /// Pod name.
        pod: String,
    },
    /// Every pod there is, with what each serves: the edge's periodic relist (and its first list
    /// after a start). Pods not listed are gone; a listed pod's digest counts as its report.
    /// One event instead of one per pod, so a resync of a large fleet costs one reconcile.
    PodsListed {
        /// The pods.
        pods: Vec<ListedPod>,
    },
    /// A pod's agent reports it serves this digest.
    PodApplied {
        /// Pod name.
        pod: String,
        /// What it now serves.
        digest: Digest,
    },
    /// A pod's agent could not apply a digest and still serves its previous config.
    PodApplyFailed {
        /// Pod name.
        pod: String,
        /// What it failed to apply.
        digest: Digest,
        /// Its reason (`nginx -t` output, fetch error).
        message: String,
    },
    /// Analysis judged the canary in an analysis window.
    Verdict {
        /// The window from `StartAnalysis`.
        window: u64,
        /// The canary digest it judged.
        digest: Digest,
        /// The verdict.
        verdict: Verdict,
    },
    /// The edge took the stable revision's record for a window whose step has no baseline
    /// pods; the machine keeps it in the bake so a resumed window compares with the same.
    ReferenceTaken {
        /// The window from `StartAnalysis`.
        window: u64,
        /// The record.
        reference: Box<Reference>,
    },
    /// Time passed; bakes and apply timeouts are checked against `now`.
    Tick,
    /// A person's command (CLI, kubectl plugin). The edge may deliver it on every reconcile until
    /// it clears the request (it lives in an annotation), so it carries an id and is carried out
    /// once per id.
    Manual {
        /// What they asked for.
        verb: Verb,
        /// Who, for events and the incident report.
        by: String,
        /// Unique per request (e.g. a UUID the CLI writes with the verb).
        request: String,
    },
}

/// One pod in a [`Event::PodsListed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedPod {
    /// Pod name.
    pub name: String,
    /// What it serves, when its agent has said (`None` keeps what the machine knew).
    pub applied: Option<Digest>,
}

/// The outcome of the validation gates for one bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum ValidationOutcome {
    /// No errors: the bundle may reach pods.
    Passed,
    /// Errors: it never reaches a pod.
    Failed {
        /// A few lines for events and status, e.g. the first diagnostics.
        summary: String,
    },
}

/// Manual verbs (DESIGN §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "camelCase")]
pub enum Verb {
    /// Stop progress (no new pod is moved to a new config). Automatic rollback stays armed.
    Pause,
    /// Continue from where the pause stopped.
    Resume,
    /// Skip the remaining steps and bakes: the target becomes stable now.
    Promote,
    /// Roll the canary back (or drop the revision being validated) and quarantine it.
    Abort,
    /// Put every pod on an earlier known-good revision, quarantining what it replaces.
    RollbackTo {
        /// A commit that was stable before.
        commit: String,
    },
    /// Take a commit out of quarantine and roll it out again.
    Retry {
        /// The quarantined commit.
        commit: String,
    },
}
