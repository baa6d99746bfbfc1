//! A witness beside a running cluster: every digest each pod of namespace `edge` was told and
//! reported applied, in order, and every status of the ProxyRollout `edge`, from the test API
//! server's own change stream (in-process, so no API-server fault the suite injects blinds it,
//! and no change falls between two polls). The tells themselves (each write of the
//! desired-digest annotation, even one writing the value the pod already had) come from the
//! server's tap ([`crate::kube::faults::Faults::annotation_writes`]).
//!
//! Bounded: the change stream is a bounded broadcast; when the witness lags it lists again (and
//! says so in [`Seen::lagged`]), and it stops when dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::kube::faults::Faults;
use crate::kube::{Follower, KubeServer};

/// The annotation the controller tells a pod its digest with.
pub const DESIRED: &str = "switchback.dev/desired-digest";
/// The annotation the controller mirrors the agent's applied digest onto.
pub const APPLIED: &str = "switchback.dev/applied-digest";
/// The namespace the clusters' pods and rollout live in.
const NAMESPACE: &str = "edge";

/// What one pod was told and reported, each a list of distinct consecutive values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRecord {
    /// Every `switchback.dev/desired-digest` value the pod carried, in order.
    pub told: Vec<String>,
    /// Every `switchback.dev/applied-digest` value (what its agent reported applied), in order.
    pub applied: Vec<String>,
}

/// What the witness saw so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Per pod name.
    pub pods: BTreeMap<String, PodRecord>,
    /// Every status of the ProxyRollout `edge`, oldest first.
    pub statuses: Vec<Value>,
    /// Each quarantined digest, with when the witness first saw status name it.
    pub quarantined_at: BTreeMap<String, Instant>,
    /// How many times the change stream lagged and the witness listed again (values in between
    /// may be missing from the record).
    pub lagged: u64,
}

/// One write of a pod's desired-digest annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tell {
    /// The pod's name.
    pub pod: String,
    /// The digest written.
    pub digest: String,
    /// When the server answered the write.
    pub at: Instant,
}

/// See the module doc; started by [`Witness::start`], stops when dropped.
pub struct Witness {
    seen: Arc<Mutex<Seen>>,
    faults: Arc<Faults>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Witness {
    /// Starts watching the pods and the rollout of namespace `edge` on `server`.
    pub fn start(server: &KubeServer) -> Witness {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let tasks = vec![
            tokio::spawn(follow(server.follower(), "", "pods", Arc::clone(&seen))),
            tokio::spawn(follow(
                server.follower(),
                "switchback.dev",
                "proxyrollouts",
                Arc::clone(&seen),
            )),
        ];
        Witness {
            seen,
            faults: server.faults(),
            tasks,
        }
    }

    /// What was seen so far.
    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every tell so far, oldest first: each write of the desired-digest annotation of a pod
    /// in `edge`, as the controller sent it.
    pub fn tells(&self) -> Vec<Tell> {
        self.faults
            .annotation_writes()
            .into_iter()
            .filter(|w| w.plural == "pods" && w.namespace == NAMESPACE)
            .filter_map(|w| {
                let digest = w.annotations.get(DESIRED)?.clone();
                Some(Tell {
                    pod: w.name,
                    digest,
                    at: w.at,
                })
            })
            .filter(|t| !t.digest.is_empty())
            .collect()
    }

    /// The latest status of the rollout, `Null` before the first.
    pub fn status(&self) -> Value {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .statuses
            .last()
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until a status satisfying `done` is recorded (checking every status recorded
    /// since the call, so a short-lived phase is not missed) and returns it; panics with the
    /// latest status after `patience`. For injecting a fault at a moment of the rollout.
    pub async fn wait_status(&self, patience: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        let mut from = 0;
        loop {
            {
                let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(s) = seen.statuses.iter().skip(from).find(|s| done(s)) {
                    return s.clone();
                }
                from = seen.statuses.len();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no status as wanted within {patience:?}; latest: {}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Each quarantined digest with when status first named it.
    pub fn quarantined_since(&self) -> BTreeMap<String, Instant> {
        self.seen().quarantined_at
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Records one object as it is now.
fn record(seen: &Mutex<Seen>, plural: &str, object: &Value) {
    let meta = &object["metadata"];
    if meta["namespace"] != NAMESPACE {
        return;
    }
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    if plural == "pods" {
        let Some(name) = meta["name"].as_str() else {
            return;
        };
        let pod = seen.pods.entry(name.to_string()).or_default();
        for (key, list) in [(DESIRED, &mut pod.told), (APPLIED, &mut pod.applied)] {
            if let Some(value) = meta["annotations"][key].as_str()
                && list.last().map(String::as_str) != Some(value)
            {
                list.push(value.to_string());
            }
        }
    } else if meta["name"] == "edge" && !object["status"].is_null() {
        let status = object["status"].clone();
        for q in status["quarantined"].as_array().into_iter().flatten() {
            if let Some(d) = q["digest"].as_str() {
                seen.quarantined_at
                    .entry(d.to_string())
                    .or_insert_with(Instant::now);
            }
        }
        if seen.statuses.last() != Some(&status) {
            seen.statuses.push(status);
        }
    }
}

/// Follows one resource until aborted, listing again after a lag.
async fn follow(
    follower: Follower,
    group: &'static str,
    plural: &'static str,
    seen: Arc<Mutex<Seen>>,
) {
    loop {
        let (now, mut changes) = follower.list_and_subscribe(group, plural);
        for object in &now {
            record(&seen, plural, object);
        }
        loop {
            match changes.recv().await {
                Ok(change) => {
                    if change.key.group == group && change.key.plural == plural {
                        record(&seen, plural, &change.object);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).lagged += 1;
                    break;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
