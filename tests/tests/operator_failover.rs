//! Two `switchback controller --leader-elect` processes against the test API server, real pods
//! (the process kubelet) and a real git repository: the leader is SIGKILLed mid-canary, the
//! standby takes the Lease once it expires, resumes the canary from status and finishes it, and no
//! pod is ever told a digest other than the stable or the target one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::{Cluster, PATIENCE};
use tokio::process::Child;

fn replica(c: &Cluster, identity: &str) -> Child {
    c.controller_command(identity)
        .args(["--leader-elect", "--lease-identity", identity])
        .args(["--lease-namespace", "edge"])
        // Its own Pod, as the downward API gives it: the leader labels it for the webhook
        // Service, which is why it serves webhooks here.
        .env("POD_NAME", identity)
        .env("POD_NAMESPACE", "replicas")
        .args(["--webhook-addr", "127.0.101.200:0"])
        .spawn()
        .expect("spawn switchback controller")
}

async fn holder(client: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "edge");
    api.get_opt("switchback-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// The names of the replicas' Pods labelled leader, space-separated.
async fn leader_labelled(c: &Cluster) -> String {
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
    .await
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_finishes_a_canary_when_the_leader_is_killed() {
    let Some(c) = Cluster::up(101, &["edge-0", "edge-1", "edge-2"]).await else {
        return;
    };
    // Every desired digest any pod is ever given, from the API server's own change stream.
    let told: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (_, mut changes) = c.k.server.list_and_subscribe("", "pods");
    let seen = Arc::clone(&told);
    let recorder = tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            if let Some(d) =
                change.object["metadata"]["annotations"]["switchback.dev/desired-digest"].as_str()
                && let Ok(mut told) = seen.lock()
            {
                told.insert(d.to_string());
            }
        }
    });

    // The default strategy with the bake shortened from 3m to 8s, so the canary the standby
    // resumes finishes in seconds: at 50 requests/s per pod a step's canary pod serves more in
    // one bake than the ~330 clean requests a healthy verdict needs.
    c.apply_rollout("    bake: 8s\n").await;
    // The replicas' own Pods (not run by anyone: only their labels matter here).
    c.k.ok(&["create", "namespace", "replicas"]).await;
    for name in ["replica-a", "replica-b"] {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: replicas\n  labels:\n    switchback.dev/leader: \"true\"\nspec:\n  nodeName: elsewhere\n  containers:\n  - name: controller\n    image: switchback\n"
        );
        let file = c.k.file(&format!("{name}.yaml"), &pod);
        c.k.ok(&["apply", "-f", &file]).await;
    }
    let mut a = replica(&c, "replica-a");
    let mut b = replica(&c, "replica-b");
    c.wait_condition("Ready").await;
    let users = c.start_traffic(PER_POD_RPS).await;
    users.wait_flowing(3, 150, PATIENCE).await;
    let v0 = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;

    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    c.wait_for("proxyrollout/edge", "{.status.phase}", |p| p == "Canary")
        .await;
    let client = c.k.server.client().await;
    let leader = holder(&client).await.expect("a lease holder");
    // Only the leader's Pod carries the label (each replica cleared a stale one at start).
    assert_eq!(leader_labelled(&c).await, leader, "the leader's pod, only");
    let (killed, survivor) = if leader == "replica-a" {
        (&mut a, "replica-b")
    } else {
        (&mut b, "replica-a")
    };
    killed.start_kill().expect("SIGKILL the leader");
    let _ = killed.wait().await;

    // Lease expiry, then four steps of 8 s.
    c.wait_for_within(
        "proxyrollout/edge",
        "{.status.stable.commit}",
        Duration::from_secs(240),
        |s| s == v1,
    )
    .await;
    c.wait_condition("Ready").await;
    assert_eq!(
        holder(&client).await.as_deref(),
        Some(survivor),
        "the standby holds the lease"
    );
    let v1_digest = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;
    c.assert_all_told(&v1_digest, "every pod on the promoted commit")
        .await;
    // The webhook Service follows: the survivor's Pod is labelled (the killed one could not
    // clear its label; its restarted container does).
    let labelled = leader_labelled(&c).await;
    assert!(labelled.contains(survivor), "{labelled}");
    let restarted = replica(&c, &leader);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while leader_labelled(&c).await != survivor {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted replica never cleared its stale leader label"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(restarted);
    recorder.abort();
    let told = told.lock().map(|t| t.clone()).unwrap_or_default();
    assert_eq!(
        told,
        BTreeSet::from([v0, v1_digest]),
        "no pod was ever told anything but the stable and the target digest"
    );
    drop((a, b));
    c.down().await;
}
