//! The rollout state machine (DESIGN §3.4) as data: an event and the time go in, the new state and
//! the commands for the edge come out. It is pure (no I/O, no clock reads, no async runtime, no
//! randomness; `now` is passed in) so every invariant can be property-tested against a model
//! fleet, and it is serialisable so a restarted controller resumes exactly where it stopped.
//!
//! ```text
//!   Idle(stable) ──new head──► Validating(target) ──passed──► Canary(step 1..n) ──last bake──► Idle(stable = target)
//!                               │ failed: quarantine          │ failing verdict / apply failure / abort
//!                               ▼                             ▼
//!                             Idle(stable)      RollingBack(from, to) ──all pods on `to`──► Idle(stable = to)
//! ```
//!
//! `docs/rollout.md` describes the states, steps, supersede, quarantine and manual verbs for
//! people; the invariants are checked by the property tests in `tests/props.rs`.

mod canary;
pub mod command;
pub mod config;
pub mod event;
pub mod fleet;
pub mod ledger;
mod machine;
pub mod revision;
mod rollback;
pub mod state;
pub mod status;
mod verbs;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use command::{Command, Incident, Notice, NoticeKind, Reason};
pub use config::{Amount, AmountError, ConfigError, InconclusivePolicy, RolloutConfig};
pub use event::{Event, ListedPod, ValidationOutcome, Verb};
pub use fleet::{Fleet, PodView};
pub use ledger::{HistoryEntry, Ledger, Outcome, QuarantineEntry};
pub use revision::{Release, RevisionId};
pub use state::{Bake, Canary, Phase, RollbackReason, RollingBack, State, Timeline};
pub use status::Status;
pub use verbs::VerbError;

/// One `ProxyRollout`'s machine: its state, its view of the pods, and its memory (quarantine,
/// known-good revisions, history). Everything the next decision depends on is in here and
/// nothing else, so `serde_json::to_string(&rollout)` is a complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    config: RolloutConfig,
    state: State,
    fleet: Fleet,
    ledger: Ledger,
    /// The newest revision waiting for a rollback or pause to end.
    pending: Option<Release>,
    /// The last head the source reported, so a poll that sees the same head does nothing.
    last_seen: Option<RevisionId>,
    /// The status last handed to the edge: status is written again only when it differs
    /// (STYLE rule 6), and a restored machine knows what status already says.
    published: Option<Status>,
}
