//! The demo's users: a traffic generator that spreads a fixed request rate over the proxy pods like
//! a load balancer, and records every response so the demo can say how many requests failed, when,
//! and on which pod.
//!
//! Why recorded per request rather than counted: the figures that matter ("requests failed during
//! the incident") need the failures placed in time against the rollout's timeline, which is only
//! known afterwards. Why bounded three ways (rate, duration, hard request cap) plus in-flight and
//! per-request timeouts: this is a load loop on a shared machine, and no setting or bug may turn it
//! into an unbounded one. Targets are checked to be in 127.0.0.0/8 and redirects and proxies are
//! off, so nothing it sends can leave this machine.
//!
//! Pacing is open-loop (requests are sent on schedule, not after the previous answer) with a token
//! schedule: request k is due k/rate seconds after the schedule's origin and is never sent before.
//! A small delay (a busy core) is caught up, so the rate holds; a stall longer than [`MAX_LAG`]
//! (every in-flight slot taken) moves the origin to now instead, so catching up is at most a
//! short burst and the count sent by any time t never exceeds rate × t + 1.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{HOST, HeaderValue};
use reqwest::{Client, Url};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::figures::secs;
use super::is_demo_loopback;

pub use super::figures::{EndReason, ErrorKind, Outcome, ResponseRecord, Tally, TrafficRecord};

/// Default total rate: the seed outage's traffic scaled down to what one machine serves easily.
pub const DEFAULT_RATE: u32 = 200;
/// Default bound on requests waiting for an answer at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default per-request timeout; a request that takes longer is a failure, never retried.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Highest rate accepted: far above the demo's needs, low enough to stay polite on a shared host.
pub const MAX_RATE: u32 = 5_000;
/// Longest run accepted, so a typo cannot start a day-long load loop.
pub const MAX_DURATION: Duration = Duration::from_secs(3_600);
/// Most requests one run may send: every one is kept in memory for the record (about 50 bytes).
pub const MAX_REQUESTS: u64 = 1_000_000;
/// The hard request cap is this factor above rate × duration.
const CAP_SLACK: f64 = 1.1;
/// How far behind schedule sending may fall and still catch up; beyond it the backlog is dropped.
pub const MAX_LAG: Duration = Duration::from_millis(100);
/// Extra time allowed, beyond the request timeout, for in-flight requests to finish at the end.
const DRAIN_SLACK: Duration = Duration::from_secs(1);

/// How requests are spread over the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Spread {
    /// Target `i % n` for the i-th request: every pod gets the same share, like an even balancer.
    RoundRobin,
    /// A seeded pseudo-random target per request: shares vary a little, reproducibly.
    Random {
        /// Seed of the pick sequence.
        seed: u64,
    },
}

/// What to send, where, how fast and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficConfig {
    /// The pods, e.g. `127.0.0.2:8080` … `127.0.0.6:8080`; all in 127.0.0.0/8.
    pub targets: Vec<SocketAddr>,
    /// Paths requested in turn, each starting with `/`.
    pub paths: Vec<String>,
    /// Total requests per second over all targets.
    pub rate_per_sec: u32,
    /// How long to send for (the run also ends on stop or at the request cap).
    pub duration: Duration,
    /// A lower request cap than the built-in one (rate × duration × 1.1), if wanted.
    pub max_requests: Option<u64>,
    /// Most requests awaiting an answer at once; when all are taken, sending waits.
    pub max_in_flight: usize,
    /// Per-request timeout, connect included.
    pub request_timeout: Duration,
    /// Target choice per request.
    pub spread: Spread,
    /// `Host` header to send, so nginx picks the right `server` block; `None` sends the target.
    pub host: Option<String>,
}

impl TrafficConfig {
    /// The demo's defaults (200 rps over `/` and `/api/items`, 60 s, 256 in flight, 2 s timeout,
    /// round robin) aimed at `targets`.
    pub fn new(targets: Vec<SocketAddr>) -> Self {
        TrafficConfig {
            targets,
            paths: vec!["/".to_string(), "/api/items".to_string()],
            rate_per_sec: DEFAULT_RATE,
            duration: Duration::from_secs(60),
            max_requests: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_TIMEOUT,
            spread: Spread::RoundRobin,
            host: None,
        }
    }

    /// The most requests this run may ever send: rate × duration × 1.1 (rounded up), or the
    /// configured `max_requests` when lower. The generator stops sending when it is reached.
    pub fn request_cap(&self) -> u64 {
        let built_in =
            (f64::from(self.rate_per_sec) * self.duration.as_secs_f64() * CAP_SLACK).ceil() as u64;
        self.max_requests.map_or(built_in, |m| m.min(built_in))
    }
}

/// Why traffic could not be started or finished; says which setting or target is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// A target outside 127.0.0.0/8: generated traffic only ever goes to this machine.
    #[error(
        "traffic target {addr} is not a loopback address; only 127.0.0.0/8 may receive traffic"
    )]
    NotLoopback {
        /// The refused target.
        addr: SocketAddr,
    },
    /// A setting outside its allowed range.
    #[error("traffic setting `{field}` = {value} is invalid: {expected}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the traffic HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The generator task failed (panicked or was cancelled) before producing its record.
    #[error("traffic generator task ended abnormally: {0}")]
    Task(String),
}

/// A config error naming the setting, its value and what it must be.
fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    expected: &'static str,
) -> TrafficError {
    TrafficError::Config {
        field,
        value: format!("{value:?}"),
        expected,
    }
}

/// A snapshot for the progress display: totals so far and the last second, per pod and overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveStats {
    /// Time since the start.
    #[serde(rename = "elapsedSecs", serialize_with = "secs")]
    pub elapsed: Duration,
    /// Requests sent so far.
    pub sent: u64,
    /// Requests answered (or failed) so far; `sent - completed` are in flight.
    pub completed: u64,
    /// Requests completed in the last second, all pods.
    pub last_second: Tally,
    /// Requests completed in the last second, per pod in target order.
    pub per_pod_last_second: Vec<Tally>,
}

/// The state the request tasks update and [`TrafficHandle::live`] reads.
#[derive(Debug)]
struct Live {
    sent: u64,
    completed: u64,
    /// Completions of the last second: (when, pod, outcome), oldest first.
    recent: VecDeque<(Instant, usize, Outcome)>,
}

impl Live {
    fn prune(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.recent.front() {
            if now.saturating_duration_since(*at) > Duration::from_secs(1) {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Shared between the generator, its request tasks and the handle.
#[derive(Debug)]
struct Shared {
    start: Instant,
    pods: usize,
    live: Mutex<Live>,
    completed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        // A panicking request task leaves counts that are still meaningful; keep going.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_sent(&self) {
        self.lock().sent += 1;
    }

    fn on_done(&self, pod: usize, outcome: Outcome) {
        let now = Instant::now();
        let completed = {
            let mut live = self.lock();
            live.completed += 1;
            live.recent.push_back((now, pod, outcome));
            live.prune(now);
            live.completed
        };
        self.completed.send_replace(completed);
    }

    fn snapshot(&self) -> LiveStats {
        let now = Instant::now();
        let mut live = self.lock();
        live.prune(now);
        let mut last_second = Tally::default();
        let mut per_pod = vec![Tally::default(); self.pods];
        for (_, pod, outcome) in &live.recent {
            last_second.add(outcome);
            if let Some(t) = per_pod.get_mut(*pod) {
                t.add(outcome);
            }
        }
        LiveStats {
            elapsed: now.saturating_duration_since(self.start),
            sent: live.sent,
            completed: live.completed,
            last_second,
            per_pod_last_second: per_pod,
        }
    }
}

/// Ends a run early from anywhere (the demo's scenario, Ctrl-C); cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle {
    tx: watch::Sender<bool>,
}

impl StopHandle {
    /// Stops sending; requests in flight still finish and are recorded.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

/// A running generator. Dropping it (with no [`StopHandle`] left) stops the sending.
#[derive(Debug)]
pub struct TrafficHandle {
    stop: StopHandle,
    shared: Arc<Shared>,
    task: JoinHandle<TrafficRecord>,
}

impl TrafficHandle {
    /// A handle that stops this run.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Counts so far and over the last second.
    pub fn live(&self) -> LiveStats {
        self.shared.snapshot()
    }

    /// The number of completed requests, updated on every completion: lets callers await
    /// progress ("at least N answers") instead of polling.
    pub fn completed(&self) -> watch::Receiver<u64> {
        self.shared.completed.subscribe()
    }

    /// Stops sending and returns the record once in-flight requests are done.
    pub async fn stop(self) -> Result<TrafficRecord, TrafficError> {
        self.stop.stop();
        self.finish().await
    }

    /// Waits for the run to end by itself (duration, cap, or a stop handle) and returns its record.
    pub async fn finish(self) -> Result<TrafficRecord, TrafficError> {
        // `self.stop` stays alive until the task is done, so waiting is not read as "stop".
        let TrafficHandle { stop, task, .. } = self;
        let result = task.await.map_err(|e| TrafficError::Task(e.to_string()));
        drop(stop);
        result
    }
}

/// A checked config with everything precomputed for sending.
struct Plan {
    client: Client,
    /// `urls[pod][path]`.
    urls: Vec<Vec<Url>>,
    host: Option<HeaderValue>,
    rate: u32,
    duration: Duration,
    cap: u64,
    max_in_flight: usize,
    timeout: Duration,
    spread: Spread,
}

impl Plan {
    fn new(config: &TrafficConfig) -> Result<Plan, TrafficError> {
        let (rate, d) = (config.rate_per_sec, config.duration);
        let (fl, t) = (config.max_in_flight, config.request_timeout);
        if config.targets.is_empty() {
            return Err(invalid("targets", &config.targets, "at least one target"));
        }
        if let Some(addr) = config.targets.iter().find(|a| !is_demo_loopback(a)) {
            return Err(TrafficError::NotLoopback { addr: *addr });
        }
        if config.paths.is_empty() || config.paths.iter().any(|p| !p.starts_with('/')) {
            return Err(invalid(
                "paths",
                &config.paths,
                "one or more, each starting with `/`",
            ));
        }
        if !(1..=MAX_RATE).contains(&rate) {
            return Err(invalid("rate_per_sec", rate, "1 to 5000"));
        }
        if d.is_zero() || d > MAX_DURATION {
            return Err(invalid("duration", d, "above 0, at most 1 h"));
        }
        if config.request_cap() > MAX_REQUESTS {
            let expected = "rate × duration × 1.1 (or max_requests) at most 1,000,000";
            return Err(invalid("max_requests", config.request_cap(), expected));
        }
        if !(1..=10_000).contains(&fl) {
            return Err(invalid("max_in_flight", fl, "1 to 10000"));
        }
        if t.is_zero() || t > Duration::from_secs(60) {
            return Err(invalid("request_timeout", t, "above 0, at most 60 s"));
        }
        let host = match &config.host {
            None => None,
            Some(h) => {
                let v = HeaderValue::from_str(h);
                Some(v.map_err(|_| invalid("host", h, "a valid Host header value"))?)
            }
        };
        let mut urls = Vec::with_capacity(config.targets.len());
        for target in &config.targets {
            let mut per_path = Vec::with_capacity(config.paths.len());
            for path in &config.paths {
                // Defence in depth: whatever the path holds, the request must go to the target.
                let url = Url::parse(&format!("http://{target}{path}"))
                    .ok()
                    .filter(|u| {
                        u.host_str() == Some(target.ip().to_string().as_str())
                            && u.port() == Some(target.port())
                    });
                per_path.push(url.ok_or_else(|| invalid("paths", path, "a path on its target"))?);
            }
            urls.push(per_path);
        }
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(t)
            .connect_timeout(t)
            .build()
            .map_err(TrafficError::Client)?;
        Ok(Plan {
            client,
            urls,
            host,
            rate,
            duration: d,
            cap: config.request_cap(),
            max_in_flight: fl,
            timeout: t,
            spread: config.spread,
        })
    }

    /// The (pod, path) of the `seq`-th request.
    fn pick(&self, seq: u64, rng: &mut u64) -> (usize, usize) {
        let pods = self.urls.len() as u64;
        let paths = self.urls.first().map_or(1, Vec::len) as u64;
        let (pod, path) = match self.spread {
            Spread::RoundRobin => (seq % pods, (seq / pods) % paths),
            Spread::Random { .. } => (splitmix64(rng) % pods, splitmix64(rng) % paths),
        };
        (pod as usize, path as usize)
    }
}

/// splitmix64: a tiny seeded generator, enough to spread requests reproducibly.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks `config` and starts sending at once, in a task owned by the returned handle.
///
/// Must be called inside a tokio runtime.
pub fn start(config: &TrafficConfig) -> Result<TrafficHandle, TrafficError> {
    let plan = Plan::new(config)?;
    let (tx, rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        pods: config.targets.len(),
        live: Mutex::new(Live {
            sent: 0,
            completed: 0,
            recent: VecDeque::new(),
        }),
        completed: watch::Sender::new(0),
    });
    let record = TrafficRecord {
        started_at: jiff::Timestamp::now(),
        targets: config.targets.clone(),
        paths: config.paths.clone(),
        rate_per_sec: config.rate_per_sec,
        send_window: Duration::ZERO,
        ended_by: EndReason::Duration,
        responses: Vec::new(),
    };
    let task = tokio::spawn(run(plan, Arc::clone(&shared), rx, record));
    Ok(TrafficHandle {
        stop: StopHandle { tx },
        shared,
        task,
    })
}

/// What a request task hands back: its sequence number, outcome and latency.
type Done = (usize, Outcome, Duration);

/// The sending loop, then the drain; fills `record`.
async fn run(
    plan: Plan,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut record: TrafficRecord,
) -> TrafficRecord {
    let start = shared.start;
    let deadline = start + plan.duration;
    // The schedule: request `k` (counted from `origin`) is due at `origin + ceil(k / rate)`,
    // computed in whole nanoseconds so rounding can never make it early.
    let (mut origin, mut k) = (start, 0u64);
    let due = |origin: Instant, k: u64| {
        let ns = (u128::from(k) * 1_000_000_000).div_ceil(u128::from(plan.rate));
        origin + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    };
    let permits = Arc::new(Semaphore::new(plan.max_in_flight));
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut sent: Vec<(Duration, usize, usize)> = Vec::new();
    let mut done: Vec<Option<(Outcome, Duration)>> = Vec::new();
    let mut rng = match plan.spread {
        Spread::Random { seed } => seed,
        Spread::RoundRobin => 0,
    };
    // A closed stop channel (every handle dropped) also means stop: `wait_for` then errs at once.
    record.ended_by = loop {
        if sent.len() as u64 >= plan.cap {
            break EndReason::MaxRequests;
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break EndReason::Stopped,
            () = tokio::time::sleep_until(deadline) => break EndReason::Duration,
            () = tokio::time::sleep_until(due(origin, k)) => {}
        }
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break EndReason::Stopped,
            () = tokio::time::sleep_until(deadline) => break EndReason::Duration,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                // The semaphore is never closed; if it were, sending could not go on.
                Err(_) => break EndReason::Stopped,
            },
        };
        while let Some(joined) = tasks.try_join_next() {
            store(&mut done, joined);
        }
        let seq = sent.len();
        let (pod, path) = plan.pick(seq as u64, &mut rng);
        sent.push((Instant::now().saturating_duration_since(start), pod, path));
        done.push(None);
        shared.on_sent();
        k += 1;
        let now = Instant::now();
        if now.saturating_duration_since(due(origin, k)) > MAX_LAG {
            // Too far behind: drop the backlog; the next request is one period from now, which
            // keeps "at most rate × t + 1 by time t" true across the shift.
            (origin, k) = (now, 1);
        }
        let mut request = plan.client.get(plan.urls[pod][path].clone());
        if let Some(host) = &plan.host {
            request = request.header(HOST, host.clone());
        }
        let (shared, timeout) = (Arc::clone(&shared), plan.timeout);
        tasks.spawn(async move {
            let t0 = Instant::now();
            let outcome = tokio::time::timeout(timeout, send(request))
                .await
                .unwrap_or(Outcome::Error(ErrorKind::Timeout));
            shared.on_done(pod, outcome);
            drop(permit);
            (seq, outcome, t0.elapsed())
        });
    };
    record.send_window = Instant::now().saturating_duration_since(start);
    let drain_deadline = Instant::now() + plan.timeout + DRAIN_SLACK;
    while let Ok(Some(joined)) = tokio::time::timeout_at(drain_deadline, tasks.join_next()).await {
        store(&mut done, joined);
    }
    tasks.abort_all();
    record.responses = sent
        .into_iter()
        .zip(done)
        .map(|((offset, pod, path), done)| {
            let (outcome, latency) =
                done.unwrap_or((Outcome::Error(ErrorKind::Cancelled), Duration::ZERO));
            ResponseRecord {
                offset,
                pod,
                path,
                outcome,
                latency,
            }
        })
        .collect();
    record
}

/// Files a finished request under its sequence number. A panicked task leaves its slot empty,
/// which the record shows as `Cancelled`.
fn store(done: &mut [Option<(Outcome, Duration)>], joined: Result<Done, tokio::task::JoinError>) {
    if let Some((slot, outcome, latency)) = joined
        .ok()
        .and_then(|(seq, outcome, latency)| Some((done.get_mut(seq)?, outcome, latency)))
    {
        *slot = Some((outcome, latency));
    }
}

/// Sends one request and reads the whole body.
async fn send(request: reqwest::RequestBuilder) -> Outcome {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(_) => Outcome::Status(status),
                Err(e) => Outcome::Error(classify(&e)),
            }
        }
        Err(e) => Outcome::Error(classify(&e)),
    }
}

/// Sorts a client error into the kinds the record distinguishes.
fn classify(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return ErrorKind::ConnectRefused,
                std::io::ErrorKind::TimedOut => return ErrorKind::Timeout,
                _ => {}
            }
        }
        source = err.source();
    }
    ErrorKind::Other
}
