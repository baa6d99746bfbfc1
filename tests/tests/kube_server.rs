//! Real kubectl against the in-process Kubernetes API test server: discovery, apply, get,
//! selectors, patches, delete, CRDs with schema validation, wait, watch and conflicts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use switchback_tests::kube::KubeServer;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Finds kubectl on PATH, then in `.tools/bin`; `None` only for a loud, requested skip.
fn kubectl_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file())
    });
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl");
    let found = on_path.or_else(|| tools.is_file().then_some(tools));
    if found.is_none() {
        if std::env::var("SWITCHBACK_SKIP_KUBECTL").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: kubectl not found and SWITCHBACK_SKIP_KUBECTL=1; this test did not run"
            );
            return None;
        }
        panic!(
            "kubectl not found on PATH or in .tools/bin: run `make tools` (or scripts/install-kubectl.sh), or set SWITCHBACK_SKIP_KUBECTL=1 to skip"
        );
    }
    found
}

struct Kubectl {
    bin: PathBuf,
    server: KubeServer,
    cache: tempfile::TempDir,
}

impl Kubectl {
    async fn start() -> Option<Kubectl> {
        let bin = kubectl_bin()?;
        let server = KubeServer::start()
            .await
            .expect("start the test API server");
        let cache = tempfile::tempdir().expect("kubectl cache dir");
        Some(Kubectl { bin, server, cache })
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.server.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env("HOME", self.cache.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().await.expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and insists it succeeds; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(
            ok,
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.server.dir().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.to_string_lossy().into_owned()
    }

    fn http(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.server.url()))
            .bearer_auth(self.server.token())
    }
}

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\n    tier: front\ndata:\n  nginx.conf: \"worker_processes 1;\"\n";

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas]
            properties:
              replicas: {type: integer, minimum: 1, maximum: 10}
              mode: {type: string, enum: [canary, full]}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  replicas: 3\n  mode: canary\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_minor_32() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let out = k.ok(&["version", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).expect("version JSON");
    assert_eq!(v["serverVersion"]["minor"], "32", "{out}");
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.32.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_lifecycle_with_selectors_patches_and_delete() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.ok(&["create", "namespace", "shop"]).await;
    let file = k.file("cm.yaml", CONFIGMAP);
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("configmap/web created"), "{out}");
    let out = k.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("unchanged"), "{out}");

    let cm: Value = serde_json::from_str(
        &k.ok(&["get", "cm", "web", "-n", "shop", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(cm["data"]["nginx.conf"], "worker_processes 1;");
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
    let cm: Value = serde_json::from_str(
        &k.ok(&["get", "cm", "web", "-n", "shop", "-o", "json"])
            .await,
    )
    .unwrap();
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

async fn apply_crd_and_widget(k: &Kubectl) {
    let out = k.ok(&["apply", "-f", &k.file("crd.yaml", CRD)]).await;
    assert!(out.contains("created"), "{out}");
    let out = k.ok(&["apply", "-f", &k.file("w1.yaml", WIDGET)]).await;
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_serves_custom_resources_with_printer_columns_and_wait() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
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
    let w: Value =
        serde_json::from_str(&k.ok(&["get", "widget", "w1", "-o", "json"]).await).unwrap();
    assert_eq!(w["metadata"]["generation"], 2);
    assert_eq!(w["status"]["conditions"][0]["type"], "Ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_server_rejects_an_invalid_custom_resource() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
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
    let Some(k) = Kubectl::start().await else {
        return;
    };
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
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.ok(&["create", "configmap", "c", "--from-literal=v=1"])
        .await;
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
