//! Config drift end to end: real kubectl against the test API server, the process kubelet's pods
//! (real nginx + agents), the controller in-process. A live pod's config edited by hand (and
//! loaded by a hand reload) shows as the pod condition `switchback.dev/ConfigDrifted=True`
//! naming the file, one Warning Event `ConfigDrifted` on the ProxyRollout and a line in
//! `status.drift`, while the rollout itself carries on untouched; switching
//! `spec.drift.policy` to `Repair` puts the applied config back, and the condition goes False.

use std::net::SocketAddr;

use switchback_tests::agent_harness::{eventually, get, pid_file};
use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::Cluster;

/// The default strategy, untouched (steps `["1", "25%", "50%", "100%"]`, bake 3m,
/// `onInconclusive: Hold`): drift is no rollout, and this test rolls nothing out.
const DEFAULTS: &str = "    {}\n";
const DRIFTED: &str = "{.status.conditions[?(@.type==\"switchback.dev/ConfigDrifted\")].status}";
const DRIFTED_WHY: &str = "{.status.conditions[?(@.type==\"switchback.dev/ConfigDrifted\")].reason} {.status.conditions[?(@.type==\"switchback.dev/ConfigDrifted\")].message}";

async fn events(c: &Cluster, reason: &str) -> Vec<String> {
    let path = format!("{{range .items[?(@.reason==\"{reason}\")]}}{{.note}}{{\"\\n\"}}{{end}}");
    c.jsonpath("events.events.k8s.io", &path)
        .await
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_is_reported_on_the_pod_and_rollout_and_repaired_by_policy() {
    let Some(mut c) = Cluster::up(117, &["edge-0", "edge-1"]).await else {
        return;
    };
    c.apply_rollout(DEFAULTS).await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;
    let stable = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;
    for pod in ["pod/edge-0", "pod/edge-1"] {
        c.wait_for(pod, DRIFTED, |s| s == "False").await;
        c.wait_for(
            pod,
            "{.metadata.annotations.switchback\\.dev/drift-policy}",
            |s| s == "Report",
        )
        .await;
    }
    let ip = c.jsonpath("pod/edge-0", "{.status.podIP}").await;
    let nginx: SocketAddr = format!("{ip}:8080").parse().expect("pod address");
    assert_eq!(get(nginx, "/").await, Some((200, "v0\n".into())));

    // Someone with a shell in edge-0 edits the config and reloads nginx.
    let live = c.live_config("edge-0").join("nginx.conf");
    let original = std::fs::read_to_string(&live).expect("read the live config");
    assert!(original.contains("\"v0\\n\""), "{original}");
    std::fs::write(&live, original.replace("\"v0\\n\"", "\"hand\\n\"")).expect("edit");
    let state = c
        .live_config("edge-0")
        .parent()
        .expect("state dir")
        .to_path_buf();
    let master = pid_file(&state).expect("the pod's nginx pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("reload nginx by hand");

    let why = c.wait_for("pod/edge-0", DRIFTED, |s| s == "True").await;
    assert_eq!(why, "True");
    let message = c.jsonpath("pod/edge-0", DRIFTED_WHY).await;
    assert!(
        message.starts_with("Drifted ") && message.contains("nginx.conf"),
        "{message}"
    );
    assert!(message.contains("policy Report"), "{message}");
    let line = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.drift[*].pod} {.status.drift[*].files[*]}",
            |s| !s.is_empty(),
        )
        .await;
    assert_eq!(line, "edge-0 nginx.conf");
    let warned = eventually("the ConfigDrifted Event", || async {
        let e = events(&c, "ConfigDrifted").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        warned[0].contains("edge-0") && warned[0].contains("nginx.conf"),
        "{warned:?}"
    );
    assert_eq!(
        c.jsonpath("pod/edge-1", DRIFTED).await,
        "False",
        "only the edited pod drifted"
    );
    // Report only: nginx keeps what was loaded by hand, the file stays edited, and the rollout
    // is not disturbed (no rollback, same stable, every pod still told the stable digest).
    eventually("nginx to serve the hand edit", || async {
        (get(nginx, "/").await == Some((200, "hand\n".into()))).then_some(())
    })
    .await;
    assert!(
        std::fs::read_to_string(&live)
            .expect("read")
            .contains("hand")
    );
    assert_eq!(
        c.jsonpath("proxyrollout/edge", "{.status.phase}").await,
        "Idle"
    );
    assert_eq!(
        c.jsonpath("proxyrollout/edge", "{.status.stable.digest}")
            .await,
        stable
    );
    assert!(events(&c, "RolledBack").await.is_empty());
    c.assert_all_told(&stable, "drift is no rollout").await;

    // Policy Repair: the controller tells the pods, edge-0's agent re-applies the digest.
    c.k.ok(&[
        "patch",
        "-n",
        "edge",
        "proxyrollout/edge",
        "--type",
        "merge",
        "-p",
        "{\"spec\":{\"drift\":{\"policy\":\"Repair\"}}}",
    ])
    .await;
    let why = c
        .wait_for("pod/edge-0", DRIFTED_WHY, |s| s.starts_with("Repaired "))
        .await;
    assert!(why.contains("nginx.conf"), "{why}");
    assert_eq!(c.jsonpath("pod/edge-0", DRIFTED).await, "False");
    assert_eq!(
        std::fs::read_to_string(&live).expect("read"),
        original,
        "the file is restored"
    );
    eventually("nginx to serve the applied config again", || async {
        (get(nginx, "/").await == Some((200, "v0\n".into()))).then_some(())
    })
    .await;
    c.wait_for("proxyrollout/edge", "{.status.drift}", |s| {
        s.is_empty() || s == "[]"
    })
    .await;
    let repaired = eventually("the DriftRepaired Event", || async {
        let e = events(&c, "DriftRepaired").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(repaired[0].contains("edge-0"), "{repaired:?}");
    assert_eq!(
        events(&c, "ConfigDrifted").await.len(),
        1,
        "one Warning per episode, even across the policy change"
    );
    assert!(events(&c, "RolledBack").await.is_empty());
    c.down().await;
}
