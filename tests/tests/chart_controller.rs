//! The chart's controller pod end to end, under the chart's own RBAC: the Deployment helm installs
//! is run as a process ([`PodProcess`]) with a token for the chart's ServiceAccount, the test API
//! server enforces RBAC (a missing rule fails the run with the apiserver's 403), and at the end
//! the server's audit shows that the chart grants exactly what the controller used, apart from a
//! short list of grants this run cannot reach, each saying why (issue 7: least privilege).

use serde_json::Value;
use switchback::operator::bundle_store::rollout_selector;
use switchback_tests::bin::switchback_bin;
use switchback_tests::chart::{chart_dir, find, helm, name, render};
use switchback_tests::kube::identity::User;
use switchback_tests::kube::kubectl::tool_bin;
use switchback_tests::kube::rbac::{self, Policy};
use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::{Cluster, PATIENCE};
use switchback_tests::pod_process::PodProcess;
use switchback_tests::rbac_audit::{self, DenialsOnPanic, Unreached};

/// The rollout strategy: the default one, untouched (steps `["1", "25%", "50%", "100%"]`, bake
/// 3m, `onInconclusive: Hold`); the bad push is rolled back at its first step.
const DEFAULTS: &str = "    {}\n";

/// Grants of the chart that this run does not exercise. Each names the code path that uses it
/// and why the run does not get there; keep it as short as honest (an entry that is used, or no
/// longer granted, fails the test).
const UNREACHED: &[Unreached] = &[Unreached {
    group: "",
    resource: "secrets",
    verb: "get",
    why: "operator/credentials.rs and controller.rs (trusted_keys, webhook secrets) read the \
          Secrets named by spec.source.secretRef, spec.source.verify and webhooks; this rollout \
          follows a file:// repository with none of them",
}];

/// The chart's Deployment, run as its pod would run (its args, env from the downward API and the
/// token Secret, emptyDirs, its ServiceAccount's token) by [`PodProcess`], drives a ProxyRollout
/// to Ready on proxy pods run by the process kubelet, holds the Lease under its pod name, rolls a
/// pushed commit with a dead upstream back, and cleans up when the ProxyRollout is deleted; all
/// under RBAC enforcement, with exactly the chart's grants used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_controller_pod_drives_a_proxyrollout_to_ready_and_rolls_back_a_bad_push() {
    let Some(c) = Cluster::up(105, &["edge-0", "edge-1"]).await else {
        return;
    };
    let Some(helm) = tool_bin("helm") else { return };
    c.k.ok(&["create", "namespace", "switchback"]).await;
    // The proxy pods' agents (the process kubelet's) hold their namespace's token, derived from
    // the kubelet's master; the chart takes that master as an existing Secret, as a user whose
    // proxies already have their tokens would.
    let token = c
        .controller_env()
        .into_iter()
        .find(|(k, _)| k == "SWITCHBACK_AGENT_TOKEN")
        .map(|(_, v)| v)
        .expect("the kubelet's agent token");
    c.k.ok(&[
        "create",
        "secret",
        "generic",
        "agents-token",
        "-n",
        "switchback",
        &format!("--from-literal=token={token}"),
    ])
    .await;
    // Cluster::up applied the CRD already.
    let chart = chart_dir();
    c.k.helm(
        &helm,
        &[
            "install",
            "sb",
            &chart,
            "-n",
            "switchback",
            "--skip-crds",
            "--set",
            "agentToken.existingSecret=agents-token",
            // The rollout follows a local repository.
            "--set",
            "git.allowInsecureSources=true",
        ],
    )
    .await;
    let ip: std::net::IpAddr = "127.0.105.250".parse().expect("an address");
    let scratch = c.tmp.path().join("controller-pod");
    let mut pod = PodProcess::start_deployment(
        &c.k,
        "switchback",
        "sb-switchback",
        &switchback_bin(),
        ip,
        &scratch,
    )
    .await
    .expect("start the chart's controller pod");
    assert_eq!(pod.user, "system:serviceaccount:switchback:sb-switchback");
    let denials = DenialsOnPanic::new(&c.k.server, &pod.user);
    let probe =
        c.k.ok(&[
            "get",
            "-n",
            "switchback",
            "deploy",
            "sb-switchback",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].readinessProbe.httpGet.path}",
        ])
        .await;
    pod.wait_ready(&probe, PATIENCE).await;

    c.apply_rollout(DEFAULTS).await;
    c.wait_condition("Ready").await;
    // The site's users, 50 requests/s to each proxy pod.
    let _users = c.start_traffic(PER_POD_RPS).await;
    let holder =
        c.k.ok(&[
            "get",
            "-n",
            "switchback",
            "lease",
            "switchback-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await;
    assert_eq!(holder, pod.name, "the chart's pod leads under its POD_NAME");
    let applied = c
        .wait_for(
            "pods",
            "{.items[*].metadata.annotations.switchback\\.dev/applied-digest}",
            |s| s.split_whitespace().count() == 2,
        )
        .await;
    assert!(applied.contains("sha256:"), "{applied}");

    // A push whose upstream is dead: the canary's answers to the users and to the probes fail,
    // and the chart's controller rolls every pod back to the stable commit.
    let stable = c
        .jsonpath("proxyrollout/edge", "{.status.stable.commit}")
        .await;
    let bad = c.commit("proxy_pass http://app;", "move app to a dead upstream");
    c.wait_condition("RolledBack").await;
    assert_eq!(
        c.jsonpath("proxyrollout/edge", "{.status.stable.commit}")
            .await,
        stable
    );
    let quarantined = c
        .jsonpath("proxyrollout/edge", "{.status.quarantined[*].commit}")
        .await;
    assert!(quarantined.contains(&bad), "{quarantined}");

    // Deleting the rollout runs the finalizer: bundles deleted, pod annotations taken off.
    // kubectl waits until the object is gone (the finalizer removed).
    c.k.ok(&[
        "delete",
        "-n",
        "edge",
        "proxyrollout",
        "edge",
        "--timeout=60s",
    ])
    .await;
    let bundles =
        c.k.ok(&[
            "get",
            "-n",
            "edge",
            "configmaps",
            "-l",
            &rollout_selector("edge"),
            "-o",
            "name",
        ])
        .await;
    assert_eq!(bundles.trim(), "", "the finalizer left bundles behind");
    let marks = c
        .jsonpath(
            "pods",
            "{.items[*].metadata.annotations.switchback\\.dev/desired-digest}",
        )
        .await;
    assert_eq!(marks, "", "the finalizer left pod annotations behind");
    let user = pod.user.clone();
    pod.stop().await;

    // Least privilege: every call was allowed, and what the chart grants is what was used.
    let audit = c.k.server.audit();
    let mine: Vec<_> = audit.iter().filter(|r| r.user == user).cloned().collect();
    println!(
        "API calls of {user} (verb x resource):\n{}",
        rbac_audit::table(&mine)
    );
    assert!(!mine.is_empty(), "the controller made no audited request");
    let denied: Vec<_> = mine.iter().filter(|r| !r.allowed).collect();
    assert!(denied.is_empty(), "denied by the chart's RBAC: {denied:#?}");
    let stored =
        c.k.json(&[
            "get",
            "clusterroles,clusterrolebindings,roles,rolebindings",
            "-A",
        ])
        .await;
    let objects: Vec<Value> = stored["items"].as_array().cloned().unwrap_or_default();
    let granted = rbac::granted(
        &Policy::from_objects(&objects),
        &User::service_account("switchback", "sb-switchback"),
    );
    let used = rbac_audit::used(&mine, &user);
    let problems = rbac_audit::least_privilege_problems(&granted, &used, UNREACHED);
    assert!(
        problems.is_empty(),
        "the chart's RBAC is not exactly what the controller uses:\n{}",
        problems.join("\n")
    );
    drop(denials);
    c.down().await;
}

/// The chart with `controller.shards: 2`: its pod, under the chart's RBAC, holds both shard
/// Leases (`switchback-controller-shard-<k>`) under its pod name, no `switchback-controller`
/// Lease is made, and the rollout is driven to Ready; no request of it is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_with_two_shards_holds_both_shard_leases_under_its_rbac() {
    let Some(c) = Cluster::up(132, &["edge-0"]).await else {
        return;
    };
    let Some(helm) = tool_bin("helm") else { return };
    c.k.ok(&["create", "namespace", "switchback"]).await;
    let token = c
        .controller_env()
        .into_iter()
        .find(|(k, _)| k == "SWITCHBACK_AGENT_TOKEN")
        .map(|(_, v)| v)
        .expect("the kubelet's agent token");
    c.k.ok(&[
        "create",
        "secret",
        "generic",
        "agents-token",
        "-n",
        "switchback",
        &format!("--from-literal=token={token}"),
    ])
    .await;
    let chart = chart_dir();
    c.k.helm(
        &helm,
        &[
            "install",
            "sb",
            &chart,
            "-n",
            "switchback",
            "--skip-crds",
            "--set",
            "agentToken.existingSecret=agents-token",
            "--set",
            "git.allowInsecureSources=true",
            "--set",
            "controller.shards=2",
        ],
    )
    .await;
    let ip: std::net::IpAddr = "127.0.132.250".parse().expect("an address");
    let scratch = c.tmp.path().join("controller-pod");
    let mut pod = PodProcess::start_deployment(
        &c.k,
        "switchback",
        "sb-switchback",
        &switchback_bin(),
        ip,
        &scratch,
    )
    .await
    .expect("start the chart's controller pod");
    let denials = DenialsOnPanic::new(&c.k.server, &pod.user);
    pod.wait_ready("/readyz", PATIENCE).await;
    c.apply_rollout(DEFAULTS).await;
    c.wait_condition("Ready").await;
    // The second shard comes after the fair-share delay of a replica holding one (4 s).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let holders = loop {
        let holders =
            c.k.ok(&[
                "get",
                "-n",
                "switchback",
                "leases",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity} {end}",
            ])
            .await;
        let want = format!(
            "switchback-controller-shard-0={0} switchback-controller-shard-1={0}",
            pod.name
        );
        if holders.trim() == want {
            break holders;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chart's pod does not hold both shards: {holders}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(!holders.contains("switchback-controller="), "{holders}");
    let user = pod.user.clone();
    pod.stop().await;
    let audit = c.k.server.audit();
    let denied: Vec<_> = audit
        .iter()
        .filter(|r| r.user == user && !r.allowed)
        .collect();
    assert!(denied.is_empty(), "denied by the chart's RBAC: {denied:#?}");
    drop(denials);
    c.down().await;
}

/// `controller.shards` renders `--shards` and needs leader election; `controller.replicas`
/// overrides `replicaCount`; the Role's leases rule covers the shard Leases.
#[test]
fn shards_need_leader_election_and_replicas_overrides_replica_count() {
    let chart = chart_dir();
    let Some((ok, _, stderr)) = helm(&[
        "template",
        "r1",
        &chart,
        "--set",
        "controller.shards=2",
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
    ]) else {
        return;
    };
    assert!(!ok, "shards without leader election were accepted");
    assert!(
        stderr.contains("controller.shards > 1 needs leaderElection.enabled"),
        "{stderr}"
    );
    let Some(objects) = render(&[
        "--set",
        "controller.replicas=4",
        "--set",
        "controller.shards=4",
    ]) else {
        return;
    };
    let deploy = find(&objects, "Deployment")[0];
    assert_eq!(deploy["spec"]["replicas"], 4);
    let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--shards=4"), "{args}");
    // The shard Leases are ordinary Leases in the release namespace: the Role grants leases
    // without resourceNames, so `<leaseName>-shard-<k>` is covered.
    let role = find(&objects, "Role")
        .into_iter()
        .find(|r| name(r).ends_with("-leader-election"))
        .expect("the leader-election Role");
    let rules = role["rules"].as_array().expect("rules");
    assert!(
        rules
            .iter()
            .any(|r| r["resources"] == serde_json::json!(["leases"])
                && r["resourceNames"].is_null()
                && r["verbs"] == serde_json::json!(["get", "create", "update"])),
        "{role}"
    );
}
