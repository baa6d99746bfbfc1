//! The Kubernetes fleet against the in-repo API server, with real kubectl creating the pods and
//! the process kubelet running each as a real nginx + agent: the runner rolls a revision out and
//! rolls back one whose upstream is dead, on probe evidence alone. Bundles land in ConfigMaps and
//! the desired digest on each pod; the agents run in Kubernetes mode, so every change reaches
//! them as a nudge, and they fetch and verify the bundle themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchback::agent::ProbeSpec;
use switchback::fleet::Fleet;
use switchback::fleet::kube::{DESIRED_ANNOTATION, KubeFleet};
use switchback::render::Bundle;
use switchback::rollout::{Phase, Release};
use switchback::runner::{Runner, RunnerConfig};
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::kube::kubectl::Kubectl;
use switchback_tests::kube::kubelet::{KubeletOptions, ProcessKubelet};

const LIMIT: Duration = Duration::from_secs(60);

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: edge\n  labels:\n    app: edge\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n"
    )
}

fn release(n: u8, location: &str) -> (Release, Bundle) {
    let conf = format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.93.2:9001; }}\n    server {{\n        listen 8080;\n        location / {{ {location} }}\n    }}\n}}\n"
    );
    switchback_tests::release::release(n, conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_rolled_back_on_every_kubernetes_pod() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let options = KubeletOptions {
        probes: vec![ProbeSpec {
            host: "localhost".to_string(),
            path: "/".to_string(),
            status: 200,
            rate: 20.0,
        }],
        ..KubeletOptions::new([0, 93])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
    k.ok(&["create", "namespace", "edge"]).await;
    for name in ["edge-0", "edge-1", "edge-2"] {
        let file = k.file(&format!("{name}.yaml"), &pod(name));
        k.ok(&["apply", "-f", &file]).await;
    }
    k.ok(&[
        "wait",
        "-n",
        "edge",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=edge",
        "--timeout=60s",
    ])
    .await;

    let client = k.server.client().await;
    let selector = BTreeMap::from([("app".to_string(), "edge".to_string())]);
    let fleet = Arc::new(
        KubeFleet::new(client, "edge", "edge", &selector, 9180, "nginx.conf")
            .with_agent_token(kubelet.agent_token_for("edge")),
    );
    assert_eq!(
        fleet.pods().await.expect("pods"),
        ["edge-0", "edge-1", "edge-2"]
    );

    let (r0, b0) = release(0, "return 200 \"v0\\n\";");
    for name in fleet.pods().await.expect("pods") {
        let applied = fleet
            .apply(&name, &b0, &r0.revision.commit)
            .await
            .expect("apply");
        assert_eq!(applied, switchback::fleet::ApplyResult::Applied, "{name}");
    }
    let annotation = k
        .ok(&[
            "get",
            "pod",
            "-n",
            "edge",
            "edge-1",
            "-o",
            "jsonpath={.metadata.annotations.switchback\\.dev/desired-digest}",
        ])
        .await;
    assert_eq!(
        annotation.trim(),
        r0.digest.to_string(),
        "{DESIRED_ANNOTATION}"
    );
    let maps = k
        .ok(&[
            "get",
            "configmap",
            "-n",
            "edge",
            "-l",
            "switchback.dev/rollout=edge",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(maps.lines().count(), 1, "{maps}");

    // The default strategy (steps 1, 25%, 50%, 100%; bake 3m; hold when inconclusive): the
    // failing side needs no bake, so the bad revision never gets past its first step.
    let config = RunnerConfig {
        poll_every: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let (mut runner, _notes) =
        Runner::new(config, Arc::clone(&fleet), Some((r0.clone(), b0))).expect("runner");
    let (bad, bad_bundle) = release(1, "proxy_pass http://app;");
    runner.submit(bad.clone(), bad_bundle);
    runner
        .run_until("roll it back everywhere", LIMIT, |r| {
            r.state().phase() == Phase::Idle
                && r.ledger()
                    .quarantined()
                    .iter()
                    .any(|q| q.release.digest == bad.digest)
                && r.fleet().iter().all(|(_, p)| p.settled_on(r0.digest))
        })
        .await
        .expect("rolled back");
    assert!(
        runner
            .incidents()
            .values()
            .any(|i| i.revision.digest == bad.digest)
    );
    drop(runner);
    let left = kubelet.stop().await;
    assert!(left.is_empty(), "{left:?}");
}
