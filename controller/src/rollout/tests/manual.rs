//! Manual verbs, one example each: pause and resume, promote, rollback-to, abort, retry.

use super::support::*;
use crate::analysis::Verdict;
use crate::rollout::{Command, Event, Phase, Reason, RollbackReason, RolloutConfig, State, Verb};

#[test]
fn pause_stops_progress_resume_continues_and_failure_still_rolls_back() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    h.verb(Verb::Pause);
    assert!(h.r.state().is_paused());
    h.verdict(Verdict::Healthy);
    let out = h.tick(mins(10));
    assert!(tells(&out).is_empty(), "paused: no step taken");
    assert_eq!(h.r.state().canary().map(|c| c.step), Some(0));
    // Pausing again is a no-op, not an error.
    assert!(!emits(&h.verb(Verb::Pause), Reason::VerbRejected));

    let out = h.verb(Verb::Resume);
    assert!(!h.r.state().is_paused());
    assert_eq!(
        h.r.state().canary().map(|c| c.step),
        Some(1),
        "the bake had passed"
    );
    assert_eq!(tells(&out), vec![(t.digest, vec![pod(1)])]);

    h.verb(Verb::Pause);
    h.apply_all();
    h.send(Event::Verdict {
        window: 99,
        digest: t.digest,
        verdict: failing(),
    });
    assert_eq!(
        h.r.state().phase(),
        Phase::RollingBack,
        "automatic rollback stays armed"
    );
}

#[test]
fn promote_skips_the_remaining_steps() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    let out = h.verb(Verb::Promote);
    assert!(h.is_idle_on(t.digest));
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::StopAnalysis { .. }))
    );
    // The rest follow, 25% of 8 = 2 at a time.
    assert_eq!(tells(&out), vec![(t.digest, vec![pod(1), pod(2)])]);
    h.apply_all();
    assert_eq!(h.on(t.digest), 8);
    assert!(
        emits(&h.verb(Verb::Promote), Reason::VerbRejected),
        "nothing left to promote"
    );
}

#[test]
fn promote_never_skips_validation() {
    let t = release(2, 2);
    let mut h = Harness::new(RolloutConfig::default(), 4);
    h.seen(&t);
    assert!(emits(&h.verb(Verb::Promote), Reason::VerbRejected));
    assert_eq!(h.r.state().phase(), Phase::Validating);
}

#[test]
fn rollback_to_a_known_good_commit_quarantines_what_it_replaces() {
    let (s, t) = (release(1, 1), release(2, 2));
    let mut h = canary_of(&t);
    h.verb(Verb::Promote);
    h.apply_all();
    assert!(h.is_idle_on(t.digest));

    let out = h.verb(Verb::RollbackTo {
        commit: "f".repeat(40),
    });
    assert!(
        emits(&out, Reason::VerbRejected),
        "unknown commits are refused"
    );

    let out = h.verb(Verb::RollbackTo {
        commit: s.commit().to_string(),
    });
    assert!(matches!(h.r.state(), State::RollingBack(r) if r.to.digest == s.digest));
    assert!(
        tells(&out)
            .iter()
            .any(|(d, pods)| *d == s.digest && pods.len() == 8),
        "all at once"
    );
    h.apply_all();
    assert!(h.is_idle_on(s.digest));
    assert!(h.r.ledger().blocking(&t.id()).is_some());
    assert!(h.r.ledger().last_incident().is_some());

    // t is quarantined, so rolling "back" to it is refused until it is retried.
    let out = h.verb(Verb::RollbackTo {
        commit: t.commit().to_string(),
    });
    assert!(emits(&out, Reason::VerbRejected));
}

#[test]
fn abort_rolls_back_and_abort_during_validation_drops_the_revision() {
    let t = release(2, 2);
    let mut h = canary_of(&t);
    h.apply_all();
    h.verb(Verb::Abort);
    assert!(
        matches!(h.r.state(), State::RollingBack(r) if matches!(r.reason, RollbackReason::Aborted { .. }))
    );
    h.apply_all();
    assert!(h.is_idle_on(digest(1)));

    let u = release(3, 3);
    h.seen(&u);
    h.verb(Verb::Abort);
    assert!(h.is_idle_on(digest(1)));
    assert!(h.r.ledger().blocking(&u.id()).is_some());
    assert!(
        tells(&h.validation(&u, true)).is_empty(),
        "a late pass changes nothing"
    );
}

#[test]
fn retry_takes_a_commit_out_of_quarantine() {
    let t = release(2, 2);
    let mut h = Harness::new(RolloutConfig::default(), 4);
    h.seen(&t);
    h.validation(&t, false);
    assert!(h.is_idle_on(digest(1)));
    assert!(h.r.ledger().blocking(&t.id()).is_some());
    assert!(
        tells(&h.log).iter().all(|(d, _)| *d == digest(1)),
        "never told"
    );

    let out = h.verb(Verb::Retry {
        commit: t.commit().to_string(),
    });
    assert!(emits(&out, Reason::Retried));
    assert_eq!(h.r.state().phase(), Phase::Validating);
    assert!(emits(
        &h.verb(Verb::Retry {
            commit: t.commit().to_string()
        }),
        Reason::VerbRejected
    ));
}

#[test]
fn resume_asks_again_for_a_validation_answered_during_the_pause() {
    let t = release(2, 2);
    let mut h = Harness::new(RolloutConfig::default(), 4);
    h.seen(&t);
    h.verb(Verb::Pause);
    assert!(
        tells(&h.validation(&t, true)).is_empty(),
        "ignored while paused"
    );
    // A newer commit with the same config arrives during the pause.
    h.seen(&release(3, 2));
    let out = h.verb(Verb::Resume);
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::Validate { digest, .. } if *digest == t.digest)),
        "{out:?}"
    );
    h.validation(&t, true);
    assert_eq!(h.r.state().phase(), Phase::Canary);
}
