//! Issue 16's fault matrix, the pods' rows: on the rig of `switchback_tests::chaos::rig`
//! (three real nginx pods, default strategy, 8 s bake, every policy at its default), the
//! canary pod's agent frozen mid-analysis, its agent killed mid-apply, its nginx master killed,
//! the canary pod deleted and replaced, a pod added and one removed during a step, and the
//! target's bundle ConfigMap deleted or forged by hand. Each run must finish its rollout, keep
//! every invariant, and print one row of the fault table (see docs/reliability.md).
//!
//! The process kubelet runs each pod's agent as a task of the test process, not as a process
//! of its own, so "SIGSTOP the agent" is played by a relay in front of every agent's API that
//! stops answering (connections accepted, never served, as the kernel treats a stopped
//! process's socket), and "SIGKILL the agent" by aborting its task where it stands
//! ([`ProcessKubelet::kill_agent`](switchback_tests::kube::kubelet::ProcessKubelet::kill_agent)).
//!
//! Loopback subnets taken here: 127.0.167.x to 127.0.173.x, one per test.
//! `CHAOS_REPETITIONS` (default 1) repeats each fault.

use std::time::Duration;

use switchback_tests::chaos::relay::Relays;
use switchback_tests::chaos::report::{FaultWindow, repetitions};
use switchback_tests::chaos::rig::{PODS, ROLLOUT_PATIENCE, Rig, did, nginx_master, step_of};

/// How long the canary's agent stays frozen: past the 8 s bake and the controller's reads of
/// it, so the step's verdict falls due while nothing can be read.
const FREEZE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_agent_frozen_mid_analysis_holds_the_step_and_promotes_once_it_answers() {
    let Some(mut b) = Rig::up(167, "", false).await else {
        return;
    };
    let relays = Relays::start(&b.c, &PODS).await;
    b.c.k
        .ok(&[
            "patch",
            "-n",
            "edge",
            "proxyrollout/edge",
            "--type",
            "merge",
            "-p",
            &format!(
                r#"{{"spec":{{"target":{{"agentPort":{}}}}}}}"#,
                Relays::PORT
            ),
        ])
        .await;
    for _ in 0..repetitions() {
        let (v, tell, at) = b.commit_good_to_canary().await;
        let window = FaultWindow::open(&b.c).await;
        relays.freeze(&tell.pod, true);
        let last = b.assert_held_for(FREEZE, &v, &tell.digest).await;
        relays.freeze(&tell.pod, false);
        b.wait_promoted(&v).await;
        let row = b
            .row(
                "canary agent frozen (SIGSTOP) mid-analysis",
                format!(
                    "canary step {} ({}), frozen {} s",
                    step_of(&at),
                    tell.pod,
                    FREEZE.as_secs()
                ),
                format!(
                    "held: phase {} verdict {} while frozen; then {}",
                    last["phase"],
                    last["analysis"]["verdict"],
                    did(&b.c, &v).await
                ),
                window,
            )
            .await;
        row.print_and_assert();
    }
    drop(relays);
    b.down().await;
}

/// The kill lands before the nudge connects, while it is in flight (`POST /v1/nudge` waits for
/// the apply's outcome), or after it was answered. In flight, the broken connection used to be
/// taken as the pod's failed apply and, with `maxApplyFailures: 0`, the good commit was rolled
/// back and quarantined; now a nudge without an answer leaves the durable tell (the pod's
/// annotation) to the restarted agent, and the engine learns the apply from the pod's reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_apply_is_restarted_and_the_commit_promotes() {
    let Some(mut b) = Rig::up(168, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        // The agent, right after the canary pod's tell, restarted as a container would be.
        let (v, tell) = b.commit_good_and_wait_tell().await;
        let killed = b.c.kubelet().kill_agent("edge", &tell.pod, true).await;
        let after = tell.at.elapsed();
        assert!(killed, "{} had no agent to kill", tell.pod);
        let applied =
            b.c.jsonpath(
                &format!("pod/{}", tell.pod),
                "{.metadata.annotations.switchback\\.dev/applied-digest}",
            )
            .await;
        let window = FaultWindow::open(&b.c).await;
        b.assert_promoted_row(
            "agent SIGKILL mid-apply, restarted",
            format!(
                "{} killed {} ms after its tell ({})",
                tell.pod,
                after.as_millis(),
                if applied == tell.digest {
                    "it had reported the target applied"
                } else {
                    "before it reported the target applied"
                }
            ),
            &v,
            window,
        )
        .await;
    }
    b.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_master_killed_on_the_canary_pod_is_started_again_and_the_commit_promotes() {
    let Some(mut b) = Rig::up(173, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        // The canary pod's nginx master, once it serves the target.
        let (v, tell, at) = b.commit_good_to_canary().await;
        let master = nginx_master(&b.c, &tell.pod).expect("the canary pod's nginx master");
        let window = FaultWindow::open(&b.c).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(master),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL the nginx master");
        let restarted = wait_new_master(&b, &tell.pod, master).await;
        b.wait_promoted(&v).await;
        let row = b
            .row(
                "nginx master SIGKILL on the canary pod",
                format!("canary step {} ({})", step_of(&at), tell.pod),
                format!(
                    "{}; {}",
                    if restarted {
                        "the agent started a new master"
                    } else {
                        "NO new master"
                    },
                    did(&b.c, &v).await
                ),
                window,
            )
            .await;
        row.print_and_assert();
        assert!(restarted, "the agent did not start nginx again");
    }
    b.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_pod_replaced_and_pods_added_and_removed_mid_canary_end_on_one_digest() {
    let Some(mut b) = Rig::up(169, "", false).await else {
        return;
    };
    let mut pods: Vec<String> = PODS.iter().map(|p| p.to_string()).collect();
    for rep in 0..repetitions() {
        let (v, tell, at) = b.commit_good_to_canary().await;
        let window = FaultWindow::open(&b.c).await;
        // The canary pod deleted and replaced (a new name, a fresh state directory), as its
        // ReplicaSet would.
        let replacement = format!("r{rep}-{}", tell.pod);
        b.c.k
            .ok(&["delete", "pod", "-n", "edge", &tell.pod, "--wait=false"])
            .await;
        b.c.add_pod(&replacement).await;
        pods.retain(|p| *p != tell.pod);
        pods.push(replacement.clone());
        b.c.wait_pods_ready().await;
        // During the next step (or, if the restart sent the rollout back to a step it already
        // held, during that step again): one pod added, one pod removed.
        let step = step_of(&at).to_string();
        let during = b
            .witness
            .wait_status(ROLLOUT_PATIENCE, |s| {
                s["phase"] == "Canary" && s["analysis"]["step"].as_str() != Some(step.as_str())
                    || s["stable"]["commit"] == v.as_str()
            })
            .await;
        let added = format!("n{rep}-edge");
        let removed = pods
            .iter()
            .find(|p| **p != replacement)
            .cloned()
            .expect("a pod besides the replacement");
        b.c.add_pod(&added).await;
        b.c.k
            .ok(&["delete", "pod", "-n", "edge", &removed, "--wait=false"])
            .await;
        pods.retain(|p| *p != removed);
        pods.push(added.clone());
        b.c.wait_pods_ready().await;
        b.wait_promoted(&v).await;
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let row = b
            .row_with_pods(
                &names,
                "canary pod replaced; a pod added and one removed during a step",
                format!(
                    "{} deleted at step {step}, {replacement} created; {added} added, {removed} removed at {} {}",
                    tell.pod, during["phase"], during["analysis"]["step"]
                ),
                did(&b.c, &v).await,
                window,
            )
            .await;
        row.print_and_assert();
    }
    b.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_configmap_deleted_mid_canary_is_stored_again_and_the_commit_promotes() {
    let Some(mut b) = Rig::up(170, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        // Deleted once the canary serves it: the other pods have yet to fetch it.
        let (v, tell, at) = b.commit_good_to_canary().await;
        let window = FaultWindow::open(&b.c).await;
        let map = bundle_map(&tell.digest);
        b.c.k.ok(&["delete", "configmap", "-n", "edge", &map]).await;
        b.assert_promoted_row(
            "bundle ConfigMap deleted by hand mid-canary",
            format!("{map} at canary step {}", step_of(&at)),
            &v,
            window,
        )
        .await;
    }
    b.down().await;
}

/// The forged ConfigMap is refused by the agent (`Verify`: it does not hash to its digest) and
/// never served; the controller, whose copy of the bundle is the validated one, stores it again
/// and the good commit promotes (it used to be rolled back and quarantined: `KubeFleet::store`
/// took `409 AlreadyExists` as "stored").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_configmap_forged_mid_canary_is_never_served_and_the_commit_promotes() {
    let Some(mut b) = Rig::up(171, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        // Forged: deleted and created again with other content under the same name and labels
        // (an immutable ConfigMap cannot be edited in place on a real cluster).
        let (v, tell, at) = b.commit_good_to_canary().await;
        let window = FaultWindow::open(&b.c).await;
        let map = bundle_map(&tell.digest);
        forge(&b, &map).await;
        // Promoted (wanted) or rolled back (what happens today): the row says which.
        b.c.wait_for_within(
            "proxyrollout/edge",
            "{.status.phase} {.status.stable.commit} {.status.quarantined[*].commit}",
            ROLLOUT_PATIENCE,
            |s| s.starts_with("Idle") && s.contains(&v),
        )
        .await;
        b.wait_applied().await;
        let promoted =
            b.c.jsonpath("proxyrollout/edge", "{.status.stable.commit}")
                .await
                == v;
        let served: Vec<String> =
            b.c.k
                .json(&["get", "pods", "-n", "edge", "-l", "app=edge"])
                .await["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .filter(|p| live_mentions(&b, p, FORGED))
                .collect();
        let row = b
            .row(
                "bundle ConfigMap forged by hand mid-canary",
                format!("{map} at canary step {}", step_of(&at)),
                format!(
                    "{}; forged bundle live on {}",
                    did(&b.c, &v).await,
                    if served.is_empty() {
                        "no pod".to_string()
                    } else {
                        served.join(", ")
                    }
                ),
                window,
            )
            .await;
        row.print_and_assert();
        assert!(served.is_empty(), "the forged bundle is live on {served:?}");
        assert!(
            promoted,
            "the good commit was rolled back for a forged ConfigMap"
        );
    }
    b.down().await;
}

/// Every nginx master stopped: the canary pod's reload sees no new worker generation and
/// fails; the commit is rolled back and quarantined, and once the masters wake every pod must
/// answer with the stable config. The pending SIGHUP reads `current` when the master wakes, so
/// nothing may put the refused version back there: before `agent::tells`, the Pod watch and the
/// controller's nudge each applied the target (two reload timeouts), and the second attempt
/// swapped it in again while the rollback was under way, so a master woken then loaded the
/// quarantined target (one run in two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_on_the_canary_pod_rolls_back_and_every_pod_serves_stable() {
    let Some(mut b) = Rig::up(172, "", false).await else {
        return;
    };
    for _ in 0..repetitions() {
        // Every pod's nginx master stopped before the commit: the canary pod's agent tests the
        // bundle and swaps it in, but its SIGHUP finds a master that forks no new workers, so
        // its reload fails (the stopped master's workers go on serving the old config). Only
        // the canary pod is asked to reload before the verdict. Woken once the commit is
        // quarantined, the masters take the pending SIGHUP and read `current` again.
        let before = bodies(&b).await;
        let masters: Vec<i32> = PODS
            .iter()
            .map(|p| nginx_master(&b.c, p).expect("an nginx master"))
            .collect();
        let stable = stable_digest(&b).await;
        let from = b.witness.tells().len();
        let window = FaultWindow::open(&b.c).await;
        signal_all(&masters, nix::sys::signal::Signal::SIGSTOP);
        let v = b.commit_good();
        let tell = b.wait_first_tell(from, &stable, &v).await;
        let verdict = b
            .witness
            .wait_status(ROLLOUT_PATIENCE, |s| {
                s["stable"]["commit"] == v.as_str()
                    || s["quarantined"]
                        .as_array()
                        .is_some_and(|q| q.iter().any(|e| e["commit"] == v.as_str()))
            })
            .await;
        signal_all(&masters, nix::sys::signal::Signal::SIGCONT);
        b.wait_rolled_back(&v).await;
        let after = bodies(&b).await;
        let row = b
            .row(
                "`nginx -s reload` failing on the canary pod",
                format!(
                    "every nginx master SIGSTOPped, {} told the target",
                    tell.pod
                ),
                format!(
                    "{}; {}",
                    did(&b.c, &v).await,
                    if after == before {
                        "every pod serves stable"
                    } else {
                        "a pod serves another config"
                    }
                ),
                window,
            )
            .await;
        row.print_and_assert();
        let reason = verdict["lastIncident"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains("Reload"),
            "rolled back for the reload: {verdict}"
        );
        assert_eq!(
            after, before,
            "what each pod serves after the failed reload"
        );
    }
    b.down().await;
}

/// Sends `signal` to every pid.
fn signal_all(pids: &[i32], signal: nix::sys::signal::Signal) {
    for pid in pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal).expect("signal nginx");
    }
}

/// What each pod's nginx answers on `/`, in pod order.
async fn bodies(b: &Rig) -> Vec<String> {
    let mut out = Vec::new();
    for pod in PODS {
        let ip = b.c.jsonpath(&format!("pod/{pod}"), "{.status.podIP}").await;
        let url = format!(
            "http://{ip}:{}/",
            switchback_tests::kube::kubelet::NGINX_PORT
        );
        let body = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        };
        out.push(format!("{pod}: {}", body.trim()));
    }
    out
}

/// What a forged bundle serves instead.
const FORGED: &str = "forged by hand";

/// Replaces ConfigMap `map`'s files with ones answering [`FORGED`], keeping its name, labels
/// and manifest.
async fn forge(b: &Rig, map: &str) {
    let mut object = b.c.k.json(&["get", "configmap", "-n", "edge", map]).await;
    let forged = b.c.site(&format!("return 200 \"{FORGED}\\n\";"));
    let data = object["data"].as_object_mut().expect("the bundle's data");
    for (key, value) in data.iter_mut() {
        if key != "manifest" {
            *value = serde_json::Value::String(forged.clone());
        }
    }
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove(field);
        }
    }
    let file = b.c.k.file("forged.json", &object.to_string());
    b.c.k.ok(&["delete", "configmap", "-n", "edge", map]).await;
    b.c.k.ok(&["create", "-f", &file]).await;
}

/// Whether any file of `pod`'s live config directory holds `text`.
fn live_mentions(b: &Rig, pod: &str, text: &str) -> bool {
    let live = b.c.live_config(pod);
    std::fs::read_dir(&live)
        .into_iter()
        .flatten()
        .flatten()
        .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(text)))
}

/// The name of the (single-part) bundle ConfigMap of `digest` (`sha256:<hex>`).
fn bundle_map(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("edge-{}", hex.get(..12).unwrap_or(hex))
}

async fn stable_digest(b: &Rig) -> String {
    b.c.jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await
}

/// Waits (bounded) until `pod` runs an nginx master other than `old`; false if none came.
async fn wait_new_master(b: &Rig, pod: &str, old: i32) -> bool {
    let deadline = tokio::time::Instant::now() + ROLLOUT_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if nginx_master(&b.c, pod).is_some_and(|p| p != old) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
