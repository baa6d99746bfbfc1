//! Issue 16's fault matrix, the API server's rows: a rollout of the default strategy (bake
//! shortened to 8 s, every policy at its default) on three real nginx pods
//! (`switchback_tests::chaos::rig`), with the test API server taken down, answering errors,
//! cutting its watches or answering `410 Gone` mid-canary. Each run must finish its rollout
//! (promote the good commit), keep every invariant of `switchback_tests::chaos::invariants`, and
//! print one row of the fault table (`make chaos` collects them; see docs/reliability.md).
//!
//! Loopback subnets taken here: 127.0.161.x to 127.0.163.x, one per test.
//! `CHAOS_REPETITIONS` (default 1) repeats each fault; `CHAOS_OUTAGE_SECS` (default 10, 30 in
//! `make chaos`) is how long the API server stays down.

use std::time::Duration;

use switchback_tests::chaos::report::{FaultWindow, outage, repetitions};
use switchback_tests::chaos::rig::{ROLLOUT_PATIENCE, Rig, did, step_of, wait_up};
use switchback_tests::kube::faults::ErrorSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_down_mid_canary_delays_but_does_not_break_the_rollout() {
    let Some(mut b) = Rig::up(161, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        let v = b.commit_good();
        let at = b.wait_phase(&v, &["Canary"]).await;
        let window = FaultWindow::open(&b.c).await;
        b.c.k.server.faults().down_for(outage());
        wait_up(&b.c).await;
        b.assert_promoted_row(
            &format!("API server down {} s", outage().as_secs()),
            format!("canary step {}", step_of(&at)),
            &v,
            window,
        )
        .await;
    }
    b.down().await;
}

/// One rollout carries the three error answers, one per canary step (500 at step 1, 503 at
/// step 2, 429 at step 3, 5 s each): one rollout's time instead of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_mid_canary_delay_but_do_not_break_the_rollout() {
    let Some(mut b) = Rig::up(162, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        let v = b.commit_good();
        b.wait_phase(&v, &["Canary"]).await;
        let window = FaultWindow::open(&b.c).await;
        let faults = b.c.k.server.faults();
        let mut injected = Vec::new();
        for (step, status) in [(1, 500), (2, 503), (3, 429)] {
            let prefix = format!("{step}/");
            b.witness
                .wait_status(ROLLOUT_PATIENCE, |s| {
                    s["target"]["commit"] == v.as_str()
                        && s["phase"] == "Canary"
                        && s["analysis"]["step"]
                            .as_str()
                            .is_some_and(|st| st.starts_with(&prefix))
                })
                .await;
            let before = faults.injected();
            faults.fail_for(ErrorSpec::all(status), Duration::from_secs(5));
            while faults.is_failing() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            injected.push(format!(
                "step {step}: {} answered {status}",
                faults.injected() - before
            ));
        }
        b.assert_promoted_row(
            "API server answers 500, 503, 429 for 5 s each",
            injected.join("; "),
            &v,
            window,
        )
        .await;
    }
    b.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_cut_and_resumes_gone_mid_canary_do_not_break_the_rollout() {
    let Some(mut b) = Rig::up(163, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        let v = b.commit_good();
        let at = b.wait_phase(&v, &["Canary"]).await;
        let window = FaultWindow::open(&b.c).await;
        let faults = b.c.k.server.faults();
        let before = faults.injected();
        faults.gone_on_next_resumes(20);
        faults.cut_watches();
        b.wait_promoted(&v).await;
        let gone = faults.injected() - before;
        faults.clear();
        let row = b
            .row(
                "watch streams cut, resumes answered 410 Gone",
                format!("canary step {}; {gone} resumes answered 410", step_of(&at)),
                did(&b.c, &v).await,
                window,
            )
            .await;
        row.print_and_assert();
    }
    b.down().await;
}
