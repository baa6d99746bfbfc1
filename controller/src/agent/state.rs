//! What the agent's tasks share: the configuration, the apply lock with the nginx master behind
//! it, and the status the API reports. The status lives apart from the apply lock so that
//! `GET /v1/state` answers at once even while an apply waits for nginx.

use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use tokio::time::Instant;

use super::config::AgentConfig;
use super::ingest::Tally;
use super::layout::{AppliedRecord, Layout};
use super::nginx::{Launcher, Master};
use super::wire::{AgentState, DriftStatus, LastApply, NginxStatus, ProbeStatus, Revision};

/// Locks a std mutex, recovering the data if a panicking thread poisoned it: every value behind
/// these locks is plain counters and records that stay meaningful after a panic elsewhere.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Apply totals for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ApplyTotals {
    /// Applies that changed what nginx serves.
    pub applied: u64,
    /// Applies of the digest already served.
    pub noop: u64,
    /// Refused applies.
    pub failed: u64,
}

/// The reportable status.
#[derive(Debug, Default)]
pub struct Status {
    /// What nginx serves.
    pub applied: Option<AppliedRecord>,
    /// What was last asked for.
    pub desired: Option<Revision>,
    /// The last apply.
    pub last_apply: Option<LastApply>,
    /// nginx facts.
    pub nginx: NginxStatus,
    /// Client-side probe results.
    pub probes: Vec<ProbeStatus>,
    /// Apply totals.
    pub applies: ApplyTotals,
    /// Drift detection.
    pub drift: DriftStatus,
}

/// Held while applying, restarting or stopping nginx: one change at a time.
#[derive(Debug, Default)]
pub struct Core {
    /// The running master, if any.
    pub master: Option<Master>,
    /// The entry file the master was started with (`-c current/<entry>`).
    pub entry: Option<String>,
    /// Consecutive failed starts, for the restart backoff.
    pub failed_starts: u32,
    /// No restart before this instant.
    pub next_start: Option<Instant>,
    /// Set on shutdown: no more applies or restarts.
    pub stopping: bool,
}

/// Everything the agent's tasks share.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub cfg: AgentConfig,
    /// The state directory.
    pub layout: Layout,
    /// How nginx is run.
    pub launcher: Launcher,
    /// Whether nginx runs as root (then the agent adds `user root;` to bundles without `user`).
    pub run_as_root: bool,
    /// Per-digest counters from the logs.
    pub tally: Mutex<Tally>,
    /// The reportable status.
    pub status: Mutex<Status>,
    /// The apply lock.
    pub core: tokio::sync::Mutex<Core>,
    /// The probe header value that marks this agent's probes (fresh per start, so nobody else
    /// can make their requests count as probes).
    pub probe_token: String,
    /// Counter epoch.
    pub started_at: Timestamp,
    /// Kubernetes mode: the agent's read-only view of its Pod and the bundle ConfigMaps.
    pub pod_source: Option<std::sync::Arc<super::kube::PodSource>>,
    /// Wakes drift detection for a check now: the live directory changed by an apply, or the
    /// policy changed.
    pub drift_kick: tokio::sync::Notify,
}

impl Shared {
    /// The body of `GET /v1/state`.
    pub fn state(&self) -> AgentState {
        let (counters, ingest) = lock(&self.tally).snapshot();
        let status = lock(&self.status);
        AgentState {
            started_at: self.started_at,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            applied: status.applied.as_ref().map(|a| Revision {
                digest: a.digest,
                commit: a.commit.clone(),
            }),
            desired: status.desired.clone(),
            last_apply: status.last_apply.clone(),
            nginx: status.nginx.clone(),
            counters,
            probes: status.probes.clone(),
            ingest,
            drift: status.drift.clone(),
        }
    }

    /// Records a confirmed generation of workers of master `pid`.
    pub fn note_generation(&self, pid: i32, workers: Vec<i32>) {
        let mut s = lock(&self.status);
        s.nginx.pid = Some(pid);
        s.nginx.generation += 1;
        s.nginx.workers = workers;
    }

    /// Records that no master runs.
    pub fn note_stopped(&self) {
        let mut s = lock(&self.status);
        s.nginx.pid = None;
        s.nginx.workers.clear();
    }
}
