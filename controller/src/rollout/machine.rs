//! The transition function: [`Rollout::handle`] records what an event says, then reconciles the
//! pods towards what the state wants. Level-based (STYLE rule 2): most decisions are taken by the
//! reconcile from the state and the fleet, not by the event, so the same event twice, or an event
//! after a restart, leads to the same place.

use jiff::Timestamp;

use super::Rollout;
use super::command::{Command, Notice, Reason};
use super::config::{ConfigError, RolloutConfig};
use super::event::{Event, ValidationOutcome};
use super::fleet::{Converge, Fleet};
use super::ledger::{Ledger, Outcome};
use super::revision::Release;
use super::state::{RollbackReason, State};
use crate::analysis::Verdict;
use crate::render::Digest;

/// Reconcile passes per event. A pass either settles the state or moves it on, and one event can
/// move it only a few times (rollback done → Idle → next revision validating), so this bound is
/// never reached; it exists so no input can make `handle` loop.
const MAX_PASSES: usize = 8;

impl Rollout {
    /// A rollout whose pods run `stable`, which the caller vouches passed validation (it was
    /// stable before a restart, or it is adopted). `None` for a new object: its first validated
    /// revision is adopted as stable without a canary, because there is nothing to compare a
    /// canary against and nothing to roll back to.
    pub fn new(config: RolloutConfig, stable: Option<Release>) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut ledger = Ledger::default();
        if let Some(s) = &stable {
            ledger.remember_good(s, config.history_limit);
        }
        Ok(Rollout {
            config,
            state: State::Idle { stable },
            fleet: Fleet::default(),
            ledger,
            pending: None,
            last_seen: None,
            published: None,
        })
    }

    /// Takes new settings (the spec changed) without losing the state: a canary in progress
    /// continues under the new steps and bakes, its step clamped to the new last one.
    pub fn reconfigure(&mut self, config: RolloutConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let last = config.steps.len().saturating_sub(1);
        if let State::Canary(c) = &mut self.state {
            c.step = c.step.min(last);
        }
        if let State::Paused { resume, .. } = &mut self.state
            && let State::Canary(c) = resume.as_mut()
        {
            c.step = c.step.min(last);
        }
        self.config = config;
        Ok(())
    }

    /// The strategy.
    pub fn config(&self) -> &RolloutConfig {
        &self.config
    }

    /// Where the rollout is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The open bake's latest verdict (also under a pause): what status shows of the analysis.
    pub fn latest_verdict(&self) -> Option<&crate::analysis::Verdict> {
        self.state.canary()?.bake.as_ref()?.verdict.as_ref()
    }

    /// The pods as the machine sees them.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Quarantine, known-good revisions, history, last incident.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The revision waiting for a rollback or pause to end.
    pub fn pending(&self) -> Option<&Release> {
        self.pending.as_ref()
    }

    /// Handles one event at time `now` and returns what the edge must do, in order. Status is
    /// included only when it changed, so an idle controller does not rewrite it.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Vec<Command> {
        let mut out = Vec::new();
        self.observe(event, now, &mut out);
        for _ in 0..MAX_PASSES {
            if !self.reconcile(now, &mut out) {
                break;
            }
        }
        let status = self.status();
        if self.published.as_ref() != Some(&status) {
            out.push(Command::UpdateStatus(Box::new(status.clone())));
            self.published = Some(status);
        }
        out
    }

    fn observe(&mut self, event: Event, now: Timestamp, out: &mut Vec<Command>) {
        match event {
            Event::RevisionSeen { revision, digest } => {
                let release = Release { revision, digest };
                let id = release.id();
                if self.last_seen.as_ref() != Some(&id) {
                    self.last_seen = Some(id);
                    self.offer(release, now, out);
                }
            }
            Event::ValidationFinished { digest, outcome } => {
                self.validated(digest, outcome, now, out);
            }
            Event::PodAppeared { pod, applied } => {
                let late = matches!(self.state.active(), State::Canary(_));
                self.fleet.appear(pod, applied, late);
            }
            Event::PodGone { pod } => {
                self.fleet.remove(&pod);
            }
            Event::PodsListed { pods } => {
                let late = matches!(self.state.active(), State::Canary(_));
                self.fleet.resync(pods, late);
                self.note_first_applied(now);
            }
            Event::PodApplied { pod, digest } => {
                self.fleet.applied(&pod, digest);
                self.note_first_applied(now);
            }
            Event::PodApplyFailed {
                pod,
                digest,
                message,
            } => self.fleet.failed(&pod, digest, message, now),
            Event::Verdict {
                window,
                digest,
                verdict,
            } => self.verdict(window, digest, verdict, now, out),
            Event::ReferenceTaken { window, reference } => {
                if let State::Canary(c) = self.state.active_mut()
                    && let Some(b) = c.bake.as_mut()
                    && b.window == window
                {
                    b.reference = Some(reference);
                }
            }
            Event::Tick => {}
            Event::Manual { verb, by, request } => {
                if self.ledger.first_time(request) {
                    self.manual(verb, by, now, out);
                }
            }
        }
    }

    /// A revision asks to be rolled out: the head changed, a person retried it, or it waited for
    /// a rollback or pause to end. Same config as stable or target: relabel, no rollout (DESIGN
    /// §3.2). During a canary: supersede (roll the canary back, then start the newer revision).
    pub(super) fn offer(&mut self, release: Release, now: Timestamp, out: &mut Vec<Command>) {
        let id = release.id();
        if let Some(q) = self.ledger.blocking(&id) {
            out.push(Command::Emit(Notice::warning(
                Reason::QuarantineBlocked,
                format!(
                    "{id} is not rolled out: {} is quarantined ({}); push a fix, or `retry {}` if you are sure",
                    q.release,
                    q.reason,
                    q.release.commit()
                ),
            )));
            return;
        }
        let limit = self.config.history_limit;
        match &mut self.state {
            State::Paused { .. } | State::RollingBack(_) => {
                out.push(Command::Emit(Notice::normal(
                    Reason::Queued,
                    format!("{id} waits until the current rollback or pause ends"),
                )));
                self.pending = Some(release);
            }
            State::Idle { stable } => match stable {
                Some(s) if s.digest == release.digest => {
                    if s.commit() != release.commit() {
                        relabel(&mut self.ledger, s, release, now, limit, out);
                    }
                }
                _ => {
                    let stable = stable.take();
                    self.validate(release, stable, now, out);
                }
            },
            State::Validating { target, stable, .. } => {
                if target.digest == release.digest {
                    same_config(target, release, out);
                } else if let Some(s) = stable.as_mut().filter(|s| s.digest == release.digest) {
                    self.ledger
                        .record(target.id(), Outcome::Superseded, now, limit);
                    relabel(&mut self.ledger, s, release, now, limit, out);
                    let stable = stable.take();
                    self.state = State::Idle { stable };
                } else {
                    self.ledger
                        .record(target.id(), Outcome::Superseded, now, limit);
                    out.push(Command::Emit(Notice::normal(
                        Reason::Superseded,
                        format!("{target} is no longer validated: {id} replaced it"),
                    )));
                    let stable = stable.take();
                    self.validate(release, stable, now, out);
                }
            }
            State::Canary(c) => {
                if c.target.digest == release.digest {
                    same_config(&mut c.target, release, out);
                } else {
                    self.pending = Some(release);
                    self.begin_rollback(RollbackReason::Superseded { by: id }, None, now, out);
                }
            }
        }
    }

    fn validate(
        &mut self,
        target: Release,
        stable: Option<Release>,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        out.push(Command::Validate {
            commit: target.commit().to_string(),
            digest: target.digest,
        });
        out.push(Command::Emit(Notice::normal(
            Reason::Validating,
            format!("validating {target}"),
        )));
        self.state = State::Validating {
            target,
            stable,
            since: now,
        };
    }

    /// A validation result counts only for the revision being validated, and not while paused
    /// (resume asks again): a stale result must never start a canary.
    fn validated(
        &mut self,
        digest: Digest,
        outcome: ValidationOutcome,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let (target, stable, since) = match self.take_state() {
            State::Validating {
                target,
                stable,
                since,
            } if target.digest == digest => (target, stable, since),
            other => {
                self.state = other;
                return;
            }
        };
        let limit = self.config.history_limit;
        match (outcome, stable) {
            (ValidationOutcome::Failed { summary }, stable) => {
                self.ledger.reject(
                    &target,
                    format!("validation failed: {summary}"),
                    Outcome::Rejected,
                    now,
                    limit,
                );
                out.push(Command::Emit(Notice::warning(
                    Reason::ValidationFailed,
                    format!("{target} failed validation and is quarantined: {summary}"),
                )));
                self.state = State::Idle { stable };
            }
            (ValidationOutcome::Passed, None) => {
                self.ledger.remember_good(&target, limit);
                self.ledger
                    .record(target.id(), Outcome::Adopted, now, limit);
                out.push(Command::Emit(Notice::normal(
                    Reason::Adopted,
                    format!(
                        "{target} passed validation and is adopted as the first stable revision"
                    ),
                )));
                self.state = State::Idle {
                    stable: Some(target),
                };
            }
            (ValidationOutcome::Passed, Some(stable)) => {
                self.start_canary(target, stable, since, now, out);
            }
        }
    }

    /// A failing verdict for the target rolls back at once, whatever the window or a pause (the
    /// canary is bad whenever it was seen to be); other verdicts count only for the open window.
    fn verdict(
        &mut self,
        window: u64,
        digest: Digest,
        verdict: Verdict,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let Some(c) = self.state.canary() else {
            return;
        };
        if c.target.digest != digest {
            return;
        }
        match verdict {
            Verdict::Failing(evidence) => {
                self.begin_rollback(
                    RollbackReason::AnalysisFailed {
                        evidence: Box::new(evidence),
                    },
                    None,
                    now,
                    out,
                );
            }
            other => {
                if let State::Canary(c) = self.state.active_mut()
                    && let Some(b) = c.bake.as_mut()
                    && b.window == window
                {
                    b.verdict = Some(other);
                }
            }
        }
    }

    /// One reconcile pass; returns whether the state moved (so another pass is due).
    fn reconcile(&mut self, now: Timestamp, out: &mut Vec<Command>) -> bool {
        let timeout = self.config.apply_timeout;
        let surge = Converge::Surge(self.config.surge(self.fleet.len()));
        match &self.state {
            State::Idle { stable } => {
                if let Some(p) = self.pending.take() {
                    self.offer(p, now, out);
                    return true;
                }
                if let Some(s) = stable {
                    self.fleet.converge(&s.id(), surge, timeout, now, out);
                }
                false
            }
            State::Validating { stable, .. } => {
                if let Some(s) = stable {
                    self.fleet.converge(&s.id(), surge, timeout, now, out);
                }
                false
            }
            State::Canary(_) => self.reconcile_canary(now, false, out),
            State::RollingBack(_) => self.reconcile_rollback(now, out),
            State::Paused { resume, .. } => match resume.as_ref() {
                State::Canary(_) => self.reconcile_canary(now, true, out),
                other => {
                    if let Some(s) = other.stable() {
                        self.fleet
                            .converge(&s.id(), Converge::NewOnly, timeout, now, out);
                    }
                    false
                }
            },
        }
    }

    /// The incident timeline's "first applied": the first time any pod serves the target.
    fn note_first_applied(&mut self, now: Timestamp) {
        if let State::Canary(c) = self.state.active_mut()
            && c.timeline.first_applied.is_none()
            && self.fleet.count_applied(c.target.digest) > 0
        {
            c.timeline.first_applied = Some(now);
        }
    }

    /// Moves the state out, leaving a placeholder the caller must replace.
    pub(super) fn take_state(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Idle { stable: None })
    }

    /// Continues from what a pause holds (a no-op when not paused).
    pub(super) fn unpause(&mut self) {
        if self.state.is_paused()
            && let State::Paused { resume, .. } = self.take_state()
        {
            self.state = *resume;
        }
    }
}

/// A new commit with the stable config: the stable revision takes the newer name, no pod moves.
fn relabel(
    ledger: &mut Ledger,
    stable: &mut Release,
    release: Release,
    now: Timestamp,
    limit: usize,
    out: &mut Vec<Command>,
) {
    out.push(Command::Emit(Notice::normal(
        Reason::NoConfigChange,
        format!(
            "{} renders to the same config as {}: no rollout",
            release, stable
        ),
    )));
    *stable = release;
    ledger.remember_good(stable, limit);
    ledger.record(stable.id(), Outcome::Relabelled, now, limit);
}

/// A new commit with the config being validated or rolled out: it carries on under the newer
/// name (the head), nothing restarts.
fn same_config(target: &mut Release, release: Release, out: &mut Vec<Command>) {
    if target.commit() != release.commit() {
        out.push(Command::Emit(Notice::normal(
            Reason::NoConfigChange,
            format!("{release} renders to the same config as {target}, which carries on"),
        )));
        *target = release;
    }
}
