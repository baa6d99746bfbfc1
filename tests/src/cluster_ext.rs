//! What tests running the default strategy need of an operator [`Cluster`] beyond
//! `operator_fixture`: users sending traffic to the proxy pods (the default strategy holds a
//! step that saw too little), waits as long as a rollout through every default step takes, the
//! rollout's Events by reason, every status it went through, and `kubectl switchback` run as a
//! user runs it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::bin::switchback_bin;
use crate::kube::kubectl::tool_bin;
use crate::kube::kubelet::NGINX_PORT;
use crate::load::{Load, LoadSpec};
use crate::operator_fixture::{Cluster, PATIENCE};

/// The `Host` the tests' users send: the cluster's site has no `server_name`, so any name
/// reaches it; one that says where the traffic comes from reads better in nginx's logs.
pub const SITE_HOST: &str = "edge.example.test";

/// Every status the ProxyRollout `edge` had, in order, as the API server stored it: what a
/// test reads afterwards to see the steps a rollout went through (Events cannot say it: the
/// controller's recorder folds repeated reasons into one Event that keeps its first note).
pub struct StatusTrail {
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusTrail {
    /// The statuses so far, oldest first.
    pub fn statuses(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The distinct values of `status.analysis.step` (e.g. `2/4`), in the order first seen.
    pub fn steps(&self) -> Vec<String> {
        let mut steps: Vec<String> = Vec::new();
        for s in self.statuses() {
            if let Some(step) = s["analysis"]["step"].as_str()
                && !steps.iter().any(|x| x == step)
            {
                steps.push(step.to_string());
            }
        }
        steps
    }
}

impl Drop for StatusTrail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cluster {
    /// Records every status of the ProxyRollout `edge` from now on, from the API server's own
    /// change stream (so no write falls between two polls).
    pub fn follow_status(&self) -> StatusTrail {
        let (_, mut changes) = self
            .k
            .server
            .list_and_subscribe("switchback.dev", "proxyrollouts");
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let into = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        if change.key.plural != "proxyrollouts" || change.key.name != "edge" {
                            continue;
                        }
                        let status = change.object["status"].clone();
                        if !status.is_null() {
                            into.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(status);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        StatusTrail { seen, task }
    }

    /// Starts users sending `GET /` to every Ready proxy pod at `per_pod_rps`, following pods
    /// that join or leave; they stop when the returned [`Load`] is stopped or dropped.
    pub async fn start_traffic(&self, per_pod_rps: u32) -> Load {
        self.start_traffic_with(LoadSpec::new(per_pod_rps).host(SITE_HOST))
            .await
    }

    /// [`Cluster::start_traffic`] with a spec of the test's own (other paths, another host).
    pub async fn start_traffic_with(&self, spec: LoadSpec) -> Load {
        let client = self.k.server.client().await;
        Load::follow_pods(client, "edge", "app=edge", NGINX_PORT, spec)
    }

    /// Polls `jsonpath` until `done` holds, for up to `patience` (a rollout through every step
    /// takes longer than [`PATIENCE`]); fails with the last value and the rollout's Events.
    pub async fn wait_for_within(
        &self,
        what: &str,
        path: &str,
        patience: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let (ok, out, _) = self
                .k
                .run(&["get", "-n", "edge", what, "-o", &format!("jsonpath={path}")])
                .await;
            let out = out.trim().to_string();
            if ok && done(&out) {
                return out;
            }
            if tokio::time::Instant::now() >= deadline {
                let events = self.event_lines().await;
                panic!("waited {patience:?} for {what} {path}; last: {out:?}\nevents:\n{events}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `kubectl get -n edge prx` until what it prints satisfies `done` (within
    /// [`PATIENCE`]) and returns it: the columns a person sees.
    pub async fn wait_for_printed(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (ok, out, _) = self.k.run(&["get", "-n", "edge", "prx"]).await;
            if ok && done(&out) {
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kubectl get prx never showed what was wanted; last:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The notes of the Events with `reason`, oldest first.
    pub async fn events(&self, reason: &str) -> Vec<String> {
        let path =
            format!("{{range .items[?(@.reason==\"{reason}\")]}}{{.note}}{{\"\\n\"}}{{end}}");
        self.jsonpath("events.events.k8s.io", &path)
            .await
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// How many times an Event with `reason` was recorded: the controller's recorder folds
    /// repeats into one Event with a `series.count`.
    pub async fn event_count(&self, reason: &str) -> u64 {
        let events = self
            .k
            .json(&["get", "-n", "edge", "events.events.k8s.io"])
            .await;
        events["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|e| e["reason"] == reason)
                    .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Every Event as `type reason: note`, one per line, for failure messages.
    pub async fn event_lines(&self) -> String {
        self.jsonpath(
            "events.events.k8s.io",
            "{range .items[*]}{.type} {.reason}: {.note}{\"\\n\"}{end}",
        )
        .await
    }

    /// Waits for an Event with `reason` whose note contains `needle`, within [`PATIENCE`].
    pub async fn wait_event(&self, reason: &str, needle: &str) -> String {
        self.wait_event_within(reason, needle, PATIENCE).await
    }

    /// [`Cluster::wait_event`] with a patience of the test's own.
    pub async fn wait_event_within(
        &self,
        reason: &str,
        needle: &str,
        patience: Duration,
    ) -> String {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(note) = self
                .events(reason)
                .await
                .into_iter()
                .find(|n| n.contains(needle))
            {
                return note;
            }
            if tokio::time::Instant::now() >= deadline {
                let events = self.event_lines().await;
                panic!("no {reason} Event with {needle:?} within {patience:?}; events:\n{events}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kubectl switchback ARGS` as a user runs it: real kubectl finding the plugin
    /// (`kubectl-switchback`, a symlink to the built binary) on PATH, with `$KUBECONFIG` set.
    /// Returns (success, stdout, stderr).
    pub async fn kubectl_switchback(&self, args: &[&str]) -> (bool, String, String) {
        let dir = self.tmp.path().join("plugin-bin");
        let link = dir.join("kubectl-switchback");
        if !link.exists() {
            std::fs::create_dir_all(&dir).expect("plugin dir");
            std::os::unix::fs::symlink(switchback_bin(), &link).expect("symlink the plugin");
        }
        let kubectl = tool_bin("kubectl").expect("kubectl (Cluster::up found it)");
        let path = std::env::join_paths(std::iter::once(dir.clone()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("PATH");
        let out = tokio::process::Command::new(kubectl)
            .arg("switchback")
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", self.k.server.kubeconfig_path())
            .env("HOME", &dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run kubectl switchback");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
