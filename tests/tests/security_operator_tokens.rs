//! Issue 13, finding 3: the one agent token. Every proxy pod held the same bearer token, so
//! whoever could read it in one namespace (its Secret, a proxy pod's files, or the nudges sent to
//! a pod of their own that a ProxyRollout's selector matches) could drive the agents of every
//! namespace. Now each namespace's agents hold their own token, derived from the controller's
//! master; this runs the chart, the process kubelet's agents (real nginx) mounting the chart's
//! Secrets, and the attack.

use base64::Engine as _;
use serde_json::json;
use switchback_tests::kube::kubectl::{Kubectl, tool_bin};
use switchback_tests::kube::kubelet::{AGENT_PORT, KubeletOptions, ProcessKubelet};

/// One agent token per namespace: what a tenant can read in their namespace (its Secret, or a
/// nudge to a pod of their own) is refused by the agents of another namespace, while the chart's
/// master still gives the controller every namespace's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_read_in_one_namespace_is_refused_by_the_agents_of_another() {
    if !switchback_tests::agent_harness::nginx_available() {
        return;
    }
    let Some(helm) = tool_bin("helm") else { return };
    let Some(k) = Kubectl::up().await else { return };
    for ns in ["switchback", "team-a", "team-b"] {
        k.ok(&["create", "namespace", ns]).await;
    }
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/switchback");
    let chart = chart.display().to_string();
    let install = ["install", "sb", &chart, "-n", "switchback", "--skip-crds"];
    let namespaces = ["--set", "agentToken.extraNamespaces={team-a,team-b}"];
    k.helm(&helm, &[&install[..], &namespaces[..]].concat())
        .await;
    let options = KubeletOptions {
        labels: vec![("app".to_string(), "proxy".to_string())],
        ..KubeletOptions::new([0, 131])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
    // A proxy pod in each namespace, mounting the chart's token Secret as the example does.
    for ns in ["team-a", "team-b"] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "proxy", "namespace": ns, "labels": {"app": "proxy"}},
            "spec": {
                "containers": [{"name": "nginx", "image": "nginx",
                    "volumeMounts": [{"name": "agent-token", "mountPath": "/var/run/secrets/switchback"}]}],
                "volumes": [{"name": "agent-token", "secret": {"secretName": "sb-switchback-agent-token"}}],
            },
        });
        let file = k.file(&format!("pod-{ns}.json"), &pod.to_string());
        k.ok(&["apply", "-f", &file]).await;
        k.ok(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            "pod/proxy",
            "--timeout=60s",
        ])
        .await;
    }
    let token_in = async |ns: &str, secret: &str| {
        let encoded = k
            .ok(&[
                "get",
                "secret",
                secret,
                "-n",
                ns,
                "-o",
                "jsonpath={.data.token}",
            ])
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .expect("base64");
        String::from_utf8(bytes).expect("text")
    };
    let team_a = token_in("team-a", "sb-switchback-agent-token").await;
    let team_b = token_in("team-b", "sb-switchback-agent-token").await;
    let ip_b = k
        .ok(&[
            "get",
            "pod",
            "proxy",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .await;
    let state = format!("http://{}:{AGENT_PORT}/v1/state", ip_b.trim());
    let http = reqwest::Client::new();
    let ask = async |token: &str| {
        http.get(&state)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .expect("the agent answers")
    };
    assert_eq!(ask(&team_a).await, 401, "team-a's token works in team-b");
    assert_eq!(ask(&team_b).await, 200, "team-b's own token");

    // The controller's master (the env var of the chart's Deployment) derives both.
    let master = token_in("switchback", "sb-switchback-agent-master").await;
    let master = switchback::agent::Token::new(&master, "chart").expect("a token");
    assert_eq!(master.for_namespace("team-a").expose(), team_a);
    assert_eq!(master.for_namespace("team-b").expose(), team_b);
    assert_eq!(ask(master.expose()).await, 401, "no agent takes the master");
    let errors = kubelet.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
}
