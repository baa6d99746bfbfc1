//! A revert commit after a rollback (git write-back in Push mode, or a person reverting by hand):
//! a new commit that renders to the stable config. The engine must take it as the stable
//! revision's new name and nothing else: no validation, no canary, no pod told anything, and the
//! bad config stays quarantined.

use super::support::*;
use crate::rollout::{Command, Outcome, Phase, Reason, State};

/// A canary of commit 2 (config 2) rolled back to commit 1 (config 1) on 8 pods; with `restore`,
/// every pod has applied config 1 again before this returns.
fn rolled_back(restore: bool) -> Harness {
    let bad = release(2, 2);
    let mut h = canary_of(&bad);
    h.apply_all();
    h.verdict(failing());
    assert!(matches!(h.r.state(), State::RollingBack(_)));
    if restore {
        h.apply_all();
        assert!(h.is_idle_on(digest(1)));
    }
    h
}

fn quiet(out: &[Command]) {
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::Validate { .. } | Command::Tell { .. } | Command::StartAnalysis { .. }
        )),
        "a revert of the config every pod runs moves nothing: {out:?}"
    );
}

#[test]
fn a_revert_commit_after_the_rollback_relabels_stable_and_moves_no_pod() {
    let mut h = rolled_back(true);
    let incident = h.r.ledger().last_incident().cloned();
    let revert = release(3, 1);
    let out = h.seen(&revert);
    quiet(&out);
    assert!(emits(&out, Reason::NoConfigChange));
    assert!(!emits(&out, Reason::QuarantineBlocked));
    assert_eq!(
        h.r.state().stable().map(|s| s.commit().to_string()),
        Some(revert.commit().to_string()),
        "the revert commit is the stable revision's name now"
    );
    assert!(h.is_idle_on(digest(1)));
    assert_eq!(h.on(digest(1)), 8);
    assert_eq!(
        h.r.ledger()
            .history()
            .last()
            .map(|e| (e.revision.clone(), e.outcome)),
        Some((revert.id(), Outcome::Relabelled))
    );
    assert!(
        h.r.ledger().blocking(&release(2, 2).id()).is_some(),
        "the bad config stays quarantined"
    );
    assert_eq!(h.r.ledger().last_incident(), incident.as_ref());
    // Polled again: nothing at all.
    let out = h.seen(&revert);
    quiet(&out);
    assert!(!emits(&out, Reason::NoConfigChange));
}

#[test]
fn a_revert_commit_seen_while_rolling_back_waits_then_relabels() {
    let mut h = rolled_back(false);
    let revert = release(3, 1);
    let out = h.seen(&revert);
    quiet(&out);
    assert!(emits(&out, Reason::Queued));
    assert_eq!(h.r.state().phase(), Phase::RollingBack);
    let out = h.apply_all();
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::Validate { .. } | Command::StartAnalysis { .. })),
        "{out:?}"
    );
    assert!(
        tells(&out).iter().all(|(d, _)| *d == digest(1)),
        "pods are only ever told the stable config: {out:?}"
    );
    assert!(emits(&out, Reason::NoConfigChange));
    assert!(h.is_idle_on(digest(1)));
    assert_eq!(
        h.r.state().stable().map(|s| s.commit().to_string()),
        Some(revert.commit().to_string())
    );
    assert!(h.r.pending().is_none());
}
