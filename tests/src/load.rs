//! The tests' own users: the library's load generator ([`switchback::demo::traffic`]) aimed at a
//! test's proxy pods at a realistic rate per pod, so a test can run the default strategy (which
//! holds a step that saw too little traffic) and see a healthy commit promoted on its evidence.
//!
//! Why the library's generator and not a new one: it already refuses targets outside 127.0.0.0/8,
//! turns redirects and proxies off, and bounds every run three ways (rate, duration, request cap)
//! plus the requests in flight; this module only picks the targets and restarts it when they
//! change. Why restarts: a generator's targets are fixed when it starts, and a test that adds or
//! replaces pods wants the new ones to get their share, as a Service would give them.
//!
//! Bounds: a [`Load`] runs for at most [`MAX_RUN`] in all (each restart gets what is left), is
//! stopped by [`Load::stop`] or by being dropped, and never outlives the test's runtime (its
//! task is the runtime's).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use switchback::demo::traffic::{self, Outcome, Tally, TrafficConfig, TrafficError, TrafficHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The rate the tests send each proxy pod, in requests per second: a small but real site. At it,
/// a default step's single canary pod serves the ~330 clean requests a healthy verdict needs in
/// about 7 s (`docs/analysis.md`, "The healthy side"); tests bake 8 s or more.
pub const PER_POD_RPS: u32 = 50;

/// The longest a [`Load`] sends, over all its restarts: longer than any test, short enough that a
/// test stuck on a bug does not load the machine for long.
pub const MAX_RUN: Duration = Duration::from_secs(15 * 60);

/// How often a following [`Load`] looks for pods that came or went.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Requests per second to each pod.
    pub per_pod_rps: u32,
    /// The `Host` header (the site's `server_name`); `None` sends the pod's address.
    pub host: Option<String>,
    /// Paths requested in turn, each pod getting every path in the same proportion.
    pub paths: Vec<String>,
}

impl LoadSpec {
    /// `GET /` at `per_pod_rps` to each pod, no `Host` header of its own.
    pub fn new(per_pod_rps: u32) -> Self {
        LoadSpec {
            per_pod_rps,
            host: None,
            paths: vec!["/".to_string()],
        }
    }

    /// The same, with this `Host` header.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    /// The same, requesting these paths in turn.
    pub fn paths(mut self, paths: Vec<String>) -> Self {
        self.paths = paths;
        self
    }
}

/// Where the pods are now: `None` when they could not be read this time (the last known
/// targets are kept).
pub type Discover =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Option<Vec<SocketAddr>>> + Send>> + Send>;

/// What a [`Load`] sent and got, over all its runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Requests, failures, 5xx, 502s, and requests with no answer.
    pub tally: Tally,
    /// The requests with no answer by kind (`ConnectRefused`, `Timeout`, `Other`, …).
    pub errors: BTreeMap<String, u64>,
}

/// What the runs so far have sent and got.
#[derive(Debug, Default)]
struct Totals {
    /// Outcomes of the finished runs.
    finished: Seen,
    /// The running generator, if any, for its live counts.
    current: Option<TrafficHandle>,
    /// Its targets.
    targets: Vec<SocketAddr>,
    /// Why a run could not start, if one could not (a test's settings are wrong).
    error: Option<String>,
}

/// A running load; stopped by [`Load::stop`] or when dropped.
pub struct Load {
    stop: watch::Sender<bool>,
    totals: Arc<Mutex<Totals>>,
    task: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Totals>) -> std::sync::MutexGuard<'_, Totals> {
    // Every update completes under the lock; a panicked holder leaves consistent counts.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Load {
    /// Sends to these fixed targets (a local fleet's pods) for at most [`MAX_RUN`].
    pub fn fixed(targets: Vec<SocketAddr>, spec: LoadSpec) -> Load {
        Load::follow(
            Box::new(move || {
                let t = targets.clone();
                Box::pin(async move { Some(t) })
            }),
            spec,
        )
    }

    /// Sends to the Ready pods of `namespace` matching `selector` (a label selector) on `port`,
    /// following pods that are added, become Ready, or go, within [`FOLLOW_EVERY`] of the change.
    pub fn follow_pods(
        client: ::kube::Client,
        namespace: &str,
        selector: &str,
        port: u16,
        spec: LoadSpec,
    ) -> Load {
        let (namespace, selector) = (namespace.to_string(), selector.to_string());
        Load::follow(
            Box::new(move || {
                let api: ::kube::Api<Pod> = ::kube::Api::namespaced(client.clone(), &namespace);
                let params = ::kube::api::ListParams::default().labels(&selector);
                Box::pin(async move {
                    let pods = api.list(&params).await.ok()?;
                    Some(ready_addresses(&pods.items, port))
                })
            }),
            spec,
        )
    }

    /// Sends to whatever `discover` says, asking it again every [`FOLLOW_EVERY`]; the rate is
    /// `per_pod_rps` times the number of targets. Must be called inside a tokio runtime.
    pub fn follow(discover: Discover, spec: LoadSpec) -> Load {
        let (stop, stopped) = watch::channel(false);
        let totals = Arc::new(Mutex::new(Totals::default()));
        let task = tokio::spawn(supervise(discover, spec, Arc::clone(&totals), stopped));
        Load {
            stop,
            totals,
            task: Some(task),
        }
    }

    /// The pods traffic goes to now.
    pub fn targets(&self) -> Vec<SocketAddr> {
        lock(&self.totals).targets.clone()
    }

    /// Requests answered (or failed) so far, over every run.
    pub fn completed(&self) -> u64 {
        let t = lock(&self.totals);
        t.finished.tally.requests + t.current.as_ref().map_or(0, |h| h.live().completed)
    }

    /// Waits until traffic goes to exactly `n` pods and `at_least` more requests were answered
    /// since the call, so a test knows its users are there before it pushes a commit. Fails the
    /// test with what it saw after `patience`.
    pub async fn wait_flowing(&self, n: usize, at_least: u64, patience: Duration) {
        let deadline = Instant::now() + patience;
        let from = self.completed();
        loop {
            let (targets, error) = {
                let t = lock(&self.totals);
                (t.targets.len(), t.error.clone())
            };
            assert!(error.is_none(), "the load could not start: {error:?}");
            if targets == n && self.completed() >= from + at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "load never reached {n} pods with {at_least} answers: {targets} pods, {} answers",
                self.completed() - from
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops sending and returns what every run sent and got, once in-flight requests are done.
    pub async fn stop(mut self) -> Seen {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let t = lock(&self.totals);
        if let Some(error) = &t.error {
            panic!("the load could not start: {error}");
        }
        t.finished.clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // The supervisor stops its generator on this; if the runtime is going away instead, the
        // generator's task goes with it.
        self.stop.send_replace(true);
    }
}

/// The supervisor: (re)starts the generator whenever the targets change; stops at `stopped`, at
/// [`MAX_RUN`], or when the [`Load`] is dropped.
async fn supervise(
    mut discover: Discover,
    spec: LoadSpec,
    totals: Arc<Mutex<Totals>>,
    mut stopped: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + MAX_RUN;
    loop {
        // A look that takes longer than a few rounds (an API server going away) is no look.
        let found = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            found = tokio::time::timeout(FOLLOW_EVERY * 10, discover()) => found.ok().flatten(),
        };
        if let Some(mut found) = found {
            found.sort();
            found.dedup();
            let changed = lock(&totals).targets != found;
            if changed {
                // The new run starts before the old one drains, so the pods that stay never
                // go without traffic.
                let left = deadline.saturating_duration_since(Instant::now());
                let old = match start(&found, &spec, left) {
                    Ok(handle) => {
                        let mut t = lock(&totals);
                        t.targets = found;
                        std::mem::replace(&mut t.current, handle)
                    }
                    Err(e) => {
                        lock(&totals).error = Some(e.to_string());
                        break;
                    }
                };
                fold(&totals, old).await;
            }
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
    let last = lock(&totals).current.take();
    fold(&totals, last).await;
}

/// A generator for `targets` running at most `left`; `None` when there is nobody to send to.
fn start(
    targets: &[SocketAddr],
    spec: &LoadSpec,
    left: Duration,
) -> Result<Option<TrafficHandle>, TrafficError> {
    if targets.is_empty() || left.is_zero() {
        return Ok(None);
    }
    let n = u32::try_from(targets.len()).unwrap_or(u32::MAX);
    let config = TrafficConfig {
        paths: spec.paths.clone(),
        rate_per_sec: spec.per_pod_rps.saturating_mul(n),
        duration: left,
        host: spec.host.clone(),
        ..TrafficConfig::new(targets.to_vec())
    };
    traffic::start(&config).map(Some)
}

/// Stops `handle` (if any) and adds what its run got to the finished totals.
async fn fold(totals: &Mutex<Totals>, handle: Option<TrafficHandle>) {
    let Some(handle) = handle else { return };
    match handle.stop().await {
        Ok(record) => {
            let run = record.tally();
            let mut t = lock(totals);
            let seen = &mut t.finished;
            seen.tally.requests += run.requests;
            seen.tally.failed += run.failed;
            seen.tally.status_5xx += run.status_5xx;
            seen.tally.status_502 += run.status_502;
            seen.tally.errors += run.errors;
            for r in &record.responses {
                if let Outcome::Error(kind) = r.outcome {
                    *seen.errors.entry(format!("{kind:?}")).or_default() += 1;
                }
            }
        }
        Err(e) => lock(totals).error = Some(e.to_string()),
    }
}

/// `ip:port` of every pod whose `Ready` condition is `True` and which has an IP, as a Service's
/// endpoints would list them.
pub fn ready_addresses(pods: &[Pod], port: u16) -> Vec<SocketAddr> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
            ready.then_some(SocketAddr::new(ip, port))
        })
        .collect()
}
