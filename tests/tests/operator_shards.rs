//! Three `switchback controller --leader-elect --shards 3` processes against the test API server,
//! real pods (the process kubelet) and a real git repository, with three ProxyRollouts: one in the
//! shard its name hashes to, two put in the other shards by the `switchback.dev/shard` label.
//! Each shard is held by exactly one replica (one each), and every rollout is driven. Then the
//! replica holding the shard of a rollout mid-canary is SIGKILLed: another replica takes the shard
//! over, the canary resumes from the checkpoint in status (no earlier step is seen again) and is
//! promoted, and no pod is told anything twice. A second test, with the elections only: SIGTERM
//! releases a replica's shard, a survivor takes it, and `switchback_shards_held` follows. A third,
//! with an in-process controller whose held set the test flips: a lost shard's worker stops at
//! once and a regained shard's rollout resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use switchback::operator::controller::ControllerOptions;
use switchback::operator::shard::{Shards, assign};
use switchback_tests::bin::switchback_bin;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::kube::KubeServer;
use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::{Cluster, PATIENCE};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const SHARDS: u32 = 3;
const REPLICAS: [&str; 3] = ["replica-a", "replica-b", "replica-c"];

fn replica(c: &Cluster, identity: &str) -> Child {
    c.controller_command(identity)
        .args(["--leader-elect", "--shards", "3"])
        .args(["--lease-identity", identity, "--lease-namespace", "edge"])
        // Its own Pod, as the downward API gives it: a replica holding a shard labels it.
        .env("POD_NAME", identity)
        .env("POD_NAMESPACE", "replicas")
        .args(["--webhook-addr", "127.0.131.200:0"])
        .spawn()
        .expect("spawn switchback controller")
}

/// The holder of each shard's Lease (`None`: no Lease yet or nobody holds it).
async fn holders(client: &kube::Client) -> Vec<Option<String>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "edge");
    let mut out = Vec::new();
    for k in 0..SHARDS {
        let holder = api
            .get_opt(&format!("switchback-controller-shard-{k}"))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty());
        out.push(holder);
    }
    out
}

/// Waits until `done` holds of the shard holders; fails with the last ones after `patience`.
async fn wait_holders(
    client: &kube::Client,
    patience: Duration,
    done: impl Fn(&[Option<String>]) -> bool,
) -> Vec<Option<String>> {
    let deadline = Instant::now() + patience;
    loop {
        let now = holders(client).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "shard holders stuck at {now:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A proxy pod of the rollout `app` (the kubelet runs it as nginx + agent).
async fn add_pod(c: &Cluster, name: &str, app: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: edge\n  labels:\n    app: {app}\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n"
    );
    let file = c.k.file(&format!("{name}.yaml"), &text);
    c.k.ok(&["apply", "-f", &file]).await;
}

/// A ProxyRollout `name` in shard `shard` by label, following the branch `others`.
async fn labelled_rollout(c: &Cluster, name: &str, shard: u32) {
    let text = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: {name}\n  namespace: edge\n  labels:\n    switchback.dev/shard: \"{shard}\"\nspec:\n  source:\n    url: file://{}\n    ref: others\n    interval: 1s\n  target:\n    selector:\n      app: {name}\n  strategy:\n    bake: 8s\n",
        c.repo.display()
    );
    let file = c.k.file(&format!("{name}-rollout.yaml"), &text);
    c.k.ok(&["apply", "-f", &file]).await;
}

async fn wait_ready(c: &Cluster, what: &str) {
    c.k.ok(&[
        "wait",
        "-n",
        "edge",
        "--for=condition=Ready",
        what,
        "--timeout=60s",
    ])
    .await;
}

/// Per pod, every distinct desired digest it was told, in order, from the API server's own
/// change stream: a pod told one decision twice would show the same digest in two runs.
type Told = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

fn record_told(c: &Cluster) -> (Told, tokio::task::JoinHandle<()>) {
    let told: Told = Arc::default();
    let (_, mut changes) = c.k.server.list_and_subscribe("", "pods");
    let seen = Arc::clone(&told);
    let recorder = tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            let Some(d) =
                change.object["metadata"]["annotations"]["switchback.dev/desired-digest"].as_str()
            else {
                continue;
            };
            if let Ok(mut told) = seen.lock() {
                let runs = told.entry(change.key.name.clone()).or_default();
                if runs.last().map(String::as_str) != Some(d) {
                    runs.push(d.to_string());
                }
            }
        }
    });
    (told, recorder)
}

/// `k` of a step `k/n`.
fn step_index(step: &str) -> u32 {
    step.split('/')
        .next()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("a step like 2/4, got {step:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_shard_is_taken_over_and_its_canary_resumed() {
    let Some(c) = Cluster::up(131, &["edge-0", "edge-1", "edge-2"]).await else {
        return;
    };
    // `edge` goes where its name hashes; the other two are labelled into the other shards.
    let edge_shard = assign("edge", "edge", None, SHARDS).shard;
    let others: Vec<u32> = (0..SHARDS).filter(|k| *k != edge_shard).collect();
    let (told, recorder) = record_told(&c);
    let trail = c.follow_status();

    git(&c.repo, &["branch", "others"]);
    for (name, shard) in [("api", others[0]), ("shop", others[1])] {
        add_pod(&c, &format!("{name}-0"), name).await;
        labelled_rollout(&c, name, shard).await;
    }
    // The default strategy, bake shortened from 3m to 8s (see operator_failover.rs).
    c.apply_rollout("    bake: 8s\n").await;
    c.k.ok(&["create", "namespace", "replicas"]).await;
    for name in REPLICAS {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: replicas\nspec:\n  nodeName: elsewhere\n  containers:\n  - name: controller\n    image: switchback\n"
        );
        let file = c.k.file(&format!("{name}.yaml"), &pod);
        c.k.ok(&["apply", "-f", &file]).await;
    }
    let mut replicas: BTreeMap<String, Child> = REPLICAS
        .iter()
        .map(|id| (id.to_string(), replica(&c, id)))
        .collect();
    let client = c.k.server.client().await;

    // One shard each: three replicas started together share three shards fairly.
    let held = wait_holders(&client, PATIENCE, |h| {
        let set: BTreeSet<_> = h.iter().flatten().collect();
        h.iter().all(Option::is_some) && set.len() == 3
    })
    .await;
    // Every rollout is driven by its shard's holder.
    for what in ["proxyrollout/api", "proxyrollout/shop", "proxyrollout/edge"] {
        wait_ready(&c, what).await;
    }
    c.wait_pods_ready().await;
    let labelled =
        c.k.ok(&[
            "get",
            "pods",
            "-n",
            "replicas",
            "-l",
            "switchback.dev/leader=true",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await;
    assert_eq!(
        labelled.split_whitespace().count(),
        3,
        "every replica holding a shard is labelled for the webhook Service: {labelled}"
    );
    let v0 = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;

    let users = c.start_traffic(PER_POD_RPS).await;
    users.wait_flowing(3, 150, PATIENCE).await;
    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    // Mid-canary, past the first step, so that a canary restarted from scratch (step 1 again)
    // would show.
    let step = c
        .wait_for_within(
            "proxyrollout/edge",
            "{.status.analysis.step}",
            Duration::from_secs(120),
            |s| !s.is_empty() && step_index(s) >= 2,
        )
        .await;
    let killed = held[edge_shard as usize]
        .clone()
        .expect("edge's shard held");
    let seen_before_kill = trail.statuses().len();
    let mut child = replicas.remove(&killed).expect("the holder is one of ours");
    child
        .start_kill()
        .expect("SIGKILL the holder of edge's shard");
    let _ = child.wait().await;

    // Lease expiry, the survivor's fair-share delay, then the remaining steps of 8 s.
    c.wait_for_within(
        "proxyrollout/edge",
        "{.status.stable.commit}",
        Duration::from_secs(240),
        |s| s == v1,
    )
    .await;
    let after = holders(&client).await;
    let new_holder = after[edge_shard as usize]
        .clone()
        .expect("edge's shard held again");
    assert_ne!(new_holder, killed, "a survivor holds edge's shard");
    assert!(
        after
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| replicas.contains_key(h))),
        "every shard is held by a live replica: {after:?}"
    );
    for (k, h) in after.iter().enumerate() {
        if k != edge_shard as usize {
            assert_eq!(h, &held[k], "shard {k} stayed with its holder");
        }
    }

    // Resumed, not restarted: no step before the one baking at the kill came back.
    let resumed: Vec<String> = trail.statuses()[seen_before_kill..]
        .iter()
        .filter_map(|s| s["analysis"]["step"].as_str().map(str::to_string))
        .collect();
    assert!(
        resumed.iter().all(|s| step_index(s) >= step_index(&step)),
        "the canary went back before step {step} after the takeover: {resumed:?}"
    );
    let v1_digest = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;
    // `edge`'s pods on the promoted commit (the others follow a branch that did not move).
    let desired =
        c.k.ok(&[
            "get",
            "pods",
            "-n",
            "edge",
            "-l",
            "app=edge",
            "-o",
            "jsonpath={.items[*].metadata.annotations.switchback\\.dev/desired-digest}",
        ])
        .await;
    assert_eq!(
        desired.split_whitespace().collect::<Vec<_>>(),
        vec![v1_digest.as_str(); 3],
        "every pod of edge told the promoted digest"
    );
    users.stop().await;
    recorder.abort();
    let told = told.lock().map(|t| t.clone()).unwrap_or_default();
    for pod in ["edge-0", "edge-1", "edge-2"] {
        assert_eq!(
            told.get(pod),
            Some(&vec![v0.clone(), v1_digest.clone()]),
            "{pod} told v0 once, then v1 once: {told:?}"
        );
    }
    for pod in ["api-0", "shop-0"] {
        assert_eq!(
            told.get(pod).map(Vec::len),
            Some(1),
            "{pod} told its stable digest once: {told:?}"
        );
    }
    drop(replicas);
    c.down().await;
}

/// A replica started for the gauge test: no pods, no rollouts, only the elections.
struct Bare {
    identity: &'static str,
    metrics: std::net::SocketAddr,
    child: Child,
}

async fn bare(server: &KubeServer, identity: &'static str, ip: &str) -> Bare {
    let metrics = tokio::net::TcpListener::bind((ip, 0))
        .await
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    let child = Command::new(switchback_bin())
        .args(["controller", "--leader-elect", "--shards", "3"])
        .args(["--lease-identity", identity, "--lease-namespace", "edge"])
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        .arg("--cache-dir")
        .arg(server.dir().join(identity))
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("SWITCHBACK_LOG", "switchback::operator::leader=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchback controller");
    Bare {
        identity,
        metrics,
        child,
    }
}

/// `switchback_shards_held` as the replica serves it.
async fn shards_held(r: &Bare) -> Option<u32> {
    let text = reqwest::get(format!("http://{}/metrics", r.metrics))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("switchback_shards_held "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_replicas_shard_and_the_gauges_follow() {
    let server = KubeServer::start().await.expect("test API server");
    let client = server.client().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let edge: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "edge"}}))
            .expect("a Namespace");
    namespaces
        .create(&kube::api::PostParams::default(), &edge)
        .await
        .expect("create namespace edge");
    let mut replicas = Vec::new();
    for (identity, ip) in REPLICAS
        .into_iter()
        .zip(["127.0.133.11", "127.0.133.12", "127.0.133.13"])
    {
        replicas.push(bare(&server, identity, ip).await);
    }
    let held = wait_holders(&client, PATIENCE, |h| {
        let set: BTreeSet<_> = h.iter().flatten().collect();
        h.iter().all(Option::is_some) && set.len() == 3
    })
    .await;
    // The metric says what the Leases say: one shard each.
    let deadline = Instant::now() + PATIENCE;
    for r in &replicas {
        while shards_held(r).await != Some(1) {
            assert!(
                Instant::now() < deadline,
                "{} never reported 1 shard",
                r.identity
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut stopped = replicas.remove(0);
    let shard = held
        .iter()
        .position(|h| h.as_deref() == Some(stopped.identity))
        .expect("the stopped replica's shard");
    let pid = stopped.child.id().expect("a pid");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = stopped.child.wait().await.expect("wait for the replica");
    assert!(status.success(), "the replica exited with {status}");
    // Released on the way out (an expired Lease would still name it).
    assert_ne!(
        holders(&client).await[shard].as_deref(),
        Some(stopped.identity),
        "the stopped replica still holds shard {shard}"
    );
    let after = wait_holders(&client, PATIENCE, |h| h[shard].is_some()).await;
    let taker = after[shard].clone().expect("a new holder");
    assert_ne!(taker, stopped.identity);
    for (k, h) in after.iter().enumerate() {
        if k != shard {
            assert_eq!(h, &held[k], "shard {k} stayed with its holder");
        }
    }
    let taker = replicas
        .iter()
        .find(|r| r.identity == taker)
        .expect("a survivor took it");
    let deadline = Instant::now() + PATIENCE;
    while shards_held(taker).await != Some(2) {
        assert!(
            Instant::now() < deadline,
            "{} never reported 2 shards",
            taker.identity
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In-process controller given a held set the test flips: losing the shard mid-canary stops the
/// rollout's worker at once (no step advances and no pod is told anything while it is lost,
/// though the bake ends meanwhile), and regaining it resumes the canary from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shard_stops_its_worker_at_once_and_a_regained_one_resumes() {
    let Some(mut c) = Cluster::up(134, &["edge-0", "edge-1", "edge-2"]).await else {
        return;
    };
    let shard = assign("edge", "edge", None, SHARDS).shard;
    let (held_tx, held) = tokio::sync::watch::channel(BTreeSet::from([shard]));
    let options = ControllerOptions {
        shards: Some(Shards {
            count: SHARDS,
            held,
        }),
        ..c.controller_options()
    };
    let (told, recorder) = record_told(&c);
    c.apply_rollout("    bake: 8s\n").await;
    c.start_controller_with(options).await;
    c.wait_condition("Ready").await;
    let v0 = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;
    let users = c.start_traffic(PER_POD_RPS).await;
    users.wait_flowing(3, 150, PATIENCE).await;
    let trail = c.follow_status();
    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    let step = c
        .wait_for("proxyrollout/edge", "{.status.analysis.step}", |s| {
            !s.is_empty()
        })
        .await;

    held_tx.send_replace(BTreeSet::new());
    let lost_at = trail.statuses().len();
    let told_at_loss = told.lock().map(|t| t.clone()).unwrap_or_default();
    // An observation window, not a synchronisation: two bakes, in which a live worker would
    // have ended this step's bake and moved on.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let while_lost: Vec<String> = trail.statuses()[lost_at..]
        .iter()
        .filter_map(|s| s["analysis"]["step"].as_str().map(str::to_string))
        .collect();
    assert!(
        while_lost.iter().all(|s| *s == step),
        "the rollout moved on from {step} while its shard was lost: {while_lost:?}"
    );
    assert_eq!(
        told.lock().map(|t| t.clone()).unwrap_or_default(),
        told_at_loss,
        "a pod was told something while the shard was lost"
    );

    held_tx.send_replace(BTreeSet::from([shard]));
    c.wait_for_within(
        "proxyrollout/edge",
        "{.status.stable.commit}",
        Duration::from_secs(240),
        |s| s == v1,
    )
    .await;
    let resumed: Vec<String> = trail.statuses()[lost_at..]
        .iter()
        .filter_map(|s| s["analysis"]["step"].as_str().map(str::to_string))
        .collect();
    assert!(
        resumed.iter().all(|s| step_index(s) >= step_index(&step)),
        "the canary went back before step {step}: {resumed:?}"
    );
    let v1_digest = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;
    users.stop().await;
    recorder.abort();
    let told = told.lock().map(|t| t.clone()).unwrap_or_default();
    for pod in ["edge-0", "edge-1", "edge-2"] {
        assert_eq!(
            told.get(pod),
            Some(&vec![v0.clone(), v1_digest.clone()]),
            "{pod} told v0 once, then v1 once: {told:?}"
        );
    }
    c.down().await;
}

#[test]
fn shards_without_leader_election_are_refused_with_what_to_do() {
    let out = std::process::Command::new(switchback_bin())
        .args(["controller", "--shards", "2"])
        // Refused before any API call: no server is needed.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run switchback controller");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--shards 2 needs --leader-elect"),
        "{stderr}"
    );
}
