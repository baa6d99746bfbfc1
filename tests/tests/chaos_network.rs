//! Issue 16's fault matrix, the network's rows: the canary pod's agent port blackholed (every
//! packet to it dropped by the kernel, so connections time out rather than being refused),
//! once mid-analysis and once before the canary pod is told the target. Missing data must never
//! promote, and a tell the agent could not be nudged about is not the commit's failure: the
//! agent follows its Pod's annotation through the API server, which the blackhole leaves alone.
//!
//! Needs `nft` and the right to change the ruleset (`make tools` installs nftables; the suite
//! runs as root); without them each test says why and skips.
//!
//! Loopback subnets taken here: 127.0.188.x and 127.0.189.x, one per test.
//! `CHAOS_REPETITIONS` (default 1) repeats each fault.

use std::net::SocketAddr;
use std::time::Duration;

use switchback_tests::chaos::blackhole::Blackhole;
use switchback_tests::chaos::report::{FaultWindow, repetitions};
use switchback_tests::chaos::rig::{Rig, did, step_of};
use switchback_tests::kube::kubelet::AGENT_PORT;

/// How long the port stays blackholed: past the 8 s bake, the agent client's connect timeout
/// (5 s) and a request timeout (15 s), so the step's verdict falls due while nothing answers.
const OUTAGE: Duration = Duration::from_secs(25);

/// The canary pod's agent address.
async fn agent_of(b: &Rig, pod: &str) -> SocketAddr {
    let ip = b.c.jsonpath(&format!("pod/{pod}"), "{.status.podIP}").await;
    SocketAddr::new(ip.parse().expect("a pod IP"), AGENT_PORT)
}

/// Blackholes `pod`'s agent, or says why it cannot and returns `None`.
async fn blackhole(b: &Rig, pod: &str, name: &str) -> Option<Blackhole> {
    match Blackhole::drop_to(agent_of(b, pod).await, name) {
        Ok(hole) => Some(hole),
        Err(why) => {
            eprintln!("SKIPPED: cannot blackhole a port here: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_agent_blackholed_mid_analysis_holds_the_step_and_promotes_once_reachable() {
    let Some(mut b) = Rig::up(188, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        let (v, tell, at) = b.commit_good_to_canary().await;
        let window = FaultWindow::open(&b.c).await;
        let Some(hole) = blackhole(&b, &tell.pod, "188").await else {
            return;
        };
        let last = b.assert_held_for(OUTAGE, &v, &tell.digest).await;
        drop(hole);
        b.wait_promoted(&v).await;
        let row = b
            .row(
                "canary agent port blackholed mid-analysis",
                format!(
                    "canary step {} ({}), {} s",
                    step_of(&at),
                    tell.pod,
                    OUTAGE.as_secs()
                ),
                format!(
                    "held: phase {} verdict {} while blackholed; then {}",
                    last["phase"],
                    last["analysis"]["verdict"],
                    did(&b.c, &v).await
                ),
                window,
            )
            .await;
        row.print_and_assert();
    }
    b.down().await;
}

/// The nudge cannot connect (5 s connect timeout), but the tell is in the Pod's annotation and
/// the agent applies it from its Pod watch; before `ApplyResult::Unconfirmed` the timed-out
/// nudge counted as the canary's failed apply and the good commit was rolled back and
/// quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_agent_blackholed_before_its_tell_is_not_a_failed_apply() {
    let Some(mut b) = Rig::up(189, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        // The first pod by name is the first canary (the machine picks in name order).
        let pod = "edge-0";
        let window = FaultWindow::open(&b.c).await;
        let Some(hole) = blackhole(&b, pod, "189").await else {
            return;
        };
        let (v, tell) = b.commit_good_and_wait_tell().await;
        assert_eq!(tell.pod, pod, "the canary is the first pod by name");
        let last = b.assert_held_for(OUTAGE, &v, &tell.digest).await;
        drop(hole);
        b.wait_promoted(&v).await;
        let row = b
            .row(
                "canary agent port blackholed before its tell",
                format!("{pod} from before the commit, {} s", OUTAGE.as_secs()),
                format!(
                    "told through its annotation; phase {} verdict {} while blackholed; then {}",
                    last["phase"],
                    last["analysis"]["verdict"],
                    did(&b.c, &v).await
                ),
                window,
            )
            .await;
        row.print_and_assert();
    }
    b.down().await;
}
