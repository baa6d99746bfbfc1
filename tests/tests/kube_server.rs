//! Real kubectl against the in-process Kubernetes API test server: discovery, apply, get,
//! selectors, patches, delete, CRDs with schema validation, wait, watch and conflicts.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use switchback_tests::kube::fixtures::{CRD, apply_crd_and_widget, write_demo_chart};
use switchback_tests::kube::kubectl::{Kubectl, tool_bin};
use tokio::io::{AsyncBufReadExt, BufReader};

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\n    tier: front\ndata:\n  nginx.conf: \"worker_processes 1;\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_minor_32() {
    let Some(k) = Kubectl::up().await else { return };
    let out = k.ok(&["version", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).expect("version JSON");
    assert_eq!(v["serverVersion"]["minor"], "32", "{out}");
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.32.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_lifecycle_with_selectors_patches_and_delete() {
    let Some(k) = Kubectl::up().await else { return };
    k.ok(&["create", "namespace", "shop"]).await;
    let file = k.file("cm.yaml", CONFIGMAP);
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("configmap/web created"), "{out}");
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("unchanged"), "{out}");
    let changed = k.file(
        "cm2.yaml",
        &CONFIGMAP.replace("worker_processes 1;", "worker_processes 2;"),
    );
    let out = k.ok(&["apply", "-f", &changed]).await;
    assert!(out.contains("configmap/web configured"), "{out}");
    let out = k
        .ok(&[
            "get",
            "cm",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.nginx\\.conf}",
        ])
        .await;
    assert_eq!(out, "worker_processes 2;");

    let cm = k.json(&["get", "cm", "web", "-n", "shop"]).await;
    assert_eq!(cm["data"]["nginx.conf"], "worker_processes 2;");
    assert!(
        cm["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(cm["metadata"]["creationTimestamp"].is_string());

    k.ok(&[
        "create",
        "configmap",
        "other",
        "-n",
        "shop",
        "--from-literal=a=b",
    ])
    .await;
    let names = k
        .ok(&[
            "get",
            "cm",
            "-n",
            "shop",
            "-l",
            "app=web,tier in (front,back)",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(names.trim(), "configmap/web");
    let names = k
        .ok(&["get", "cm", "-n", "shop", "-l", "app!=web", "-o", "name"])
        .await;
    assert_eq!(names.trim(), "configmap/other");
    let table = k.ok(&["get", "cm", "-n", "shop"]).await;
    assert!(
        table.starts_with("NAME") && table.contains("AGE") && table.contains("web"),
        "{table}"
    );

    k.ok(&[
        "patch",
        "cm",
        "web",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"extra":"1"}}"#,
    ])
    .await;
    k.ok(&["patch", "cm", "web", "-n", "shop", "--type", "json", "-p", r#"[{"op":"replace","path":"/data/extra","value":"2"},{"op":"remove","path":"/data/nginx.conf"}]"#]).await;
    let cm = k.json(&["get", "cm", "web", "-n", "shop"]).await;
    assert_eq!(cm["data"], json!({"extra": "2"}));

    k.ok(&["label", "cm", "web", "-n", "shop", "stage=canary"])
        .await;
    k.ok(&["apply", "--server-side", "-f", &k.file("ssa.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: shop\ndata:\n  k: v\n")]).await;
    let out = k
        .ok(&["get", "cm", "ssa", "-n", "shop", "-o", "jsonpath={.data.k}"])
        .await;
    assert_eq!(out, "v");

    let out = k.ok(&["delete", "cm", "web", "-n", "shop"]).await;
    assert!(out.contains("deleted"), "{out}");
    let (ok, _, stderr) = k.run(&["get", "cm", "web", "-n", "shop"]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_serves_custom_resources_with_printer_columns_and_wait() {
    let Some(k) = Kubectl::up().await else { return };
    apply_crd_and_widget(&k).await;
    let table = k.ok(&["get", "wd"]).await;
    assert!(
        table.contains("REPLICAS") && table.contains("w1") && table.contains('3'),
        "{table}"
    );

    let wait = k
        .command(&[
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "--timeout=300s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl wait");
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Rolled",
        "message": "all pods on the new revision", "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let resp = k
        .http(
            reqwest::Method::PATCH,
            "/apis/example.com/v1/namespaces/default/widgets/w1/status",
        )
        .header("Content-Type", "application/merge-patch+json")
        .body(status.to_string())
        .send()
        .await
        .expect("patch status");
    assert_eq!(resp.status(), 200);
    let out = wait.wait_with_output().await.expect("kubectl wait");
    assert!(
        out.status.success(),
        "wait failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));

    // A main-resource write keeps the status set through the subresource.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ])
    .await;
    let w = k.json(&["get", "widget", "w1"]).await;
    assert_eq!(w["metadata"]["generation"], 2);
    assert_eq!(w["status"]["conditions"][0]["type"], "Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_server_rejects_an_invalid_custom_resource() {
    let Some(k) = Kubectl::up().await else { return };
    apply_crd_and_widget(&k).await;
    let bad = k.file(
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  replicas: 20\n",
    );
    let (ok, _, stderr) = k.run(&["apply", "--dry-run=server", "-f", &bad]).await;
    assert!(!ok, "an out-of-range widget was accepted");
    assert!(
        stderr.contains("spec.replicas in body should be less than or equal to 10"),
        "{stderr}"
    );
    let bad_enum = k.file("enum.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  replicas: 2\n  mode: big\n");
    let (ok, _, stderr) = k.run(&["apply", "--dry-run=server", "-f", &bad_enum]).await;
    assert!(
        !ok && stderr.contains("spec.mode: Unsupported value"),
        "{stderr}"
    );

    let unknown = k.file("unknown.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  replicas: 2\n  colour: red\n");
    let (ok, _, stderr) = k.run(&["apply", "--dry-run=server", "-f", &unknown]).await;
    assert!(
        !ok && stderr.contains(r#"unknown field "spec.colour""#),
        "{stderr}"
    );
    k.ok(&["apply", "--validate=false", "-f", &unknown]).await;
    let w2 = k
        .ok(&["get", "widget", "w2", "-o", "jsonpath={.spec}"])
        .await;
    assert_eq!(w2, r#"{"replicas":2}"#, "undeclared fields are pruned");

    let good = k.file(
        "good.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: good\nspec:\n  replicas: 2\n",
    );
    let out = k.ok(&["apply", "--dry-run=server", "-f", &good]).await;
    assert!(out.contains("server dry run"), "{out}");
    let (ok, _, stderr) = k.run(&["get", "widget", "good"]).await;
    assert!(
        !ok && stderr.contains("NotFound"),
        "dry run stored the object: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_sees_an_update() {
    let Some(k) = Kubectl::up().await else { return };
    k.ok(&["create", "configmap", "watched", "--from-literal=v=1"])
        .await;
    let mut child = k
        .command(&[
            "get",
            "cm",
            "watched",
            "-w",
            "-o",
            "jsonpath={.data.v}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start kubectl get -w");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // A hang guard only: a broken watch fails here instead of hanging the suite.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let first = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("first watch line");
    assert_eq!(first.unwrap().as_deref(), Some("1"));
    k.ok(&[
        "patch",
        "cm",
        "watched",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ])
    .await;
    let second = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("update line");
    assert_eq!(second.unwrap().as_deref(), Some("2"));
    child.kill().await.expect("stop kubectl get -w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_gets_409_conflict() {
    let Some(k) = Kubectl::up().await else { return };
    k.ok(&["create", "configmap", "c", "--from-literal=v=1"])
        .await;
    let ready = k
        .http(reqwest::Method::GET, "/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.text().await.unwrap(), "ok");
    let path = "/api/v1/namespaces/default/configmaps/c";
    let cm: Value = k
        .http(reqwest::Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut update = cm.clone();
    update["data"]["v"] = json!("2");
    let resp = k
        .http(reqwest::Method::PUT, path)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    update["data"]["v"] = json!("3");
    let resp = k
        .http(reqwest::Method::PUT, path)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["kind"], "Status");
    let out = k.ok(&["get", "cm", "c", "-o", "jsonpath={.data.v}"]).await;
    assert_eq!(out, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_kinds_and_verbs() {
    let Some(k) = Kubectl::up().await else { return };
    apply_crd_and_widget(&k).await;
    let out = k.ok(&["api-resources"]).await;
    for name in [
        "configmaps",
        "secrets",
        "pods",
        "events",
        "leases",
        "widgets",
        "customresourcedefinitions",
    ] {
        assert!(
            out.contains(name),
            "{name} missing from api-resources:\n{out}"
        );
    }
    let out = k.ok(&["explain", "widget.spec"]).await;
    assert!(out.contains("replicas"), "{out}");

    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=password=hunter2",
    ])
    .await;
    let s = k.json(&["get", "secret", "s"]).await;
    assert_eq!(s["data"]["password"], "aHVudGVyMg==");
    assert_eq!(s["type"], "Opaque");

    let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: leader\nspec:\n  holderIdentity: a\n";
    k.ok(&["apply", "-f", &k.file("lease.yaml", lease)]).await;
    let out = k
        .ok(&[
            "get",
            "lease",
            "leader",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await;
    assert_eq!(out, "a");

    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: web}\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n";
    k.ok(&["apply", "-f", &k.file("pod.yaml", pod)]).await;
    k.ok(&[
        "patch",
        "pod",
        "p",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .await;
    let out = k
        .ok(&["get", "pod", "p", "-o", "jsonpath={.status.phase}"])
        .await;
    assert_eq!(out, "Running");
    let out = k.ok(&["describe", "pod", "p"]).await;
    assert!(out.contains("Name:") && out.contains("p"), "{out}");
    let out = k
        .ok(&[
            "get",
            "pods",
            "--field-selector",
            "metadata.name=p",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.trim(), "pod/p");

    let out = k.ok(&["delete", "pod", "p", "--dry-run=server"]).await;
    assert!(out.contains("server dry run"), "{out}");
    k.ok(&["get", "pod", "p"]).await;

    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/cleanup]\ndata:\n  a: b\n";
    k.ok(&["apply", "-f", &k.file("held.yaml", held)]).await;
    k.ok(&["delete", "cm", "held", "--wait=false"]).await;
    let cm = k.json(&["get", "cm", "held"]).await;
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    k.ok(&[
        "patch",
        "cm",
        "held",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let (ok, _, stderr) = k.run(&["get", "cm", "held"]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");

    let (ok, _, stderr) = k
        .run(&["patch", "widget", "w1", "-p", r#"{"spec":{"replicas":2}}"#])
        .await;
    assert!(
        !ok && stderr.contains("unknown format"),
        "strategic merge on a CR must be 415: {stderr}"
    );
    assert_eq!(k.ok(&["auth", "can-i", "get", "pods"]).await.trim(), "yes");
    // Deleting a CRD deletes its objects: recreated, it serves an empty collection.
    k.ok(&["delete", "crd", "widgets.example.com"]).await;
    k.ok(&["apply", "-f", &k.file("crd-again.yaml", CRD)]).await;
    assert_eq!(k.ok(&["get", "widgets", "-o", "name"]).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_table_prints_new_rows() {
    let Some(k) = Kubectl::up().await else { return };
    k.ok(&["create", "configmap", "first"]).await;
    let mut child = k
        .command(&["get", "cm", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start kubectl get -w");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut next = async || {
        tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("watch line before the deadline")
            .expect("read kubectl output")
            .expect("kubectl get -w ended early")
    };
    assert!(next().await.starts_with("NAME"));
    assert!(next().await.starts_with("first"));
    k.ok(&["create", "configmap", "second"]).await;
    assert!(next().await.starts_with("second"));
    child.kill().await.expect("stop kubectl get -w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_version_gets_410_and_generate_name_works() {
    let Some(k) = Kubectl::up().await else { return };
    let list = "/api/v1/namespaces/default/configmaps";
    let resp = k
        .http(reqwest::Method::POST, list)
        .json(&json!({"metadata": {"generateName": "gen-"}, "data": {"n": "0"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let first_rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{list}/{name}");
    for n in 1..=switchback_tests::kube::store::HISTORY + 1 {
        let resp = k
            .http(reqwest::Method::PATCH, &path)
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"data": {"n": n.to_string()}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let body = k
        .http(
            reqwest::Method::GET,
            &format!("{list}?watch=true&resourceVersion={first_rv}"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let event: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_list_uninstall() {
    let Some(k) = Kubectl::up().await else { return };
    let Some(helm) = tool_bin("helm") else { return };
    let chart = write_demo_chart(k.server.dir());
    let helm = async |args: &[&str]| k.helm(&helm, args).await;
    assert!(
        helm(&["install", "r1", &chart])
            .await
            .contains("STATUS: deployed")
    );
    helm(&["upgrade", "r1", &chart, "--set", "a=2"]).await;
    assert_eq!(
        k.ok(&["get", "cm", "r1-cfg", "-o", "jsonpath={.data.a}"])
            .await,
        "2"
    );
    let out = k.ok(&["get", "deploy,sa,clusterrole", "-o", "name"]).await;
    assert!(
        out.contains("deployment.apps/r1-op") && out.contains("serviceaccount/r1-sa"),
        "{out}"
    );
    let list = helm(&["list"]).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("r1") && l.contains("deployed")),
        "{list}"
    );
    helm(&["uninstall", "r1"]).await;
    let (ok, _, stderr) = k.run(&["get", "cm", "r1-cfg"]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
    assert!(helm(&["list"]).await.lines().count() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_drops_fields_and_reports_conflicts() {
    let Some(k) = Kubectl::up().await else { return };
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\ndata:\n{data}")
    };
    let v1 = k.file("v1.yaml", &cm("  a: \"1\"\n  b: \"1\"\n"));
    k.ok(&["apply", "--server-side", "-f", &v1]).await;
    let v2 = k.file("v2.yaml", &cm("  a: \"2\"\n"));
    k.ok(&["apply", "--server-side", "-f", &v2]).await;
    let data = k
        .ok(&["get", "cm", "owned", "-o", "jsonpath={.data}"])
        .await;
    assert_eq!(
        data, r#"{"a":"2"}"#,
        "b was dropped from the applied config"
    );

    let other = k.file("other.yaml", &cm("  a: \"3\"\n"));
    let (ok, _, stderr) = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            &other,
        ])
        .await;
    assert!(
        !ok && stderr.contains(r#"conflict with "kubectl": .data.a"#),
        "{stderr}"
    );
    let refused = k
        .server
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        (refused.status, refused.content_type.as_str()),
        (409, "application/apply-patch+yaml")
    );
    assert!(refused.uri.contains("fieldManager=other") && refused.uri.contains("force=false"));
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        &other,
    ])
    .await;
    let data = k
        .ok(&["get", "cm", "owned", "-o", "jsonpath={.data.a}"])
        .await;
    assert_eq!(data, "3");

    // Client-side then server-side apply: kubectl's last-applied migration must go through.
    let cs = k.file(
        "cs.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: migrated\ndata:\n  x: \"1\"\n",
    );
    k.ok(&["apply", "-f", &cs]).await;
    k.ok(&["apply", "--server-side", "-f", &cs]).await;
    k.ok(&["apply", "--server-side", "-f", &cs]).await;
}
