//! The operator scale bench (DESIGN §6: controller memory and reconcile latency at 1,000 pods, time
//! to restore). A real `switchback controller` process runs against the in-repo Kubernetes API
//! test server; the pods are Pods in that server whose `status.podIP` points at a farm of fake
//! agents ([`switchback_tests::fake_agents`]) on loopback, so the controller does all of its real
//! work (watches, git, render, `nginx -t`, tells, reads, status, pod marks) without a thousand nginx.
//!
//! Three runs, each with its own API server, farm and controller(s):
//! 1. scale: `SCALE_PODS` pods (1,000) in `SCALE_ROLLOUTS` ProxyRollouts (100), one git repository;
//!    the controller adopts v0, then one commit rolls out everywhere. Rollouts learn of commits as a
//!    user who wants them fast sets it up: the push webhook (sent once per commit, as a git host
//!    does) on the default poll interval (1m); the sharded run polls every second instead, since
//!    a push reaches one replica. Prints the controller's RSS
//!    (VmRSS, VmHWM) after adoption and after the rollout, reconcile p50/p99 estimated from the
//!    `switchback_reconcile_duration_seconds` histogram, and commit → every pod applied.
//! 2. restore: one ProxyRollout over `SCALE_RESTORE_PODS` pods (500); a commit whose digest the
//!    fake agents answer with 85% 502 is pushed; prints the time from the incident decision
//!    (`status.lastIncident.decidedAt`) to every pod's `switchback.dev/applied-digest` being the
//!    stable digest again.
//! 3. sharded (the largest size, `SCALE_SHARDS` replicas, default 3, `0` skips it): the scale
//!    run's pods and rollouts under `--leader-elect --shards`; each replica's memory, their idle
//!    CPU, and the takeover time after a SIGKILL of the holder of shard 0.
//!
//! It prints figures and asserts no times. Run: `make bench-operator` (builds the release binary
//! first; `cargo bench -p switchback-tests --bench operator_scale` needs `target/release/switchback`
//! or `SWITCHBACK_BIN`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use farm::Farm;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchback::operator::crd::ProxyRollout;
use switchback::render::{self, ConfigTree, Digest};
use switchback_tests::bin::switchback_bin;
use switchback_tests::fake_agents::{FakeAgents, loopback_addresses};
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::kube::KubeServer;
use switchback_tests::push_hook::GenericHook;
use tokio::process::{Child, Command};
use tokio::sync::broadcast::error::RecvError;

/// How long any one wait may take before the bench gives up saying what it saw: 120 s, or
/// 60 ms a pod for the larger sizes (10 minutes at 10,000 pods); set per size by [`set_patience`].
static PATIENCE_SECS: AtomicU64 = AtomicU64::new(120);
const AGENT_PORT: u16 = 9180;
const MIB: f64 = 1024.0 * 1024.0;

pub(crate) fn patience() -> Duration {
    Duration::from_secs(PATIENCE_SECS.load(Ordering::Relaxed))
}

/// How often a wait looks: 10 ms, or 10 ms per 1,000 pods at larger sizes (each look asks the
/// farm processes about every pod; at 10,000 pods looking every 10 ms took a core from the
/// controller being measured).
static POLL_MS: AtomicU64 = AtomicU64::new(10);

pub(crate) fn poll_interval() -> Duration {
    Duration::from_millis(POLL_MS.load(Ordering::Relaxed))
}

fn set_patience(pods: usize) {
    let secs = u64::try_from(pods * 60 / 1000).unwrap_or(u64::MAX).max(120);
    PATIENCE_SECS.store(secs, Ordering::Relaxed);
    let poll = u64::try_from(pods / 100).unwrap_or(u64::MAX).max(10);
    POLL_MS.store(poll, Ordering::Relaxed);
}

/// The goals of issue 15 for one size (its table's two columns).
#[derive(Clone, Copy)]
struct Goals {
    /// Controller RSS (VmRSS and VmHWM), MiB.
    rss_mib: f64,
    reconcile_p99: Duration,
    /// Idle CPU, as a share of one core.
    idle_cpu: f64,
    /// Commit → all pods applied, beyond the bakes the steps wait for.
    applied: Duration,
    /// Restore: incident decision → all pods on stable.
    restore: Duration,
}

/// 1,000 pods / 100 rollouts / 500-pod restore.
const GOALS_1K: Goals = Goals {
    rss_mib: 48.0,
    reconcile_p99: Duration::from_millis(50),
    idle_cpu: 0.05,
    applied: Duration::from_secs(3),
    restore: Duration::from_secs(1),
};

/// 10,000 pods / 1,000 rollouts / 5,000-pod restore (one replica).
const GOALS_10K: Goals = Goals {
    rss_mib: 256.0,
    reconcile_p99: Duration::from_millis(100),
    idle_cpu: 0.25,
    applied: Duration::from_secs(15),
    restore: Duration::from_secs(5),
};

/// One size the bench runs: a scale run and a restore run.
#[derive(Clone)]
struct Settings {
    pods: usize,
    rollouts: usize,
    restore_pods: usize,
    restore_step: String,
    /// The quiet window idle figures are measured over.
    idle: Duration,
    /// The goals the figures are compared with: the 1,000-pod column up to 1,000 pods, the
    /// 10,000-pod one above.
    goals: Goals,
    /// Controller replicas of the sharded run (`SCALE_SHARDS`, default 3; 0: none): the largest
    /// size only.
    shards: u32,
    /// Which size this is (0, 1, ...): its scale farm serves `127.<10 + 2 index>.x.y`, its restore
    /// farm `127.<11 + 2 index>.x.y` (not the `127.1`/`127.2` of older benches and tests).
    index: u8,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

impl Settings {
    /// The sizes to run: `SCALE_SIZES` (default `1000,10000`; N pods in N/10 rollouts and an
    /// N/2-pod restore), or one size from `SCALE_PODS`, `SCALE_ROLLOUTS`, `SCALE_RESTORE_PODS`
    /// when any of them is set.
    fn from_env() -> Vec<Settings> {
        let restore_step = std::env::var("SCALE_RESTORE_STEP").unwrap_or_else(|_| "50%".into());
        let idle =
            Duration::from_secs(u64::try_from(env_usize("SCALE_IDLE_SECS", 10)).unwrap_or(10));
        let custom = ["SCALE_PODS", "SCALE_ROLLOUTS", "SCALE_RESTORE_PODS"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        let triples: Vec<(usize, usize, usize)> = if custom {
            vec![(
                env_usize("SCALE_PODS", 1000),
                env_usize("SCALE_ROLLOUTS", 100),
                env_usize("SCALE_RESTORE_PODS", 500),
            )]
        } else {
            let sizes = std::env::var("SCALE_SIZES").unwrap_or_else(|_| "1000,10000".into());
            sizes
                .split(',')
                .map(|n| {
                    let n: usize = n
                        .trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("SCALE_SIZES={sizes:?}: {n:?} is not a number"));
                    (n, n / 10, n / 2)
                })
                .collect()
        };
        let shards = u32::try_from(env_usize("SCALE_SHARDS", 3)).unwrap_or(3);
        let last = triples.len().saturating_sub(1);
        triples
            .into_iter()
            .enumerate()
            .map(|(i, (pods, rollouts, restore_pods))| {
                assert!(
                    pods <= 10_000 && restore_pods <= 10_000,
                    "at most 10,000 pods"
                );
                assert!(
                    rollouts <= pods,
                    "SCALE_ROLLOUTS must not exceed SCALE_PODS"
                );
                Settings {
                    pods,
                    rollouts,
                    restore_pods,
                    restore_step: restore_step.clone(),
                    idle,
                    goals: if pods.max(restore_pods * 2) <= 1000 {
                        GOALS_1K
                    } else {
                        GOALS_10K
                    },
                    shards: if i == last { shards } else { 0 },
                    index: u8::try_from(i).expect("at most a few sizes"),
                }
            })
            .collect()
    }
}

/// One line of the result table.
struct Row {
    figure: String,
    value: String,
    goal: String,
    met: Option<bool>,
}

fn row(figure: &str, value: String, goal: &str, met: Option<bool>) -> Row {
    Row {
        figure: figure.to_string(),
        value,
        goal: goal.to_string(),
        met,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nofile = farm::raise_nofile();
    if let Ok(spec) = std::env::var(farm::FARM_ENV) {
        farm::serve_child(&spec).await;
        return;
    }
    let bin = switchback_bin();
    println!(
        "operator scale bench: controller {} (open files limit {nofile})",
        bin.display()
    );
    let mut tables = Vec::new();
    for s in Settings::from_env() {
        set_patience(s.pods.max(s.restore_pods));
        let mut rows = Vec::new();
        if s.rollouts > 0 && s.pods > 0 {
            let (settings, path) = (s.clone(), bin.clone());
            let what = format!("scale run ({} pods)", s.pods);
            rows.extend(run_or_no(what, async move { scale(&settings, &path).await }).await);
        }
        if s.restore_pods > 0 {
            let (settings, path) = (s.clone(), bin.clone());
            let what = format!("restore run ({} pods)", s.restore_pods);
            rows.extend(run_or_no(what, async move { restore(&settings, &path).await }).await);
        }
        if s.shards > 0 && s.rollouts > 0 {
            let (settings, path, shards) = (s.clone(), bin.clone(), s.shards);
            let what = format!("sharded run ({shards} replicas)");
            let run = async move { sharded(&settings, &path, shards).await };
            rows.extend(run_or_no(what, run).await);
        }
        tables.push((
            format!(
                "{} pods / {} rollouts, {}-pod restore",
                s.pods, s.rollouts, s.restore_pods
            ),
            rows,
        ));
    }
    for (title, rows) in &tables {
        print_table(title, rows);
    }
}

/// A run's rows; a run that does not converge panics (saying why) and is one "converged: no"
/// row instead, so the next run still goes.
async fn run_or_no(
    what: String,
    run: impl std::future::Future<Output = Vec<Row>> + Send + 'static,
) -> Vec<Row> {
    match tokio::spawn(run).await {
        Ok(rows) => rows,
        Err(_) => vec![row(
            &format!("{what} converged"),
            "no".into(),
            "yes",
            Some(false),
        )],
    }
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    let w = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let v = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
    let g = rows.iter().map(|r| r.goal.len()).max().unwrap_or(4).max(4);
    println!("{:<w$}  {:>v$}  {:<g$}  met?", "figure", "value", "goal");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{:<w$}  {:>v$}  {:<g$}  {met}", r.figure, r.value, r.goal);
    }
}

mod cluster;
mod controller;
mod farm;
mod restore;
mod scale;
mod sharded;

use cluster::*;
use controller::*;
use restore::restore;
use scale::scale;
use sharded::sharded;
