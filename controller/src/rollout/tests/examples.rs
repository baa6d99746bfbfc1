//! Example runs a person can follow: the happy path, the outage and its rollback, apply failures,
//! supersede, adoption, inconclusive bakes, fleet changes, resume after a restart.

use super::support::*;
use crate::analysis::Verdict;
use crate::rollout::{
    Command, Event, InconclusivePolicy, ListedPod, Outcome, Phase, Reason, RollbackReason, Rollout,
    RolloutConfig, State, Verb,
};

#[test]
fn happy_path_ends_idle_with_target_stable_on_every_pod() {
    let t = release(2, 2);
    let mut h = Harness::new(RolloutConfig::default(), 8);
    let out = h.seen(&t);
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::Validate { digest, .. } if *digest == t.digest))
    );
    assert_eq!(h.r.state().phase(), Phase::Validating);
    assert!(tells(&out).is_empty(), "nothing is told before validation");

    let out = h.validation(&t, true);
    assert_eq!(
        tells(&out),
        vec![(t.digest, vec![pod(0)])],
        "step 1 is one pod"
    );
    // Steps [1, 25%, 50%, 100%] of 8 pods: 1, 2, 4, 8.
    for expected in [1, 2, 4, 8] {
        h.apply_all();
        assert_eq!(h.on(t.digest), expected);
        assert!(
            h.window().is_some(),
            "bake starts once the step's pods applied"
        );
        h.verdict(Verdict::Healthy);
        h.tick(mins(4));
        assert_eq!(h.on(t.digest), expected, "no progress before the bake ends");
        h.tick(mins(1));
    }
    assert!(h.is_idle_on(t.digest));
    assert_eq!(h.on(t.digest), 8);
    assert_eq!(
        h.r.ledger().history().last().map(|e| e.outcome),
        Some(Outcome::Promoted)
    );
    assert!(emits(&h.log, Reason::Promoted));
    assert!(!emits(&h.log, Reason::RollingBack));
}

#[test]
fn a_502_spike_at_step_one_rolls_back_quarantines_and_reports() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    let out = h.verdict(failing());
    let State::RollingBack(rb) = h.r.state() else {
        panic!("expected RollingBack, got {:?}", h.r.state());
    };
    assert!(matches!(rb.reason, RollbackReason::AnalysisFailed { .. }));
    assert_eq!(
        tells(&out),
        vec![(digest(1), vec![pod(0)])],
        "the canary pod goes back"
    );
    let incident = out
        .iter()
        .find_map(|c| match c {
            Command::RecordIncident(i) => Some(i.clone()),
            _ => None,
        })
        .expect("an incident is recorded at the decision");
    assert_eq!(incident.revision.commit(), t.commit());
    assert_eq!(incident.peak_pods, 1);
    assert!(incident.timeline.decided_at.is_some() && incident.timeline.first_applied.is_some());
    assert!(incident.timeline.restored_at.is_none());

    let out = h.apply_all();
    assert!(h.is_idle_on(digest(1)));
    assert_eq!(h.on(digest(1)), 8);
    let restored = out
        .iter()
        .find_map(|c| match c {
            Command::RecordIncident(i) => Some(i.clone()),
            _ => None,
        })
        .expect("the incident is completed when every pod is back");
    assert_eq!(restored.id, incident.id);
    assert!(restored.timeline.restored_at.is_some());
    assert!(
        h.r.ledger().blocking(&t.id()).is_some(),
        "the commit is quarantined"
    );

    // The same head polled again: nothing. The same config under a new commit: blocked.
    assert!(tells(&h.seen(&t)).is_empty());
    let twin = release(3, 2);
    let out = h.seen(&twin);
    assert!(emits(&out, Reason::QuarantineBlocked));
    assert_eq!(h.r.state().phase(), Phase::Idle);
    // A newer commit with a different config moves on.
    h.seen(&release(4, 4));
    assert_eq!(h.r.state().phase(), Phase::Validating);
}

#[test]
fn one_pod_failing_to_apply_rolls_back() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    let out = h.send(Event::PodApplyFailed {
        pod: pod(0),
        digest: t.digest,
        message: "nginx: [emerg] host not found in upstream".to_string(),
    });
    assert!(emits(&out, Reason::ApplyFailed));
    let incident = h.r.ledger().last_incident().expect("an incident");
    assert!(
        matches!(&incident.reason, RollbackReason::ApplyFailed { pods, .. } if pods == &[pod(0)])
    );
    // The pod kept serving stable (the agent never half-applies), so the rollback is over at once.
    assert!(emits(&out, Reason::RollingBack) && emits(&out, Reason::RolledBack));
    assert!(h.is_idle_on(digest(1)));
    assert!(h.r.ledger().blocking(&t.id()).is_some());
}

#[test]
fn a_pod_that_never_answers_counts_as_an_apply_failure() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    assert!(!emits(&h.tick(mins(1)), Reason::ApplyFailed));
    let out = h.tick(mins(1));
    assert!(emits(&out, Reason::ApplyFailed) && emits(&out, Reason::RollingBack));
    assert!(h.r.ledger().blocking(&t.id()).is_some());
}

#[test]
fn tolerated_apply_failures_send_the_pod_back_and_choose_another() {
    let t = release(2, 2);
    let config = RolloutConfig {
        max_apply_failures: 1,
        ..RolloutConfig::default()
    };
    let mut h = Harness::new(config, 8);
    h.seen(&t);
    h.validation(&t, true);
    let out = h.send(Event::PodApplyFailed {
        pod: pod(0),
        digest: t.digest,
        message: "disk full".to_string(),
    });
    assert_eq!(h.r.state().phase(), Phase::Canary);
    assert_eq!(
        tells(&out),
        vec![(digest(1), vec![pod(0)]), (t.digest, vec![pod(1)])],
        "failed pod back to stable, another takes its place"
    );
    h.apply_all();
    assert!(h.window().is_some());
    // A second failure is over the tolerance.
    h.verdict(Verdict::Healthy);
    h.tick(mins(5));
    h.send(Event::PodApplyFailed {
        pod: pod(2),
        digest: t.digest,
        message: "disk full".to_string(),
    });
    assert_eq!(h.r.state().phase(), Phase::RollingBack);
}

#[test]
fn a_newer_revision_supersedes_the_canary_without_quarantine() {
    let (t, u) = (release(2, 2), release(3, 3));
    let mut h = canary_of(&t);
    h.apply_all();
    let out = h.seen(&u);
    assert!(
        matches!(h.r.state(), State::RollingBack(r) if matches!(r.reason, RollbackReason::Superseded { .. }))
    );
    assert!(!out.iter().any(|c| matches!(c, Command::RecordIncident(_))));
    assert_eq!(h.r.pending().map(|p| p.digest), Some(u.digest));
    let out = h.apply_all();
    assert_eq!(h.r.state().phase(), Phase::Validating);
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::Validate { digest, .. } if *digest == u.digest))
    );
    assert!(h.r.ledger().blocking(&t.id()).is_none());
}

#[test]
fn same_config_under_a_new_commit_is_no_rollout() {
    let mut h = Harness::new(RolloutConfig::default(), 4);
    let same = release(9, 1);
    let out = h.seen(&same);
    assert!(emits(&out, Reason::NoConfigChange));
    assert!(!out.iter().any(|c| matches!(c, Command::Validate { .. })));
    assert_eq!(
        h.r.state().stable().map(|s| s.commit().to_string()),
        Some(same.commit().to_string())
    );
}

#[test]
fn the_first_revision_is_adopted_without_a_canary() {
    let mut r = Rollout::new(RolloutConfig::default(), None).expect("valid");
    let t = release(2, 2);
    for i in 0..4 {
        r.handle(
            Event::PodAppeared {
                pod: pod(i),
                applied: None,
            },
            t0(),
        );
    }
    r.handle(
        Event::RevisionSeen {
            revision: t.revision.clone(),
            digest: t.digest,
        },
        t0(),
    );
    let out = r.handle(
        Event::ValidationFinished {
            digest: t.digest,
            outcome: crate::rollout::ValidationOutcome::Passed,
        },
        t0(),
    );
    assert!(matches!(r.state(), State::Idle { stable: Some(s) } if s.digest == t.digest));
    assert_eq!(
        tells(&out),
        vec![(t.digest, vec![pod(0)])],
        "surge-limited: 25% of 4"
    );
}

#[test]
fn inconclusive_holds_then_stalls_once_and_a_healthy_verdict_moves_on() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    h.verdict(Verdict::Inconclusive {
        reason: "12 requests".to_string(),
        pending: false,
    });
    let out = h.tick(mins(5));
    assert_eq!(
        h.r.state().canary().map(|c| c.step),
        Some(0),
        "inconclusive does not promote"
    );
    let held: Vec<_> = notices(&out, Reason::StepHeld);
    assert_eq!(
        held.len(),
        1,
        "the bake's end says the step is held: {out:?}"
    );
    assert!(
        held[0].contains("12 requests") && held[0].contains("promote"),
        "{held:?}"
    );
    assert!(
        !emits(&h.tick(mins(1)), Reason::StepHeld),
        "once per window"
    );
    let out = h.tick(mins(25));
    assert!(emits(&out, Reason::AnalysisStalled));
    assert!(h.r.status().stalled.is_some());
    assert!(!emits(&h.tick(mins(5)), Reason::AnalysisStalled), "once");
    h.verdict(Verdict::Healthy);
    assert_eq!(h.r.state().canary().map(|c| c.step), Some(1));
}

#[test]
fn inconclusive_policies_promote_and_roll_back() {
    for (policy, phase_after) in [
        (InconclusivePolicy::Promote, Phase::Canary),
        (InconclusivePolicy::RollBack, Phase::RollingBack),
    ] {
        let config = RolloutConfig {
            on_inconclusive: policy,
            ..RolloutConfig::default()
        };
        let t = release(2, 2);
        let mut h = Harness::new(config, 8);
        h.seen(&t);
        h.validation(&t, true);
        h.apply_all();
        h.verdict(Verdict::Inconclusive {
            reason: "quiet".to_string(),
            pending: false,
        });
        h.tick(mins(30));
        assert_eq!(h.r.state().phase(), phase_after, "{policy:?}");
        if policy == InconclusivePolicy::Promote {
            assert_eq!(h.r.state().canary().map(|c| c.step), Some(1));
        }
    }
}

#[test]
fn a_look_still_pending_at_the_bake_end_is_waited_for_quietly() {
    // The analysis looks at the first sample after the bake's end; until then its inconclusive
    // verdict is pending, and the step is not held (nor promoted under `Promote`).
    for policy in [InconclusivePolicy::Hold, InconclusivePolicy::Promote] {
        let config = RolloutConfig {
            on_inconclusive: policy,
            ..RolloutConfig::default()
        };
        let t = release(2, 2);
        let mut h = Harness::new(config, 8);
        h.seen(&t);
        h.validation(&t, true);
        h.apply_all();
        h.verdict(Verdict::Inconclusive {
            reason: "baking".to_string(),
            pending: true,
        });
        let out = h.tick(mins(4));
        assert!(!emits(&out, Reason::StepHeld), "{policy:?}: {out:?}");
        assert_eq!(h.r.state().canary().map(|c| c.step), Some(0), "{policy:?}");
        h.verdict(Verdict::Healthy);
        assert_eq!(h.r.state().canary().map(|c| c.step), Some(1), "{policy:?}");
    }
}

#[test]
fn a_verdict_from_an_earlier_window_does_not_promote() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    let (old, _) = h.window().expect("open");
    h.verdict(Verdict::Healthy);
    h.tick(mins(5));
    h.apply_all();
    h.send(Event::Verdict {
        window: old,
        digest: t.digest,
        verdict: Verdict::Healthy,
    });
    h.tick(mins(5));
    assert_eq!(
        h.r.state().canary().map(|c| c.step),
        Some(1),
        "stale healthy ignored"
    );
}

#[test]
fn pods_appearing_mid_canary_get_stable_and_are_not_chosen() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    let out = h.send(Event::PodAppeared {
        pod: "pod-aaa".to_string(),
        applied: None,
    });
    assert_eq!(tells(&out), vec![(digest(1), vec!["pod-aaa".to_string()])]);
    h.apply_all();
    h.verb(Verb::Promote);
    h.apply_all();
    assert_eq!(
        h.r.fleet().get("pod-aaa").and_then(|p| p.applied),
        Some(t.digest),
        "after promotion"
    );
}

#[test]
fn a_shrinking_fleet_sends_pods_above_the_step_back_to_stable() {
    let t = release(2, 2);
    let config = RolloutConfig {
        steps: vec![crate::rollout::Amount::Percent(50)],
        max_surge: crate::rollout::Amount::Percent(100),
        ..RolloutConfig::default()
    };
    let mut h = Harness::new(config, 4);
    h.seen(&t);
    h.validation(&t, true);
    h.apply_all();
    assert_eq!(h.on(t.digest), 2);
    // Two stable pods go: 50% of 2 is 1, so one target pod must go back.
    let stable_pods: Vec<String> =
        h.r.fleet()
            .iter()
            .filter(|(_, p)| p.applied == Some(digest(1)))
            .map(|(n, _)| n.to_string())
            .collect();
    h.send(Event::PodGone {
        pod: stable_pods[0].clone(),
    });
    let out = h.send(Event::PodGone {
        pod: stable_pods[1].clone(),
    });
    assert_eq!(tells(&out).len(), 1);
    assert_eq!(h.r.fleet().count_desired(t.digest), 1);
}

#[test]
fn resuming_from_serialised_state_mid_canary_gives_the_same_result() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    h.verdict(Verdict::Healthy);
    let json = serde_json::to_string(&h.r).expect("serialises");
    let restored: Rollout = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(restored, h.r);

    let mut h2 = Harness {
        r: restored,
        now: h.now,
        log: Vec::new(),
        requests: h.requests,
    };
    for h in [&mut h, &mut h2] {
        h.log.clear();
        h.tick(mins(5));
        h.apply_all();
        h.verdict(failing());
        h.apply_all();
    }
    assert_eq!(h.r, h2.r);
    assert_eq!(h.log, h2.log);
    assert!(h.is_idle_on(digest(1)));
}

#[test]
fn the_same_event_twice_is_harmless() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    let applied = Event::PodApplied {
        pod: pod(0),
        digest: t.digest,
    };
    assert!(!h.send(applied.clone()).is_empty());
    let state = h.r.clone();
    assert!(h.send(applied).is_empty());
    assert_eq!(h.r, state);
}

#[test]
fn quarantine_is_by_config_not_by_commit() {
    let bad = release(2, 2);
    let mut h = canary_of(&bad);
    h.apply_all();
    h.verdict(failing());
    h.apply_all();
    // The same commit rendered with changed values is a different config: it may roll out.
    let mut revalued = release(2, 3);
    revalued.revision.message = "values changed".to_string();
    h.seen(&revalued);
    assert_eq!(h.r.state().phase(), Phase::Validating);
    // Another commit rendering to the bad config is blocked.
    h.validation(&revalued, false);
    assert!(emits(&h.seen(&release(5, 2)), Reason::QuarantineBlocked));
}

#[test]
fn a_pod_that_failed_to_take_stable_is_told_again_soon() {
    let mut h = Harness::new(RolloutConfig::default(), 2);
    let stable = release(1, 1);
    let out = h.send(Event::PodsListed {
        pods: vec![
            crate::rollout::ListedPod {
                name: pod(0),
                applied: Some(stable.digest),
            },
            crate::rollout::ListedPod {
                name: pod(1),
                applied: Some(stable.digest),
            },
            crate::rollout::ListedPod {
                name: "pod-new".to_string(),
                applied: None,
            },
        ],
    });
    assert_eq!(
        tells(&out),
        vec![(stable.digest, vec!["pod-new".to_string()])]
    );
    let out = h.send(Event::PodApplyFailed {
        pod: "pod-new".to_string(),
        digest: stable.digest,
        message: "agent unreachable: connection refused".to_string(),
    });
    assert!(
        tells(&out).is_empty(),
        "not at once: the agent may be starting"
    );
    let out = h.tick(jiff::SignedDuration::from_secs(2));
    assert!(tells(&out).is_empty(), "not before the retry delay");
    let out = h.tick(jiff::SignedDuration::from_secs(4));
    assert_eq!(
        tells(&out),
        vec![(stable.digest, vec!["pod-new".to_string()])],
        "told again a few seconds later, not after the two-minute apply timeout"
    );
}

/// A controller killed after telling a pod but before its checkpoint recorded the tell is
/// followed by one that believes the pod settled on stable; the pod, serving what nobody now
/// stands behind, is told stable again at once, not an apply timeout after its old stable tell
/// (which kept a restarted controller's canary waiting two minutes, issue 16's fault matrix).
#[test]
fn a_pod_that_strays_from_what_it_settled_on_is_told_again_at_once() {
    let mut h = Harness::new(RolloutConfig::default(), 3);
    h.apply_all();
    assert!(h.is_idle_on(digest(1)));
    let out = h.send(Event::PodsListed {
        pods: (0..3)
            .map(|i| ListedPod {
                name: pod(i),
                applied: Some(if i == 0 { digest(9) } else { digest(1) }),
            })
            .collect(),
    });
    assert_eq!(
        tells(&out),
        vec![(digest(1), vec![pod(0)])],
        "the strayed pod is told stable at once"
    );
    h.apply_all();
    let out = h.tick(mins(5));
    assert!(tells(&out).is_empty(), "once back, nothing more: {out:?}");
}
