//! The operator end to end: real kubectl applies the CRD and a ProxyRollout to the test API
//! server, the process kubelet runs the pods as real nginx + agents, and the controller follows a
//! real git repository. Each test has its own server, pods and loopback subnet.

use std::time::Duration;

use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::{Cluster, PATIENCE};
use switchback_tests::push_hook::{GenericHook, create_hook_secret};

/// The default strategy, untouched: steps `["1", "25%", "50%", "100%"]`, bake 3m,
/// `onInconclusive: Hold`, sequential analysis. For the tests that never reach a bake's end
/// (adoption, validation, rollback, a canary that is only started).
const DEFAULTS: &str = "    {}\n";

/// The default strategy with the bake shortened from 3m to 8s, for the tests that see a commit
/// promoted: at [`PER_POD_RPS`] a step's one canary pod serves more in one bake than the ~330
/// clean requests a healthy verdict needs at its end (`docs/analysis.md`).
const SHORT_BAKE: &str = "    bake: 8s\n";

/// Long enough for four steps of 8 s and their applies on a loaded 2-core machine.
const ROLLOUT_PATIENCE: Duration = Duration::from_secs(180);

async fn digest_of_stable(c: &Cluster) -> String {
    c.jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await
}

/// The first commit is adopted (`kubectl wait --for=condition=Ready`); a commit whose upstream is
/// dead goes to one canary pod, is rolled back on every pod on the evidence of the users' requests
/// and the agents' probes, and quarantined
/// (`kubectl wait --for=condition=RolledBack`); an Event carries the evidence; every pod carries
/// the applied digest and a True `switchback.dev/ConfigApplied` condition; deleting the
/// ProxyRollout removes its bundles and the annotations it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxyrollout_adopts_then_rolls_back_a_dead_upstream() {
    let Some(mut c) = Cluster::up(94, &["edge-0", "edge-1", "edge-2"]).await else {
        return;
    };
    c.apply_rollout(DEFAULTS).await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let users = c.start_traffic(PER_POD_RPS).await;
    users.wait_flowing(3, 150, PATIENCE).await;
    let stable = digest_of_stable(&c).await;

    let bad = c.commit("proxy_pass http://app;", "move app");
    c.wait_condition("RolledBack").await;
    let quarantined = c
        .jsonpath("proxyrollout/edge", "{.status.quarantined[*].commit}")
        .await;
    assert_eq!(quarantined, bad);
    let printed = c.k.ok(&["get", "-n", "edge", "prx"]).await;
    assert!(printed.contains("Idle"), "{printed}");
    let report = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.lastIncident.restoredAt} {.status.lastIncident.report}",
            |s| s.split_whitespace().count() == 2,
        )
        .await;
    let report_map = report
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    let markdown = c
        .wait_for(
            &format!("configmap/{report_map}"),
            "{.data.report\\.md}",
            |md| md.contains("every pod") || md.contains("restored"),
        )
        .await;
    assert!(
        markdown.contains(&bad[..12]) && markdown.contains("100.00%"),
        "the incident report names the commit and the evidence: {markdown}"
    );
    let notes = c
        .wait_for(
            "events.events.k8s.io",
            "{range .items[?(@.reason==\"RolledBack\")]}{.note}{\"\\n\"}{end}",
            |out| !out.is_empty(),
        )
        .await;
    assert!(
        notes.contains(&bad[..12]) && notes.contains("canary bad-response rate 100.00%"),
        "the RolledBack event names the commit and the evidence: {notes}"
    );

    for pod in ["edge-0", "edge-1", "edge-2"] {
        let what = format!("pod/{pod}");
        c.wait_for(
            &what,
            "{.metadata.annotations.switchback\\.dev/applied-digest}",
            |d| d == stable,
        )
        .await;
        c.wait_for(
            &what,
            "{.status.conditions[?(@.type==\"switchback.dev/ConfigApplied\")].status}",
            |s| s == "True",
        )
        .await;
    }

    c.k.ok(&[
        "delete",
        "-n",
        "edge",
        "proxyrollout/edge",
        "--wait=true",
        "--timeout=60s",
    ])
    .await;
    let maps =
        c.k.ok(&[
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
    assert!(maps.trim().is_empty(), "bundles left behind: {maps}");
    let annotations = c.jsonpath("pods", "{.items[*].metadata.annotations}").await;
    assert!(
        !annotations.contains("switchback.dev/"),
        "annotations left behind: {annotations}"
    );
    c.down().await;
}

/// A commit that fails validation never reaches a pod: it is quarantined, and status names the
/// file, line and rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_commit_never_reaches_a_pod_and_status_names_file_line_and_rule() {
    let Some(mut c) = Cluster::up(97, &["edge-0", "edge-1"]).await else {
        return;
    };
    c.apply_rollout(DEFAULTS).await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;
    let stable = digest_of_stable(&c).await;

    let bad = c.commit(
        "proxy_pass http://backend;",
        "point at an upstream nobody defined",
    );
    let reason = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.quarantined[0].reason}",
            |r| !r.is_empty(),
        )
        .await;
    assert!(
        reason.contains("nginx.conf:6:") && reason.contains("SB101"),
        "status names file, line and rule: {reason}"
    );
    let commit = c
        .jsonpath("proxyrollout/edge", "{.status.quarantined[0].commit}")
        .await;
    assert_eq!(commit, bad);
    c.assert_all_told(&stable, "every pod still told only the stable digest")
        .await;

    // A commit that does not even render: Stalled names the template, line and rule.
    std::fs::remove_file(c.repo.join("nginx.conf")).expect("rm");
    std::fs::write(
        c.repo.join("nginx.conf.j2"),
        "events {}\nhttp {\n    server { listen 8080; return 200 \"{{ greeting }}\"; }\n}\n",
    )
    .expect("write");
    switchback_tests::git_fixture::git_cli(&c.repo, &["add", "-A"]);
    switchback_tests::git_fixture::git_cli(&c.repo, &["commit", "-q", "-m", "template"]);
    let stalled = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.conditions[?(@.type==\"Stalled\")].message}",
            |m| m.contains("does not render"),
        )
        .await;
    assert!(
        stalled.contains("nginx.conf.j2:3:")
            && stalled.contains("SB010")
            && stalled.contains("greeting"),
        "Stalled names template, line, rule and variable: {stalled}"
    );
    let reason = c
        .jsonpath(
            "proxyrollout/edge",
            "{.status.conditions[?(@.type==\"Stalled\")].reason}",
        )
        .await;
    assert_eq!(reason, "SourceFailed");

    // A spec the schema lets through but the controller cannot use: a Warning Event on the
    // rollout says why, where `kubectl describe` shows it.
    c.apply_rollout("    bake: soon\n").await;
    let notes = c
        .wait_for(
            "events.events.k8s.io",
            "{range .items[?(@.reason==\"InvalidSpec\")]}{.note}{\"\\n\"}{end}",
            |out| !out.is_empty(),
        )
        .await;
    assert!(
        notes.contains("\"soon\"") && notes.contains("duration"),
        "the InvalidSpec event names the bad value: {notes}"
    );
    c.down().await;
}

/// A pod that appears mid-canary (a deleted pod's replacement) is given the stable config, not
/// the target, while the canary goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_replaced_mid_canary_comes_back_on_stable() {
    let Some(mut c) = Cluster::up(98, &["edge-0", "edge-1", "edge-2"]).await else {
        return;
    };
    // The default steps; the bake lengthened so the canary is still on its first step when the
    // pod is replaced. The users follow the pods: edge-3 gets its share once it is Ready.
    c.apply_rollout("    bake: 10m\n    maxBake: 20m\n").await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let users = c.start_traffic(PER_POD_RPS).await;
    let stable = digest_of_stable(&c).await;

    c.commit("return 200 \"v1\\n\";", "v1");
    let target = c
        .wait_for("proxyrollout/edge", "{.status.target.digest}", |t| {
            !t.is_empty()
        })
        .await;
    c.wait_for("proxyrollout/edge", "{.status.phase}", |p| p == "Canary")
        .await;
    let desired = c
        .wait_for(
            "pods",
            "{range .items[*]}{.metadata.name}={.metadata.annotations.switchback\\.dev/desired-digest}{\"\\n\"}{end}",
            |out| out.contains(&target),
        )
        .await;
    let stable_pod = desired
        .lines()
        .find_map(|l| l.strip_suffix(&format!("={stable}")))
        .expect("a pod still on stable")
        .to_string();

    c.k.ok(&["delete", "-n", "edge", "pod", &stable_pod, "--wait=true"])
        .await;
    c.add_pod("edge-3").await;
    c.wait_pods_ready().await;
    c.wait_for(
        "pod/edge-3",
        "{.metadata.annotations.switchback\\.dev/applied-digest}",
        |d| d == stable,
    )
    .await;
    let told = c
        .jsonpath(
            "pod/edge-3",
            "{.metadata.annotations.switchback\\.dev/desired-digest}",
        )
        .await;
    assert_eq!(told, stable, "a pod that joins mid-canary gets stable");
    users.wait_flowing(3, 100, PATIENCE).await;
    let edge_3 = c.jsonpath("pod/edge-3", "{.status.podIP}").await;
    assert!(
        users.targets().iter().any(|t| t.ip().to_string() == edge_3),
        "the users follow the new pod: {:?}",
        users.targets()
    );
    let phase = c.jsonpath("proxyrollout/edge", "{.status.phase}").await;
    assert_eq!(phase, "Canary", "the canary goes on");
    c.down().await;
}

/// A controller stopped mid-canary and started again resumes from the checkpoint in status: the
/// canary finishes, and no pod is ever told anything but the stable or target digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_the_canary_from_status() {
    let Some(mut c) = Cluster::up(99, &["edge-0", "edge-1", "edge-2"]).await else {
        return;
    };
    c.apply_rollout(SHORT_BAKE).await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let users = c.start_traffic(PER_POD_RPS).await;
    users.wait_flowing(3, 150, PATIENCE).await;
    let stable = digest_of_stable(&c).await;

    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    c.wait_for("proxyrollout/edge", "{.status.phase}", |p| p == "Canary")
        .await;
    c.stop_controller().await;
    let engine = c
        .jsonpath("proxyrollout/edge", "{.status.engine.state.phase}")
        .await;
    assert_eq!(engine, "canary", "status carries the checkpoint");
    let target = c
        .jsonpath("proxyrollout/edge", "{.status.target.digest}")
        .await;

    c.start_controller().await;
    c.wait_for_within(
        "proxyrollout/edge",
        "{.status.stable.commit}",
        ROLLOUT_PATIENCE,
        |s| s == v1,
    )
    .await;
    c.wait_condition("Ready").await;
    c.assert_all_told(
        &target,
        &format!("the promoted target (stable was {stable})"),
    )
    .await;
    c.down().await;
}

/// `kubectl switchback promote` during a long bake: the controller acts on the request, says so
/// in `status.handledRequest` (so `--wait` returns), and the target becomes stable on every pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_request_is_acted_on_and_acknowledged() {
    let Some(mut c) = Cluster::up(100, &["edge-0", "edge-1"]).await else {
        return;
    };
    // The default steps; the bake lengthened so only the request can end the canary.
    c.apply_rollout("    bake: 10m\n    maxBake: 20m\n").await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;
    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    c.wait_for("proxyrollout/edge", "{.status.phase}", |p| p == "Canary")
        .await;

    let out = tokio::process::Command::new(switchback_tests::bin::switchback_bin())
        .args([
            "plugin",
            "promote",
            "edge",
            "-n",
            "edge",
            "--timeout",
            "60s",
        ])
        .env("KUBECONFIG", c.k.server.kubeconfig_path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run switchback plugin");
    assert!(
        out.status.success(),
        "promote --wait: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let annotation = c
        .jsonpath(
            "proxyrollout/edge",
            "{.metadata.annotations.switchback\\.dev/request}",
        )
        .await;
    let handled = c
        .jsonpath("proxyrollout/edge", "{.status.handledRequest}")
        .await;
    assert!(
        !handled.is_empty() && annotation.contains(&handled),
        "acknowledged: {handled} in {annotation}"
    );
    c.wait_for("proxyrollout/edge", "{.status.stable.commit}", |s| s == v1)
        .await;
    c.wait_condition("Ready").await;
    c.down().await;
}

/// With `spec.source.verify`, an unsigned head is not rolled out (Stalled, reason
/// UnverifiedCommit, no pod told anything); once a commit signed by a trusted SSH key is pushed,
/// it is adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_signed_by_a_trusted_key_are_rolled_out() {
    if std::process::Command::new("ssh-keygen")
        .arg("-?")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: ssh-keygen is not installed (make tools installs openssh-client)");
        return;
    }
    let Some(mut c) = Cluster::up(102, &["edge-0", "edge-1"]).await else {
        return;
    };
    let key = c.tmp.path().join("signer");
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "signer@example.test",
            "-f",
        ])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let mut fields = public.split_whitespace();
    let (kind, blob) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    let allowed = c.k.file(
        "allowed_signers",
        &format!("signer@example.test namespaces=\"git\" {kind} {blob}\n"),
    );
    c.k.ok(&[
        "create",
        "secret",
        "generic",
        "signers",
        "-n",
        "edge",
        &format!("--from-file=allowed_signers={allowed}"),
    ])
    .await;
    // A Secret says which ProxyRollouts may use it (issue 13).
    c.k.ok(&[
        "annotate",
        "secret",
        "signers",
        "-n",
        "edge",
        "switchback.dev/allowed-rollouts=edge",
    ])
    .await;
    let rollout = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1s\n    verify:\n      secretRef:\n        name: signers\n      mode: ssh\n  target:\n    selector:\n      app: edge\n  strategy:\n{DEFAULTS}",
        c.repo.display()
    );
    let file = c.k.file("rollout.yaml", &rollout);
    c.k.ok(&["apply", "-f", &file]).await;
    c.start_controller().await;

    let message = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.conditions[?(@.type==\"Stalled\")].reason} {.status.conditions[?(@.type==\"Stalled\")].message}",
            |m| m.starts_with("UnverifiedCommit"),
        )
        .await;
    assert!(
        message.contains("unsigned") || message.contains("not signed"),
        "{message}"
    );
    let told = c
        .jsonpath(
            "pods",
            "{.items[*].metadata.annotations.switchback\\.dev/desired-digest}",
        )
        .await;
    assert!(
        told.is_empty(),
        "no pod is told an unverified commit: {told}"
    );

    std::fs::write(
        c.repo.join("nginx.conf"),
        c.site("return 200 \"signed\\n\";"),
    )
    .expect("write");
    switchback_tests::git_fixture::git_cli(&c.repo, &["add", "-A"]);
    let signing_key = format!("user.signingkey={}", key.display());
    switchback_tests::git_fixture::git_cli(
        &c.repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "-S",
            "-m",
            "signed",
        ],
    );
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;
    let reason = c
        .jsonpath(
            "proxyrollout/edge",
            "{.status.conditions[?(@.type==\"Stalled\")].status}",
        )
        .await;
    assert_eq!(
        reason, "False",
        "no longer stalled once a signed head is read"
    );
    c.down().await;
}

/// With a push webhook, a commit's rollout starts when the signed push arrives, not at the next
/// poll (the interval here is an hour): the canary is under way on the pushed commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_fetches_at_once() {
    let Some(mut c) = Cluster::up(103, &["edge-0", "edge-1"]).await else {
        return;
    };
    create_hook_secret(&c.k, "s3cret").await;
    let rollout = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1h\n    webhook:\n      secretRef:\n        name: hook\n  target:\n    selector:\n      app: edge\n  strategy:\n{DEFAULTS}",
        c.repo.display()
    );
    let file = c.k.file("rollout.yaml", &rollout);
    c.k.ok(&["apply", "-f", &file]).await;
    let addr = std::net::TcpListener::bind("127.0.103.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut options = c.controller_options();
    options.webhook_addr = Some(addr);
    let metrics = options.metrics.clone();
    c.start_controller_with(options).await;
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;

    let v1 = c.commit("return 200 \"v1\\n\";", "v1");
    // 404 until the worker has registered the hook's secret; then one accepted push.
    let repository = format!("file://{}", c.repo.display());
    GenericHook::new(addr, "edge", "hook", "s3cret", &repository)
        .wait_registered(Duration::from_secs(30))
        .await;
    c.wait_for("proxyrollout/edge", "{.status.target.commit}", |s| s == v1)
        .await;
    // The receiver's counters are on the controller's /metrics.
    let text = metrics.encode().expect("encode metrics");
    assert!(
        text.contains(
            "switchback_webhook_requests_total{provider=\"generic\",outcome=\"accepted\"} 1"
        ),
        "the accepted push is counted on /metrics:\n{text}"
    );
    c.down().await;
}
