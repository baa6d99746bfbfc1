//! The application servers behind the demo's proxies: tiny HTTP servers on loopback that answer
//! `200` with a body naming themselves, so a person (or a test) can see which upstream served a
//! request and whether nginx reached one at all.
//!
//! Why our own servers rather than a second nginx: the demo needs per-server request counts (to show
//! that the broken `upstream` never reached them) and an optional added latency, both trivial here
//! and awkward to get from nginx. They run as tokio tasks owned by an [`Upstreams`] handle, which
//! stops them gracefully (bounded by a grace period) and reports what each one served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::routing::{any, get};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::is_demo_loopback;

/// How long [`Upstreams::stop`] waits by default for in-flight requests before aborting a server:
/// longer than any latency the demo configures, short enough that a stuck client cannot hang it.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// One server to start: its name (shown in every response body), where it listens, and how long it
/// waits before answering (zero for "as fast as possible").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Name shown in responses and stats, e.g. `app-1`.
    pub name: String,
    /// Loopback address to listen on; port 0 picks a free port (see [`Upstreams::addrs`]).
    pub addr: SocketAddr,
    /// Added latency per request, so the demo can show slow-upstream behaviour.
    pub latency: Duration,
}

impl UpstreamSpec {
    /// A server with no added latency; the common case, so it needs no builder.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        UpstreamSpec {
            name: name.into(),
            addr,
            latency: Duration::ZERO,
        }
    }

    /// The same server answering after `latency`, for demos of slow upstreams and client timeouts.
    pub fn with_latency(self, latency: Duration) -> Self {
        UpstreamSpec { latency, ..self }
    }
}

/// Why the servers could not be started; names the server and address so the person running the
/// demo knows which port to free.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The address is outside 127.0.0.0/8: the demo never listens on a reachable interface.
    #[error(
        "upstream `{name}`: {addr} is not a loopback address; demo servers only listen on 127.0.0.0/8"
    )]
    NotLoopback {
        /// The server's name.
        name: String,
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listening socket could not be opened (port in use, address not configured).
    #[error("upstream `{name}`: cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        /// The server's name.
        name: String,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What one server has served so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    /// The server's name.
    pub name: String,
    /// The address it actually listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Application requests answered (everything but `/healthz`).
    pub requests: u64,
    /// `/healthz` requests answered, kept apart so health probes do not inflate traffic figures.
    pub health_checks: u64,
}

/// How one server ended, from [`Upstreams::stop`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoppedServer {
    /// Its final counts.
    pub stats: ServerStats,
    /// Whether it finished its in-flight requests within the grace period (else it was aborted).
    pub graceful: bool,
    /// The I/O error the server ended with, if any.
    pub error: Option<String>,
}

/// Counters shared between a server's handlers and its handle.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    health_checks: AtomicU64,
}

/// What every handler of one server needs.
#[derive(Debug, Clone)]
struct ServerState {
    name: Arc<str>,
    addr: SocketAddr,
    latency: Duration,
    counts: Arc<Counts>,
}

/// One started server and the means to stop it.
#[derive(Debug)]
struct Running {
    name: String,
    addr: SocketAddr,
    counts: Arc<Counts>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn stats(&self) -> ServerStats {
        ServerStats {
            name: self.name.clone(),
            addr: self.addr,
            requests: self.counts.requests.load(Ordering::Relaxed),
            health_checks: self.counts.health_checks.load(Ordering::Relaxed),
        }
    }
}

/// The running servers. Owns their tasks: [`Upstreams::stop`] ends them gracefully, and dropping
/// the handle without stopping aborts them, so no server outlives the demo.
#[derive(Debug)]
pub struct Upstreams {
    servers: Vec<Running>,
}

/// Starts one server per spec, all or none: every address is checked and bound before any server
/// task is spawned, so a port conflict leaves nothing running behind.
///
/// Must be called inside a tokio runtime.
pub async fn start(specs: &[UpstreamSpec]) -> Result<Upstreams, UpstreamError> {
    if let Some(spec) = specs.iter().find(|s| !is_demo_loopback(&s.addr)) {
        return Err(UpstreamError::NotLoopback {
            name: spec.name.clone(),
            addr: spec.addr,
        });
    }
    let mut listeners = Vec::with_capacity(specs.len());
    for spec in specs {
        let bind_error = |source| UpstreamError::Bind {
            name: spec.name.clone(),
            addr: spec.addr,
            source,
        };
        let listener = TcpListener::bind(spec.addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        listeners.push((spec, listener, addr));
    }
    let servers = listeners
        .into_iter()
        .map(|(spec, listener, addr)| spawn_server(spec, listener, addr))
        .collect();
    Ok(Upstreams { servers })
}

/// Spawns the axum server for one bound listener.
fn spawn_server(spec: &UpstreamSpec, listener: TcpListener, addr: SocketAddr) -> Running {
    let counts = Arc::new(Counts::default());
    let state = ServerState {
        name: Arc::from(spec.name.as_str()),
        addr,
        latency: spec.latency,
        counts: Arc::clone(&counts),
    };
    let router = Router::new()
        .route("/healthz", get(healthz))
        .fallback(any(app))
        .with_state(state);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // A dropped sender also means "stop": the handle is gone.
                let _ = rx.await;
            })
            .await
    });
    Running {
        name: spec.name.clone(),
        addr,
        counts,
        shutdown: Some(tx),
        task,
    }
}

/// `/healthz`: always `ok`, never delayed, so probes see the server even when latency is added.
async fn healthz(State(state): State<ServerState>) -> &'static str {
    state.counts.health_checks.fetch_add(1, Ordering::Relaxed);
    "ok\n"
}

/// Every other path: `200` naming the server, after the configured latency.
async fn app(State(state): State<ServerState>, method: Method, uri: Uri) -> String {
    if !state.latency.is_zero() {
        // The simulated service time itself, not synchronisation.
        tokio::time::sleep(state.latency).await;
    }
    state.counts.requests.fetch_add(1, Ordering::Relaxed);
    format!("{} ({}) {method} {}\n", state.name, state.addr, uri.path())
}

impl Upstreams {
    /// Name and actual address of every server, in spec order: what the demo writes into the
    /// nginx `upstream` blocks (ports are known only after binding when 0 was asked for).
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.addr))
            .collect()
    }

    /// Live counts, in spec order, for the progress display.
    pub fn stats(&self) -> Vec<ServerStats> {
        self.servers.iter().map(Running::stats).collect()
    }

    /// Stops every server: no new connections, in-flight requests finished, each server awaited.
    /// A server still busy when `grace` has passed (counted from this call, for all servers
    /// together) is aborted and reported with `graceful: false`.
    pub async fn stop(mut self, grace: Duration) -> Vec<StoppedServer> {
        let mut servers = std::mem::take(&mut self.servers);
        for s in &mut servers {
            if let Some(tx) = s.shutdown.take() {
                // The server may already have ended on its own; then there is nobody to tell.
                let _ = tx.send(());
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut stopped = Vec::with_capacity(servers.len());
        for mut s in servers {
            let (graceful, error) = match tokio::time::timeout_at(deadline, &mut s.task).await {
                Ok(Ok(Ok(()))) => (true, None),
                Ok(Ok(Err(io))) => (true, Some(io.to_string())),
                Ok(Err(join)) => (false, Some(join.to_string())),
                Err(_elapsed) => {
                    s.task.abort();
                    // Aborted tasks end at their next await point; the join error is expected.
                    let _ = (&mut s.task).await;
                    (false, None)
                }
            };
            stopped.push(StoppedServer {
                stats: s.stats(),
                graceful,
                error,
            });
        }
        stopped
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        // Only reached with servers left when `stop` was not called: no task may outlive its owner.
        for s in &self.servers {
            s.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_127_0_0_0_8_is_demo_loopback() {
        assert!(is_demo_loopback(&addr("127.0.0.1:9001")));
        assert!(is_demo_loopback(&addr("127.0.0.5:8080")));
        assert!(is_demo_loopback(&addr("127.255.255.254:1")));
        assert!(!is_demo_loopback(&addr("0.0.0.0:9001")));
        assert!(!is_demo_loopback(&addr("10.0.0.1:80")));
        assert!(!is_demo_loopback(&addr("128.0.0.1:80")));
        assert!(!is_demo_loopback(&addr("[::1]:80")));
        assert!(!is_demo_loopback(&addr("[::ffff:127.0.0.1]:80")));
    }

    #[tokio::test]
    async fn refuses_non_loopback_before_binding_anything() {
        let specs = [
            UpstreamSpec::new("app-1", addr("127.0.0.1:0")),
            UpstreamSpec::new("evil", addr("0.0.0.0:0")),
        ];
        let err = start(&specs).await.unwrap_err();
        assert!(
            matches!(&err, UpstreamError::NotLoopback { name, .. } if name == "evil"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn answers_names_itself_counts_and_stops() {
        let ups = start(&[
            UpstreamSpec::new("app-1", addr("127.0.0.1:0")),
            UpstreamSpec::new("api-1", addr("127.0.0.1:0")),
        ])
        .await
        .unwrap();
        let addrs = ups.addrs();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let app = addrs[0].1;
        let body = client
            .get(format!("http://{app}/api/items"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, format!("app-1 ({app}) GET /api/items\n"));
        for _ in 0..2 {
            let r = client
                .get(format!("http://{}/healthz", addrs[1].1))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let stopped = ups.stop(DEFAULT_STOP_GRACE).await;
        assert_eq!(stopped.len(), 2);
        assert!(stopped.iter().all(|s| s.graceful && s.error.is_none()));
        assert_eq!(
            (stopped[0].stats.requests, stopped[0].stats.health_checks),
            (1, 0)
        );
        assert_eq!(
            (stopped[1].stats.requests, stopped[1].stats.health_checks),
            (0, 2)
        );
        // Stopped means the port no longer answers.
        assert!(client.get(format!("http://{app}/")).send().await.is_err());
    }

    #[tokio::test]
    async fn port_conflict_names_the_server() {
        let first = start(&[UpstreamSpec::new("app-1", addr("127.0.0.1:0"))])
            .await
            .unwrap();
        let taken = first.addrs()[0].1;
        let err = start(&[UpstreamSpec::new("app-2", taken)])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Bind { name, addr, .. } if name == "app-2" && *addr == taken),
            "{err}"
        );
        first.stop(DEFAULT_STOP_GRACE).await;
    }
}
