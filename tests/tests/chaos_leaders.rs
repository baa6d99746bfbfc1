//! Issue 16's fault matrix, the row "two controllers both believing they lead": two
//! `switchback controller --leader-elect` processes (default Lease timings: 15 s duration, 10 s
//! renew deadline), the rig of `switchback_tests::chaos::rig` (default strategy, 8 s bake, every
//! policy at its default). Replica A leads and starts a canary; it is SIGSTOPped until B has
//! taken the Lease and acted (moved the canary on, or rolled a bad commit back), then SIGCONTed.
//! A wakes with every timer due at once and its elector not yet run: it must write nothing (no
//! tell, status, checkpoint, Event or write-back) once awake; only its Lease reads may go out.
//! A's requests are seen through an [`ApiTap`] in front of it, since both replicas share the
//! server's kubeconfig.
//!
//! Loopback subnets taken here: 127.0.184.x and 127.0.185.x, one per test.
//! `CHAOS_REPETITIONS` (default 1) repeats each fault.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use switchback_tests::chaos::api_tap::ApiTap;
use switchback_tests::chaos::invariants::Outcome;
use switchback_tests::chaos::report::{FaultWindow, repetitions};
use switchback_tests::chaos::rig::{PODS, ROLLOUT_PATIENCE, Rig, apply_edge, did, step_of};
use switchback_tests::chaos::witness::Witness;
use switchback_tests::operator_fixture::Cluster;
use tokio::process::Child;

const LEASE: &str = "switchback-controller";

/// The two replicas: A (tapped, the one paused) and B.
struct Replicas {
    a: Child,
    b: Child,
    tap: ApiTap,
}

fn replica(c: &Cluster, identity: &str, kubeconfig: Option<&std::path::Path>) -> Child {
    let mut command = c.controller_command(identity);
    command
        .args(["--leader-elect", "--lease-identity", identity])
        .args(["--lease-namespace", "edge"]);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    command
        .spawn()
        .expect("spawn switchback controller (cargo build --bin switchback first)")
}

async fn holder(client: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "edge");
    api.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

async fn wait_holder(client: &kube::Client, who: &str) {
    let deadline = tokio::time::Instant::now() + ROLLOUT_PATIENCE;
    while holder(client).await.as_deref() != Some(who) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} never took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rig with two electing replicas, A leading (started first and holding the Lease before B
/// starts).
async fn up(subnet: u8, rollback: &str) -> Option<(Rig, Replicas)> {
    let c = Cluster::up(subnet, &PODS).await?;
    let witness = Witness::start(&c.k.server);
    apply_edge(&c, rollback).await;
    let tap = ApiTap::start(&c.k.server, c.tmp.path(), "replica-a").await;
    let a = replica(&c, "replica-a", Some(tap.kubeconfig()));
    let client = c.k.server.client().await;
    wait_holder(&client, "replica-a").await;
    let b = replica(&c, "replica-b", None);
    let rig = Rig::started(c, witness, None, None).await;
    Some((rig, Replicas { a, b, tap }))
}

fn signal(child: &Child, sig: Signal) {
    let pid = child.id().expect("replica A runs");
    kill(Pid::from_raw(i32::try_from(pid).expect("a pid")), sig).expect("signal replica A");
}

/// What A sent after it woke, besides its Lease reads and writes: must be nothing.
fn silent_after(tap: &ApiTap, woke: Instant) -> Outcome {
    let writes: Vec<String> = tap
        .sent_after(woke)
        .into_iter()
        .filter(|s| s.is_write() && !s.is_lease())
        .map(|s| format!("A wrote {} {} after waking", s.method, s.path))
        .collect();
    if writes.is_empty() {
        Ok(())
    } else {
        Err(writes)
    }
}

/// Waits until A, awake, has read the Lease (its elector ran and found B holding it): every
/// write a stale worker would make on waking is due by then.
async fn wait_a_saw_the_lease(tap: &ApiTap, woke: Instant) {
    let deadline = tokio::time::Instant::now() + ROLLOUT_PATIENCE;
    while !tap.sent_after(woke).iter().any(|s| s.is_lease()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica A never read the Lease after waking"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn down(rig: Rig, mut r: Replicas) {
    for child in [&mut r.a, &mut r.b] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    rig.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_wakes_and_the_canary_is_promoted() {
    let Some((mut rig, r)) = up(184, "").await else {
        return;
    };
    let client = rig.c.k.server.client().await;
    let (paused, successor) = ("replica-a", "replica-b");
    for _ in 0..repetitions() {
        // Only A is tapped: it leads at the start of every run.
        wait_holder(&client, paused).await;
        let v = rig.commit_good();
        let at = rig.wait_phase(&v, &["Canary"]).await;
        let window = FaultWindow::open(&rig.c).await;
        signal(&r.a, Signal::SIGSTOP);
        let paused_at = Instant::now();
        wait_holder(&client, successor).await;
        // B acted: a status of its own past the step A was paused at (a later step, or done).
        let step = step_of(&at).to_string();
        let number = |s: &str| s.split('/').next().and_then(|n| n.parse::<u32>().ok());
        rig.witness
            .wait_status(ROLLOUT_PATIENCE, |s| {
                s["stable"]["commit"] == v.as_str()
                    || (s["target"]["commit"] == v.as_str() && number(step_of(s)) > number(&step))
            })
            .await;
        let moved = step_of(&rig.witness.status()).to_string();
        let woke = Instant::now();
        signal(&r.a, Signal::SIGCONT);
        wait_a_saw_the_lease(&r.tap, woke).await;
        rig.wait_promoted(&v).await;
        let mut row = rig
            .row(
                "two leaders: leader SIGSTOPped mid-canary, woken after its Lease expired",
                format!(
                    "canary step {step}, paused {:.0} s; {successor} took over and moved to step {moved}",
                    woke.duration_since(paused_at).as_secs_f64()
                ),
                format!("{}; {paused} wrote nothing once awake", did(&rig.c, &v).await),
                window,
            )
            .await;
        row.invariants
            .push(("stale-leader-silent", silent_after(&r.tap, woke)));
        row.print_and_assert();
        // The next run needs A leading again: B is paused until A took the Lease back.
        if repetitions() > 1 {
            signal(&r.b, Signal::SIGSTOP);
            wait_holder(&client, paused).await;
            signal(&r.b, Signal::SIGCONT);
        }
    }
    down(rig, r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_does_not_retell_a_bad_commit_its_successor_rolled_back() {
    let Some((mut rig, r)) = up(185, "    writeBack:\n      mode: Branch\n").await else {
        return;
    };
    let client = rig.c.k.server.client().await;
    // One run: with the tap on A only, the roles are fixed.
    let (bad, told) = rig.commit_bad_and_wait_tell().await;
    let window = FaultWindow::open(&rig.c).await;
    signal(&r.a, Signal::SIGSTOP);
    let paused_at = Instant::now();
    wait_holder(&client, "replica-b").await;
    rig.wait_rolled_back(&bad).await;
    let revert = rig
        .c
        .wait_for_within(
            "proxyrollout/edge",
            "{.status.lastIncident.revert.result}",
            ROLLOUT_PATIENCE,
            |r| !r.is_empty(),
        )
        .await;
    let woke = Instant::now();
    signal(&r.a, Signal::SIGCONT);
    wait_a_saw_the_lease(&r.tap, woke).await;
    // Settled again (A's wake-up changed nothing, or B undid it).
    rig.wait_rolled_back(&bad).await;
    let retold: Vec<String> = rig
        .witness
        .tells()
        .into_iter()
        .filter(|t| t.at > woke && t.digest == told.digest)
        .map(|t| format!("{} told the bad {} again after A woke", t.pod, t.digest))
        .collect();
    let mut row = rig
        .row(
            "two leaders: leader SIGSTOPped on a bad canary, woken after its successor rolled back",
            format!(
                "on the first tell of the bad target ({}), paused {:.0} s",
                told.pod,
                woke.duration_since(paused_at).as_secs_f64()
            ),
            format!(
                "{}; revert {revert} by replica-b; replica-a wrote nothing once awake",
                did(&rig.c, &bad).await
            ),
            window,
        )
        .await;
    row.invariants
        .push(("stale-leader-silent", silent_after(&r.tap, woke)));
    row.invariants.push((
        "bad-not-retold",
        if retold.is_empty() {
            Ok(())
        } else {
            Err(retold)
        },
    ));
    row.print_and_assert();
    down(rig, r).await;
}
