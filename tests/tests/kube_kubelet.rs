//! The process kubelet with real kubectl and real nginx: an applied Pod gets an agent on its own
//! loopback address and becomes Ready; deleting it stops the agent; stopping the kubelet leaves
//! no nginx behind.

use std::path::Path;
use std::time::Duration;

use switchback_tests::agent_harness::nginx_available;
use switchback_tests::kube::kubectl::Kubectl;
use switchback_tests::kube::kubelet::{AGENT_PORT, KubeletOptions, NGINX_PORT, ProcessKubelet};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n";

const NGINX_CONF: &str = "events {}\nhttp {\n    server {\n        listen 8080;\n        location / { return 200 \"pod web\\n\"; }\n    }\n}\n";

/// Pids of processes whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.chars().all(|c| c.is_ascii_digit()).then_some(name)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .is_ok_and(|cmd| cmd.contains(&needle))
        })
        .collect()
}

/// Fails unless, within 10 s, no process mentions `dir` (workers may take a moment to exit after
/// their master).
async fn assert_none_left(dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes outlived the kubelet: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn healthz(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_pod_runs_an_agent_until_deleted() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let bundle = tempfile::tempdir().expect("bundle dir");
    std::fs::write(bundle.path().join("nginx.conf"), NGINX_CONF).expect("write nginx.conf");
    let options = KubeletOptions {
        initial_bundle: Some(bundle.path().to_path_buf()),
        ..KubeletOptions::new([0, 91])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("start kubelet");
    k.ok(&["create", "namespace", "shop"]).await;
    let file = k.file("pod.yaml", POD);
    k.ok(&["apply", "-f", &file]).await;
    k.ok(&[
        "wait",
        "-n",
        "shop",
        "--for=condition=Ready",
        "pod/web",
        "--timeout=60s",
    ])
    .await;
    let ip = k
        .ok(&[
            "get",
            "-n",
            "shop",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .await;
    assert_eq!(ip, "127.0.91.10", "pod IP");
    let pod = k.json(&["get", "-n", "shop", "pod", "web"]).await;
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert_eq!(pod["status"]["podIPs"][0]["ip"], "127.0.91.10", "{pod}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let url = format!("http://{ip}:{AGENT_PORT}/healthz");
    assert!(healthz(&client, &url).await, "agent answers {url}");
    // The agent runs in Kubernetes mode: its state is for holders of its namespace's token only.
    let state = format!("http://{ip}:{AGENT_PORT}/v1/state");
    let anonymous = client.get(&state).send().await.expect("state answers");
    assert_eq!(anonymous.status().as_u16(), 401);
    let authed = client
        .get(&state)
        .bearer_auth(kubelet.agent_token_for("shop").expose())
        .send()
        .await
        .expect("state answers");
    assert_eq!(authed.status().as_u16(), 200);
    let page = format!("http://{ip}:{NGINX_PORT}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = match client.get(&page).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body == "pod web\n" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod's nginx does not serve {page}: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !processes_mentioning(kubelet.state_dir()).is_empty(),
        "the pod's nginx runs with the kubelet's state dir on its command line"
    );

    k.ok(&["delete", "-n", "shop", "pod", "web"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while healthz(&client, &url).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent still answers 30s after the pod was deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second pod reuses the released address.
    k.ok(&["apply", "-f", &file]).await;
    k.ok(&[
        "wait",
        "-n",
        "shop",
        "--for=condition=Ready",
        "pod/web",
        "--timeout=60s",
    ])
    .await;
    assert!(healthz(&client, &url).await, "second agent answers {url}");

    let dir = kubelet.state_dir().to_path_buf();
    let errors = kubelet.stop().await;
    assert!(errors.is_empty(), "agents ended with errors: {errors:?}");
    assert!(!healthz(&client, &url).await, "agent gone after stop");
    assert_none_left(&dir).await;
}

const HELD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: held\n  labels:\n    app: web\n  finalizers:\n  - example.com/hold\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n";
const OTHER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: other\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_filter_and_terminating_pods() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let options = KubeletOptions {
        labels: vec![("app".to_string(), "web".to_string())],
        ..KubeletOptions::new([0, 92])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("start kubelet");
    let other = k.file("other.yaml", OTHER);
    k.ok(&["apply", "-f", &other]).await;
    let held = k.file("held.yaml", HELD);
    k.ok(&["apply", "-f", &held]).await;
    k.ok(&["wait", "--for=condition=Ready", "pod/held", "--timeout=60s"])
        .await;
    let ip = k
        .ok(&["get", "pod", "held", "-o", "jsonpath={.status.podIP}"])
        .await;
    assert_eq!(ip, "127.0.92.10", "the unlabelled pod got no address first");
    let status = k
        .ok(&["get", "pod", "other", "-o", "jsonpath={.status.podIP}"])
        .await;
    assert_eq!(status, "", "a pod without the label is not run");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let url = format!("http://{ip}:{AGENT_PORT}/healthz");
    assert!(healthz(&client, &url).await, "agent answers {url}");
    // Marked for deletion but held by a finalizer: the agent stops while the Pod remains.
    k.ok(&["delete", "pod", "held", "--wait=false"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while healthz(&client, &url).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent still answers 30s after the pod was marked for deletion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    k.ok(&["get", "pod", "held"]).await;

    let dir = kubelet.state_dir().to_path_buf();
    let errors = kubelet.stop().await;
    assert!(errors.is_empty(), "agents ended with errors: {errors:?}");
    assert!(
        processes_mentioning(&dir).is_empty(),
        "nothing outlives stop"
    );
}
