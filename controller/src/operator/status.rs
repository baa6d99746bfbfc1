//! The engine's [`Status`] as the `ProxyRollout` status a cluster user reads, with the four
//! conditions `kubectl wait` and dashboards key on. Pure: the previous status and the time are
//! passed in, so a condition keeps its `lastTransitionTime` while it holds and a status that did not
//! change comes out identical (the controller then skips the write).

use jiff::Timestamp;

use super::crd::{
    AnalysisStatus, Condition, HistoryStatus, IncidentStatus, PodCounts, ProxyRolloutStatus,
    QuarantinedStatus, RevisionStatus,
};
use crate::analysis::Verdict;
use crate::rollout::status::Status;
use crate::rollout::{Outcome, Phase, RevisionId};

/// The status to write for `status` at `generation`, keeping transition times from `previous`.
pub fn to_status(
    status: &Status,
    generation: i64,
    previous: Option<&ProxyRolloutStatus>,
    now: Timestamp,
) -> ProxyRolloutStatus {
    let settled = status.phase == Phase::Idle
        && status.stable.is_some()
        && status.pods.stable == status.pods.total;
    let busy = matches!(
        status.phase,
        Phase::Validating | Phase::Canary | Phase::RollingBack
    );
    // True once a rollback has finished (every pod back), so `kubectl wait
    // --for=condition=RolledBack` returns when the site is restored, not when restoring starts.
    // A relabel (a new commit with the running config, such as a revert pushed by git
    // write-back) changes nothing on pods, so it does not end it; the next real revision does.
    let rolled_back = !busy
        && status
            .history
            .iter()
            .rev()
            .find(|h| h.outcome != Outcome::Relabelled)
            .is_some_and(|h| matches!(h.outcome, Outcome::RolledBack | Outcome::Aborted));
    let cond = |type_: &str, on: bool, reason: &str, message: String| {
        let state = if on { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == state)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        Condition {
            type_: type_.to_string(),
            status: state.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: since,
            observed_generation: Some(generation),
        }
    };
    let held = status
        .step
        .as_ref()
        .and_then(|step| step.held_since.map(|since| (step, since)));
    let stable_name = status
        .stable
        .as_ref()
        .map_or_else(|| "nothing yet".to_string(), short);
    let conditions = vec![
        cond(
            "Ready",
            settled,
            if settled { "Settled" } else { "Progressing" },
            if settled {
                format!("every pod ({}) serves {stable_name}", status.pods.total)
            } else {
                format!(
                    "{} of {} pods on {stable_name}; phase {:?}",
                    status.pods.stable, status.pods.total, status.phase
                )
            },
        ),
        cond(
            "Reconciling",
            busy,
            match (busy, held) {
                (true, Some(_)) => "StepHeld",
                (true, None) => "RollingOut",
                _ => "Idle",
            },
            match (&status.target, held) {
                (Some(t), Some((step, since))) if busy => format!(
                    "{:?} {}: step {}/{} held since {since}: its bake ended without enough \
                     evidence; status.analysis.message says what a verdict needs",
                    status.phase,
                    short(t),
                    step.number,
                    step.of
                ),
                (Some(t), None) if busy => format!("{:?} {}", status.phase, short(t)),
                _ => "nothing in progress".to_string(),
            },
        ),
        cond(
            "Stalled",
            status.stalled.is_some(),
            if status.stalled.is_some() {
                "AnalysisStalled"
            } else {
                "NotStalled"
            },
            status.stalled.clone().unwrap_or_default(),
        ),
        cond(
            "RolledBack",
            rolled_back,
            if rolled_back {
                "RolledBack"
            } else {
                "NoRollback"
            },
            status
                .last_incident
                .as_ref()
                .filter(|_| rolled_back)
                .map(|i| i.summary.clone())
                .unwrap_or_default(),
        ),
    ];
    let serving = status.pods.stable.max(status.pods.target);
    ProxyRolloutStatus {
        observed_generation: Some(generation),
        conditions,
        phase: Some(format!("{:?}", status.phase)),
        stable: status.stable.as_ref().map(revision),
        target: status.target.as_ref().map(revision),
        pods: Some(PodCounts {
            total: count(status.pods.total),
            stable: count(status.pods.stable),
            target: count(status.pods.target),
            changing: count(status.pods.changing),
            failed: count(status.pods.failed),
            ready: format!("{serving}/{}", status.pods.total),
        }),
        quarantined: status
            .quarantined
            .iter()
            .map(|q| QuarantinedStatus {
                commit: q.revision.commit.clone(),
                digest: q.revision.digest.to_string(),
                reason: q.reason.clone(),
                at: status
                    .history
                    .iter()
                    .rev()
                    .find(|h| h.revision == q.revision)
                    .map_or_else(|| now.to_string(), |h| h.at.to_string()),
            })
            .collect(),
        analysis: status.step.as_ref().map(|step| AnalysisStatus {
            step: format!("{}/{}", step.number, step.of),
            pods: count(step.pods_allowed),
            baking_since: step.baking_since.map(|t| t.to_string()),
            verdict: "Waiting".to_string(),
            message: String::new(),
            held_since: step.held_since.map(|t| t.to_string()),
        }),
        last_incident: status.last_incident.as_ref().map(|i| IncidentStatus {
            commit: i.revision.commit.clone(),
            reason: i.summary.clone(),
            decided_at: status
                .history
                .iter()
                .rev()
                .find(|h| h.revision == i.revision)
                .map_or_else(|| now.to_string(), |h| h.at.to_string()),
            restored_at: None,
            report: None,
            revert: None,
        }),
        history: status
            .history
            .iter()
            .rev()
            .map(|h| HistoryStatus {
                commit: h.revision.commit.clone(),
                outcome: format!("{:?}", h.outcome),
                at: h.at.to_string(),
            })
            .collect(),
        // Written by the controller itself, not derived from the engine's status.
        handled_request: previous.and_then(|p| p.handled_request.clone()),
        // From the agents' reports, set by the worker after this.
        drift: previous.map(|p| p.drift.clone()).unwrap_or_default(),
        engine: previous.and_then(|p| p.engine.clone()),
    }
}

fn revision(r: &RevisionId) -> RevisionStatus {
    RevisionStatus {
        commit: r.commit.clone(),
        digest: r.digest.to_string(),
    }
}

fn short(r: &RevisionId) -> String {
    r.short_commit().to_string()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Fills `status.analysis` with the open bake's latest verdict: its kind and its reason (what
/// was seen, what a verdict needs). The reason moves with every request, so [`needs_write`]
/// treats it as volatile. An inconclusive verdict still waiting for the healthy side's first
/// look (at the bake's end) is `Waiting`: `Inconclusive` is for a bake that ended without one.
pub fn describe_verdict(status: &mut ProxyRolloutStatus, verdict: Option<&Verdict>) {
    let Some(analysis) = status.analysis.as_mut() else {
        return;
    };
    let (kind, message) = match verdict {
        None => ("Waiting", String::new()),
        Some(Verdict::Healthy) => ("Healthy", "within tolerance of the baseline".to_string()),
        Some(Verdict::Failing(e)) => ("Failing", e.summary.clone()),
        Some(Verdict::Inconclusive {
            reason,
            pending: true,
        }) => ("Waiting", reason.clone()),
        Some(Verdict::Inconclusive { reason, .. }) => ("Inconclusive", reason.clone()),
    };
    analysis.verdict = kind.to_string();
    analysis.message = message.chars().take(1000).collect();
}

/// How often a checkpoint that changed only in its volatile parts (the running analysis's latest
/// verdict, whose rates move with every request) is written anyway, so a newly elected
/// controller resumes with a recent one.
pub const VOLATILE_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether `next` must be written over `written`: anything people or tools read changed, or
/// the engine's checkpoint changed in a way that matters on resume; a change only in the
/// analysis verdict waits for [`VOLATILE_REFRESH`]. Without this a baking canary rewrote its
/// status on every turn (twice a second), an API write per rollout per turn that `kubectl get
/// -w` shows as a stream of identical lines.
pub fn needs_write(
    next: &ProxyRolloutStatus,
    written: Option<&ProxyRolloutStatus>,
    since_written: std::time::Duration,
) -> bool {
    let Some(written) = written else {
        return true;
    };
    if next == written {
        return false;
    }
    // What people read, without the two parts that move with every request: the engine's
    // running verdict and the analysis message that spells it out.
    let steady = |s: &ProxyRolloutStatus| ProxyRolloutStatus {
        engine: None,
        analysis: s.analysis.as_ref().map(|a| AnalysisStatus {
            message: String::new(),
            ..a.clone()
        }),
        ..s.clone()
    };
    if steady(next) != steady(written) {
        return true;
    }
    let material = |s: &ProxyRolloutStatus| s.engine.as_deref().map(without_verdicts);
    material(next) != material(written) || since_written >= VOLATILE_REFRESH
}

/// The checkpoint without the running bake's latest verdict (also under a pause).
fn without_verdicts(engine: &serde_json::Value) -> serde_json::Value {
    let mut engine = engine.clone();
    if let Some(state) = engine.pointer_mut("/state") {
        for path in ["/bake", "/resume/bake"] {
            if let Some(bake) = state.pointer_mut(path).and_then(|b| b.as_object_mut()) {
                bake.remove("verdict");
            }
        }
    }
    engine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Bundle;

    fn with_engine(engine: serde_json::Value) -> ProxyRolloutStatus {
        ProxyRolloutStatus {
            engine: Some(engine.into()),
            ..ProxyRolloutStatus::default()
        }
    }

    #[test]
    fn a_verdict_that_only_moves_is_written_at_most_every_refresh() {
        let canary = |window: u64, rate: f64| {
            serde_json::json!({"state": {"phase": "canary", "step": 0,
                "bake": {"window": window, "verdict": {"inconclusive": {"reason": rate.to_string()}}}}})
        };
        let written = with_engine(canary(1, 0.1));
        let second = std::time::Duration::from_secs(1);
        assert!(!needs_write(&written, Some(&written), VOLATILE_REFRESH));
        assert!(!needs_write(
            &with_engine(canary(1, 0.2)),
            Some(&written),
            second
        ));
        assert!(needs_write(
            &with_engine(canary(1, 0.2)),
            Some(&written),
            VOLATILE_REFRESH
        ));
        assert!(
            needs_write(&with_engine(canary(2, 0.1)), Some(&written), second),
            "a new window matters on resume"
        );
        let mut phase = written.clone();
        phase.phase = Some("Idle".to_string());
        assert!(
            needs_write(&phase, Some(&written), second),
            "what people read changed"
        );
        assert!(needs_write(&written, None, second));
        let paused = |rate: f64| {
            with_engine(serde_json::json!({"state": {"phase": "paused",
                "resume": {"phase": "canary", "bake": {"window": 1, "verdict": rate}}}}))
        };
        assert!(!needs_write(&paused(0.2), Some(&paused(0.1)), second));
    }
    use crate::rollout::status::PodCounts as EnginePods;

    fn id(n: u8) -> RevisionId {
        let bundle = Bundle::new([("nginx.conf".to_string(), vec![n])].into_iter().collect());
        RevisionId {
            commit: format!("{n:0>40}"),
            digest: bundle.digest(),
        }
    }

    fn idle(pods_on_stable: usize) -> Status {
        Status {
            phase: Phase::Idle,
            paused: false,
            stable: Some(id(1)),
            target: None,
            step: None,
            pods: EnginePods {
                total: 3,
                stable: pods_on_stable,
                ..EnginePods::default()
            },
            stalled: None,
            pending: None,
            quarantined: Vec::new(),
            last_incident: None,
            history: Vec::new(),
        }
    }

    fn condition<'a>(s: &'a ProxyRolloutStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn ready_is_true_only_when_every_pod_serves_stable() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().expect("time");
        let partly = to_status(&idle(2), 4, None, now);
        assert_eq!(condition(&partly, "Ready").status, "False");
        let all = to_status(&idle(3), 4, Some(&partly), now);
        assert_eq!(condition(&all, "Ready").status, "True");
        assert_eq!(condition(&all, "Ready").observed_generation, Some(4));
        assert_eq!(all.pods.as_ref().map(|p| p.ready.as_str()), Some("3/3"));
    }

    #[test]
    fn a_revert_relabelling_stable_after_a_rollback_keeps_rolled_back_true() {
        use crate::rollout::HistoryEntry;
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().expect("time");
        let entry = |n: u8, outcome| HistoryEntry {
            revision: id(n),
            outcome,
            at: now,
        };
        let mut status = idle(3);
        status.history = vec![
            entry(1, Outcome::Adopted),
            entry(2, Outcome::RolledBack),
            entry(3, Outcome::Relabelled),
        ];
        let s = to_status(&status, 1, None, now);
        assert_eq!(condition(&s, "RolledBack").status, "True");
        status.history.push(entry(4, Outcome::Promoted));
        let s = to_status(&status, 1, None, now);
        assert_eq!(condition(&s, "RolledBack").status, "False");
    }

    #[test]
    fn an_unchanged_status_comes_out_identical_so_no_write_is_needed() {
        let t1: Timestamp = "2026-11-25T10:00:00Z".parse().expect("time");
        let t2: Timestamp = "2026-11-25T10:05:00Z".parse().expect("time");
        let first = to_status(&idle(3), 1, None, t1);
        let again = to_status(&idle(3), 1, Some(&first), t2);
        assert_eq!(first, again);
        let changed = to_status(&idle(2), 1, Some(&first), t2);
        assert_eq!(
            condition(&changed, "Ready").last_transition_time,
            t2.to_string()
        );
        assert_eq!(
            condition(&changed, "Reconciling").last_transition_time,
            t1.to_string(),
            "a condition that did not change keeps its time"
        );
    }
}

#[cfg(test)]
mod analysis_tests {
    use super::*;
    use crate::render::Bundle;
    use crate::rollout::status::{PodCounts as EnginePods, StepStatus};

    fn canary(held: bool) -> Status {
        let bundle = Bundle::new([("nginx.conf".to_string(), vec![7])].into_iter().collect());
        let at = Timestamp::from_second(1_800_000_000).expect("time");
        Status {
            phase: Phase::Canary,
            paused: false,
            stable: None,
            target: Some(RevisionId {
                commit: "c0ffee".repeat(7),
                digest: bundle.digest(),
            }),
            step: Some(StepStatus {
                number: 4,
                of: 4,
                pods_allowed: 3,
                baking_since: Some(at),
                held_since: held.then_some(at),
            }),
            pods: EnginePods::default(),
            stalled: None,
            pending: None,
            quarantined: Vec::new(),
            last_incident: None,
            history: Vec::new(),
        }
    }

    #[test]
    fn a_held_step_shows_in_reconciling_and_in_the_analysis_status() {
        let now = Timestamp::from_second(1_800_000_100).expect("time");
        let mut s = to_status(&canary(true), 1, None, now);
        let reconciling = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling")
            .expect("condition");
        assert_eq!(reconciling.reason, "StepHeld");
        assert!(
            reconciling.message.contains("step 4/4 held"),
            "{reconciling:?}"
        );
        let verdict = Verdict::Inconclusive {
            reason: "too little traffic: canary 12 requests".to_string(),
            pending: false,
        };
        describe_verdict(&mut s, Some(&verdict));
        let a = s.analysis.as_ref().expect("analysis");
        assert_eq!(
            (a.step.as_str(), a.verdict.as_str()),
            ("4/4", "Inconclusive")
        );
        assert!(a.held_since.is_some());
        assert!(a.message.contains("12 requests"));
        let not_held = to_status(&canary(false), 1, None, now);
        assert_eq!(
            not_held
                .conditions
                .iter()
                .find(|c| c.type_ == "Reconciling")
                .map(|c| c.reason.as_str()),
            Some("RollingOut")
        );
    }

    #[test]
    fn a_bake_waiting_for_its_first_look_shows_waiting_not_inconclusive() {
        // The healthy side looks at the bake's end; until then a clean canary's verdict is a
        // pending Inconclusive. `kubectl get prx` showed VERDICT Inconclusive through every bake
        // of a healthy rollout; only a step held after its bake is Inconclusive.
        let now = Timestamp::from_second(1_800_000_100).expect("time");
        let mut s = to_status(&canary(false), 1, None, now);
        let pending = Verdict::Inconclusive {
            reason: "collecting: canary 0.00% bad (0/120); first look at 8s".to_string(),
            pending: true,
        };
        describe_verdict(&mut s, Some(&pending));
        let a = s.analysis.as_ref().expect("analysis");
        assert_eq!(a.verdict, "Waiting");
        assert!(a.message.contains("first look at 8s"), "{}", a.message);
        let looked = Verdict::Inconclusive {
            reason: "too little traffic".to_string(),
            pending: false,
        };
        describe_verdict(&mut s, Some(&looked));
        assert_eq!(
            s.analysis.as_ref().map(|a| a.verdict.as_str()),
            Some("Inconclusive")
        );
    }

    #[test]
    fn the_analysis_message_is_volatile_but_its_verdict_is_not() {
        let now = Timestamp::from_second(1_800_000_100).expect("time");
        let with = |reason: &str, verdict: Option<Verdict>| {
            let mut s = to_status(&canary(false), 1, None, now);
            let v = verdict.unwrap_or(Verdict::Inconclusive {
                reason: reason.to_string(),
                pending: true,
            });
            describe_verdict(&mut s, Some(&v));
            s
        };
        let second = std::time::Duration::from_secs(1);
        let written = with("canary 100 requests", None);
        assert!(!needs_write(
            &with("canary 180 requests", None),
            Some(&written),
            second
        ));
        assert!(needs_write(
            &with("canary 180 requests", None),
            Some(&written),
            VOLATILE_REFRESH
        ));
        assert!(needs_write(
            &with("", Some(Verdict::Healthy)),
            Some(&written),
            second
        ));
    }
}
