//! A farm of fake Switchback agents for the operator scale bench: a thousand real pods with nginx
//! are too heavy for one machine, but the controller only ever sees an agent through its HTTP API,
//! so one small axum listener per pod address (`127.x.y.z:9180`, loopback only) answering that
//! API with the real wire types is enough to load the controller as a real fleet would.
//!
//! Each fake pod answers:
//! - `GET /v1/state`: the applied digest and cumulative counters per digest served, as if the pod
//!   served [`REQUESTS_PER_SECOND`] requests a second to whatever digest it had applied (a small
//!   real site, so the default strategy's analysis sees the traffic it needs to call a step
//!   healthy), all 200s on a good digest and [`BAD_PERCENT`]% 502s on a digest marked bad with
//!   [`FakeAgents::set_bad`];
//! - `POST /v1/apply` ([`ApplyRequest`]): records the digest and answers [`ApplyOutcome::Applied`]
//!   at once (no nginx, no files);
//! - `POST /v1/nudge` (`{digest, commit}` with any bearer token): the same, for the controller
//!   that nudges agents to fetch the bundle from its ConfigMap instead of posting it;
//! - `GET /healthz`.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::Value;
use switchback::agent::wire::{
    AgentState, ApplyOutcome, ApplyRequest, DigestCounters, IngestStatus, LastApply, NginxStatus,
    Revision,
};
use switchback::analysis::Counters;
use switchback::render::Digest;
use tokio::task::JoinSet;

/// Requests a second each fake pod reports serving: the tests' [`crate::load::PER_POD_RPS`].
/// Counted by the clock, not per read, so the rate the controller sees does not depend on how
/// often it reads.
pub const REQUESTS_PER_SECOND: u64 = 50;
/// The share of requests a bad digest answers with 502, in percent (the outage's 85%).
pub const BAD_PERCENT: u64 = 85;

/// Why the farm could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeAgentsError {
    /// A pod address could not be bound (in use, or not a loopback address this host accepts).
    #[error("binding fake agent {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Only loopback addresses are served.
    #[error("fake agent address {0} is not loopback")]
    NotLoopback(SocketAddr),
}

/// `n` loopback pod addresses `127.<second>.<i / 200>.<10 + i % 200>` on `port`, at most
/// 200 × 256 of them, so a bench can give each fake pod its own address like a pod IP.
pub fn loopback_addresses(second: u8, n: usize, port: u16) -> Vec<SocketAddr> {
    (0..n.min(200 * 256))
        .filter_map(|i| {
            let third = u8::try_from(i / 200).ok()?;
            let fourth = u8::try_from(10 + i % 200).ok()?;
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, second, third, fourth)),
                port,
            ))
        })
        .collect()
}

/// What one fake pod served: requests and 502s per digest, cumulative.
#[derive(Default)]
struct Served {
    total: u64,
    bad: u64,
}

/// One fake pod's agent state.
#[derive(Default)]
struct PodState {
    applied: Option<Revision>,
    last_apply: Option<LastApply>,
    served: BTreeMap<Digest, Served>,
    /// Digests in the order they were first applied, most recent last.
    order: Vec<Digest>,
    applies: u64,
    nudges: u64,
    reads: u64,
    /// When the current digest was applied.
    applied_at: Option<Instant>,
    /// Until when the applied digest's traffic has been counted, and the fraction of a request
    /// carried over.
    counted_to: Option<Instant>,
    carry: f64,
}

impl PodState {
    /// Counts the traffic the applied digest served since it was last counted, at `rate`
    /// requests a second, [`BAD_PERCENT`]% of them 502 when `bad` says the digest is bad.
    fn serve_until(&mut self, now: Instant, rate: u64, bad: &HashSet<Digest>) {
        let Some(digest) = self.applied.as_ref().map(|r| r.digest) else {
            return;
        };
        let from = self.counted_to.unwrap_or(now);
        let due = now.saturating_duration_since(from).as_secs_f64() * rate as f64 + self.carry;
        let whole = due.floor();
        self.carry = due - whole;
        self.counted_to = Some(now);
        let served = self.served.entry(digest).or_default();
        served.total += whole as u64;
        if bad.contains(&digest) {
            served.bad = served.total * BAD_PERCENT / 100;
        }
    }
}

/// Settings and state every fake pod shares.
struct Farm {
    started_at: Timestamp,
    bad: Mutex<HashSet<Digest>>,
}

struct Pod {
    farm: Arc<Farm>,
    state: Mutex<PodState>,
}

/// A poisoned lock still holds consistent data: every update completes under the lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Totals over the farm, to tell what load the controller put on its agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FarmCounts {
    /// `POST /v1/apply` calls answered.
    pub applies: u64,
    /// `POST /v1/nudge` calls answered.
    pub nudges: u64,
    /// `GET /v1/state` calls answered.
    pub reads: u64,
}

/// The running farm; dropping it stops every listener.
pub struct FakeAgents {
    addrs: Vec<SocketAddr>,
    pods: Vec<Arc<Pod>>,
    farm: Arc<Farm>,
    tasks: JoinSet<()>,
}

impl FakeAgents {
    /// Binds every address (all must be loopback; port 0 picks a free one) and serves the agent
    /// API on each.
    pub async fn start(wanted: Vec<SocketAddr>) -> Result<FakeAgents, FakeAgentsError> {
        let farm = Arc::new(Farm {
            started_at: Timestamp::now(),
            bad: Mutex::new(HashSet::new()),
        });
        let mut tasks = JoinSet::new();
        let mut pods = Vec::with_capacity(wanted.len());
        let mut addrs = Vec::with_capacity(wanted.len());
        for addr in wanted {
            if !addr.ip().is_loopback() {
                return Err(FakeAgentsError::NotLoopback(addr));
            }
            let bind = |source| FakeAgentsError::Bind { addr, source };
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
            addrs.push(listener.local_addr().map_err(bind)?);
            let pod = Arc::new(Pod {
                farm: Arc::clone(&farm),
                state: Mutex::new(PodState::default()),
            });
            pods.push(Arc::clone(&pod));
            let app = Router::new()
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/v1/state", get(state))
                .route("/v1/apply", post(apply))
                .route("/v1/nudge", post(nudge))
                .with_state(pod);
            tasks.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Ok(FakeAgents {
            addrs,
            pods,
            farm,
            tasks,
        })
    }

    /// The pod addresses, in the order given to [`FakeAgents::start`].
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// From now on `digest` answers [`BAD_PERCENT`]% of its requests with 502.
    pub fn set_bad(&self, digest: Digest) {
        lock(&self.farm.bad).insert(digest);
    }

    /// How many pods serve `digest` now.
    pub fn count_applied(&self, digest: &Digest) -> usize {
        self.pods
            .iter()
            .filter(|p| lock(&p.state).applied.as_ref().map(|r| &r.digest) == Some(digest))
            .count()
    }

    /// When the last pod that serves `digest` applied it, if every pod serves it now.
    pub fn all_applied_at(&self, digest: &Digest) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for pod in &self.pods {
            let state = lock(&pod.state);
            if state.applied.as_ref().map(|r| &r.digest) != Some(digest) {
                return None;
            }
            last = last.max(state.applied_at);
        }
        last
    }

    /// Calls answered so far, over every pod.
    pub fn counts(&self) -> FarmCounts {
        let mut counts = FarmCounts::default();
        for pod in &self.pods {
            let state = lock(&pod.state);
            counts.applies += state.applies;
            counts.nudges += state.nudges;
            counts.reads += state.reads;
        }
        counts
    }

    /// Stops every listener and waits for them to end.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn state(State(pod): State<Arc<Pod>>) -> Json<AgentState> {
    let bad = lock(&pod.farm.bad).clone();
    let mut s = lock(&pod.state);
    s.reads += 1;
    s.serve_until(Instant::now(), REQUESTS_PER_SECOND, &bad);
    let counters = s
        .order
        .iter()
        .rev()
        .filter_map(|d| {
            let served = s.served.get(d)?;
            let bad = served.bad;
            Some(DigestCounters {
                digest: *d,
                traffic: Counters {
                    status_2xx: served.total - bad,
                    status_5xx: bad,
                    status_502: bad,
                    ..Counters::default()
                },
                probes: Counters::default(),
            })
        })
        .collect();
    Json(AgentState {
        started_at: pod.farm.started_at,
        agent_version: format!("fake-{}", env!("CARGO_PKG_VERSION")),
        applied: s.applied.clone(),
        desired: s.applied.clone(),
        last_apply: s.last_apply.clone(),
        nginx: NginxStatus::default(),
        counters,
        probes: Vec::new(),
        ingest: IngestStatus::default(),
        drift: Default::default(),
    })
}

/// Records `digest` as applied and answers as the agent would.
fn applied(pod: &Pod, digest: Digest, commit: String, nudged: bool) -> Response {
    let bad = lock(&pod.farm.bad).clone();
    let mut s = lock(&pod.state);
    // What the old digest served up to now is its own.
    s.serve_until(Instant::now(), REQUESTS_PER_SECOND, &bad);
    if nudged {
        s.nudges += 1;
    } else {
        s.applies += 1;
    }
    let noop = s.applied.as_ref().map(|r| r.digest) == Some(digest);
    if !noop {
        s.applied_at = Some(Instant::now());
    }
    if !s.order.contains(&digest) {
        s.order.push(digest);
    }
    let outcome = ApplyOutcome::Applied {
        digest,
        commit: commit.clone(),
        noop,
    };
    s.applied = Some(Revision { digest, commit });
    s.last_apply = Some(LastApply {
        outcome: outcome.clone(),
        finished_at: Timestamp::now(),
        duration_ms: 0,
    });
    (StatusCode::OK, Json(outcome)).into_response()
}

async fn apply(State(pod): State<Arc<Pod>>, Json(req): Json<ApplyRequest>) -> Response {
    applied(&pod, req.digest, req.commit, false)
}

/// `POST /v1/nudge {digest, commit}`: the real agent fetches the bundle from its ConfigMap; the
/// fake takes the digest on trust. Any bearer token is accepted, a missing one is refused.
async fn nudge(
    State(pod): State<Arc<Pod>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if !bearer {
        return (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
    }
    let digest = body["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok());
    let Some(digest) = digest else {
        return (StatusCode::BAD_REQUEST, "body must be {digest, commit}\n").into_response();
    };
    let commit = body["commit"].as_str().unwrap_or_default().to_string();
    applied(&pod, digest, commit, true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use switchback::agent::AgentClient;
    use switchback::render::{self, ConfigTree};

    fn bundle(text: &str) -> switchback::render::Bundle {
        let mut tree = ConfigTree::new();
        tree.insert_file("nginx.conf", text.as_bytes().to_vec());
        render::render(&tree, &Value::Null).expect("render")
    }

    #[tokio::test]
    async fn applies_are_recorded_and_a_bad_digest_answers_mostly_502() {
        let farm = FakeAgents::start(loopback_addresses(3, 2, 0))
            .await
            .expect("farm");
        let client = AgentClient::new(farm.addresses()[0]).expect("client");
        let (good, bad) = (bundle("events {}\n"), bundle("events { }\n"));
        assert!(client.state().await.expect("state").applied.is_none());
        let outcome = client
            .apply(&good, "c0", "nginx.conf")
            .await
            .expect("apply");
        assert!(outcome.is_applied());
        let state = client.state().await.expect("state");
        assert_eq!(state.applied.map(|r| r.digest), Some(good.digest()));
        assert_eq!(state.counters[0].digest, good.digest());
        assert_eq!(state.counters[0].traffic.status_5xx, 0);
        assert_eq!(farm.count_applied(&good.digest()), 1);
        assert!(
            farm.all_applied_at(&good.digest()).is_none(),
            "one pod of two"
        );

        farm.set_bad(bad.digest());
        client.apply(&bad, "c1", "nginx.conf").await.expect("apply");
        let state = client.state().await.expect("state");
        let now = &state.counters[0];
        assert_eq!(now.digest, bad.digest(), "most recent first");
        let total = now.traffic.status_2xx + now.traffic.status_502;
        assert_eq!(now.traffic.status_502, total * BAD_PERCENT / 100);
        assert_eq!(state.counters[1].traffic.status_5xx, 0);

        let http = reqwest::Client::new();
        let url = format!("http://{}/v1/nudge", farm.addresses()[1]);
        let body = serde_json::json!({"digest": good.digest().to_string(), "commit": "c0"});
        let refused = http.post(&url).json(&body).send().await.expect("nudge");
        assert_eq!(refused.status(), 401);
        let nudged = http
            .post(&url)
            .bearer_auth("anything")
            .json(&body)
            .send()
            .await
            .expect("nudge");
        let outcome: ApplyOutcome = nudged.json().await.expect("outcome");
        assert!(outcome.is_applied());
        assert_eq!(
            farm.count_applied(&good.digest()),
            1,
            "pod 0 moved on to bad"
        );
        assert_eq!(
            farm.counts(),
            FarmCounts {
                applies: 2,
                nudges: 1,
                reads: 3
            }
        );
        farm.stop().await;
    }

    #[test]
    fn a_pod_serves_its_applied_digest_at_the_rate_by_the_clock() {
        let (good, bad) = (
            bundle("events {}\n").digest(),
            bundle("events { }\n").digest(),
        );
        let marked = HashSet::from([bad]);
        let t0 = Instant::now();
        let mut s = PodState::default();
        s.serve_until(t0, REQUESTS_PER_SECOND, &marked);
        assert!(s.served.is_empty(), "nothing applied, nothing served");
        s.applied = Some(Revision {
            digest: good,
            commit: "c0".into(),
        });
        s.serve_until(t0, REQUESTS_PER_SECOND, &marked);
        s.serve_until(t0 + Duration::from_millis(2_500), 50, &marked);
        s.serve_until(t0 + Duration::from_millis(2_510), 50, &marked);
        assert_eq!(
            s.served[&good].total, 125,
            "50/s for 2.51 s: 125 whole requests, half of one carried"
        );
        s.applied = Some(Revision {
            digest: bad,
            commit: "c1".into(),
        });
        s.serve_until(t0 + Duration::from_millis(4_010), 50, &marked);
        assert_eq!(s.served[&good].total, 125, "the old digest stops counting");
        assert_eq!(s.served[&bad].total, 75, "1.5 s and the carried half");
        assert_eq!(s.served[&bad].bad, 75 * BAD_PERCENT / 100);
    }

    #[test]
    fn addresses_are_distinct_loopback() {
        let addrs = loopback_addresses(1, 1000, 9180);
        assert_eq!(addrs.len(), 1000);
        let unique: HashSet<_> = addrs.iter().collect();
        assert_eq!(unique.len(), 1000);
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 9180)
        );
    }
}
