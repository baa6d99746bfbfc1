//! Issue 16's fault matrix, the controller's rows: the controller process SIGKILLed during
//! validation, mid-canary, mid-rollback or after the write-back and started again, on the rig of
//! `switchback_tests::chaos::rig` (default strategy, 8 s bake, every policy at its default).
//! Each run must finish its rollout, keep every invariant (above all: no pod told twice for one
//! decision), and print one row of the fault table (see docs/reliability.md).
//!
//! Loopback subnets taken here: 127.0.164.x to 127.0.166.x, one per test.
//! `CHAOS_REPETITIONS` (default 1) repeats each fault.

use switchback_tests::chaos::report::{FaultWindow, repetitions};
use switchback_tests::chaos::rig::{ROLLOUT_PATIENCE, Rig, did, step_of};
use switchback_tests::git_fixture::git_cli as git;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_during_validation_or_mid_canary_resumes_and_tells_each_pod_once() {
    let Some(mut b) = Rig::up(164, "", true).await else {
        return;
    };
    let mut generation = 0;
    for _ in 0..repetitions() {
        // During validation: status never shows Validating (the controller renders and validates
        // before it writes the target), so the kill lands when the controller's `nginx -t` of
        // the new bundle is seen running, or, if that was too quick to catch, at the first
        // status naming the target (the row says which).
        let v = b.commit_good();
        let caught = b.wait_validating(&v).await;
        let window = FaultWindow::open(&b.c).await;
        generation += 1;
        let phase = b.kill_controller(generation).await;
        let phase = if caught {
            "while its `nginx -t` ran".to_string()
        } else {
            format!("`nginx -t` not caught; status phase {phase}")
        };
        b.assert_promoted_row("controller SIGKILL during validation", phase, &v, window)
            .await;

        // Mid-canary.
        let v = b.commit_good();
        let at = b.wait_phase(&v, &["Canary"]).await;
        let window = FaultWindow::open(&b.c).await;
        generation += 1;
        let phase = b.kill_controller(generation).await;
        b.assert_promoted_row(
            "controller SIGKILL mid-canary",
            format!("canary step {} (phase {phase} at the kill)", step_of(&at)),
            &v,
            window,
        )
        .await;
    }
    b.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_rollback_or_mid_write_back_finishes_the_rollback() {
    let Some(mut b) = Rig::up(165, "    writeBack:\n      mode: Branch\n", true).await else {
        return;
    };
    let mut generation = 0;
    for _ in 0..repetitions() {
        // Mid-rollback: the kill lands as soon as status says RollingBack.
        let bad = b.commit_bad();
        b.wait_phase(&bad, &["RollingBack"]).await;
        let window = FaultWindow::open(&b.c).await;
        generation += 1;
        let phase = b.kill_controller(generation).await;
        b.wait_rolled_back(&bad).await;
        let row = b
            .row(
                "controller SIGKILL mid-rollback",
                format!("status phase {phase} at the kill"),
                did(&b.c, &bad).await,
                window,
            )
            .await;
        row.print_and_assert();

        // Mid-write-back: the kill lands as soon as status names the incident, before it says
        // what became of the revert.
        let bad = b.commit_bad();
        b.witness
            .wait_status(ROLLOUT_PATIENCE, |s| {
                s["lastIncident"]["commit"] == bad.as_str()
            })
            .await;
        let window = FaultWindow::open(&b.c).await;
        generation += 1;
        let revert_before = b.witness.status()["lastIncident"]["revert"]["result"].clone();
        let phase = b.kill_controller(generation).await;
        b.wait_rolled_back(&bad).await;
        let revert =
            b.c.wait_for_within(
                "proxyrollout/edge",
                "{.status.lastIncident.revert.result}",
                ROLLOUT_PATIENCE,
                |r| !r.is_empty(),
            )
            .await;
        let branch = format!("refs/heads/switchback/revert-{}", &bad[..12]);
        let pushed = git(
            &b.c.tmp.path().join("origin.git"),
            &[
                "for-each-ref",
                "--format=%(refname)",
                "refs/heads/switchback/",
            ],
        );
        let row = b
            .row(
                "controller SIGKILL mid-write-back",
                format!("phase {phase}, revert {revert_before} at the kill"),
                format!(
                    "{}; revert {revert}; branch {}",
                    did(&b.c, &bad).await,
                    if pushed.contains(&branch) {
                        "pushed once"
                    } else {
                        "missing"
                    }
                ),
                window,
            )
            .await;
        row.print_and_assert();
        assert_eq!(revert, "Pushed", "the revert is pushed after the restart");
        assert!(pushed.contains(&branch), "{pushed}");
    }
    b.down().await;
}

/// The kill lands after the canary pod's tell, mostly before the controller wrote the Canary
/// checkpoint to status: the new controller resumes from the Idle checkpoint, which knows
/// nothing of that tell. It must not tell the pod the same digest again (the tell is skipped
/// when the pod's annotations already say it), and it must not wait an apply timeout for the
/// pod it believes settled on stable (it strayed, and is told again at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_right_after_telling_the_canary_pod_resumes_the_canary() {
    let Some(mut b) = Rig::up(166, "", true).await else {
        return;
    };
    let mut generation = 0;
    for _ in 0..repetitions() {
        // The canary pod's tell.
        let (v, told) = b.commit_good_and_wait_tell().await;
        // Killed first, the window opened after: opening it takes a moment the controller
        // would use to nudge the pod.
        generation += 1;
        let phase = b.kill_controller(generation).await;
        let window = FaultWindow::open(&b.c).await;
        b.assert_promoted_row(
            "controller SIGKILL right after telling the canary pod",
            format!(
                "on the first tell of the target ({}), status phase {phase}",
                told.pod
            ),
            &v,
            window,
        )
        .await;
    }
    b.down().await;
}
