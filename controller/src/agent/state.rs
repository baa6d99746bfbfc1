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

/// Admission of applies that carry their bundle (`POST /v1/apply`): one at a time reads its
/// body and applies, at most `waiting` more wait for their turn with their bodies still unread
/// (in the socket, not in memory), and any more are turned away at once. So however many large
/// bundles arrive together, one is in memory (issue 13, finding 9).
#[derive(Debug)]
pub struct ApplyGate {
    admitted: std::sync::Arc<tokio::sync::Semaphore>,
    turn: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A place in the apply queue; dropping it leaves the queue.
#[derive(Debug)]
pub struct QueuePlace {
    _admitted: tokio::sync::OwnedSemaphorePermit,
    turn: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The turn to read a body and apply it; dropping it lets the next one go.
#[derive(Debug)]
pub struct Turn {
    _place: QueuePlace,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl ApplyGate {
    /// A gate letting `waiting` applies queue behind the running one.
    pub fn new(waiting: usize) -> ApplyGate {
        ApplyGate {
            admitted: std::sync::Arc::new(tokio::sync::Semaphore::new(waiting.saturating_add(1))),
            turn: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// A place in the queue, `None` when it is full.
    pub fn enter(&self) -> Option<QueuePlace> {
        let admitted = std::sync::Arc::clone(&self.admitted)
            .try_acquire_owned()
            .ok()?;
        Some(QueuePlace {
            _admitted: admitted,
            turn: std::sync::Arc::clone(&self.turn),
        })
    }
}

impl QueuePlace {
    /// Waits for this place's turn (places are served in arrival order).
    pub async fn turn(self) -> Option<Turn> {
        let turn = std::sync::Arc::clone(&self.turn)
            .acquire_owned()
            .await
            .ok()?;
        Some(Turn {
            _place: self,
            _turn: turn,
        })
    }
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
    /// When the agent (and so nginx's master) runs as root: the `user` directive's arguments
    /// added to bundles without one, so workers never run as root unless asked for
    /// (`privileges.rs`). `None` otherwise.
    pub worker_user: Option<String>,
    /// The bearer token every endpoint but `/healthz` wants (Kubernetes mode's, or local mode's
    /// given or generated one).
    pub api_token: super::token::Token,
    /// Admission of `POST /v1/apply`: one body read and applied at a time, a bounded queue.
    pub apply_gate: ApplyGate,
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
    /// The wall clock every report is stamped with.
    pub clock: super::clock::Clock,
    /// Kubernetes mode: the agent's read-only view of its Pod and the bundle ConfigMaps.
    pub pod_source: Option<std::sync::Arc<super::kube::PodSource>>,
    /// The config root bundles stand for: `--config-root`, or in Kubernetes mode the Pod's
    /// annotation as last read (one agent serves one rollout).
    pub config_root: Mutex<crate::validate::ConfigRoot>,
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
