//! The operator scale bench (DESIGN §6: controller memory and reconcile latency at 1,000 pods, time
//! to restore). A real `switchback controller` process runs against the in-repo Kubernetes API
//! test server; the pods are Pods in that server whose `status.podIP` points at a farm of fake
//! agents ([`switchback_tests::fake_agents`]) on loopback, so the controller does all of its real
//! work (watches, git, render, `nginx -t`, tells, reads, status, pod marks) without a thousand nginx.
//!
//! Two runs, each with its own API server, farm and controller:
//! 1. scale: `SCALE_PODS` pods (1,000) in `SCALE_ROLLOUTS` ProxyRollouts (100), one git repository;
//!    the controller adopts v0, then one commit rolls out everywhere. Prints the controller's RSS
//!    (VmRSS, VmHWM) after adoption and after the rollout, reconcile p50/p99 estimated from the
//!    `switchback_reconcile_duration_seconds` histogram, and commit → every pod applied.
//! 2. restore: one ProxyRollout over `SCALE_RESTORE_PODS` pods (500); a commit whose digest the
//!    fake agents answer with 85% 502 is pushed; prints the time from the incident decision
//!    (`status.lastIncident.decidedAt`) to every pod's `switchback.dev/applied-digest` being the
//!    stable digest again.
//!
//! It prints figures and asserts no times. Run: `make bench-operator` (builds the release binary
//! first; `cargo bench -p switchback-tests --bench operator_scale` needs `target/release/switchback`
//! or `SWITCHBACK_BIN`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use tokio::process::{Child, Command};
use tokio::sync::broadcast::error::RecvError;

/// How long any one wait may take before the bench gives up saying what it saw.
const PATIENCE: Duration = Duration::from_secs(120);
const AGENT_PORT: u16 = 9180;
const MIB: f64 = 1024.0 * 1024.0;

struct Settings {
    pods: usize,
    rollouts: usize,
    restore_pods: usize,
    restore_step: String,
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
    fn from_env() -> Settings {
        let s = Settings {
            pods: env_usize("SCALE_PODS", 1000),
            rollouts: env_usize("SCALE_ROLLOUTS", 100),
            restore_pods: env_usize("SCALE_RESTORE_PODS", 500),
            restore_step: std::env::var("SCALE_RESTORE_STEP").unwrap_or_else(|_| "50%".into()),
        };
        assert!(
            s.pods <= 10_000 && s.restore_pods <= 10_000,
            "at most 10,000 pods"
        );
        assert!(
            s.rollouts <= s.pods,
            "SCALE_ROLLOUTS must not exceed SCALE_PODS"
        );
        s
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
    let settings = Settings::from_env();
    let bin = switchback_bin();
    println!("operator scale bench: controller {}", bin.display());
    let mut rows = Vec::new();
    if settings.rollouts > 0 && settings.pods > 0 {
        rows.extend(scale(&settings, &bin).await);
    }
    if settings.restore_pods > 0 {
        rows.extend(restore(&settings, &bin).await);
    }
    println!();
    let w = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let v = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
    println!("{:<w$}  {:>v$}  {:<10}  met?", "figure", "value", "goal");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{:<w$}  {:>v$}  {:<10}  {met}", r.figure, r.value, r.goal);
    }
}

mod cluster;
mod controller;
mod restore;
mod scale;

use cluster::*;
use controller::*;
use restore::restore;
use scale::scale;
