//! Rollback: every pod back on a known-good revision at once, the revision left quarantined and an
//! incident recorded (twice: when decided, and with the restore time when every pod is back).
//! Never throttled by the surge limit: time to restore is the figure that matters, and the
//! config restored is one the fleet already ran.

use jiff::Timestamp;

use super::Rollout;
use super::command::{Command, Incident, Notice, Reason};
use super::fleet::Converge;
use super::ledger::Outcome;
use super::revision::Release;
use super::state::{RollbackReason, RollingBack, State, Timeline};

impl Rollout {
    /// Starts a rollback from a canary (to its stable, or to `to`) or from Idle (to `to`, which a
    /// person named). Anything else has nothing on pods to roll back and is left alone.
    pub(super) fn begin_rollback(
        &mut self,
        reason: RollbackReason,
        to: Option<Release>,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        self.unpause();
        let (from, stable, mut timeline, peak_pods) = match self.take_state() {
            State::Canary(c) => {
                let c = *c;
                if let Some(b) = &c.bake {
                    out.push(Command::StopAnalysis { window: b.window });
                }
                (c.target, c.stable, c.timeline, c.peak_pods)
            }
            State::Idle { stable: Some(s) } => {
                let timeline = Timeline::of(&s);
                (s.clone(), s, timeline, self.fleet.len())
            }
            other => {
                self.state = other;
                return;
            }
        };
        let to = to.unwrap_or_else(|| stable.clone());
        timeline.decided_at = Some(now);
        let limit = self.config.history_limit;
        let mut incident = None;
        if reason.is_incident() {
            let why = format!("rolled back: {}", reason.summary());
            self.ledger
                .reject(&from, why.clone(), Outcome::RolledBack, now, limit);
            // Rolling back past the stable revision says it is bad too; leaving it unquarantined
            // would let the next poll of its commit roll it out again.
            if stable.digest != to.digest && stable.digest != from.digest {
                self.ledger.quarantine(&stable, why, now);
            }
            let record = Incident {
                id: self.ledger.new_incident_id(),
                revision: from.clone(),
                restored_to: to.id(),
                reason: reason.clone(),
                timeline,
                peak_pods,
            };
            incident = Some(record.id);
            out.push(Command::RecordIncident(Box::new(record.clone())));
            self.ledger.last_incident = Some(record);
            out.push(Command::Emit(Notice::warning(
                Reason::RollingBack,
                format!(
                    "rolling back {from} to {to}: {}; {from} is quarantined",
                    reason.summary()
                ),
            )));
        } else {
            self.ledger
                .record(from.id(), Outcome::Superseded, now, limit);
            out.push(Command::Emit(Notice::normal(
                Reason::Superseded,
                format!(
                    "{}: canary pods go back to {to} before the newer revision starts",
                    reason.summary()
                ),
            )));
        }
        self.state = State::RollingBack(Box::new(RollingBack {
            from,
            to,
            reason,
            incident,
        }));
    }

    /// Tells every pod not on `to` to take it, again after the apply timeout; once every pod
    /// serves it, the rollback is over and `to` is stable.
    pub(super) fn reconcile_rollback(&mut self, now: Timestamp, out: &mut Vec<Command>) -> bool {
        let State::RollingBack(r) = &self.state else {
            return false;
        };
        let to = r.to.id();
        self.fleet.converge(
            &to,
            Converge::Unlimited,
            self.config.apply_timeout,
            now,
            out,
        );
        if !self.fleet.iter().all(|(_, p)| p.settled_on(to.digest)) {
            return false;
        }
        let r = match self.take_state() {
            State::RollingBack(r) => *r,
            other => {
                self.state = other;
                return false;
            }
        };
        if let Some(inc) = self.ledger.last_incident.as_mut()
            && Some(inc.id) == r.incident
        {
            inc.timeline.restored_at = Some(now);
            out.push(Command::RecordIncident(Box::new(inc.clone())));
        }
        self.ledger.remember_good(&r.to, self.config.history_limit);
        out.push(Command::Emit(Notice::normal(
            Reason::RolledBack,
            format!("every pod ({}) is back on {}", self.fleet.len(), r.to),
        )));
        self.state = State::Idle { stable: Some(r.to) };
        true
    }
}
