//! The operator against a real Kubernetes cluster, opt-in: `make test-real-cluster` with
//! `KUBECONFIG` naming a cluster you may write to. `make test` lists it as ignored, with the
//! reason; run by hand without a cluster, it says it skipped.
//!
//! What runs there is the part that needs no proxy image: the CRD installs, the real API server's
//! schema refuses a bad spec, the controller (in this process, with your kubeconfig) adopts the
//! first commit of a local git repository for a ProxyRollout selecting no pods yet, writes
//! status by server-side apply so `kubectl wait --for=condition=Ready` returns, records Events,
//! and its finalizer lets the object be deleted. The pod-level suite (canary, rollback, failover)
//! runs against the in-repo API server with the process kubelet, because it needs the agent
//! running next to nginx in each pod, and no image can be built on these machines.

use std::process::Stdio;

use switchback::operator::controller::{self, ControllerOptions};
use switchback_tests::git_fixture::git_cli as git;

async fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(
        switchback_tests::kube::kubectl::kubectl_bin().expect("kubectl on PATH or in .tools/bin"),
    )
    .args(args)
    .stdin(Stdio::null())
    .output()
    .await
    .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn ok(args: &[&str]) -> String {
    let (ok, out, err) = kubectl(args).await;
    assert!(ok, "kubectl {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: KUBECONFIG=... make test-real-cluster"]
async fn the_operator_on_a_real_cluster() {
    let enabled = std::env::var("SWITCHBACK_REAL_CLUSTER").as_deref() == Ok("1");
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|_| enabled) else {
        eprintln!(
            "SKIPPED the_operator_on_a_real_cluster: set SWITCHBACK_REAL_CLUSTER=1 and KUBECONFIG \
             to a cluster you may write to (it creates and deletes a namespace switchback-e2e-<pid>)"
        );
        return;
    };
    eprintln!(
        "real cluster from KUBECONFIG={}",
        kubeconfig.to_string_lossy()
    );
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let ns = format!("switchback-e2e-{}", std::process::id());
    ok(&[
        "apply",
        "-f",
        &root.join("crds/proxyrollout.yaml").display().to_string(),
    ])
    .await;
    ok(&[
        "wait",
        "--for=condition=Established",
        "crd/proxyrollouts.switchback.dev",
        "--timeout=60s",
    ])
    .await;
    ok(&["create", "namespace", &ns]).await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("nginx.conf"),
        "events {}\nhttp {\n    server {\n        listen 8080;\n        return 200 \"v0\\n\";\n    }\n}\n",
    )
    .expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let rollout = |interval: &str| {
        format!(
            "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: {ns}\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: {interval}\n  target:\n    selector:\n      app: switchback-e2e-none\n",
            repo.display()
        )
    };
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, rollout("soon")).expect("write");
    let (accepted, _, err) = kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &bad.display().to_string(),
    ])
    .await;
    assert!(!accepted && err.contains("spec.source.interval"), "{err}");
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, rollout("2s")).expect("write");
    ok(&["apply", "-f", &good.display().to_string()]).await;

    let client = kube::Client::try_default()
        .await
        .expect("client from KUBECONFIG");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(
        client,
        ControllerOptions {
            namespace: Some(ns.clone()),
            // The rollout follows a file:// repository.
            allow_insecure_sources: true,
            ..ControllerOptions::new(tmp.path().join("cache"))
        },
        async move {
            let _ = stopped.await;
        },
    ));
    ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "proxyrollout/edge",
        "--timeout=120s",
    ])
    .await;
    let events = ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "-o",
        "jsonpath={.items[*].reason}",
    ])
    .await;
    assert!(!events.trim().is_empty(), "no Events recorded");
    ok(&["delete", "-n", &ns, "proxyrollout/edge", "--timeout=60s"]).await;
    let _ = stop.send(());
    running.await.expect("controller task").expect("controller");
    ok(&["delete", "namespace", &ns, "--wait=false"]).await;
}
