//! The canary: move the target onto the current step's share of pods, `max_surge` at a time; once
//! they all serve it, bake under analysis; then the next step, or promotion. Also where the
//! ceiling is kept when the fleet shrinks, and where apply failures are counted.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use jiff::Timestamp;

use super::Rollout;
use super::command::{Command, Notice, Reason};
use super::config::{InconclusivePolicy, RolloutConfig};
use super::fleet::Fleet;
use super::ledger::{Ledger, Outcome};
use super::revision::Release;
use super::state::{Bake, Canary, RollbackReason, State, Timeline};
use crate::analysis::Verdict;

/// What a canary pass decided.
enum Next {
    /// Nothing changes phase.
    Stay,
    /// The bake passed: next step, or promotion after the last.
    Advance,
    /// Roll back, for this reason.
    RollBack(RollbackReason),
}

impl Rollout {
    /// Validation passed and there is a stable revision to compare against and return to.
    pub(super) fn start_canary(
        &mut self,
        target: Release,
        stable: Release,
        seen: Timestamp,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let mut timeline = Timeline::of(&target);
        timeline.seen_at = Some(seen);
        timeline.validated_at = Some(now);
        out.push(Command::Emit(Notice::normal(
            Reason::CanaryStarted,
            format!(
                "{target} passed validation; step 1/{}: {} pod(s), baseline {stable}",
                self.config.steps.len(),
                self.config.allowed(0, self.fleet.len())
            ),
        )));
        // Every pod present now belongs to this canary's cohort.
        self.fleet.clear_late();
        self.state = State::Canary(Box::new(Canary {
            target,
            stable,
            step: 0,
            step_started: now,
            bake: None,
            excluded: BTreeSet::new(),
            timeline,
            peak_pods: 0,
        }));
    }

    /// One canary pass. Paused: the ceiling, stray pods and apply failures are still handled
    /// (they only ever move pods towards stable or roll back), but no pod is moved to the target
    /// and no bake starts or ends.
    pub(super) fn reconcile_canary(
        &mut self,
        now: Timestamp,
        paused: bool,
        out: &mut Vec<Command>,
    ) -> bool {
        let State::Canary(c) = self.state.active_mut() else {
            return false;
        };
        match step(
            c,
            &mut self.fleet,
            &self.config,
            &mut self.ledger,
            now,
            paused,
            out,
        ) {
            Next::Stay => false,
            Next::Advance => {
                self.advance(now, out);
                true
            }
            Next::RollBack(reason) => {
                self.begin_rollback(reason, None, now, out);
                true
            }
        }
    }

    fn advance(&mut self, now: Timestamp, out: &mut Vec<Command>) {
        let steps = self.config.steps.len();
        let fleet = self.fleet.len();
        let State::Canary(c) = &mut self.state else {
            return;
        };
        if let Some(b) = c.bake.take() {
            out.push(Command::StopAnalysis { window: b.window });
        }
        if c.step + 1 < steps {
            c.step += 1;
            c.step_started = now;
            out.push(Command::Emit(Notice::normal(
                Reason::StepAdvanced,
                format!(
                    "{} baked healthy; step {}/{steps}: {} pod(s)",
                    c.target,
                    c.step + 1,
                    self.config.allowed(c.step, fleet)
                ),
            )));
        } else {
            self.promote("every step baked healthy".to_string(), now, out);
        }
    }

    /// The target becomes stable; pods not on it yet follow, `max_surge` at a time.
    pub(super) fn promote(&mut self, why: String, now: Timestamp, out: &mut Vec<Command>) {
        self.unpause();
        let c = match self.take_state() {
            State::Canary(c) => *c,
            other => {
                self.state = other;
                return;
            }
        };
        if let Some(b) = &c.bake {
            out.push(Command::StopAnalysis { window: b.window });
        }
        let limit = self.config.history_limit;
        self.ledger.remember_good(&c.target, limit);
        self.ledger
            .record(c.target.id(), Outcome::Promoted, now, limit);
        let rest = self.fleet.len() - self.fleet.count_applied(c.target.digest);
        out.push(Command::Emit(Notice::normal(
            Reason::Promoted,
            format!(
                "{} is stable ({why}); {rest} more pod(s) follow, {} at a time",
                c.target, self.config.max_surge
            ),
        )));
        self.fleet.clear_late();
        self.state = State::Idle {
            stable: Some(c.target),
        };
    }
}

/// The canary pass itself, over the parts of the rollout it needs (so the borrows stay apart).
fn step(
    c: &mut Canary,
    fleet: &mut Fleet,
    cfg: &RolloutConfig,
    ledger: &mut Ledger,
    now: Timestamp,
    paused: bool,
    out: &mut Vec<Command>,
) -> Next {
    let target = c.target.id();
    let stable = c.stable.id();
    let (t, s) = (target.digest, stable.digest);
    let n = fleet.len();

    // The cohort is gone and only pods that joined mid-canary remain: they become the cohort,
    // or the canary could never finish.
    if n > 0 && fleet.iter().all(|(_, p)| p.late) {
        fleet.clear_late();
    }

    // Pods that failed to apply the target, or did not within the timeout, leave the canary.
    let mut first_error = None;
    let failed: Vec<(String, String)> = fleet
        .iter()
        .filter(|(name, p)| {
            p.desired == Some(t) && p.applied != Some(t) && !c.excluded.contains(*name)
        })
        .filter_map(|(name, p)| {
            let why = p.error.clone().or_else(|| {
                p.told_before(now, cfg.apply_timeout)
                    .then(|| format!("not applied within {}", cfg.apply_timeout))
            })?;
            Some((name.to_string(), why))
        })
        .collect();
    for (name, why) in failed {
        out.push(Command::Emit(Notice::warning(
            Reason::ApplyFailed,
            format!("pod {name} could not apply {target}: {why}"),
        )));
        c.excluded.insert(name);
        first_error.get_or_insert(why);
    }
    let failures = || c.excluded.iter().cloned().collect::<Vec<_>>();
    if c.excluded.len() > cfg.max_apply_failures as usize {
        return Next::RollBack(RollbackReason::ApplyFailed {
            pods: failures(),
            message: first_error.unwrap_or_else(|| "earlier apply failures".to_string()),
        });
    }

    // Towards stable, never throttled: pods told neither revision (new pods), pods that failed
    // the target, pods above the step's ceiling (the fleet shrank), and stable tells not applied
    // within the timeout.
    let allowed = cfg.allowed(c.step, n);
    let mut on_target: Vec<(bool, Reverse<&str>)> = fleet
        .iter()
        .filter(|(_, p)| p.desired == Some(t))
        .map(|(name, p)| (p.applied == Some(t), Reverse(name)))
        .collect();
    on_target.sort();
    let excess = on_target.len().saturating_sub(allowed);
    let mut to_stable: Vec<String> = on_target[..excess]
        .iter()
        .map(|(_, Reverse(name))| name.to_string())
        .collect();
    to_stable.extend(
        fleet
            .iter()
            .filter(|(name, p)| {
                (p.desired != Some(t) && p.desired != Some(s))
                    || (p.desired == Some(t) && c.excluded.contains(*name))
                    || (p.desired == Some(s)
                        && p.applied != Some(s)
                        && p.told_before(now, cfg.apply_timeout))
            })
            .map(|(name, _)| name.to_string()),
    );
    fleet.tell(to_stable, &stable, now, out);

    if paused {
        return Next::Stay;
    }

    // Towards the target: settled stable pods of the cohort, up to the step and the surge limit.
    let cohort = |name: &str, p: &super::fleet::PodView| {
        !p.late && !c.excluded.contains(name) && p.error.is_none()
    };
    let need = allowed.saturating_sub(fleet.count_desired(t));
    let room = cfg.surge(n).saturating_sub(fleet.in_flight());
    let chosen: Vec<String> = fleet
        .iter()
        .filter(|(name, p)| cohort(name, p) && p.settled_on(s))
        .take(need.min(room))
        .map(|(name, _)| name.to_string())
        .collect();
    fleet.tell(chosen, &target, now, out);
    let on = fleet.count_desired(t);
    c.peak_pods = c.peak_pods.max(on);

    if c.bake.is_none() {
        let any =
            |f: &dyn Fn(&str, &super::fleet::PodView) -> bool| fleet.iter().any(|(n, p)| f(n, p));
        let target_moving = any(&|_, p| p.desired == Some(t) && p.applied != Some(t));
        let could_join = any(&|name, p| cohort(name, p) && p.desired == Some(s));
        if target_moving || (on < allowed && could_join) {
            return Next::Stay;
        }
        if on == 0 && !c.excluded.is_empty() {
            return Next::RollBack(RollbackReason::ApplyFailed {
                pods: failures(),
                message: "no pod could apply the target".to_string(),
            });
        }
        let window = ledger.new_window();
        c.bake = Some(Bake {
            window,
            since: now,
            verdict: None,
            stalled: false,
        });
        out.push(Command::StartAnalysis {
            window,
            canary: target.clone(),
            baseline: stable.clone(),
        });
        out.push(Command::Emit(Notice::normal(
            Reason::AnalysisStarted,
            format!(
                "step {}/{}: {on} pod(s) serve {target}; baking {} against {stable}",
                c.step + 1,
                cfg.steps.len(),
                cfg.bake
            ),
        )));
    }

    let Some(b) = c.bake.as_mut() else {
        return Next::Stay;
    };
    let baked = now.duration_since(b.since);
    if baked < cfg.bake {
        return Next::Stay;
    }
    let reason = match &b.verdict {
        Some(Verdict::Healthy) => return Next::Advance,
        Some(Verdict::Failing(evidence)) => {
            return Next::RollBack(RollbackReason::AnalysisFailed {
                evidence: evidence.clone(),
            });
        }
        Some(Verdict::Inconclusive { reason }) => {
            if cfg.on_inconclusive == InconclusivePolicy::Promote {
                return Next::Advance;
            }
            reason.clone()
        }
        // No verdict means analysis is not running: never a reason to promote.
        None => "no verdict from analysis".to_string(),
    };
    if baked < cfg.max_bake {
        return Next::Stay;
    }
    if cfg.on_inconclusive == InconclusivePolicy::RollBack {
        return Next::RollBack(RollbackReason::Inconclusive { reason });
    }
    if !b.stalled {
        b.stalled = true;
        out.push(Command::Emit(Notice::warning(
            Reason::AnalysisStalled,
            format!(
                "{target} has baked {baked} at step {} without a conclusive verdict ({reason}); \
                 holding: `promote` or `abort`, or wait for traffic",
                c.step + 1
            ),
        )));
    }
    Next::Stay
}
