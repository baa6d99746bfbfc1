//! The proxy agent under the example's RBAC (`examples/kubernetes/proxy/10-agent-rbac.yaml`): the
//! process kubelet gives the Pod's agent a token for the Pod's ServiceAccount, the test API server
//! enforces RBAC, and the agent learns its bundle from its Pod's annotation at start and through
//! its watch. At the end the server's audit shows every call was allowed and the Role grants
//! exactly what the agent used (the read-only identity of DESIGN §3.6). Pods live on 127.0.107.x.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::Value;
use switchback::agent::kube::{ENTRY_ANNOTATION, ROLLOUT_ANNOTATION};
use switchback::fleet::kube::{COMMIT_ANNOTATION, DESIRED_ANNOTATION};
use switchback::operator::bundle_store;
use switchback::render::Bundle;
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::kube::identity::User;
use switchback_tests::kube::kubectl::Kubectl;
use switchback_tests::kube::kubelet::{KubeletOptions, NGINX_PORT, ProcessKubelet};
use switchback_tests::kube::rbac::{self, Policy};
use switchback_tests::rbac_audit::{self, DenialsOnPanic};

const NAMESPACE: &str = "proxies";
const ACCOUNT: &str = "edge-nginx-agent";

/// A bundle whose `nginx.conf` answers `body` on `/`.
fn bundle(body: &str) -> Bundle {
    let conf = format!(
        "events {{}}\nhttp {{\n    server {{\n        listen 8080;\n        location / {{ return 200 \"{body}\\n\"; }}\n    }}\n}}\n"
    );
    Bundle::new(BTreeMap::from([(
        "nginx.conf".to_string(),
        conf.into_bytes(),
    )]))
}

/// Polls the pod's nginx until it answers `want`; fails after 30 s with the last answer.
async fn until_serves(ip: IpAddr, want: &str) {
    let http = reqwest::Client::new();
    let url = format!("http://{ip}:{NGINX_PORT}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {want:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_under_the_examples_read_only_role_and_uses_all_of_it() {
    if !nginx_available() {
        return;
    }
    let Some(k) = Kubectl::up().await else { return };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes/proxy");
    for file in ["00-namespace.yaml", "10-agent-rbac.yaml"] {
        k.ok(&["apply", "-f", &example.join(file).display().to_string()])
            .await;
    }
    let options = KubeletOptions {
        service_account_tokens: true,
        ..KubeletOptions::new([0, 107])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
    let user = format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}");
    let denials = DenialsOnPanic::new(&k.server, &user);

    // The controller's part, done here as the admin: store both bundles.
    let admin = k.server.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(admin, NAMESPACE);
    let (b1, b2) = (bundle("a1"), bundle("a2"));
    for b in [&b1, &b2] {
        for cm in bundle_store::to_configmaps("edge", NAMESPACE, None, b).expect("ConfigMaps") {
            maps.create(&PostParams::default(), &cm)
                .await
                .expect("create ConfigMap");
        }
    }
    // The Pod, as the example's Deployment makes it (its ServiceAccount), already annotated.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: edge-0\n  namespace: {NAMESPACE}\n  labels:\n    app: edge\n  annotations:\n    {DESIRED_ANNOTATION}: \"{}\"\n    {COMMIT_ANNOTATION}: c1\n    {ROLLOUT_ANNOTATION}: edge\n    {ENTRY_ANNOTATION}: nginx.conf\nspec:\n  serviceAccountName: {ACCOUNT}\n  containers:\n  - name: nginx\n    image: nginx\n",
        b1.digest()
    );
    let file = k.file("edge-0.yaml", &pod);
    k.ok(&["apply", "-f", &file]).await;
    k.ok(&[
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=Ready",
        "pod/edge-0",
        "--timeout=60s",
    ])
    .await;
    let ip: IpAddr = k
        .ok(&[
            "get",
            "-n",
            NAMESPACE,
            "pod",
            "edge-0",
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .await
        .trim()
        .parse()
        .expect("a pod IP");
    until_serves(ip, "a1\n").await;
    // Only the annotation changes; the agent's watch picks it up and reads the new bundle.
    let set = format!("{DESIRED_ANNOTATION}={}", b2.digest());
    k.ok(&[
        "annotate",
        "-n",
        NAMESPACE,
        "pod",
        "edge-0",
        "--overwrite",
        &set,
    ])
    .await;
    until_serves(ip, "a2\n").await;
    let errors = kubelet.stop().await;
    assert!(errors.is_empty(), "{errors:?}");

    let audit: Vec<_> = k
        .server
        .audit()
        .into_iter()
        .filter(|r| r.user == user)
        .collect();
    println!(
        "API calls of {user} (verb x resource):\n{}",
        rbac_audit::table(&audit)
    );
    assert!(!audit.is_empty(), "the agent made no audited request");
    let denied: Vec<_> = audit.iter().filter(|r| !r.allowed).collect();
    assert!(
        denied.is_empty(),
        "denied by the example's RBAC: {denied:#?}"
    );
    // Read-only: nothing but get, list and watch, all in the Pod's namespace.
    for r in &audit {
        assert!(
            ["get", "list", "watch"].contains(&r.verb.as_str()) && r.namespace == NAMESPACE,
            "{r:?}"
        );
    }
    let stored = k
        .json(&["get", "roles,rolebindings", "-n", NAMESPACE])
        .await;
    let objects: Vec<Value> = stored["items"].as_array().cloned().unwrap_or_default();
    let granted = rbac::granted(
        &Policy::from_objects(&objects),
        &User::service_account(NAMESPACE, ACCOUNT),
    );
    let problems =
        rbac_audit::least_privilege_problems(&granted, &rbac_audit::used(&audit, &user), &[]);
    assert!(
        problems.is_empty(),
        "the example's agent RBAC is not exactly what the agent uses:\n{}",
        problems.join("\n")
    );
    drop(denials);
}
