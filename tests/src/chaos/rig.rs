//! The rig every chaos test runs on: three real nginx pods (the process kubelet), the rollout
//! `edge` of the default strategy with the bake shortened to 8 s (every policy at its default),
//! a controller (in-process, or a process the kill tests SIGKILL), users at [`PER_POD_RPS`], a
//! [`Witness`], and the waits, the commits and the [`Row`] each fault needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Child;

use super::invariants::check_all;
use super::report::{FaultWindow, Row, outage};
use super::witness::{Tell, Witness};
use crate::git_fixture::git_cli as git;
use crate::git_http::GitHttp;
use crate::load::{Load, PER_POD_RPS};
use crate::operator_fixture::{Cluster, PATIENCE};

pub const PODS: [&str; 3] = ["edge-0", "edge-1", "edge-2"];

/// The default strategy with the bake shortened from 3m to 8s (as operator_e2e's promote tests):
/// at [`PER_POD_RPS`] a step's canary pod serves enough in one bake for a healthy verdict.
pub const SHORT_BAKE: &str = "    bake: 8s\n";

/// Four steps of 8 s plus a fault's outage and the controller's backoff after it, on a loaded
/// 2-core machine.
pub const ROLLOUT_PATIENCE: Duration = Duration::from_secs(300);

/// A cluster under test: pods, the witness, the analysis' users and the stable digest.
pub struct Rig {
    pub c: Cluster,
    pub witness: Witness,
    pub users: Load,
    /// The controller process, for the kill tests (`None`: in-process).
    pub controller: Option<Child>,
    pub runs: u32,
    /// The smart-HTTP server the rollout fetches from ([`Rig::up_over_http`]; `None`: the
    /// rollout follows a local repository).
    pub git: Option<GitHttp>,
}

impl Rig {
    /// Pods on `subnet`, the rollout `edge` (default strategy, 8 s bake, `rollback` lines if
    /// any), a controller (a process when `process`), users flowing, the first commit adopted.
    pub async fn up(subnet: u8, rollback: &str, process: bool) -> Option<Rig> {
        let mut c = Cluster::up(subnet, &PODS).await?;
        let witness = Witness::start(&c.k.server);
        apply_edge(&c, rollback).await;
        let controller = if process {
            Some(controller_process(&c, 0))
        } else {
            c.start_controller().await;
            None
        };
        Some(Rig::started(c, witness, controller, None).await)
    }

    /// The rig once its controller runs: the first commit adopted, users flowing.
    pub async fn started(
        c: Cluster,
        witness: Witness,
        controller: Option<Child>,
        git: Option<GitHttp>,
    ) -> Rig {
        c.wait_condition("Ready").await;
        let users = c.start_traffic(PER_POD_RPS).await;
        users.wait_flowing(PODS.len(), 150, PATIENCE).await;
        Rig {
            c,
            witness,
            users,
            controller,
            runs: 0,
            git,
        }
    }

    /// [`Rig::up`] with an in-process controller fetching the rollout's source over
    /// `http://` from a [`GitHttp`] server on `127.0.<subnet>.250` serving the bare `origin.git`
    /// every commit is pushed to, so the git faults (remote down, slow) can be injected.
    pub async fn up_over_http(subnet: u8) -> Option<Rig> {
        let mut c = Cluster::up(subnet, &PODS).await?;
        let witness = Witness::start(&c.k.server);
        origin(&c);
        let server = GitHttp::start(&format!("127.0.{subnet}.250"), c.tmp.path())
            .expect("start the git http server");
        apply_following(&c, &server.url("origin.git")).await;
        c.start_controller().await;
        Some(Rig::started(c, witness, None, Some(server)).await)
    }

    /// The git server of a rig [`Rig::up_over_http`] made.
    pub fn git_http(&self) -> &GitHttp {
        self.git.as_ref().expect("a rig made by Rig::up_over_http")
    }

    /// Commits a good change (pushed to origin when there is one) and returns its id.
    pub fn commit_good(&mut self) -> String {
        self.runs += 1;
        let id = self.c.commit(
            &format!("return 200 \"v{}\\n\";", self.runs),
            &format!("v{}", self.runs),
        );
        self.push();
        id
    }

    /// Commits a change whose upstream is dead (every request 502) and returns its id.
    pub fn commit_bad(&mut self) -> String {
        self.runs += 1;
        let id = self.c.commit(
            &format!("proxy_pass http://app/{};", self.runs),
            &format!("move app {}", self.runs),
        );
        self.push();
        id
    }

    /// Pushes `main` to the origin, when the rig has one (the write-back tests).
    pub fn push(&self) {
        if self.c.tmp.path().join("origin.git").exists() {
            git(&self.c.repo, &["push", "-q", "origin", "main"]);
        }
    }

    /// Waits for the status where `commit` is the target in `phase`, from the witness (so a
    /// short phase is caught the moment it is written).
    pub async fn wait_phase(&self, commit: &str, phases: &[&str]) -> Value {
        self.witness
            .wait_status(ROLLOUT_PATIENCE, |s| {
                s["target"]["commit"] == commit
                    && s["phase"].as_str().is_some_and(|p| phases.contains(&p))
            })
            .await
    }

    /// Waits until the controller process runs `nginx` (its validation sandbox) for `commit`
    /// (true), or status names `commit` as the target (false: validation was over before the
    /// poll saw it).
    pub async fn wait_validating(&self, commit: &str) -> bool {
        let pid = self
            .controller
            .as_ref()
            .and_then(Child::id)
            .expect("a controller process");
        let deadline = tokio::time::Instant::now() + ROLLOUT_PATIENCE;
        loop {
            if runs_nginx(pid) {
                return true;
            }
            if self.witness.status()["target"]["commit"] == commit {
                return false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the controller never validated {commit}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// How many pods were told `digest` so far (the server's tap; each pod once).
    pub fn pods_told(&self, digest: &str) -> usize {
        let mut pods: Vec<String> = self
            .witness
            .tells()
            .into_iter()
            .filter(|t| t.digest == digest)
            .map(|t| t.pod)
            .collect();
        pods.sort();
        pods.dedup();
        pods.len()
    }

    /// Watches the rollout of `commit` (target `digest`) for `fault`, the fault's length,
    /// while the canary cannot be read: it must not promote, tell another pod the target, or
    /// quarantine the commit (missing data never decides). Returns the last status seen.
    pub async fn assert_held_for(&self, fault: Duration, commit: &str, digest: &str) -> Value {
        let told_before = self.pods_told(digest);
        // The fault's duration, not a synchronisation: the test watches what the controller
        // does meanwhile, every 100 ms.
        let start = tokio::time::Instant::now();
        let mut last = self.witness.status();
        while start.elapsed() < fault {
            last = self.witness.status();
            assert_ne!(
                last["stable"]["commit"], commit,
                "promoted while the canary could not be read"
            );
            assert_eq!(
                self.pods_told(digest),
                told_before,
                "the step moved on while the canary could not be read: {last}"
            );
            let quarantined = last["quarantined"]
                .as_array()
                .is_some_and(|q| q.iter().any(|e| e["commit"] == commit));
            assert!(
                !quarantined,
                "the commit was quarantined while the canary could not be read: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last
    }

    /// Waits until `commit` is stable (promoted) and every pod applied it.
    pub async fn wait_promoted(&self, commit: &str) {
        self.c
            .wait_for_within(
                "proxyrollout/edge",
                "{.status.phase} {.status.stable.commit}",
                ROLLOUT_PATIENCE,
                |s| s == format!("Idle {commit}"),
            )
            .await;
        self.wait_applied().await;
    }

    /// Waits until `commit` is quarantined, the rollout Idle and every pod applied stable.
    pub async fn wait_rolled_back(&self, commit: &str) {
        self.c
            .wait_for_within(
                "proxyrollout/edge",
                "{.status.phase} {.status.quarantined[*].commit}",
                ROLLOUT_PATIENCE,
                |s| s.starts_with("Idle") && s.contains(commit),
            )
            .await;
        self.wait_applied().await;
    }

    /// Waits until every pod's applied digest is the stable one.
    pub async fn wait_applied(&self) {
        let stable = self
            .c
            .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
            .await;
        self.c
            .wait_for_within(
                "pods",
                "{.items[*].metadata.annotations.switchback\\.dev/applied-digest}",
                ROLLOUT_PATIENCE,
                |s| s.split_whitespace().filter(|d| *d == stable).count() == PODS.len(),
            )
            .await;
    }

    /// Waits until `commit` is promoted on every pod, then prints the fault's row (what the
    /// controller did from status) and fails the test unless every invariant held.
    pub async fn assert_promoted_row(
        &self,
        fault: &str,
        injected: String,
        commit: &str,
        window: FaultWindow,
    ) {
        self.wait_promoted(commit).await;
        let did = did(&self.c, commit).await;
        self.row(fault, injected, did, window)
            .await
            .print_and_assert();
    }

    /// The row of one run, invariants checked now.
    pub async fn row(
        &self,
        fault: &str,
        injected: String,
        did: String,
        window: FaultWindow,
    ) -> Row {
        self.row_with_pods(&PODS, fault, injected, did, window)
            .await
    }

    /// The row of one run whose fleet is `pods` now (pods replaced, added or removed by the
    /// fault), invariants checked now.
    pub async fn row_with_pods(
        &self,
        pods: &[&str],
        fault: &str,
        injected: String,
        did: String,
        window: FaultWindow,
    ) -> Row {
        let (recovery, requests_failed) = window.close().await;
        Row {
            fault: fault.to_string(),
            injected,
            did,
            recovery,
            requests_failed,
            invariants: check_all(&self.c, &self.witness, pods).await,
        }
    }

    /// Commits a good change and waits for its first tell (the canary pod's): the commit's id
    /// and that tell.
    pub async fn commit_good_and_wait_tell(&mut self) -> (String, Tell) {
        self.commit_and_wait_tell(Rig::commit_good).await
    }

    /// [`Rig::commit_good_and_wait_tell`], then waits until the canary pod serves the target and
    /// status says Canary: the commit, the canary pod's tell and that status.
    pub async fn commit_good_to_canary(&mut self) -> (String, Tell, Value) {
        let (v, tell) = self.commit_good_and_wait_tell().await;
        self.wait_pod_applied(&tell.pod, &tell.digest).await;
        let at = self.wait_phase(&v, &["Canary"]).await;
        (v, tell, at)
    }

    /// [`Rig::commit_good_and_wait_tell`] with a change whose upstream is dead.
    pub async fn commit_bad_and_wait_tell(&mut self) -> (String, Tell) {
        self.commit_and_wait_tell(Rig::commit_bad).await
    }

    async fn commit_and_wait_tell(&mut self, commit: fn(&mut Rig) -> String) -> (String, Tell) {
        let stable = self
            .c
            .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
            .await;
        let from = self.witness.tells().len();
        let v = commit(self);
        let tell = self.wait_first_tell(from, &stable, &v).await;
        (v, tell)
    }

    /// Waits for the first tell, among those after the first `from` ([`Witness::tells`]'s
    /// length before `commit` was made), of a digest other than `stable`: the canary pod's tell
    /// of the target `commit`, from the server's tap, so it is seen the moment it is written.
    pub async fn wait_first_tell(&self, from: usize, stable: &str, commit: &str) -> Tell {
        let deadline = tokio::time::Instant::now() + ROLLOUT_PATIENCE;
        loop {
            let tells = self.witness.tells().into_iter().skip(from);
            if let Some(t) = tells.into_iter().find(|t| t.digest != stable) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no pod was told {commit}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until `pod` reports (its applied-digest annotation) `digest` applied.
    pub async fn wait_pod_applied(&self, pod: &str, digest: &str) {
        self.c
            .wait_for_within(
                &format!("pod/{pod}"),
                "{.metadata.annotations.switchback\\.dev/applied-digest}",
                ROLLOUT_PATIENCE,
                |d| d == digest,
            )
            .await;
    }

    /// SIGKILLs the controller process and starts another; returns the phase status had when
    /// the kill landed.
    pub async fn kill_controller(&mut self, generation: u32) -> String {
        if let Some(mut child) = self.controller.take() {
            child.start_kill().expect("SIGKILL the controller");
            let _ = child.wait().await;
        }
        let phase = self.witness.status()["phase"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        self.controller = Some(controller_process(&self.c, generation));
        phase
    }

    /// Kills the controller process if any, stops the users and the witness, and takes the
    /// cluster down (failing if a process is left).
    pub async fn down(mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        drop(self.users);
        drop(self.witness);
        self.c.down().await;
    }
}

/// The rollout `edge`: the default strategy with the short bake, and, when `rollback` has
/// lines, writing back to a bare origin every commit is pushed to.
pub async fn apply_edge(c: &Cluster, rollback: &str) {
    if rollback.is_empty() {
        c.apply_rollout(SHORT_BAKE).await;
    } else {
        let bare = origin(c);
        apply_with_writeback(c, &bare, rollback).await;
    }
}

/// `switchback controller` as a process against the cluster (one replica, no leader
/// election); `generation` names its cache directory, as a restarted pod gets a fresh one.
pub fn controller_process(c: &Cluster, generation: u32) -> Child {
    c.controller_command(&format!("cache-{generation}"))
        .spawn()
        .expect("spawn switchback controller (cargo build --bin switchback first)")
}

/// Whether a descendant of `pid` (two levels) is a running nginx process.
pub fn runs_nginx(pid: u32) -> bool {
    let children = |pid: u32| -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    };
    // Running, not a zombie waiting to be reaped (a finished `nginx -t` stays a child until
    // then, and its cmdline is gone).
    let is_nginx = |pid: u32| {
        let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        });
        running
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("nginx"))
    };
    children(pid)
        .into_iter()
        .any(|c| is_nginx(c) || children(c).into_iter().any(is_nginx))
}

/// A bare `origin.git` holding the cluster's repository (as operator_writeback.rs).
pub fn origin(c: &Cluster) -> PathBuf {
    git(
        c.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    let bare = c.tmp.path().join("origin.git");
    git(
        &c.repo,
        &["remote", "add", "origin", &bare.display().to_string()],
    );
    git(&c.repo, &["push", "-q", "origin", "main"]);
    bare
}

/// The rollout following `origin` with the short bake and these `rollback:` lines.
pub async fn apply_with_writeback(c: &Cluster, bare: &Path, rollback: &str) {
    let text = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1s\n  target:\n    selector:\n      app: edge\n  strategy:\n{SHORT_BAKE}  rollback:\n{rollback}",
        bare.display()
    );
    let file = c.k.file("rollout.yaml", &text);
    c.k.ok(&["apply", "-f", &file]).await;
}

/// The rollout following `url` with the short bake, every other policy at its default.
pub async fn apply_following(c: &Cluster, url: &str) {
    let text = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: {url}\n    ref: main\n    interval: 1s\n  target:\n    selector:\n      app: edge\n  strategy:\n{SHORT_BAKE}"
    );
    let file = c.k.file("rollout.yaml", &text);
    c.k.ok(&["apply", "-f", &file]).await;
}

/// The canary step a status names (`2/4`), `?` when it names none.
pub fn step_of(status: &Value) -> &str {
    status["analysis"]["step"].as_str().unwrap_or("?")
}

/// What the controller did, in the row's words, from status now.
pub async fn did(c: &Cluster, commit: &str) -> String {
    let status = c.k.json(&["get", "-n", "edge", "proxyrollout/edge"]).await["status"].clone();
    let short = commit.get(..8).unwrap_or(commit);
    if status["stable"]["commit"] == commit {
        format!("promoted {short} on every pod")
    } else if status["quarantined"]
        .as_array()
        .is_some_and(|q| q.iter().any(|e| e["commit"] == commit))
    {
        let revert = status["lastIncident"]["revert"]["result"]
            .as_str()
            .map(|r| format!(", write-back {r}"))
            .unwrap_or_default();
        format!("rolled back {short}, quarantined{revert}")
    } else {
        format!("phase {}", status["phase"])
    }
}

/// Waits (bounded) until the server is serving again.
pub async fn wait_up(c: &Cluster) {
    let faults = c.k.server.faults();
    let deadline = tokio::time::Instant::now() + outage() + PATIENCE;
    while faults.is_down() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server stayed down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the nginx master serving `pod` (the process whose title says `master process`
/// and names the pod's state directory), if one runs.
pub fn nginx_master(c: &Cluster, pod: &str) -> Option<i32> {
    let current = c.live_config(pod);
    let dir = current.parent()?.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        (cmd.contains("master process") && cmd.contains(&dir)).then_some(pid)
    })
}
