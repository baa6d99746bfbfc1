//! The agent: runs next to one nginx, applies bundles atomically, ingests its logs and serves
//! health counters (DESIGN §3.6). `docs/agent.md` is the user's guide; in short:
//!
//! - [`run`] starts everything: it recovers the state directory (`current` back on the last
//!   applied-good digest), adopts or starts nginx, binds the log socket and the HTTP API, runs
//!   the probes, and on shutdown stops nginx gracefully;
//! - an apply (`apply.rs`) is verify → prepare ([`directives`]) → write ([`layout`]) → the real
//!   `nginx -t` → swap `current` → reload and confirm a new worker generation ([`nginx`]) →
//!   persist; any failure leaves nginx on what it served;
//! - drift detection ([`tree`], `drift.rs`, `docs/drift.md`) compares the live config directory
//!   with what the last apply wrote, on inotify events and at an interval, and reports or
//!   repairs a difference;
//! - nginx's access and error logs arrive as syslog datagrams ([`ingest`]), attributed to digests
//!   by a per-version tag, and become [`crate::analysis::Counters`] the canary analysis reads.
//!
//! `manage_nginx` (local mode) makes the agent start, restart and stop nginx itself; without it
//! (pod mode) the agent signals the master it finds through the pid file.
//!
//! In Kubernetes mode ([`kube`], `docs/agent-kubernetes.md`) no bundle comes over HTTP: the agent
//! learns the digest from nudges and its Pod's annotation, fetches the ConfigMaps and checks the
//! digest itself. In both modes the API wants a bearer token ([`token`]; local mode's is given
//! or generated, [`local_token`]), and when the agent runs as root nginx's workers do not
//! ([`privileges`]).

pub mod api;
pub(crate) mod apply;
pub mod base64;
pub mod client;
pub mod clock;
pub mod config;
pub mod directives;
mod drift;
pub mod guard;
pub mod ingest;
pub mod kube;
pub mod layout;
pub mod local_token;
pub mod metrics;
pub mod nginx;
mod paths;
pub mod privileges;
mod probe;
mod report;
mod state;
mod supervise;
mod tells;
pub mod token;
pub mod tree;
pub mod wire;

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sha2::Digest as _;
use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use client::{AgentClient, ClientError};
pub use clock::Clock;
pub use config::{AgentArgs, AgentConfig, DriftSettings, KubeSettings, ProbeSpec, Timeouts};
pub use token::{Token, TokenError};
pub use wire::{
    AgentState, ApplyOutcome, ApplyRequest, ApplyStep, DriftPolicy, DriftReport, DriftResolution,
    DriftStatus, NudgeRequest,
};

use crate::validate::sandbox::Nginx;
use layout::Layout;
use state::{Shared, Status, lock};

/// Datagrams handled per lock of the tally, so a burst is counted in one critical section.
const INGEST_BATCH: usize = 256;
/// Largest datagram read; nginx's syslog lines are at most about 2 KiB.
const DATAGRAM_BYTES: usize = 16 * 1024;
/// How long shutdown waits for the API and background tasks once nginx is stopped.
const TASK_GRACE: Duration = Duration::from_secs(5);

/// Why the agent could not start or keep running. Refused applies are not errors: they are
/// reported as [`ApplyOutcome::ApplyFailed`] and the agent carries on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The flags do not make a usable configuration.
    #[error("invalid agent settings: {0}")]
    Config(String),
    /// nginx is missing or unusable.
    #[error("nginx: {0}")]
    Nginx(String),
    /// The state directory could not be prepared.
    #[error("state directory: {0}")]
    State(#[from] layout::FsError),
    /// A socket could not be bound.
    #[error("cannot bind the {what} at {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Its address or path.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The initial bundle could not be read or rendered.
    #[error("initial bundle {path}: {reason}")]
    InitialBundle {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// Kubernetes mode: no client for the API server could be made.
    #[error("Kubernetes client: {0}")]
    Kube(String),
    /// The HTTP server stopped with an error.
    #[error("the agent API server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the agent with command-line flags until `shutdown` completes.
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let cfg = AgentConfig::from_args(args).map_err(AgentError::Config)?;
    run_with(cfg, shutdown).await
}

/// Runs the agent with a prepared configuration until `shutdown` completes, then stops nginx
/// (local mode), the probes and the API, leaving no process behind. In Kubernetes mode the API
/// server is reached with the in-cluster (or `$KUBECONFIG`) configuration.
pub async fn run_with(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_with_client(cfg, None, shutdown).await
}

/// [`run_with`], with the client Kubernetes mode reads its Pod and ConfigMaps through (tests
/// point it at their API server); `None` makes one from the environment when needed.
pub async fn run_with_client(
    cfg: AgentConfig,
    client: Option<::kube::Client>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_with_clock(cfg, client, Clock::system(), shutdown).await
}

/// [`run_with_client`], with the wall clock the agent stamps its reports with (tests skew it,
/// as on a node whose clock is off; see [`Clock`]).
pub async fn run_with_clock(
    cfg: AgentConfig,
    client: Option<::kube::Client>,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let span = tracing::info_span!("agent", state = %cfg.state_dir.display(), api = %cfg.listen);
    async move {
        let source = match &cfg.kubernetes {
            None => None,
            Some(settings) => {
                let client = match client {
                    Some(c) => c,
                    None => ::kube::Client::try_default()
                        .await
                        .map_err(|e| AgentError::Kube(e.to_string()))?,
                };
                Some(Arc::new(kube::PodSource::new(client, settings)))
            }
        };
        run_inner(cfg, source, clock, shutdown).await
    }
    .instrument(span)
    .await
}

async fn run_inner(
    cfg: AgentConfig,
    pod_source: Option<Arc<kube::PodSource>>,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let layout = Layout::new(cfg.state_dir.clone()).map_err(AgentError::Config)?;
    let explicit = cfg.nginx.clone();
    let binary = tokio::task::spawn_blocking(move || {
        let found = Nginx::find(explicit.as_deref()).map_err(|e| e.to_string())?;
        let n = found.ok_or("not found ($SWITCHBACK_NGINX, PATH, /usr/sbin/nginx)")?;
        nginx::Binary::inspect(n.path(), n.version().to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| AgentError::Nginx(e.to_string()))?
    .map_err(AgentError::Nginx)?;
    // Locked before `prepare`, which clears stages another agent could be writing.
    let _lock = lock_state(&layout)?;
    layout.prepare()?;
    // Everything that can fail on bad flags fails here, before any process or task starts.
    let initial = match &cfg.initial_bundle {
        Some((dir, entry)) => Some((load_bundle(dir)?, entry.clone())),
        None => None,
    };
    let probe_client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| AgentError::Config(format!("probe client: {e}")))?;

    let sock_path = layout.log_socket();
    let _ = std::fs::remove_file(&sock_path);
    let bind_err = |what, addr: String| move |source| AgentError::Bind { what, addr, source };
    let sock = UnixDatagram::bind(&sock_path)
        .map_err(bind_err("log socket", sock_path.display().to_string()))?;
    // Workers may run as another user than the agent (pod mode): let them send.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666))
        .map_err(bind_err("log socket", sock_path.display().to_string()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(bind_err("API", cfg.listen.to_string()))?;

    let api_token = match (&cfg.kubernetes, &cfg.token) {
        (Some(kube), _) => kube.token.clone(),
        (None, Some(token)) => token.clone(),
        (None, None) => {
            let token = local_token::load_or_create(layout.root())?;
            let file = local_token::token_path(layout.root());
            tracing::info!(file = %file.display(), "the API wants the bearer token kept in this file");
            token
        }
    };
    let run_as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let worker_user = if run_as_root {
        let user = privileges::worker_user(&cfg.worker_user).map_err(AgentError::Config)?;
        privileges::make_reachable(&layout, &user).map_err(AgentError::Config)?;
        if user.is_root() {
            tracing::warn!("nginx's workers run as root (--worker-user root)");
        }
        Some(user.directive)
    } else {
        None
    };
    let status = Status {
        nginx: wire::NginxStatus {
            managed: cfg.manage_nginx,
            version: binary.version.clone(),
            ..Default::default()
        },
        probes: cfg.probes.iter().map(probe::initial_status).collect(),
        drift: wire::DriftStatus {
            enabled: cfg.drift.interval.is_some(),
            policy: cfg.drift.policy,
            ..Default::default()
        },
        ..Default::default()
    };
    let shared = Arc::new(Shared {
        launcher: nginx::Launcher::new(binary, layout.clone()),
        layout,
        worker_user,
        api_token,
        apply_gate: state::ApplyGate::new(cfg.limits.max_waiting_applies),
        tally: Mutex::new(ingest::Tally::new(
            (cfg.keep_versions + 2).max(ingest::DEFAULT_MAX_DIGESTS),
        )),
        status: Mutex::new(status),
        core: tokio::sync::Mutex::new(state::Core::default()),
        probe_token: probe_token(),
        started_at: clock.now(),
        clock,
        pod_source,
        drift_kick: tokio::sync::Notify::new(),
        config_root: Mutex::new(cfg.config_root.clone()),
        cfg,
    });
    tracing::info!(managed = shared.cfg.manage_nginx, "agent starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(ingest_loop(sock, Arc::clone(&shared), stop_rx.clone()).in_current_span());
    supervise::recover(&shared).await;
    tasks.spawn(supervise::supervise(Arc::clone(&shared), stop_rx.clone()).in_current_span());
    if let Some(target) = shared.cfg.nginx_listen {
        for i in 0..shared.cfg.probes.len() {
            let client = probe_client.clone();
            let p = probe::run(Arc::clone(&shared), i, target, client, stop_rx.clone());
            tasks.spawn(p.in_current_span());
        }
    }
    if let Some((bundle, entry)) = initial {
        let applied = lock(&shared.status).applied.as_ref().map(|a| a.digest);
        if applied != Some(bundle.digest()) {
            let outcome = apply::apply_bundle(&shared, bundle, "", &entry).await;
            tracing::info!(?outcome, "initial bundle");
        }
    }

    if let Some(every) = shared.cfg.drift.interval {
        let watch = drift::watch(Arc::clone(&shared), every, stop_rx.clone());
        tasks.spawn(watch.in_current_span());
    }

    if let Some((pod, to)) = shared
        .cfg
        .kubernetes
        .as_ref()
        .and_then(|k| Some((k.clone(), k.report_to.clone()?)))
    {
        let reports = report::run(Arc::clone(&shared), to, pod, stop_rx.clone());
        tasks.spawn(reports.in_current_span());
    }

    if let Some(source) = shared.pod_source.clone() {
        let follow = kube::follow(Arc::clone(&shared), source, stop_rx.clone());
        tasks.spawn(follow.in_current_span());
    }

    let mut api_stop = stop_rx.clone();
    let server = crate::http_server::serve(
        listener,
        api::router(Arc::clone(&shared)),
        shared.cfg.limits.serve,
        async move {
            let _ = api_stop.changed().await;
        },
    );
    let mut server = tokio::spawn(server.in_current_span());
    let served = tokio::select! {
        _ = shutdown => None,
        r = &mut server => Some(r),
    };
    tracing::info!("agent stopping");
    supervise::stop(&shared).await;
    let _ = stop_tx.send(true);
    let served = match served {
        Some(r) => Some(r),
        None => tokio::time::timeout(TASK_GRACE, &mut server).await.ok(),
    };
    if tokio::time::timeout(TASK_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
    }
    server.abort();
    let _ = std::fs::remove_file(&sock_path);
    match served {
        Some(Ok(Err(e))) => Err(AgentError::Serve(e)),
        _ => Ok(()),
    }
}

/// Reads and renders the `--initial-bundle` directory.
fn load_bundle(dir: &std::path::Path) -> Result<crate::render::Bundle, AgentError> {
    let fail = |reason: String| AgentError::InitialBundle {
        path: dir.display().to_string(),
        reason,
    };
    let tree = crate::source::local::read_dir(dir).map_err(|e| fail(e.to_string()))?;
    crate::render::render(&tree, &serde_json::Value::Null).map_err(|e| fail(e.to_string()))
}

/// Takes `STATE/agent.lock` for as long as the agent runs: two agents on one state directory
/// would steal each other's log socket and fight over `current`. The kernel drops the lock when
/// the process dies, however it dies, and nginx does not inherit it (files are opened
/// close-on-exec).
fn lock_state(layout: &Layout) -> Result<Flock<std::fs::File>, AgentError> {
    let path = layout.root().join("agent.lock");
    std::fs::create_dir_all(layout.root()).map_err(|source| layout::FsError {
        what: "create directory",
        path: layout.root().to_path_buf(),
        source,
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| layout::FsError {
            what: "open",
            path: path.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        AgentError::Config(format!(
            "another agent runs on {} ({errno})",
            layout.root().display()
        ))
    })
}

/// Receives syslog datagrams until `shutdown` and counts them.
async fn ingest_loop(sock: UnixDatagram, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; DATAGRAM_BYTES];
    let token = shared.probe_token.clone().into_bytes();
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => return,
            r = sock.recv(&mut buf) => r,
        };
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "log socket receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut tally = lock(&shared.tally);
        tally.ingest(&buf[..n], &token);
        for _ in 0..INGEST_BATCH {
            match sock.try_recv(&mut buf) {
                Ok(n) => tally.ingest(&buf[..n], &token),
                Err(_) => break,
            }
        }
    }
}

/// A fresh probe token: unguessable enough that user traffic cannot pass for the agent's probes
/// (it is not a secret; it only has to differ from anything a client would send by chance).
fn probe_token() -> String {
    let mut h = sha2::Sha256::new();
    // The kernel's random UUID when there is one; pid and time make it unique either way.
    h.update(std::fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default());
    h.update(std::process::id().to_be_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    hex::encode(&h.finalize()[..12])
}
