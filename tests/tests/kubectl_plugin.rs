//! `kubectl switchback` end to end: the `switchback` binary is put on PATH as `kubectl-switchback`
//! (a symlink, as the docs say to install it) and real kubectl runs it through its plugin
//! mechanism against the test API server. The ProxyRollout's status is written the way the
//! controller writes it (the status subresource), and the controller's acknowledgement of a
//! request is simulated by writing `status.handledRequest` once the request annotation appears.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::Api;
use switchback::operator::crd::ProxyRollout;
use switchback::operator::request::{ANNOTATION, Request, RequestVerb};
use switchback_tests::bin::switchback_bin;
use switchback_tests::kube::kubectl::{Kubectl, kubectl_bin};

const STABLE: &str = "5ab1e0c0ffee5ab1e0c0ffee5ab1e0c0ffee5ab1";
const TARGET: &str = "7a26e7aaaa007a26e7aaaa007a26e7aaaa007a26";
const BAD: &str = "bad0c0de1234bad0c0de1234bad0c0de1234bad0";
const OLDER: &str = "01de500d0000001de500d0000001de500d000000";

const ROLLOUT: &str = "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: https://git.example.test/edge-config.git\n  target:\n    selector:\n      app: edge\n";

/// A status as the controller writes it mid-canary, after an earlier rollback.
fn canary_status() -> serde_json::Value {
    serde_json::json!({"status": {
        "observedGeneration": 1,
        "phase": "Canary",
        "stable": {"commit": STABLE, "digest": "sha256:aa"},
        "target": {"commit": TARGET, "digest": "sha256:bb"},
        "pods": {"total": 4, "stable": 3, "target": 1, "changing": 0, "failed": 0, "ready": "4/4"},
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Progressing", "message": "3 of 4 pods on 5ab1e0c0ffee; phase Canary", "lastTransitionTime": "2026-11-25T02:55:00Z", "observedGeneration": 1},
            {"type": "Reconciling", "status": "True", "reason": "RollingOut", "message": "Canary 7a26e7aaaa00", "lastTransitionTime": "2026-11-25T02:55:00Z", "observedGeneration": 1},
            {"type": "Stalled", "status": "False", "reason": "NotStalled", "message": "", "lastTransitionTime": "2026-11-24T10:00:00Z", "observedGeneration": 1},
            {"type": "RolledBack", "status": "False", "reason": "NoRollback", "message": "", "lastTransitionTime": "2026-11-25T02:55:00Z", "observedGeneration": 1}
        ],
        "quarantined": [{"commit": BAD, "digest": "sha256:cc", "reason": "canary 502 rate 41% vs baseline 0.2% over 310 requests", "at": "2026-11-25T01:00:00Z"}],
        "lastIncident": {"commit": BAD, "reason": "canary 502 rate 41% vs baseline 0.2% over 310 requests", "decidedAt": "2026-11-25T01:00:00Z", "restoredAt": "2026-11-25T01:00:09Z"},
        "history": [
            {"commit": BAD, "outcome": "RolledBack", "at": "2026-11-25T01:00:00Z"},
            {"commit": STABLE, "outcome": "Promoted", "at": "2026-11-24T23:00:00Z"},
            {"commit": OLDER, "outcome": "Adopted", "at": "2026-11-24T10:00:00Z"}
        ]
    }})
}

/// A directory holding `kubectl-switchback` -> the built `switchback`, put first on PATH.
struct Plugin {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Plugin {
    fn install(kubeconfig: &Path) -> Plugin {
        let dir = tempfile::tempdir().expect("plugin dir");
        std::os::unix::fs::symlink(switchback_bin(), dir.path().join("kubectl-switchback"))
            .expect("symlink kubectl-switchback");
        Plugin {
            dir,
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// `kubectl switchback ARGS`, with the kubeconfig in $KUBECONFIG as a user would have it.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let kubectl = kubectl_bin().expect("kubectl (checked by Kubectl::up)");
        let path = std::env::join_paths(std::iter::once(self.dir.path().to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("PATH");
        let mut cmd = tokio::process::Command::new(kubectl);
        cmd.arg("switchback")
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        output(self.command(args)).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(
            ok,
            "kubectl switchback {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }
}

async fn output(mut cmd: tokio::process::Command) -> (bool, String, String) {
    let out = cmd.output().await.expect("run the command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The request in the annotation now, if any.
async fn annotation(api: &Api<ProxyRollout>) -> Option<Request> {
    let rollout = api.get("edge").await.expect("get edge");
    let text = rollout.metadata.annotations?.get(ANNOTATION)?.clone();
    Some(Request::parse(&text).expect("the plugin writes a valid request"))
}

/// Polls until the annotation holds a request other than `old` (deadline 30 s).
async fn new_request(api: &Api<ProxyRollout>, old: Option<&str>) -> Request {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = annotation(api).await
            && Some(r.id.as_str()) != old
        {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new request in the annotation after 30s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_switchback_shows_status_and_writes_requests_the_controller_acknowledges() {
    let Some(k) = Kubectl::up().await else { return };
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/");
    k.ok(&["apply", "-f", &crds.display().to_string()]).await;
    k.ok(&["create", "namespace", "edge"]).await;
    let file = k.file("rollout.yaml", ROLLOUT);
    k.ok(&["apply", "-f", &file]).await;
    let patch = canary_status().to_string();
    k.ok(&[
        "patch",
        "proxyrollout",
        "edge",
        "-n",
        "edge",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .await;
    let plugin = Plugin::install(&k.server.kubeconfig_path());
    let api: Api<ProxyRollout> = Api::namespaced(k.server.client().await, "edge");

    // status: the phase, short commits with ages, pods, conditions, incident, quarantine.
    let status = plugin.ok(&["status", "edge", "-n", "edge"]).await;
    assert!(status.starts_with("edge/edge  Canary\n"), "{status}");
    assert!(
        status.contains("stable      5ab1e0c0ffee  promoted "),
        "{status}"
    );
    assert!(
        status.contains("target      7a26e7aaaa00  rolling out for "),
        "{status}"
    );
    assert!(
        status.contains("4 ready of 4 selected: 3 on stable, 1 on target, 0 changing, 0 failed"),
        "{status}"
    );
    assert!(status.contains("request     none\n"), "{status}");
    assert!(
        status.contains("Ready        False  Progressing "),
        "{status}"
    );
    assert!(
        status.contains("3 of 4 pods on 5ab1e0c0ffee; phase Canary"),
        "{status}"
    );
    assert!(
        status.contains("last incident  bad0c0de1234 rolled back "),
        "{status}"
    );
    assert!(
        status.contains(" ago, every pod restored 9s later: canary 502"),
        "{status}"
    );
    assert!(
        status.contains("canary 502 rate 41% vs baseline 0.2% over 310 requests"),
        "{status}"
    );
    assert!(
        !status.contains(STABLE),
        "commits are shown short: {status}"
    );

    let list = plugin.ok(&["status", "-n", "edge"]).await;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with("NAME  PHASE"), "{list}");
    assert!(
        lines[1].starts_with("edge  Canary  5ab1e0c0ffee  7a26e7aaaa00  4/4"),
        "{list}"
    );

    let json: serde_json::Value = serde_json::from_str(
        &plugin
            .ok(&["status", "edge", "-n", "edge", "-o", "json"])
            .await,
    )
    .expect("status -o json is JSON");
    assert_eq!(json["phase"], "Canary");
    assert_eq!(json["stable"]["commit"], STABLE);
    assert!(json["pendingRequest"].is_null(), "{json}");

    // history: newest first, the stable and the quarantined commit marked.
    let history = plugin.ok(&["history", "edge", "-n", "edge"]).await;
    let rows: Vec<&str> = history.lines().collect();
    assert_eq!(rows.len(), 4, "{history}");
    assert!(rows[0].starts_with("COMMIT"), "{history}");
    assert!(rows[1].starts_with("bad0c0de1234  RolledBack"), "{history}");
    assert!(
        rows[1].contains("quarantined: canary 502 rate 41%"),
        "{history}"
    );
    assert!(rows[2].starts_with("5ab1e0c0ffee  Promoted"), "{history}");
    assert!(rows[2].ends_with("stable now"), "{history}");
    assert!(rows[3].starts_with("01de500d0000  Adopted"), "{history}");

    // promote --no-wait: the request lands in the annotation, as the contract says.
    let out = plugin
        .ok(&["promote", "edge", "-n", "edge", "--no-wait"])
        .await;
    assert!(
        out.contains("edge/edge: requested promote (request "),
        "{out}"
    );
    let promote = annotation(&api).await.expect("a request annotation");
    assert_eq!(promote.verb, RequestVerb::Promote);
    assert_eq!(promote.commit, None);
    assert_eq!(
        promote.by, "switchback-test",
        "the kubeconfig context's user"
    );
    assert!(out.contains(&promote.id), "{out}");
    let status = plugin.ok(&["status", "edge", "-n", "edge"]).await;
    assert!(
        status.contains("PENDING: promote by switchback-test, "),
        "{status}"
    );
    assert!(status.contains(&promote.id), "{status}");

    // rollback: a short SHA of a known-good commit resolves to the full one.
    let (ok, out, err) = plugin
        .run(&["rollback", "edge", "01de500d", "-n", "edge", "--no-wait"])
        .await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("requested rollback to 01de500d0000"), "{out}");
    assert!(
        err.contains(&format!("replacing the pending request {}", promote.id)),
        "{err}"
    );
    let rollback = annotation(&api).await.expect("a request annotation");
    assert_eq!(rollback.verb, RequestVerb::Rollback);
    assert_eq!(rollback.commit.as_deref(), Some(OLDER));

    // rollback to a commit that was never stable, or is quarantined, is refused with the choices.
    let (ok, _, err) = plugin
        .run(&["rollback", "edge", "deadbeef", "-n", "edge", "--no-wait"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("deadbeef is not a known-good commit of edge/edge"),
        "{err}"
    );
    assert!(err.contains("5ab1e0c0ffee  stable now"), "{err}");
    assert!(err.contains("01de500d0000  Adopted"), "{err}");
    let (ok, _, err) = plugin
        .run(&["rollback", "edge", "bad0c0de", "-n", "edge", "--no-wait"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("bad0c0de1234 is quarantined (canary 502"),
        "{err}"
    );
    assert_eq!(
        annotation(&api).await.map(|r| r.id),
        Some(rollback.id.clone()),
        "a refused rollback writes nothing"
    );

    // --wait (the default): the plugin waits until the controller acknowledges the request.
    let waiting = tokio::spawn(output(plugin.command(&[
        "promote",
        "edge",
        "-n",
        "edge",
        "--timeout",
        "60s",
    ])));
    let request = new_request(&api, Some(&rollback.id)).await;
    assert_eq!(request.verb, RequestVerb::Promote);
    let ack = serde_json::json!({"status": {
        "handledRequest": request.id,
        "phase": "Idle",
        "stable": {"commit": TARGET, "digest": "sha256:bb"},
        "target": null
    }})
    .to_string();
    k.ok(&[
        "patch",
        "proxyrollout",
        "edge",
        "-n",
        "edge",
        "--subresource=status",
        "--type=merge",
        "-p",
        &ack,
    ])
    .await;
    let (ok, out, err) = waiting.await.expect("plugin task");
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("edge/edge: the controller acted on it; phase Canary -> Idle"),
        "{out}"
    );
    let status = plugin.ok(&["status", "edge", "-n", "edge"]).await;
    assert!(
        status.contains(&format!("none pending (last handled: {})", request.id)),
        "{status}"
    );

    // No acknowledgement in time: the plugin says the controller has not acted and what to check.
    let (ok, _, err) = plugin
        .run(&["pause", "edge", "-n", "edge", "--timeout", "1s"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("timed out after 1s: the controller has not acted on request"),
        "{err}"
    );
    assert!(
        err.contains("Check that the controller is running and leading"),
        "{err}"
    );
    assert_eq!(
        annotation(&api).await.map(|r| r.verb),
        Some(RequestVerb::Pause),
        "the request stays for the controller"
    );

    // --kubeconfig instead of $KUBECONFIG, and the namespace from the context (`default`).
    let mut cmd = plugin.command(&[
        "status",
        "--kubeconfig",
        &k.server.kubeconfig_path().display().to_string(),
    ]);
    cmd.env_remove("KUBECONFIG");
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(out, "no ProxyRollouts in namespace default\n");

    // `switchback plugin ...` for people without the symlink.
    let mut cmd = tokio::process::Command::new(switchback_bin());
    cmd.args(["plugin", "history", "edge", "-n", "edge"])
        .env("KUBECONFIG", k.server.kubeconfig_path())
        .stdin(Stdio::null());
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.starts_with("COMMIT"), "{out}");

    let (ok, _, err) = plugin.run(&["status", "nope", "-n", "edge"]).await;
    assert!(!ok);
    assert!(
        err.contains("no ProxyRollout \"nope\" in namespace \"edge\""),
        "{err}"
    );
}
