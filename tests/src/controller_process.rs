//! A `switchback controller` process against the test API server, for tests that look at a
//! controller from outside as an attacker would: what it sends to servers, and what it writes
//! into Events, status and its log. A real process (not the in-process controller of
//! [`crate::operator_fixture`]) so that its flags are the real ones and its environment is its
//! own: `SSL_CERT_FILE` makes it trust a test certificate ([`crate::http_recorder::TestCa`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::bin::switchback_bin;
use crate::kube::kubectl::Kubectl;

/// How long any one wait may take before the test fails with what it saw.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A namespace on a fresh test API server with the ProxyRollout CRD, and a scratch directory.
pub struct World {
    /// kubectl against the test server.
    pub k: Kubectl,
    /// The namespace everything goes in.
    pub namespace: String,
    /// Scratch files: repositories, the controller's cache, HOME and log.
    pub tmp: tempfile::TempDir,
}

impl World {
    /// A server with the CRD and `namespace`; `None` (with a message) when kubectl is missing.
    pub async fn up(namespace: &str) -> Option<World> {
        let k = Kubectl::up().await?;
        let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/proxyrollout.yaml");
        k.ok(&["apply", "-f", &crd.display().to_string()]).await;
        k.ok(&["create", "namespace", namespace]).await;
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("home")).expect("HOME");
        Some(World {
            k,
            namespace: namespace.to_string(),
            tmp,
        })
    }

    /// The controller's git cache directory (`--cache-dir`).
    pub fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    /// Starts `switchback controller` for the namespace with `args` added, trusting `ca_file`
    /// for https when given; its log (debug for switchback) goes to [`Controller::log`].
    pub fn controller(&self, args: &[&str], ca_file: Option<&Path>) -> Controller {
        let log = self.tmp.path().join("controller.log");
        let file = std::fs::File::create(&log).expect("controller log");
        let mut cmd = Command::new(switchback_bin());
        cmd.args(["controller", "--namespace", &self.namespace])
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path().join("home"))
            .env("KUBECONFIG", self.k.server.kubeconfig_path())
            .env("SWITCHBACK_LOG", "switchback=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        if let Some(ca) = ca_file {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let child = cmd.spawn().expect("spawn switchback controller");
        Controller { child, log }
    }

    /// Creates (or replaces) Secret `name` with `data` (as stringData) and `annotations`.
    pub async fn secret(&self, name: &str, data: &[(&str, &str)], annotations: &[(&str, &str)]) {
        let to_map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
        };
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace, "annotations": to_map(annotations)},
            "stringData": to_map(data),
        });
        self.apply(&format!("secret-{name}.json"), &secret).await;
    }

    /// Creates ProxyRollout `name` following `url` (ref `main`, every second), selecting no pod,
    /// with `source` merged into `spec.source` (e.g. a `secretRef`).
    pub async fn rollout(&self, name: &str, url: &str, source: Value) {
        let mut spec_source = json!({"url": url, "ref": "main", "interval": "1s"});
        if let (Some(into), Some(from)) = (spec_source.as_object_mut(), source.as_object()) {
            into.extend(from.clone());
        }
        let rollout = json!({
            "apiVersion": "switchback.dev/v1alpha1", "kind": "ProxyRollout",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"source": spec_source, "target": {"selector": {"app": "nothing-here"}}},
        });
        self.apply(&format!("rollout-{name}.json"), &rollout).await;
    }

    async fn apply(&self, file: &str, object: &Value) {
        let path = self.k.file(file, &object.to_string());
        self.k.ok(&["apply", "-f", &path]).await;
    }

    /// The Events on ProxyRollout `rollout`, as (reason, message).
    pub async fn events(&self, rollout: &str) -> Vec<(String, String)> {
        let list = self.k.json(&["get", "events", "-n", &self.namespace]).await;
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == rollout)
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The message of the first Event on `rollout` with `reason`, waiting up to [`PATIENCE`];
    /// `Err` when there is none by then, or as soon as `stop`, given the Events so far, says
    /// (why) waiting longer is pointless: the attack already worked.
    pub async fn event(
        &self,
        rollout: &str,
        reason: &str,
        stop: impl Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let events = self.events(rollout).await;
            if let Some((_, message)) = events.iter().find(|(r, _)| r == reason) {
                return Ok(message.clone());
            }
            if let Some(why) = stop(&format!("{events:?}")) {
                return Err(format!("{why}; events so far: {events:?}"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no {reason} Event on {rollout} within {PATIENCE:?}: {events:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `Stalled` condition's message of `rollout` once it contains `part`, waiting up to
    /// [`PATIENCE`]; `Err` with the last status when it never does, or as soon as `stop`, given
    /// the status, says so.
    pub async fn stalled(
        &self,
        rollout: &str,
        part: &str,
        stop: impl Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.status(rollout).await;
            let message = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Stalled" && c["status"] == "True")
                .and_then(|c| c["message"].as_str())
                .unwrap_or_default()
                .to_string();
            if message.contains(part) {
                return Ok(message);
            }
            if let Some(why) = stop(&status.to_string()) {
                return Err(format!("{why}; status: {status}"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "Stalled never said {part:?} within {PATIENCE:?}; status: {status}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `status` of `rollout` (null before the controller wrote any).
    pub async fn status(&self, rollout: &str) -> Value {
        let object = self
            .k
            .json(&["get", "proxyrollout", rollout, "-n", &self.namespace])
            .await;
        object["status"].clone()
    }

    /// Everything the controller wrote that a ProxyRollout's author can read: every Event and
    /// every rollout's status (not the spec: the author wrote that), as one text to search.
    pub async fn everything_written(&self) -> String {
        let events = self.k.json(&["get", "events", "-n", &self.namespace]).await;
        let rollouts = self
            .k
            .json(&["get", "proxyrollouts", "-n", &self.namespace])
            .await;
        let statuses: Vec<&Value> = rollouts["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| &r["status"])
            .collect();
        format!(
            "{events}\n{}",
            Value::from(statuses.into_iter().cloned().collect::<Vec<_>>())
        )
    }
}

impl World {
    /// The words the controller wrote for people: every Event's message and every rollout's
    /// condition messages, one per line (no uids, versions or times to match by accident).
    pub async fn messages_written(&self) -> String {
        let events = self.k.json(&["get", "events", "-n", &self.namespace]).await;
        let rollouts = self
            .k
            .json(&["get", "proxyrollouts", "-n", &self.namespace])
            .await;
        let items = |list: &Value| list["items"].as_array().cloned().unwrap_or_default();
        let mut lines: Vec<String> = items(&events)
            .iter()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect();
        for rollout in items(&rollouts) {
            for condition in rollout["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                lines.extend(condition["message"].as_str().map(str::to_string));
            }
        }
        lines.join("\n")
    }
}

/// A running controller process; killed when dropped.
pub struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test, with its log, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the controller exited with {status}:\n{}", self.log());
        }
    }

    /// Stops the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
