//! Faults the test API server injects on request, for the chaos suite (issue 16): the server
//! down for a while, error answers (500/503/429) for a while, open watch streams cut, watch
//! resumes answered `410 Gone`. A real API server does all of these to a controller sooner or
//! later (upgrades, overload, etcd compaction); the suite checks Switchback survives each.
//!
//! Also a tap: every annotation a client wrote to an object, as the request said it (a merge
//! patch that writes a value the object already has changes nothing a watch can tell apart from
//! any other write, so "the controller told this pod the same digest twice" is only visible in
//! the requests).
//!
//! Handle: [`super::KubeServer::faults`]. Hooks: the request handler asks [`Faults::answer`]
//! first, the watch handler [`Faults::take_gone`] and [`Faults::cut_receiver`], and the listener
//! is a [`FaultyListener`] whose connections die when the server goes down.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most annotation writes the tap keeps; later ones are counted, not kept.
pub const MAX_TAPPED: usize = 100_000;

/// Which requests get an error answer, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorSpec {
    /// The HTTP status answered, e.g. 500, 503 or 429.
    pub status: u16,
    /// Only every `every`th eligible request (1: all of them).
    pub every: u32,
    /// Only writes (POST, PUT, PATCH, DELETE); reads and watches are served.
    pub writes_only: bool,
    /// A `Retry-After` header (seconds), as a real server sends with 429.
    pub retry_after_secs: Option<u32>,
}

impl ErrorSpec {
    /// Every request answered `status` (with `Retry-After: 1` for 429).
    pub fn all(status: u16) -> ErrorSpec {
        ErrorSpec {
            status,
            every: 1,
            writes_only: false,
            retry_after_secs: (status == 429).then_some(1),
        }
    }

    /// The same, for only every `n`th eligible request.
    pub fn every(self, n: u32) -> ErrorSpec {
        ErrorSpec {
            every: n.max(1),
            ..self
        }
    }

    /// The same, for writes only.
    pub fn writes_only(self) -> ErrorSpec {
        ErrorSpec {
            writes_only: true,
            ..self
        }
    }
}

/// One annotation write a client sent (a PATCH or PUT that succeeded), as the tap saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationWrite {
    /// Resource plural, e.g. `pods`.
    pub plural: String,
    /// Namespace, empty when cluster-scoped.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The annotations the request body set (null values, i.e. removals, as `""`).
    pub annotations: BTreeMap<String, String>,
    /// When it was answered.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct State {
    down_until: Option<Instant>,
    errors: Option<(ErrorSpec, Instant)>,
    eligible: u64,
    gone_resumes: u32,
    injected: u64,
}

/// The fault switch of one server; shared by its handlers and the tests' handle.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    /// Bumped when the server goes down: connections accepted before die on their next I/O.
    epoch: AtomicU64,
    cuts: tokio::sync::watch::Sender<u64>,
    tapped: Mutex<(Vec<AnnotationWrite>, u64)>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::default(),
            epoch: AtomicU64::new(0),
            cuts: tokio::sync::watch::channel(0).0,
            tapped: Mutex::default(),
        }
    }
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update completes under the lock; a panicked holder leaves a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server refuses service for `duration` from now: every connection it accepts is
    /// closed at once, every connection it had dies on its next read or write, and every open
    /// watch ends now.
    pub fn down_for(&self, duration: Duration) {
        self.state().down_until = Some(Instant::now() + duration);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cut_watches();
    }

    /// Whether the server is down now (see [`Faults::down_for`]).
    pub fn is_down(&self) -> bool {
        self.state()
            .down_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Requests as `spec` says are answered with its error for `duration` from now.
    pub fn fail_for(&self, spec: ErrorSpec, duration: Duration) {
        let mut state = self.state();
        state.errors = Some((spec, Instant::now() + duration));
        state.eligible = 0;
    }

    /// Whether requests are still answered with an injected error (see [`Faults::fail_for`]).
    pub fn is_failing(&self) -> bool {
        self.state()
            .errors
            .as_ref()
            .is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// Ends every open watch stream now (cleanly, as a server restart or a load balancer
    /// timeout does); clients watch again.
    pub fn cut_watches(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The next `n` watches that resume from a resourceVersion are answered `410 Gone`, as
    /// after an etcd compaction: the client must list again.
    pub fn gone_on_next_resumes(&self, n: u32) {
        self.state().gone_resumes = n;
    }

    /// Ends every fault now (the tap keeps what it saw).
    pub fn clear(&self) {
        let mut state = self.state();
        state.down_until = None;
        state.errors = None;
        state.gone_resumes = 0;
    }

    /// How many requests were answered with an injected error or a `410 Gone` so far.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// Every annotation write the tap kept, oldest first.
    pub fn annotation_writes(&self) -> Vec<AnnotationWrite> {
        self.tapped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// The injected answer for this request, if one is due.
    pub(super) fn answer(&self, method: &Method) -> Option<Response> {
        let mut state = self.state();
        let (spec, until) = state.errors?;
        if Instant::now() >= until {
            state.errors = None;
            return None;
        }
        let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if spec.writes_only && !write {
            return None;
        }
        state.eligible += 1;
        if !state.eligible.is_multiple_of(u64::from(spec.every)) {
            return None;
        }
        state.injected += 1;
        drop(state);
        Some(error_response(spec))
    }

    /// Whether this watch resume is to be answered `410 Gone` (and one fewer is due).
    pub(super) fn take_gone(&self) -> bool {
        let mut state = self.state();
        if state.gone_resumes == 0 {
            return false;
        }
        state.gone_resumes -= 1;
        state.injected += 1;
        true
    }

    /// Changes when open watches are to end.
    pub(super) fn cut_receiver(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    /// Records the annotations a successful PATCH/PUT body set, if it set any.
    pub(super) fn tap(&self, method: &Method, path: &str, status: StatusCode, body: &[u8]) {
        if !status.is_success() || !matches!(*method, Method::PATCH | Method::PUT) {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let Some(annotations) = value["metadata"]["annotations"].as_object() else {
            return;
        };
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (namespace, plural, name) = match segs.as_slice() {
            [.., "namespaces", ns, plural, name] => (*ns, *plural, *name),
            [.., plural, name] => ("", *plural, *name),
            _ => return,
        };
        let write = AnnotationWrite {
            plural: plural.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            at: Instant::now(),
        };
        let mut tapped = self.tapped.lock().unwrap_or_else(PoisonError::into_inner);
        if tapped.0.len() < MAX_TAPPED {
            tapped.0.push(write);
        } else {
            tapped.1 += 1;
        }
    }
}

/// The `Status` a real server sends with these codes.
fn error_response(spec: ErrorSpec) -> Response {
    let (reason, message) = match spec.status {
        429 => (
            "TooManyRequests",
            "too many requests, please try again later",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        _ => (
            "InternalError",
            "an error on the server (injected) has prevented the request from succeeding",
        ),
    };
    let code = StatusCode::from_u16(spec.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
        "details": {"retryAfterSeconds": spec.retry_after_secs},
    });
    let mut response = (code, axum::Json(body)).into_response();
    if let Some(secs) = spec.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The server's listener: while the server is down, every connection is closed as soon as it
/// is accepted; every connection carries the epoch it was accepted in and dies when that ends.
pub(super) struct FaultyListener {
    pub(super) inner: tokio::net::TcpListener,
    pub(super) faults: Arc<Faults>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = FaultyIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if self.faults.is_down() {
                drop(stream);
                continue;
            }
            let io = FaultyIo {
                inner: stream,
                epoch: self.faults.epoch.load(Ordering::SeqCst),
                faults: Arc::clone(&self.faults),
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails (connection reset) once the server has gone down since it was
/// accepted.
pub(super) struct FaultyIo {
    inner: tokio::net::TcpStream,
    epoch: u64,
    faults: Arc<Faults>,
}

impl FaultyIo {
    fn dead(&self) -> bool {
        self.faults.epoch.load(Ordering::SeqCst) != self.epoch
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the API server went down")
}

impl AsyncRead for FaultyIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
