//! The canary: move the target onto the current step's share of pods, `max_surge` at a time; once
//! they all serve it, bake under analysis; then the next step, or promotion. Also where the
//! ceiling is kept when the fleet shrinks, and where apply failures are counted.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

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
        let rest = self
            .fleet
            .len()
            .saturating_sub(self.fleet.count_applied(c.target.digest));
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
    let placed = match place(c, fleet, cfg, now, paused, out) {
        Ok(placed) => placed,
        Err(reason) => return Next::RollBack(reason),
    };
    if paused {
        return Next::Stay;
    }
    if c.bake.is_none() {
        if placed.moving || (placed.on < cfg.allowed(c.step, fleet.len()) && placed.could_join) {
            return Next::Stay;
        }
        if placed.on == 0 && !c.excluded.is_empty() {
            return Next::RollBack(RollbackReason::ApplyFailed {
                pods: c.excluded.iter().cloned().collect(),
                message: "no pod could apply the target".to_string(),
            });
        }
        open_window(c, cfg, ledger, placed.on, fleet.len(), now, out);
    }
    judge(c, cfg, now, out)
}

/// Where the pods stand after one placement pass.
struct Placed {
    /// Pods told the target.
    on: usize,
    /// Some of them have not applied it yet.
    moving: bool,
    /// Cohort pods that may still take the target once they settle on stable.
    could_join: bool,
}

/// Moves pods: failed ones and those above the step back to stable, new ones to stable, then
/// settled stable pods of the cohort to the target up to the step and the surge limit. One
/// survey of the fleet, then the tells. Paused: only the moves towards stable.
fn place(
    c: &mut Canary,
    fleet: &mut Fleet,
    cfg: &RolloutConfig,
    now: Timestamp,
    paused: bool,
    out: &mut Vec<Command>,
) -> Result<Placed, RollbackReason> {
    let target = c.target.id();
    let stable = c.stable.id();
    let (t, s) = (Some(target.digest), Some(stable.digest));
    let n = fleet.len();
    // The cohort is gone and only pods that joined mid-canary remain: they become the cohort,
    // or the canary could never finish.
    if fleet.iter().all(|(_, p)| p.late) {
        fleet.clear_late();
    }

    let mut first_error = None;
    let mut on_target = Vec::new(); // (applied, Reverse(name)) of cohort pods told the target
    let mut to_stable = Vec::new();
    let mut eligible = Vec::new();
    let mut unsettled = Vec::new(); // eligible pods serving stable without having been told it
    let mut could_join = false;
    for (name, p) in fleet.iter() {
        let excluded = !c.excluded.is_empty() && c.excluded.contains(name);
        if p.desired == t {
            if excluded {
                to_stable.push(name.to_string());
                continue;
            }
            if p.applied != t {
                let why = p.error.clone().or_else(|| {
                    p.told_before(now, cfg.apply_timeout)
                        .then(|| format!("not applied within {}", cfg.apply_timeout))
                });
                if let Some(why) = why {
                    out.push(Command::Emit(Notice::warning(
                        Reason::ApplyFailed,
                        format!("pod {name} could not apply {target}: {why}"),
                    )));
                    c.excluded.insert(name.to_string());
                    to_stable.push(name.to_string());
                    first_error.get_or_insert(why);
                    continue;
                }
            }
            on_target.push((p.applied == t, Reverse(name)));
        } else if p.desired != s {
            // Never told either revision (a new pod): stable first, unless it already serves
            // stable, in which case it is as good as settled and may take the target at once.
            if p.applied == s && !p.late && !excluded {
                eligible.push(name);
                unsettled.push(name);
            } else {
                to_stable.push(name.to_string());
                could_join |= !p.late && !excluded;
            }
        } else if p.applied == s {
            if !p.late && !excluded && p.error.is_none() {
                eligible.push(name);
            }
        } else if p.due_again(now, cfg.apply_timeout) {
            to_stable.push(name.to_string());
            could_join |= !p.late && !excluded;
        } else {
            could_join |= !p.late && !excluded && p.error.is_none();
        }
    }
    if c.excluded.len() > cfg.max_apply_failures as usize {
        return Err(RollbackReason::ApplyFailed {
            pods: c.excluded.iter().cloned().collect(),
            message: first_error.unwrap_or_else(|| "earlier apply failures".to_string()),
        });
    }

    // Above the step (the fleet shrank): the least settled pods go back first.
    let allowed = cfg.allowed(c.step, n);
    on_target.sort();
    let excess = on_target.len().saturating_sub(allowed);
    to_stable.extend(
        on_target[..excess]
            .iter()
            .map(|(_, Reverse(name))| name.to_string()),
    );
    let kept = &on_target[excess..];
    let mut placed = Placed {
        on: kept.len(),
        moving: kept.iter().any(|(applied, _)| !applied),
        could_join: could_join || !eligible.is_empty(),
    };
    let eligible: Vec<String> = eligible.into_iter().map(str::to_string).collect();
    let unsettled: Vec<String> = unsettled.into_iter().map(str::to_string).collect();
    fleet.tell(to_stable, &stable, now, out);
    // Telling a pod what it already serves changes nothing on it, so the surge room is the same
    // before and after these.
    let room = cfg.surge(n).saturating_sub(fleet.in_flight());
    let take = if paused {
        0
    } else {
        allowed
            .saturating_sub(placed.on)
            .min(room)
            .min(eligible.len())
    };
    let (chosen, rest) = eligible.split_at(take);
    let unchosen = unsettled
        .into_iter()
        .filter(|u| rest.binary_search(u).is_ok())
        .collect();
    fleet.tell(unchosen, &stable, now, out);
    if paused {
        return Ok(placed);
    }
    placed.could_join = could_join || !rest.is_empty();
    placed.on += take;
    placed.moving |= take > 0;
    fleet.tell(chosen.to_vec(), &target, now, out);
    c.peak_pods = c.peak_pods.max(placed.on);
    Ok(placed)
}

/// Every pod of the step serves the target: open the analysis window and start the bake.
fn open_window(
    c: &mut Canary,
    cfg: &RolloutConfig,
    ledger: &mut Ledger,
    on: usize,
    fleet_len: usize,
    now: Timestamp,
    out: &mut Vec<Command>,
) {
    let window = ledger.new_window();
    let baseline_pods = fleet_len.saturating_sub(on);
    c.bake = Some(Bake {
        window,
        since: now,
        verdict: None,
        stalled: false,
        held: None,
        baseline_pods: Some(baseline_pods),
        reference: None,
    });
    out.push(Command::StartAnalysis {
        window,
        canary: c.target.id(),
        baseline: c.stable.id(),
        bake: cfg.bake,
        baseline_pods,
        reference: None,
    });
    let against = if baseline_pods == 0 {
        format!("the record of {} (no baseline pods at this step)", c.stable)
    } else {
        format!("{} on {baseline_pods} pod(s)", c.stable)
    };
    out.push(Command::Emit(Notice::normal(
        Reason::AnalysisStarted,
        format!(
            "step {}/{}: {on} pod(s) serve {}; baking {:#} against {against}",
            c.step + 1,
            cfg.steps.len(),
            c.target,
            cfg.bake,
        ),
    )));
}

/// Once the bake time has passed: healthy moves on; inconclusive (or no verdict) holds the step,
/// saying once why and what a verdict needs, and follows the policy once `max_bake` has passed
/// too. An inconclusive verdict still `pending` (the analysis has not made its look at the bake's
/// end yet, which comes with the next sample) is waited for quietly.
fn judge(c: &mut Canary, cfg: &RolloutConfig, now: Timestamp, out: &mut Vec<Command>) -> Next {
    let Some(b) = c.bake.as_mut() else {
        return Next::Stay;
    };
    let baked = now.duration_since(b.since);
    if baked < cfg.bake {
        return Next::Stay;
    }
    let (reason, pending) = match &b.verdict {
        Some(Verdict::Healthy) => return Next::Advance,
        Some(Verdict::Failing(evidence)) => {
            return Next::RollBack(RollbackReason::AnalysisFailed {
                evidence: Box::new(evidence.clone()),
            });
        }
        Some(Verdict::Inconclusive { reason, pending }) => {
            if cfg.on_inconclusive == InconclusivePolicy::Promote && !pending {
                return Next::Advance;
            }
            (reason.clone(), *pending)
        }
        // No verdict means analysis is not running: never a reason to promote.
        None => ("no verdict from analysis".to_string(), false),
    };
    if baked < cfg.max_bake {
        if !pending && b.held.is_none() {
            b.held = Some(now);
            out.push(Command::Emit(Notice::warning(
                Reason::StepHeld,
                format!(
                    "{} step {}/{} held after its {:#} bake: {reason}. It goes on by itself once \
                     the evidence is there (analysis keeps running, up to maxBake {:#}); to \
                     move on now, promote it, or give steps a longer bake, or set \
                     onInconclusive",
                    c.target,
                    c.step + 1,
                    cfg.steps.len(),
                    cfg.bake,
                    cfg.max_bake,
                ),
            )));
        }
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
                "{} has baked {:#} at step {} without a conclusive verdict ({reason}); \
                 holding: `promote` or `abort`, or wait for traffic",
                c.target,
                SignedDuration::from_secs(baked.as_secs()),
                c.step + 1
            ),
        )));
    }
    Next::Stay
}
