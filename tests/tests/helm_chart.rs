//! The Helm chart (`charts/switchback`) with the real helm: lint, render with the default and the
//! full values, check every rendered object (known kinds, Pod Security "restricted", RBAC exactly
//! what docs/operator.md lists), keep the chart's CRD and appVersion in step with the crate, and
//! install, upgrade and uninstall it on the test API server. The proxy example
//! (`examples/kubernetes/proxy/`) is checked the same way. The chart's controller pod, run as a
//! process under the chart's RBAC, is in `chart_controller.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use switchback_tests::chart::{
    chart_dir as chart, find, full_values, helm, name, render, repo_root as root,
};
use switchback_tests::kube::kubectl::{Kubectl, tool_bin};
use switchback_tests::manifests::{Permission, parse_stream, rbac_permissions};
use switchback_tests::pod_security::{pod_spec, restricted_violations};

/// What the controller needs, as docs/operator.md ("RBAC the controller needs") lists it; the
/// chart must grant exactly this, no more (chart_controller.rs checks it against the API calls
/// the controller really makes). `leases` is granted in the release namespace only.
const CONTROLLER_RBAC: &[(&str, &str, &[&str])] = &[
    (
        "switchback.dev",
        "proxyrollouts",
        &["list", "watch", "patch"],
    ),
    ("switchback.dev", "proxyrollouts/status", &["patch"]),
    ("", "pods", &["list", "watch", "patch"]),
    ("", "pods/status", &["patch"]),
    (
        "",
        "configmaps",
        &["list", "watch", "create", "patch", "delete"],
    ),
    ("", "secrets", &["get"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// The proxy agent's read-only rules (DESIGN §3.6): nothing that writes.
const AGENT_RBAC: &[(&str, &str, &[&str])] = &[
    ("", "configmaps", &["get"]),
    ("", "pods", &["get", "list", "watch"]),
];

/// Every (apiVersion, kind) the chart and the example may render.
const KNOWN_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("switchback.dev/v1alpha1", "ProxyRollout"),
];

fn permissions(list: &[(&str, &str, &[&str])]) -> BTreeSet<Permission> {
    list.iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

fn without_leases(all: BTreeSet<Permission>) -> BTreeSet<Permission> {
    all.into_iter().filter(|(_, r, _)| r != "leases").collect()
}

/// The checks every rendering must pass: known kinds, every pod template restricted.
fn check_objects(objects: &[Value]) {
    assert!(!objects.is_empty());
    for obj in objects {
        let gvk = (
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        );
        assert!(KNOWN_KINDS.contains(&gvk), "unknown kind {gvk:?}");
        assert!(
            obj["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{gvk:?} has no name"
        );
        if let Some(spec) = pod_spec(obj) {
            let broken = restricted_violations(spec);
            assert!(
                broken.is_empty(),
                "{} breaks Pod Security restricted: {broken:#?}",
                name(obj)
            );
        }
    }
}

fn env<'a>(container: &'a Value, var: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == var))
        .unwrap_or_else(|| panic!("env {var} missing: {container}"))
}

#[test]
fn lint_is_clean_with_default_and_full_values() {
    let chart = chart();
    let full = full_values();
    for extra in [vec![], vec!["-f", full.as_str()]] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend_from_slice(&extra);
        let Some((ok, stdout, stderr)) = helm(&args) else {
            return;
        };
        assert!(ok, "helm {args:?}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
    }
}

#[test]
fn default_values_render_a_restricted_two_replica_controller_with_the_documented_rbac() {
    let Some(objects) = render(&[]) else { return };
    check_objects(&objects);

    let deploy = find(&objects, "Deployment");
    assert_eq!(deploy.len(), 1);
    let deploy = deploy[0];
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "controller");
    for arg in [
        "--leader-elect",
        "--metrics-addr=0.0.0.0:8080",
        "--cache-dir=/var/cache/switchback",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    // One shard by default: the single Lease, named as before sharding existed.
    assert!(!args.iter().any(|a| a.starts_with("--shards")), "{args:?}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        env(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // The cache dir is a mounted emptyDir (the root filesystem is read-only).
    let cache_mount = c["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/var/cache/switchback"))
        .expect("a volume at --cache-dir");
    let cache_volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == cache_mount["name"]))
        .expect("the cache volume");
    assert!(cache_volume["emptyDir"].is_object(), "{cache_volume}");
    let anti = &pod["affinity"]["podAntiAffinity"];
    assert!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"]
            ["matchLabels"]
            == deploy["spec"]["selector"]["matchLabels"],
        "anti-affinity must select the controller's own pods: {anti}"
    );

    // The agent token: one generated Secret, and the env var reads it.
    let token_ref = &env(c, "SWITCHBACK_AGENT_TOKEN")["valueFrom"]["secretKeyRef"];
    let secrets = find(&objects, "Secret");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_eq!(secrets[0]["metadata"]["name"], token_ref["name"]);
    let token = secrets[0]["data"][token_ref["key"].as_str().expect("key")]
        .as_str()
        .expect("a token in data");
    assert!(token.len() >= 32, "token too short: {token}");

    // RBAC: cluster-wide what docs/operator.md lists, the Lease only in the release namespace.
    let all = permissions(CONTROLLER_RBAC);
    assert_eq!(
        rbac_permissions(&objects, &["ClusterRole"]),
        without_leases(all.clone())
    );
    let roles = find(&objects, "Role");
    assert!(
        roles
            .iter()
            .all(|r| r["metadata"]["namespace"] == "switchback")
    );
    assert_eq!(
        rbac_permissions(&objects, &["Role", "ClusterRole"]),
        all,
        "the chart's RBAC differs from docs/operator.md"
    );
    let sa = find(&objects, "ServiceAccount");
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0]["metadata"]["name"], pod["serviceAccountName"]);
    for binding in find(&objects, "ClusterRoleBinding")
        .into_iter()
        .chain(find(&objects, "RoleBinding"))
    {
        assert_eq!(
            binding["subjects"][0]["name"],
            pod["serviceAccountName"],
            "{}",
            name(binding)
        );
    }

    let svc = find(&objects, "Service");
    assert_eq!(svc.len(), 2, "metrics and the agents' reports");
    assert_eq!(svc[0]["spec"]["ports"][0]["port"], 8080);
    // Headless: an agent's report reaches every replica, whichever drives its pod.
    let reports = svc
        .iter()
        .find(|s| name(s).ends_with("-agent-reports"))
        .expect("the agents' report Service");
    assert_eq!(reports["spec"]["clusterIP"], "None");
    assert_eq!(reports["spec"]["ports"][0]["targetPort"], "metrics");
    for off in ["ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget"] {
        assert!(find(&objects, off).is_empty(), "{off} is off by default");
    }
}

#[test]
fn full_values_render_every_option_and_a_namespaced_role() {
    let full = full_values();
    let Some(objects) = render(&["-f", &full]) else {
        return;
    };
    check_objects(&objects);
    for kind in [
        "ServiceMonitor",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ConfigMap",
    ] {
        assert!(!find(&objects, kind).is_empty(), "{kind} missing");
    }
    // watchNamespace: no cluster-wide grant at all.
    assert!(find(&objects, "ClusterRole").is_empty());
    assert!(find(&objects, "ClusterRoleBinding").is_empty());
    assert_eq!(
        rbac_permissions(&objects, &["Role"]),
        permissions(CONTROLLER_RBAC)
    );
    let c = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let args = c["args"].to_string();
    assert!(args.contains("--namespace=proxies"), "{args}");
    assert!(args.contains("--allow-insecure-sources"), "{args}");
    assert!(args.contains("--shards=3"), "{args}");
    assert_eq!(find(&objects, "Deployment")[0]["spec"]["replicas"], 3);
    assert!(c["image"].as_str().is_some_and(|i| i.contains("@sha256:")));
    // The master stays in the release namespace; each proxies' namespace gets its own token,
    // the one the controller derives from the master (issue 13: a token read in one namespace
    // is useless in another).
    let secrets = find(&objects, "Secret");
    let token_of = |s: &Value| {
        let text = switchback::agent::base64::decode(s["data"]["token"].as_str().unwrap_or(""))
            .expect("base64");
        String::from_utf8(text).expect("text")
    };
    let token_ref = &env(c, "SWITCHBACK_AGENT_TOKEN")["valueFrom"]["secretKeyRef"];
    let master = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == token_ref["name"])
        .expect("the master Secret");
    assert_eq!(master["metadata"]["namespace"], "switchback");
    let master = switchback::agent::Token::new(&token_of(master), "chart").expect("a token");
    let mut namespaces = BTreeSet::new();
    for s in secrets
        .iter()
        .filter(|s| s["metadata"]["name"] != token_ref["name"])
    {
        let ns = s["metadata"]["namespace"].as_str().expect("a namespace");
        let name = s["metadata"]["name"].as_str().unwrap_or_default();
        assert!(name.ends_with("-agent-token"), "{name}");
        assert_eq!(token_of(s), master.for_namespace(ns).expose(), "{ns}");
        namespaces.insert(ns);
    }
    assert_eq!(namespaces, BTreeSet::from(["proxies", "edge"]));
    let np = &find(&objects, "NetworkPolicy")[0]["spec"];
    let egress_ports = np["egress"].to_string();
    for port in ["6443", "9180", "443", "22", "53"] {
        assert!(
            egress_ports.contains(port),
            "egress lacks {port}: {egress_ports}"
        );
    }
}

#[test]
fn the_schema_refuses_unknown_keys_root_and_unelected_replicas() {
    let chart = chart();
    for (set, why) in [
        ("replicaCunt=2", "additional properties"),
        ("podSecurityContext.runAsUser=0", "runAsUser"),
        ("leaderElection.enabled=false", "leaderElection.enabled"),
        ("image.digest=latest", "digest"),
        ("controller.shards=0", "minimum"),
        ("controller.shardCount=2", "additional properties"),
        ("controller.replicas=0", "minimum"),
    ] {
        let Some((ok, _, stderr)) = helm(&["template", "r1", &chart, "--set", set]) else {
            return;
        };
        assert!(!ok, "--set {set} was accepted");
        assert!(stderr.contains(why), "--set {set}: {stderr}");
    }
}

#[test]
fn the_chart_crd_is_the_generated_one_and_app_version_is_the_crate_version() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).expect(p);
    assert_eq!(
        read("charts/switchback/crds/proxyrollout.yaml"),
        read("crds/proxyrollout.yaml"),
        "charts/switchback/crds/ is stale: cp crds/proxyrollout.yaml charts/switchback/crds/"
    );
    let chart: Value = serde_saphyr::from_str(&read("charts/switchback/Chart.yaml")).expect("YAML");
    let crate_version = env!("CARGO_PKG_VERSION");
    // The switchback crate takes the workspace's version, as this crate does.
    assert!(
        read("controller/Cargo.toml").contains("version.workspace = true"),
        "controller/Cargo.toml has its own version: compare with that"
    );
    assert_eq!(chart["appVersion"], crate_version, "Chart.yaml appVersion");
}

#[test]
fn the_rbac_list_here_is_the_one_in_docs_operator_md() {
    let doc = std::fs::read_to_string(root().join("docs/operator.md")).expect("docs/operator.md");
    let section = doc
        .split("## RBAC the controller needs")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the RBAC section");
    let re = regex::Regex::new(r"`([a-z/]+)` \(([^)]*)\)").expect("regex");
    let documented: BTreeSet<(String, String)> = re
        .captures_iter(section)
        .flat_map(|c| {
            let resource = c[1].to_string();
            c[2].split(',')
                .map(str::trim)
                .filter(|v| v.chars().all(|ch| ch.is_ascii_lowercase()))
                .map(|v| (resource.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let here: BTreeSet<(String, String)> = permissions(CONTROLLER_RBAC)
        .into_iter()
        .map(|(_, r, v)| (r, v))
        .collect();
    assert_eq!(documented, here);
}

#[test]
fn the_dashboard_queries_only_documented_metrics_and_shows_them_all() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).expect(p);
    let dashboard: Value =
        serde_json::from_str(&read("charts/switchback/dashboards/switchback.json")).expect("JSON");
    let metric = regex::Regex::new(r"switchback_[a-z_]+").expect("regex");
    let strip = |m: &str| {
        ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| m.strip_suffix(s))
            .unwrap_or(m)
            .to_string()
    };
    let documented: BTreeSet<String> = read("docs/operations.md")
        .lines()
        .filter(|l| l.starts_with("| `switchback_"))
        .filter_map(|l| metric.find(l).map(|m| m.as_str().to_string()))
        .collect();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            used.extend(metric.find_iter(expr).map(|m| strip(m.as_str())));
        }
    }
    assert_eq!(used, documented);
}

#[test]
fn the_proxy_example_is_restricted_with_a_read_only_agent() {
    let dir = root().join("examples/kubernetes/proxy");
    let mut objects = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/kubernetes/proxy")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        objects.extend(parse_stream(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    check_objects(&objects);
    assert_eq!(
        rbac_permissions(&objects, &["Role", "ClusterRole"]),
        permissions(AGENT_RBAC)
    );
    let deploy = find(&objects, "Deployment")[0];
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(
        pod["readinessGates"][0]["conditionType"],
        "switchback.dev/ConfigApplied"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "agent");
    assert_eq!(c["args"][1], "--kubernetes");
    let args = c["args"].to_string();
    assert!(args.contains("--token-file=/var/run/secrets/switchback/token"));
    assert!(
        args.contains(
            "--report-to=http://switchback-agent-reports.switchback.svc:8080/v1/agents/changed"
        ),
        "the agent reports its changes to the chart's headless Service: {args}"
    );
    let volumes = pod["volumes"].to_string();
    assert!(volumes.contains("\"emptyDir\"") && volumes.contains("switchback-agent-token"));
    let rollout = find(&objects, "ProxyRollout")[0];
    assert_eq!(rollout["spec"]["source"]["path"], "examples/basic");
    assert_eq!(
        rollout["spec"]["target"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_keeps_the_token_and_uninstall_removes_the_chart() {
    let Some(k) = Kubectl::up().await else { return };
    let Some(helm) = tool_bin("helm") else { return };
    let chart = chart();
    let helm = async |args: &[&str]| k.helm(&helm, args).await;
    k.ok(&["create", "namespace", "switchback"]).await;
    let out = helm(&["install", "sb", &chart, "-n", "switchback"]).await;
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("kubectl -n switchback get secret sb-switchback-agent-master"),
        "{out}"
    );

    let names = k
        .ok(&[
            "get",
            "-n",
            "switchback",
            "deploy,sa,secret,svc,role,rolebinding",
            "-o",
            "name",
        ])
        .await;
    for want in [
        "deployment.apps/sb-switchback",
        "serviceaccount/sb-switchback",
        "secret/sb-switchback-agent-master",
        "service/sb-switchback-metrics",
        "role.rbac.authorization.k8s.io/sb-switchback-leader-election",
        "rolebinding.rbac.authorization.k8s.io/sb-switchback-leader-election",
    ] {
        assert!(names.contains(want), "{want} missing:\n{names}");
    }
    let cluster = k
        .ok(&["get", "clusterrole,clusterrolebinding,crd", "-o", "name"])
        .await;
    for want in [
        "clusterrole.rbac.authorization.k8s.io/sb-switchback",
        "clusterrolebinding.rbac.authorization.k8s.io/sb-switchback",
        "customresourcedefinition.apiextensions.k8s.io/proxyrollouts.switchback.dev",
    ] {
        assert!(cluster.contains(want), "{want} missing:\n{cluster}");
    }
    let token = async || {
        k.ok(&[
            "get",
            "-n",
            "switchback",
            "secret",
            "sb-switchback-agent-master",
            "-o",
            "jsonpath={.data.token}",
        ])
        .await
    };
    let first = token().await;
    assert!(first.len() >= 32, "{first}");

    // An upgrade keeps the token (helm `lookup`), so running agents keep accepting the controller.
    helm(&[
        "upgrade",
        "sb",
        &chart,
        "-n",
        "switchback",
        "--set",
        "replicaCount=3",
    ])
    .await;
    assert_eq!(token().await, first, "the upgrade replaced the agent token");
    let replicas = k
        .ok(&[
            "get",
            "-n",
            "switchback",
            "deploy",
            "sb-switchback",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await;
    assert_eq!(replicas, "3");

    // The proxy example applies on top: the CRD's schema accepts its ProxyRollout.
    let example = root().join("examples/kubernetes/proxy");
    k.ok(&["apply", "-f", &example.display().to_string()]).await;
    k.ok(&["get", "-n", "proxies", "proxyrollout", "edge"])
        .await;

    helm(&["uninstall", "sb", "-n", "switchback"]).await;
    let (_, left, _) = k
        .run(&[
            "get",
            "-n",
            "switchback",
            "deploy,sa,secret,role,rolebinding",
            "-o",
            "name",
        ])
        .await;
    assert!(!left.contains("sb-switchback"), "left behind:\n{left}");
    let (_, left, _) = k
        .run(&["get", "clusterrole,clusterrolebinding", "-o", "name"])
        .await;
    assert!(!left.contains("sb-switchback"), "left behind:\n{left}");
}
