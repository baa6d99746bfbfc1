//! The operator end to end: real kubectl applies the CRD and a ProxyRollout to the test API
//! server, the process kubelet runs the pods as real nginx + agents, and the controller follows a
//! real git repository: the first commit is adopted (`kubectl wait --for=condition=Ready`), a
//! commit whose upstream is dead is rolled back on every pod and quarantined
//! (`kubectl wait --for=condition=RolledBack`).

use std::path::Path;

use switchback::agent::ProbeSpec;
use switchback::operator::controller::{self, ControllerOptions};
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::kube::kubectl::Kubectl;
use switchback_tests::kube::kubelet::{KubeletOptions, ProcessKubelet};

fn site(location: &str) -> String {
    format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.94.2:9001; }}\n    server {{\n        listen 8080;\n        location / {{ {location} }}\n    }}\n}}\n"
    )
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: edge\n  labels:\n    app: edge\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n"
    )
}

fn rollout(repo: &Path) -> String {
    format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1s\n  target:\n    selector:\n      app: edge\n  strategy:\n    steps: [\"1\", \"100%\"]\n    bake: 2s\n    onInconclusive: Promote\n",
        repo.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxyrollout_adopts_then_rolls_back_a_dead_upstream() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("nginx.conf"), site("return 200 \"v0\\n\";")).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);

    let options = KubeletOptions {
        probes: vec![ProbeSpec {
            host: "localhost".to_string(),
            path: "/".to_string(),
            status: 200,
            rate: 20.0,
        }],
        ..KubeletOptions::new([0, 94])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/proxyrollout.yaml");
    k.ok(&["apply", "-f", &crd.display().to_string()]).await;
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
    let file = k.file("rollout.yaml", &rollout(&repo));
    k.ok(&["apply", "-f", &file]).await;

    let client = k.server.client().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(
        client,
        ControllerOptions {
            namespace: Some("edge".to_string()),
            ..ControllerOptions::new(tmp.path().join("cache"))
        },
        async move {
            let _ = stopped.await;
        },
    ));

    k.ok(&[
        "wait",
        "-n",
        "edge",
        "--for=condition=Ready",
        "proxyrollout/edge",
        "--timeout=60s",
    ])
    .await;

    std::fs::write(repo.join("nginx.conf"), site("proxy_pass http://app;")).expect("write");
    git(&repo, &["commit", "-q", "-am", "move app"]);
    k.ok(&[
        "wait",
        "-n",
        "edge",
        "--for=condition=RolledBack",
        "proxyrollout/edge",
        "--timeout=60s",
    ])
    .await;
    let quarantined = k
        .ok(&[
            "get",
            "-n",
            "edge",
            "proxyrollout/edge",
            "-o",
            "jsonpath={.status.quarantined[*].commit}",
        ])
        .await;
    assert!(!quarantined.trim().is_empty(), "nothing quarantined");
    let printed = k.ok(&["get", "-n", "edge", "prx"]).await;
    assert!(printed.contains("Idle"), "{printed}");

    let _ = stop.send(());
    running.await.expect("controller task").expect("controller");
    let left = kubelet.stop().await;
    assert!(left.is_empty(), "{left:?}");
}
