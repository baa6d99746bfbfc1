//! With shards, the webhook Service sends a push to any replica holding a shard, not only the
//! one running the rollout the push is for. That replica must accept it (it answered `404
//! unknown hook` before: it had never read the hook's Secret) and hand it on to the owner
//! (`operator::push_relay`: the rollout annotated `switchback.dev/fetch-requested-at`), which
//! fetches at once rather than at its next poll (an hour here).
//!
//! Two in-process controllers on one test API server: the owner holds the rollout's shard and
//! serves no webhooks; the other holds another shard and serves the push.
//!
//! Loopback subnet taken here: 127.0.136.x.

use std::collections::BTreeSet;
use std::time::Duration;

use switchback::operator::controller::{self, ControllerOptions};
use switchback::operator::shard::{Shards, assign};
use switchback_tests::operator_fixture::Cluster;
use switchback_tests::push_hook::{GenericHook, create_hook_secret};

const SHARDS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaching_a_replica_without_the_rollout_is_handed_on_to_its_owner() {
    let Some(mut c) = Cluster::up(136, &["edge-0", "edge-1"]).await else {
        return;
    };
    create_hook_secret(&c.k, "s3cret").await;
    let rollout = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1h\n    webhook:\n      secretRef:\n        name: hook\n  target:\n    selector:\n      app: edge\n  strategy:\n    bake: 8s\n",
        c.repo.display()
    );
    let file = c.k.file("rollout.yaml", &rollout);
    c.k.ok(&["apply", "-f", &file]).await;

    let shard = assign("edge", "edge", None, SHARDS).shard;
    let (_owner_held, held) = tokio::sync::watch::channel(BTreeSet::from([shard]));
    let owner = ControllerOptions {
        shards: Some(Shards {
            count: SHARDS,
            held,
        }),
        ..c.controller_options()
    };
    c.start_controller_with(owner).await;
    c.wait_condition("Ready").await;

    // The other replica: another shard, its own cache, the webhook receiver.
    let addr = std::net::TcpListener::bind("127.0.136.200:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (_other_held, held) = tokio::sync::watch::channel(BTreeSet::from([(shard + 1) % SHARDS]));
    let other = ControllerOptions {
        shards: Some(Shards {
            count: SHARDS,
            held,
        }),
        webhook_addr: Some(addr),
        cache_dir: c.k.server.dir().join("other-replica-cache"),
        ..c.controller_options()
    };
    let client = c.k.server.client().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(controller::run(client, other, async move {
        let _ = stopped.await;
    }));

    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    let repository = format!("file://{}", c.repo.display());
    // Accepted by the replica that does not run the rollout (404 until it read the Secret).
    GenericHook::new(addr, "edge", "hook", "s3cret", &repository)
        .wait_registered(Duration::from_secs(30))
        .await;
    // An hour's poll interval: only the handed-on push starts the rollout of v1.
    c.wait_for_within(
        "proxyrollout/edge",
        "{.status.target.commit}",
        Duration::from_secs(60),
        |s| s == v1,
    )
    .await;
    let asked = c
        .jsonpath(
            "proxyrollout/edge",
            "{.metadata.annotations.switchback\\.dev/fetch-requested-at}",
        )
        .await;
    assert!(
        !asked.is_empty(),
        "the push was handed on through the rollout's annotation"
    );
    let _ = stop.send(());
    let _ = replica.await;
    c.down().await;
}
