//! Pods as the controller's one watch sees them. Every rollout's fleet reads pod names and
//! addresses from this cache instead of asking the API server: with 100 rollouts polling their
//! pods four times a second, per-poll lists and gets would be thousands of requests a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::runtime::reflector::Store;

/// A shared, watch-fed store of pods.
#[derive(Clone)]
pub struct PodCache {
    store: Store<Pod>,
    /// Turns true once the first full list has arrived.
    ready: tokio::sync::watch::Receiver<bool>,
    /// How many watch events the store has taken (see [`PodCache::counting`]); 0 while nobody
    /// counts, and then no caller may trust an earlier answer.
    changes: Arc<AtomicU64>,
    /// What this process last wrote to each pod's tell annotations (a hash of them, by
    /// `namespace/name`), `None` after a write whose outcome is unknown. See
    /// [`PodCache::already_told`].
    told: Arc<Mutex<HashMap<String, Option<u64>>>>,
}

impl PodCache {
    /// Wraps a reflector's store. Spawns the one task that waits for the store's first list:
    /// kube-runtime's `Store::wait_until_ready` wakes only the last of several concurrent
    /// waiters (its shared oneshot receiver keeps one waker), which left one reconcile in ten
    /// waiting forever when a hundred rollouts started together (issue 15's stuck runs). A
    /// `watch` channel wakes every waiter.
    pub fn new(store: Store<Pod>) -> Self {
        let (tx, ready) = tokio::sync::watch::channel(false);
        let waiting = store.clone();
        tokio::spawn(async move {
            if waiting.wait_until_ready().await.is_ok() {
                tx.send_replace(true);
            }
        });
        PodCache {
            store,
            ready,
            changes: Arc::default(),
            told: Arc::default(),
        }
    }

    /// Counts every event of `events`, the reflector stream that fills this cache's store, as it
    /// passes (after the store took it), so [`PodCache::version`] moves whenever a selection
    /// could answer differently.
    pub fn counting<S: Stream>(&self, events: S) -> impl Stream<Item = S::Item> + use<S> {
        let changes = Arc::clone(&self.changes);
        events.inspect(move |_| {
            changes.fetch_add(1, Ordering::Release);
        })
    }

    /// Moves with every change to the store, once [`PodCache::counting`] follows its stream:
    /// a caller that selected at version `v` may reuse its answer while the version is still
    /// `v`. `None` while nothing counts (then every answer must be computed again). Read it
    /// before selecting: a change between the two only makes the next call select again.
    pub fn version(&self) -> Option<u64> {
        Some(self.changes.load(Ordering::Acquire)).filter(|v| *v > 0)
    }

    /// Waits until the first full list has arrived, so an empty cache never reads as "no pods".
    /// Any number of tasks may wait at once.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Pods in `namespace` whose labels include every `selector` pair, not being deleted.
    pub fn select(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<Arc<Pod>> {
        self.store
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.deletion_timestamp.is_none()
                    && matches(p, selector)
            })
            .collect()
    }

    /// One pod by name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.store
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }

    /// Whether the pod already carries exactly these `tell` annotations, so telling it again
    /// would write nothing new: a controller restarted between a tell and its checkpoint would
    /// otherwise tell the pod again what its predecessor had (issue 16's "told once"). This
    /// process's own last write to the pod decides when there was one (the watch may not have
    /// brought it back yet, and a stale copy must never hide a newer tell); otherwise the pod as
    /// the watch saw it, which for a pod this process never wrote is its predecessor's.
    pub fn already_told(&self, namespace: &str, name: &str, tell: &[(&str, &str)]) -> bool {
        let key = format!("{namespace}/{name}");
        if let Some(own) = self.told_lock().get(&key) {
            return *own == Some(tell_hash(tell));
        }
        self.get(namespace, name).is_some_and(|pod| {
            let annotations = pod.metadata.annotations.as_ref();
            tell.iter()
                .all(|(k, v)| annotations.and_then(|a| a.get(*k)).map(String::as_str) == Some(*v))
        })
    }

    /// Records this process's write of `tell` to the pod: `written` false when its outcome is
    /// unknown (a failed request may still have landed), and then the pod is told again next
    /// time whatever the cache says.
    pub fn record_told(&self, namespace: &str, name: &str, tell: &[(&str, &str)], written: bool) {
        let hash = written.then(|| tell_hash(tell));
        self.told_lock().insert(format!("{namespace}/{name}"), hash);
    }

    fn told_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<u64>>> {
        // A panic while holding the map leaves it whole: each insert is one call.
        self.told
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One hash of a pod's tell annotations, keys and values, in order.
fn tell_hash(tell: &[(&str, &str)]) -> u64 {
    let mut bytes = Vec::new();
    for (k, v) in tell {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    crate::stable_hash::fnv1a64(&bytes)
}

/// The annotation `kubectl apply` leaves on objects: a copy of the whole object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a watched pod what no reader of the cache looks at, before it is stored: the
/// cache holds every pod of the namespace (or cluster) for as long as the controller runs, and
/// on a real cluster most of a Pod's bytes are `managedFields`, the spec (containers, volumes,
/// env) and container statuses. What is kept: all of the metadata but `managedFields` and
/// `kubectl`'s last-applied copy (names, namespace, labels, annotations, owner, deletion
/// timestamp: selection, the agent annotations, `poke_on_pod_changes`), and of the status the
/// phase, the pod IPs and the conditions (`KubeFleet` reads `podIP`). The spec is dropped.
pub fn trim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    pod.spec = None;
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        conditions: status.conditions,
        ..PodStatus::default()
    });
}

/// Whether the pod's labels include every pair of `selector`.
pub fn matches(pod: &Pod, selector: &BTreeMap<String, String>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::{reflector, watcher};

    use super::*;

    #[test]
    fn trimming_keeps_what_the_fleet_reads_and_drops_the_rest() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "ns", "labels": {"app": "edge"},
                "annotations": {"switchback.dev/desired-digest": "d", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
            "status": {
                "phase": "Running", "podIP": "127.0.0.9", "podIPs": [{"ip": "127.0.0.9"}],
                "hostIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "nginx", "image": "nginx", "imageID": "x",
                    "ready": true, "restartCount": 0}],
            },
        }))
        .expect("a pod");
        trim(&mut pod);
        let selector = BTreeMap::from([("app".to_string(), "edge".to_string())]);
        assert!(matches(&pod, &selector));
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["switchback.dev/desired-digest"]
        );
        assert!(pod.metadata.managed_fields.is_none());
        assert!(pod.spec.is_none());
        let status = pod.status.expect("the status is kept");
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.9"));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        assert!(status.container_statuses.is_none() && status.host_ip.is_none());
    }

    /// The reproduction of issue 15's stuck full-size runs at unit size: a hundred reconciles
    /// wait for the pod cache before its first list arrives; every one of them must go on once
    /// it does. Through `Store::wait_until_ready` directly, all but the last waiter hang.
    #[tokio::test(flavor = "current_thread")]
    async fn every_concurrent_waiter_goes_on_once_the_first_list_arrives() {
        let (store, mut writer) = reflector::store::<Pod>();
        let cache = PodCache::new(store);
        let mut waiters = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let cache = cache.clone();
            waiters.spawn(async move { cache.ready().await });
        }
        // Every waiter (and the cache's own task) runs until it waits, before the list lands.
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let all = async {
            let mut done = 0;
            while let Some(joined) = waiters.join_next().await {
                joined.expect("a waiter panicked");
                done += 1;
            }
            done
        };
        let done = tokio::time::timeout(Duration::from_secs(30), all).await;
        assert_eq!(
            done.ok(),
            Some(100),
            "waiters left waiting for a ready cache"
        );
    }

    /// A restarted controller does not tell a pod again what its predecessor told it (the pod
    /// as the watch saw it), but once this process wrote a pod, only its own last write counts:
    /// a copy the watch has not refreshed yet must never hide a newer tell.
    #[tokio::test(flavor = "current_thread")]
    async fn a_pod_is_already_told_by_its_annotations_or_this_process_last_write() {
        use crate::fleet::kube::{COMMIT_ANNOTATION as COMMIT, DESIRED_ANNOTATION as DESIRED};
        let (store, mut writer) = reflector::store::<Pod>();
        let cache = PodCache::new(store);
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {
            "name": "p", "namespace": "ns",
            "annotations": {"switchback.dev/desired-digest": "d1", "switchback.dev/desired-commit": "c1"},
        }}))
        .expect("a pod");
        writer.apply_watcher_event(&watcher::Event::Apply(pod));
        let d1 = [(DESIRED, "d1"), (COMMIT, "c1")];
        let d2 = [(DESIRED, "d2"), (COMMIT, "c2")];
        assert!(
            cache.already_told("ns", "p", &d1),
            "told by its predecessor"
        );
        assert!(!cache.already_told("ns", "p", &d2));
        assert!(
            !cache.already_told("ns", "q", &d1),
            "a pod not in the cache"
        );
        assert!(!cache.already_told("ns", "p", &[(DESIRED, "d1"), (COMMIT, "c2")]));

        cache.record_told("ns", "p", &d2, true);
        assert!(cache.already_told("ns", "p", &d2));
        assert!(
            !cache.already_told("ns", "p", &d1),
            "the stale cached copy must not hide the newer tell"
        );
        cache.record_told("ns", "p", &d1, false);
        assert!(
            !cache.already_told("ns", "p", &d1),
            "after a write of unknown outcome the pod is told again"
        );
    }
}
