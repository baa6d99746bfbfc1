//! Manual verbs (DESIGN §3.4): pause, resume, promote, abort, rollback-to, retry. A verb that
//! cannot be carried out changes nothing and says why as a Warning event; [`Rollout::check`] gives
//! a CLI the same answer before it sends anything. Repeating a verb that already took effect is a
//! silent no-op, so a retried request is harmless.

use jiff::Timestamp;

use super::Rollout;
use super::command::{Command, Notice, Reason};
use super::event::Verb;
use super::ledger::Outcome;
use super::revision::Release;
use super::state::{RollbackReason, State};

/// Why a manual verb was refused, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbError {
    /// Pause during a rollback.
    #[error("a rollback is in progress and cannot be paused; wait for it to finish")]
    RollbackCannotPause,
    /// Promote with no canary.
    #[error("nothing to promote: no canary is in progress")]
    NothingToPromote,
    /// Promote during validation.
    #[error("{0} is still being validated: promote skips canary steps, never validation")]
    NotValidated(String),
    /// Abort with nothing in progress.
    #[error(
        "nothing to abort: no rollout is in progress (to go back to an earlier revision, use rollback-to)"
    )]
    NothingToAbort,
    /// Rollback-to a commit that was never stable here.
    #[error(
        "{0} is not a known-good revision of this rollout: rollback-to accepts only commits that were stable (see status history)"
    )]
    UnknownCommit(String),
    /// Rollback-to a quarantined commit.
    #[error("{commit} is quarantined ({reason}): retry it if you are sure")]
    Quarantined {
        /// The commit.
        commit: String,
        /// Why it is quarantined.
        reason: String,
    },
    /// Rollback-to what pods already run.
    #[error("{0} is the stable config already")]
    AlreadyStable(String),
    /// Rollback-to a commit whose config is the one being rolled out.
    #[error("{0} renders to the config being rolled out: use promote or abort")]
    SameAsTarget(String),
    /// Rollback-to during another rollback.
    #[error("a rollback to {0} is in progress: wait for it to finish, then roll back again")]
    RollbackInProgress(String),
    /// Retry of a commit that is not quarantined.
    #[error("{0} is not quarantined: nothing to retry")]
    NotQuarantined(String),
}

/// What a verb will do, decided before anything changes.
enum Plan {
    Noop,
    Pause,
    Resume,
    Promote,
    Abort,
    DropValidation,
    RollbackTo(Release),
    Retry(String),
}

impl Rollout {
    /// Whether `verb` would be carried out now, and if not why: for a CLI's immediate answer.
    pub fn check(&self, verb: &Verb) -> Result<(), VerbError> {
        self.plan(verb).map(|_| ())
    }

    fn plan(&self, verb: &Verb) -> Result<Plan, VerbError> {
        let active = self.state.active();
        Ok(match verb {
            Verb::Pause => match &self.state {
                State::Paused { .. } => Plan::Noop,
                State::RollingBack(_) => return Err(VerbError::RollbackCannotPause),
                _ => Plan::Pause,
            },
            Verb::Resume if self.state.is_paused() => Plan::Resume,
            Verb::Resume => Plan::Noop,
            Verb::Promote => match active {
                State::Canary(_) => Plan::Promote,
                State::Validating { target, .. } => {
                    return Err(VerbError::NotValidated(target.to_string()));
                }
                _ => return Err(VerbError::NothingToPromote),
            },
            Verb::Abort => match active {
                State::Canary(_) => Plan::Abort,
                State::Validating { .. } => Plan::DropValidation,
                State::RollingBack(_) => Plan::Noop,
                _ => return Err(VerbError::NothingToAbort),
            },
            Verb::RollbackTo { commit } => {
                if let State::RollingBack(r) = active {
                    return if r.to.commit() == commit {
                        Ok(Plan::Noop)
                    } else {
                        Err(VerbError::RollbackInProgress(r.to.to_string()))
                    };
                }
                let k = self
                    .ledger
                    .find_known_good(commit)
                    .ok_or_else(|| VerbError::UnknownCommit(commit.clone()))?;
                if let Some(q) = self.ledger.blocking(&k.id()) {
                    return Err(VerbError::Quarantined {
                        commit: commit.clone(),
                        reason: q.reason.clone(),
                    });
                }
                if active.target().is_some_and(|t| t.digest == k.digest) {
                    return Err(VerbError::SameAsTarget(k.to_string()));
                }
                if matches!(active, State::Idle { stable: Some(s) } if s.digest == k.digest) {
                    return Err(VerbError::AlreadyStable(k.to_string()));
                }
                Plan::RollbackTo(k.clone())
            }
            Verb::Retry { commit } => {
                if !self
                    .ledger
                    .quarantine
                    .iter()
                    .any(|q| q.release.commit() == commit)
                {
                    return Err(VerbError::NotQuarantined(commit.clone()));
                }
                Plan::Retry(commit.clone())
            }
        })
    }

    pub(super) fn manual(
        &mut self,
        verb: Verb,
        by: String,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let plan = match self.plan(&verb) {
            Ok(plan) => plan,
            Err(e) => {
                out.push(Command::Emit(Notice::warning(
                    Reason::VerbRejected,
                    format!("{verb:?} by {by} refused: {e}"),
                )));
                return;
            }
        };
        match plan {
            Plan::Noop => {}
            Plan::Pause => {
                let resume = Box::new(self.take_state());
                self.state = State::Paused {
                    resume,
                    since: now,
                    by: by.clone(),
                };
                out.push(Command::Emit(Notice::normal(
                    Reason::Paused,
                    format!("paused by {by}: no pod moves to a new config; automatic rollback stays armed"),
                )));
            }
            Plan::Resume => {
                self.unpause();
                out.push(Command::Emit(Notice::normal(
                    Reason::Resumed,
                    format!("resumed by {by}"),
                )));
                let paused_target = match &self.state {
                    State::Validating { target, .. } => Some(target.digest),
                    _ => None,
                };
                if let Some(p) = self.pending.take() {
                    self.offer(p, now, out);
                }
                // Results that came in during the pause were ignored: ask again, unless a newer
                // revision took over (its validation has just been asked for).
                if let State::Validating { target, .. } = &self.state
                    && Some(target.digest) == paused_target
                {
                    out.push(Command::Validate {
                        commit: target.commit().to_string(),
                        digest: target.digest,
                    });
                }
            }
            Plan::Promote => {
                self.promote(
                    format!("promoted by {by}, skipping the remaining steps"),
                    now,
                    out,
                );
            }
            Plan::Abort => {
                self.begin_rollback(RollbackReason::Aborted { by }, None, now, out);
            }
            Plan::DropValidation => self.drop_validation(&by, now, out),
            Plan::RollbackTo(k) => {
                self.unpause();
                if matches!(self.state, State::Validating { .. }) {
                    self.drop_validation(&by, now, out);
                }
                let on_k = self.state.stable().is_some_and(|s| s.digest == k.digest);
                if !on_k {
                    self.begin_rollback(RollbackReason::RollbackTo { by }, Some(k), now, out);
                }
            }
            Plan::Retry(commit) => {
                if let Some(release) = self.ledger.release(&commit) {
                    out.push(Command::Emit(Notice::normal(
                        Reason::Retried,
                        format!("{release} taken out of quarantine by {by}"),
                    )));
                    self.offer(release, now, out);
                }
            }
        }
    }

    /// A person dropped the revision being validated: it never reached a pod, it is quarantined
    /// so the next poll does not bring it back.
    fn drop_validation(&mut self, by: &str, now: Timestamp, out: &mut Vec<Command>) {
        self.unpause();
        let (target, stable) = match self.take_state() {
            State::Validating { target, stable, .. } => (target, stable),
            other => {
                self.state = other;
                return;
            }
        };
        let limit = self.config.history_limit;
        self.ledger.reject(
            &target,
            format!("aborted by {by} during validation"),
            Outcome::Aborted,
            now,
            limit,
        );
        out.push(Command::Emit(Notice::normal(
            Reason::Aborted,
            format!("{target} dropped by {by} before reaching any pod; it is quarantined"),
        )));
        self.state = State::Idle { stable };
    }
}
