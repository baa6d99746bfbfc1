//! The agent in Kubernetes mode against the in-repo API server, real kubectl and real nginx (the
//! process kubelet runs each Pod's agent in Kubernetes mode): nudges need the token, content that
//! does not hash to its digest is refused while the old config keeps serving, and an agent learns
//! its digest (and the bundle's entry file) from its Pod's annotation at start and through the
//! watch, with no nudge at all.
//! Pods live on 127.0.95.x.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use switchback::agent::{AgentClient, ApplyOutcome, ApplyStep, ClientError, Token};
use switchback::fleet::kube::{COMMIT_ANNOTATION, DESIRED_ANNOTATION, KubeFleet};
use switchback::fleet::{ApplyResult, Fleet};
use switchback::operator::bundle_store;
use switchback::render::{Bundle, Digest};
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::kube::kubectl::Kubectl;
use switchback_tests::kube::kubelet::{AGENT_PORT, KubeletOptions, NGINX_PORT, ProcessKubelet};

use switchback::agent::kube::{ENTRY_ANNOTATION, ROLLOUT_ANNOTATION};

fn bundle(body: &str) -> Bundle {
    bundle_at("nginx.conf", body)
}

/// A bundle whose one file, `entry`, answers `body` on `/`.
fn bundle_at(entry: &str, body: &str) -> Bundle {
    let conf = format!(
        "events {{}}\nhttp {{\n    server {{\n        listen 8080;\n        location / {{ return 200 \"{body}\\n\"; }}\n    }}\n}}\n"
    );
    Bundle::new(BTreeMap::from([(entry.to_string(), conf.into_bytes())]))
}

/// A Pod manifest; `annotations` become `metadata.annotations`.
fn pod(name: &str, namespace: &str, annotations: &[(&str, String)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: {name}\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for (k, v) in annotations {
            yaml.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    yaml.push_str("spec:\n  containers:\n  - name: nginx\n    image: nginx\n");
    yaml
}

/// Stores `maps` (as the controller would; the agent only ever reads them).
async fn store(client: &kube::Client, namespace: &str, maps: Vec<ConfigMap>) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for cm in maps {
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create ConfigMap");
    }
}

/// Starts a pod and returns its IP once Ready.
async fn start_pod(k: &Kubectl, name: &str, namespace: &str, yaml: &str) -> IpAddr {
    let file = k.file(&format!("{name}.yaml"), yaml);
    k.ok(&["apply", "-f", &file]).await;
    k.ok(&[
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=60s",
    ])
    .await;
    let ip = k
        .ok(&[
            "get",
            "-n",
            namespace,
            "pod",
            name,
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .await;
    ip.trim().parse().expect("pod IP")
}

/// What the pod's nginx answers on `/`, empty when it does not answer.
async fn page(http: &reqwest::Client, ip: IpAddr) -> String {
    match http.get(format!("http://{ip}:{NGINX_PORT}/")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls the pod's nginx until it answers `want`, failing after 30 s.
async fn until_serves(http: &reqwest::Client, ip: IpAddr, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = page(http, ip).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {ip} serves {got:?}, not {want:?}, after 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn applied(agent: &AgentClient) -> Option<Digest> {
    agent
        .state()
        .await
        .expect("state with the token")
        .applied
        .map(|r| r.digest)
}

fn status_of(result: Result<ApplyOutcome, ClientError>) -> u16 {
    match result {
        Err(ClientError::Unexpected { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nudges_need_the_token_and_content_matching_the_digest() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let kubelet = ProcessKubelet::start(&k.server, KubeletOptions::new([0, 95])).expect("kubelet");
    k.ok(&["create", "namespace", "edge"]).await;
    let ip = start_pod(&k, "edge-a", "edge", &pod("edge-a", "edge", &[])).await;
    let http = http();

    let client = k.server.client().await;
    let selector = BTreeMap::from([("app".to_string(), "edge-a".to_string())]);
    let fleet = KubeFleet::new(
        client.clone(),
        "edge",
        "edge",
        &selector,
        AGENT_PORT,
        "nginx.conf",
    )
    .with_agent_token(kubelet.agent_token_for("edge"));
    let b1 = bundle("v1");
    let got = fleet.apply("edge-a", &b1, "c1").await.expect("apply");
    assert_eq!(got, ApplyResult::Applied);
    until_serves(&http, ip, "v1\n").await;
    // The agent read the bundle from its ConfigMap itself.
    let cm_path = format!(
        "/api/v1/namespaces/edge/configmaps/{}",
        bundle_store::part_name("edge", &b1.digest(), 0)
    );
    assert!(
        k.server
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.uri.starts_with(&cm_path) && r.status == 200),
        "no GET of {cm_path}"
    );

    // A second bundle is stored, but only the token holder can make the pod act on it.
    let b2 = bundle("v2");
    store(
        &client,
        "edge",
        bundle_store::to_configmaps("edge", "edge", None, &b2).expect("to ConfigMaps"),
    )
    .await;
    let addr = SocketAddr::new(ip, AGENT_PORT);
    let anonymous = AgentClient::new(addr).expect("client");
    let wrong = AgentClient::new(addr)
        .expect("client")
        .with_token(Token::new("not-the-token", "test").expect("token"));
    let authed = AgentClient::new(addr)
        .expect("client")
        .with_token(kubelet.agent_token_for("edge"));
    assert_eq!(status_of(anonymous.nudge(b2.digest(), "c2").await), 401);
    assert_eq!(status_of(wrong.nudge(b2.digest(), "c2").await), 401);
    assert!(
        matches!(
            anonymous.state().await,
            Err(ClientError::Unexpected { status: 401, .. })
        ),
        "/v1/state wants the token too"
    );
    assert!(
        matches!(
            wrong.metrics().await,
            Err(ClientError::Unexpected { status: 401, .. })
        ),
        "/metrics wants the token too"
    );
    anonymous.healthz().await.expect("/healthz needs no token");
    // Even with the token, no bundle is taken over HTTP.
    assert_eq!(status_of(authed.apply(&b2, "c2", "nginx.conf").await), 403);
    assert_eq!(applied(&authed).await, Some(b1.digest()), "nothing changed");
    assert_eq!(page(&http, ip).await, "v1\n");

    // A ConfigMap whose content does not hash to its digest is refused; v1 keeps serving.
    let b3 = bundle("v3");
    let mut tampered =
        bundle_store::to_configmaps("edge", "edge", None, &b3).expect("to ConfigMaps");
    if let Some(data) = tampered[0].data.as_mut() {
        let evil = String::from_utf8(bundle("evil").get("nginx.conf").expect("file").to_vec())
            .expect("utf-8");
        data.insert("f0".to_string(), evil);
    }
    store(&client, "edge", tampered).await;
    match authed
        .nudge(b3.digest(), "c3")
        .await
        .expect("nudge answered")
    {
        ApplyOutcome::ApplyFailed { step, reason, .. } => {
            assert_eq!(step, ApplyStep::Verify, "{reason}");
            assert!(reason.contains("refusing"), "{reason}");
        }
        other => panic!("tampered bundle applied: {other:?}"),
    }
    assert_eq!(applied(&authed).await, Some(b1.digest()));
    assert_eq!(page(&http, ip).await, "v1\n");
    // A digest nobody stored: refused at the fetch.
    let b4 = bundle("v4");
    match authed
        .nudge(b4.digest(), "c4")
        .await
        .expect("nudge answered")
    {
        ApplyOutcome::ApplyFailed { step, .. } => assert_eq!(step, ApplyStep::Fetch),
        other => panic!("unstored bundle applied: {other:?}"),
    }

    // The annotation still says v1, but a nudge whose ConfigMap exists and matches is honoured.
    let annotated = k
        .ok(&[
            "get",
            "pod",
            "-n",
            "edge",
            "edge-a",
            "-o",
            "jsonpath={.metadata.annotations.switchback\\.dev/desired-digest}",
        ])
        .await;
    assert_eq!(annotated.trim(), b1.digest().to_string());
    let outcome = authed.nudge(b2.digest(), "c2").await.expect("nudge");
    assert!(outcome.is_applied(), "{outcome:?}");
    until_serves(&http, ip, "v2\n").await;

    drop(fleet);
    let errors = kubelet.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_follows_its_pods_annotation_without_any_nudge() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let options = KubeletOptions {
        first_octet: 110,
        ..KubeletOptions::new([0, 95])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
    k.ok(&["create", "namespace", "shop"]).await;
    let client = k.server.client().await;
    // The rollout's entry is not the agent's default `nginx.conf`: the annotation names it.
    let (b1, b2) = (bundle_at("main.conf", "w1"), bundle_at("main.conf", "w2"));
    for b in [&b1, &b2] {
        let maps = bundle_store::to_configmaps("shop", "shop", None, b).expect("to ConfigMaps");
        store(&client, "shop", maps).await;
    }
    // The Pod is created already annotated: the agent applies w1 at start, with no nudge.
    let yaml = pod(
        "web",
        "shop",
        &[
            (DESIRED_ANNOTATION, b1.digest().to_string()),
            (COMMIT_ANNOTATION, "c1".to_string()),
            (ROLLOUT_ANNOTATION, "shop".to_string()),
            (ENTRY_ANNOTATION, "main.conf".to_string()),
        ],
    );
    let ip = start_pod(&k, "web", "shop", &yaml).await;
    assert_eq!(ip.to_string(), "127.0.95.110");
    let http = http();
    until_serves(&http, ip, "w1\n").await;

    // Only the annotation changes (real kubectl); the agent's watch picks it up.
    let set = format!("{DESIRED_ANNOTATION}={}", b2.digest());
    k.ok(&["annotate", "-n", "shop", "pod", "web", "--overwrite", &set])
        .await;
    until_serves(&http, ip, "w2\n").await;
    let agent = AgentClient::new(SocketAddr::new(ip, AGENT_PORT))
        .expect("client")
        .with_token(kubelet.agent_token_for("shop"));
    // nginx serves w2 once reloaded; the agent records the apply a moment later (persist).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while applied(&agent).await != Some(b2.digest()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent does not report w2 applied after 30s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = agent.state().await.expect("state");
    assert_eq!(state.desired.map(|r| r.digest), Some(b2.digest()));
    let errors = kubelet.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
}
