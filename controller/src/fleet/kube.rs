//! The Kubernetes fleet (DESIGN §3.6): the proxy pods a rollout selects. Telling a pod a digest
//! stores the bundle in immutable ConfigMaps (once per digest), records the desired digest as a pod
//! annotation (the durable record a restarted controller reads back), then nudges the pod's agent
//! over HTTP so it applies at once. What a pod serves and its counters are read from its agent,
//! never written into the API server by the agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use super::pod_cache::PodCache;
use super::{ApplyResult, Fleet, FleetError, PodObservation, Reading};
use crate::agent::AgentClient;
use crate::operator::bundle_store;
use crate::render::Bundle;

/// The annotation holding the digest a pod should serve.
pub const DESIRED_ANNOTATION: &str = "switchback.dev/desired-digest";
/// The annotation holding the commit of that digest, for people.
pub const COMMIT_ANNOTATION: &str = "switchback.dev/desired-commit";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "switchback";

/// How many writes to the API server (pod marks and annotations, bundle ConfigMaps, rollout
/// status) the whole controller has in flight at once. Each rollout writes its pods in parallel,
/// so 100 rollouts adopting or promoting together sent about a thousand requests at once; over
/// HTTP/1 each is a connection of its own, and the client's pool keeps every one of them open
/// afterwards (1,267 at 1,000 pods, some 40 KiB of buffers each: a third of the controller's
/// memory, issue 15). Thirty-two in flight keep a local API server busy without that pile.
pub const MAX_API_WRITES: usize = 32;

/// Waits for a turn to write to the API server; the write is done while the permit is held.
/// `None` never happens (the semaphore is never closed); callers go on without a permit then.
pub async fn api_write_permit() -> Option<tokio::sync::SemaphorePermit<'static>> {
    static WRITES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_API_WRITES);
    WRITES.acquire().await.ok()
}

/// The pods of one rollout in one namespace: those matching the selector that have an address.
#[derive(Clone)]
pub struct KubeFleet {
    pods: Api<Pod>,
    configmaps: Api<ConfigMap>,
    rollout: String,
    namespace: String,
    selector: String,
    agent_port: u16,
    entry: String,
    config_root: String,
    owner: Option<OwnerReference>,
    selector_map: BTreeMap<String, String>,
    cache: Option<PodCache>,
    agent_token: Option<crate::agent::Token>,
    /// One HTTP client (and connection pool) for every agent of the fleet.
    http: Option<reqwest::Client>,
    /// The last selection from the cache and the cache's version then: a quiet fleet asks for
    /// its pods every poll, and selecting walks every pod of the cache (a fifth of an idle
    /// controller's CPU at 1,000 pods and 100 rollouts).
    selected: Arc<std::sync::Mutex<Option<Selection>>>,
    /// When electing: no nudge once this replica's tenure lapsed (a nudge is honoured even for a
    /// digest the annotation does not name, so a stale leader's would undo the new one's tell).
    tenure: Option<crate::operator::leader::Tenure>,
}

/// Pod names as selected at a version of the pod cache ([`PodCache::version`]).
type Selection = (u64, Vec<String>);

impl KubeFleet {
    /// A fleet of the pods matching `selector` (all labels must match) in `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        rollout: &str,
        selector: &BTreeMap<String, String>,
        agent_port: u16,
        entry: &str,
    ) -> Self {
        KubeFleet {
            pods: Api::namespaced(client.clone(), namespace),
            configmaps: Api::namespaced(client, namespace),
            rollout: rollout.to_string(),
            namespace: namespace.to_string(),
            selector: selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            agent_port,
            entry: entry.to_string(),
            config_root: crate::validate::paths::DEFAULT_CONFIG_ROOT.to_string(),
            owner: None,
            agent_token: None,
            selector_map: selector.clone(),
            cache: None,
            http: shared_http(),
            selected: Arc::default(),
            tenure: None,
        }
    }

    /// The config root the bundles stand for, told to every agent beside the entry.
    pub fn with_config_root(mut self, root: &str) -> Self {
        self.config_root = root.to_string();
        self
    }

    /// Nudges only while `tenure` holds (a leader paused past its Lease must not nudge when it
    /// wakes); the API writes are fenced by the client's own fence.
    #[must_use]
    pub fn with_tenure(mut self, tenure: crate::operator::leader::Tenure) -> Self {
        self.tenure = Some(tenure);
        self
    }

    /// Reads pods from the controller's watch instead of the API server.
    #[must_use]
    pub fn with_cache(mut self, cache: PodCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Bundles stored from now on are owned by `owner` (the ProxyRollout), so the garbage
    /// collector removes them with it even if the finalizer never runs.
    #[must_use]
    pub fn with_owner(mut self, owner: OwnerReference) -> Self {
        self.owner = Some(owner);
        self
    }

    /// The bearer token of the pods' agents (Kubernetes mode): sent with every nudge and read.
    #[must_use]
    pub fn with_agent_token(mut self, token: crate::agent::Token) -> Self {
        self.agent_token = Some(token);
        self
    }

    async fn agent(&self, pod: &str) -> Result<AgentClient, FleetError> {
        let unreachable = |message: String| FleetError::Unreachable {
            pod: pod.to_string(),
            message,
        };
        let found = match &self.cache {
            Some(cache) => cache
                .get(&self.namespace, pod)
                .ok_or_else(|| unreachable("not in the pod cache".to_string()))?,
            None => Arc::new(
                self.pods
                    .get(pod)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?,
            ),
        };
        let ip = found
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| unreachable("no pod IP yet".to_string()))?;
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|e| unreachable(format!("pod IP {ip:?}: {e}")))?;
        let addr = std::net::SocketAddr::new(ip, self.agent_port);
        let client = match &self.http {
            Some(http) => AgentClient::with_http(addr, http.clone()),
            None => AgentClient::new(addr).map_err(|e| unreachable(e.to_string()))?,
        };
        Ok(client.with_token(self.agent_token.clone()))
    }

    /// The bundle as this rollout's ConfigMaps.
    fn configmaps_of(&self, bundle: &Bundle) -> Result<Vec<ConfigMap>, String> {
        bundle_store::to_configmaps(&self.rollout, &self.namespace, self.owner.clone(), bundle)
            .map_err(|e| e.to_string())
    }

    /// Stores the bundle's ConfigMaps unless they exist (they are immutable and named by digest).
    async fn store(&self, bundle: &Bundle) -> Result<(), String> {
        self.create(&self.configmaps_of(bundle)?).await
    }

    /// Creates `maps`; one that exists already is taken as stored.
    async fn create(&self, maps: &[ConfigMap]) -> Result<(), String> {
        for cm in maps {
            match self.configmaps.create(&PostParams::default(), cm).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Deletes the bundle's ConfigMaps and creates them afresh from `bundle`: what a hand edit
    /// changed is put back (a merge patch would keep keys the edit added).
    async fn store_again(&self, bundle: &Bundle) -> Result<(), String> {
        let permit = api_write_permit().await;
        let maps = self.configmaps_of(bundle)?;
        for cm in &maps {
            let name = cm.metadata.name.clone().unwrap_or_default();
            match self.configmaps.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let stored = self.create(&maps).await;
        drop(permit);
        stored
    }
}

impl KubeFleet {
    /// The usable pods of the cache's selection, sorted; selected again only when the cache
    /// changed since the last call.
    fn select_from(&self, cache: &PodCache) -> Vec<String> {
        let version = cache.version();
        let mut selected = self
            .selected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(v), Some((at, names))) = (version, selected.as_ref())
            && v == *at
        {
            return names.clone();
        }
        let names = usable_names(
            cache
                .select(&self.namespace, &self.selector_map)
                .iter()
                .map(|p| &**p),
        );
        *selected = version.map(|v| (v, names.clone()));
        names
    }
}

impl Fleet for KubeFleet {
    async fn pods(&self) -> Result<Vec<String>, FleetError> {
        if let Some(cache) = &self.cache {
            return Ok(self.select_from(cache));
        }
        let params = ListParams::default().labels(&self.selector);
        let listed = self
            .pods
            .list(&params)
            .await
            .map_err(|e| FleetError::List(e.to_string()))?;
        Ok(usable_names(&listed.items))
    }

    #[tracing::instrument(skip(self, bundle), fields(digest = %bundle.digest().short()))]
    async fn apply(
        &self,
        pod: &str,
        bundle: &Bundle,
        commit: &str,
    ) -> Result<ApplyResult, FleetError> {
        let permit = api_write_permit().await;
        if let Err(e) = self.store(bundle).await {
            return Ok(ApplyResult::Failed(format!("storing the bundle: {e}")));
        }
        // The annotations are the durable record (a restarted agent or controller reads them
        // back); the nudge only makes the agent act now. The agent fetches and verifies the
        // bundle itself: no config travels to the pod IP.
        let digest = bundle.digest().to_string();
        let tell = [
            (DESIRED_ANNOTATION, digest.as_str()),
            (COMMIT_ANNOTATION, commit),
            (
                crate::agent::kube::ROLLOUT_ANNOTATION,
                self.rollout.as_str(),
            ),
            (crate::agent::kube::ENTRY_ANNOTATION, self.entry.as_str()),
            (
                crate::agent::kube::CONFIG_ROOT_ANNOTATION,
                self.config_root.as_str(),
            ),
        ];
        let already_told = self
            .cache
            .as_ref()
            .is_some_and(|c| c.already_told(&self.namespace, pod, &tell));
        if !already_told {
            let annotations: serde_json::Map<String, serde_json::Value> = tell
                .iter()
                .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
                .collect();
            let patch = serde_json::json!({"metadata": {"annotations": annotations}});
            let written = self
                .pods
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            if let Some(cache) = &self.cache {
                cache.record_told(&self.namespace, pod, &tell, written.is_ok());
            }
            written.map_err(|e| FleetError::Unreachable {
                pod: pod.to_string(),
                message: e.to_string(),
            })?;
        }
        drop(permit);
        if let Some(tenure) = self.tenure.as_ref().filter(|t| !t.holds()) {
            // The leader now tells the pod what it decides; this replica's word is stale.
            return Ok(ApplyResult::Unconfirmed(tenure.lapsed().to_string()));
        }
        let agent = self.agent(pod).await?;
        let outcome = match nudge(&agent, bundle, commit).await {
            Ok(outcome) => outcome,
            Err(e) => return Ok(unconfirmed(e)),
        };
        let refused = matches!(
            &outcome,
            crate::agent::ApplyOutcome::ApplyFailed {
                step: crate::agent::ApplyStep::Verify,
                ..
            }
        );
        if !refused {
            return Ok(ApplyResult::from(outcome));
        }
        // The stored ConfigMaps do not hash to the digest: edited (or half deleted) by hand
        // since they were stored, since this controller validated those very files. The commit
        // is not at fault; write them again from the bundle and ask once more, and only a
        // second refusal is the pod's failure.
        tracing::warn!(pod, digest = %bundle.digest().short(), "the agent refused the stored bundle; storing it again");
        if let Err(e) = self.store_again(bundle).await {
            return Ok(ApplyResult::Failed(format!(
                "storing the bundle again: {e}"
            )));
        }
        Ok(nudge(&agent, bundle, commit)
            .await
            .map_or_else(unconfirmed, ApplyResult::from))
    }

    async fn observe(&self, pod: &str, reading: Reading) -> Result<PodObservation, FleetError> {
        super::observe_via(&self.agent(pod).await?, pod, reading).await
    }
}

/// How often a nudge that found nobody listening is sent again, and how long apart: an agent
/// restarting (its process killed mid-apply, the kubelet starting it again) is back within a few
/// seconds, and a nudge that reaches it saves waiting for its next read. Short, because a newer
/// tell to the same pod (a rollback) waits for this one.
const NUDGE_RETRIES: usize = 4;

/// Nudges `agent` to apply `bundle`, again while its port refuses connections (nobody
/// listening yet). Any other failure to get an answer is returned at once: a connection that
/// times out (a blackholed port) would hold the pod's lane for the connect timeout each time.
async fn nudge(
    agent: &AgentClient,
    bundle: &Bundle,
    commit: &str,
) -> Result<crate::agent::ApplyOutcome, crate::agent::ClientError> {
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_times(NUDGE_RETRIES);
    (|| agent.nudge(bundle.digest(), commit))
        .retry(backoff)
        .when(|e| {
            matches!(e, crate::agent::ClientError::Http { source, .. }
                if source.is_connect() && !source.is_timeout())
        })
        .await
}

/// A nudge that got no answer, after the tell was written to the pod's annotations: the agent
/// reads those when it starts and applies them itself, so the tell stands. The engine learns
/// what the pod serves from its reads, and counts it failed only when it has not applied within
/// the rollout's apply timeout; counting the lost nudge as a failed apply instead rolled back
/// (and quarantined) a good commit whenever a canary pod's agent restarted mid-apply.
fn unconfirmed(e: crate::agent::ClientError) -> ApplyResult {
    ApplyResult::Unconfirmed(e.to_string())
}

/// The pod's name, if it belongs in the fleet: not being deleted, and with an address. A pod
/// without one has no agent to tell yet; it joins once it has one (telling it the target now
/// would count as its failure to apply).
fn usable(pod: &Pod) -> Option<String> {
    let addressed = pod.status.as_ref().is_some_and(|s| s.pod_ip.is_some());
    (pod.metadata.deletion_timestamp.is_none() && addressed)
        .then(|| pod.metadata.name.clone())
        .flatten()
}

/// The names of the [`usable`] pods of `pods`, sorted: the fleet's pods as the engine sees them,
/// from the cache or from a list.
fn usable_names<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<String> {
    let mut names: Vec<String> = pods.into_iter().filter_map(usable).collect();
    names.sort();
    names
}

/// One HTTP client for every fleet in the process: each rollout's fleet polls its agents a few
/// times a second, and a client per call (or per fleet) would open a connection per poll and keep
/// a pool per rollout. `None` if the client cannot be built; callers then make their own.
fn shared_http() -> Option<reqwest::Client> {
    static HTTP: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    HTTP.get_or_init(|| AgentClient::http().ok()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "edge"}},
            "status": {"podIP": "127.0.0.9"},
        }))
        .expect("a pod")
    }

    /// A quiet fleet reuses its selection, but never past a change the watch brought: a pod
    /// added after the first selection is in the next one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_selection_is_reused_until_the_pod_watch_changes_the_cache() {
        use futures_util::StreamExt;
        use kube::runtime::{reflector, watcher};
        let (store, writer) = reflector::store::<Pod>();
        let cache = PodCache::new(store);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rx = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        });
        let mut events = Box::pin(cache.counting(reflector::reflector(writer, rx)));
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client, never used");
        let selector = BTreeMap::from([("app".to_string(), "edge".to_string())]);
        let fleet = KubeFleet::new(client, "ns", "edge", &selector, 8080, "nginx.conf")
            .with_cache(cache.clone());
        let send = |event: watcher::Event<Pod>| {
            tx.send(Ok(event)).expect("the stream is open");
        };
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(pod("a")));
        send(watcher::Event::InitDone);
        for _ in 0..3 {
            events.next().await;
        }
        assert_eq!(fleet.pods().await.expect("pods"), ["a"]);
        let before = cache.version();
        assert_eq!(fleet.pods().await.expect("pods"), ["a"], "reused");
        assert_eq!(cache.version(), before);
        send(watcher::Event::Apply(pod("b")));
        events.next().await;
        assert_ne!(
            cache.version(),
            before,
            "the watch's change moved the version"
        );
        assert_eq!(fleet.pods().await.expect("pods"), ["a", "b"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_beyond_the_limit_waits_for_one_to_finish() {
        let mut held = Vec::new();
        for _ in 0..MAX_API_WRITES {
            held.push(api_write_permit().await);
        }
        let next = api_write_permit();
        tokio::pin!(next);
        let waited = tokio::select! {
            biased;
            _ = &mut next => false,
            () = tokio::task::yield_now() => true,
        };
        assert!(waited, "a write went ahead with the limit in flight");
        drop(held.pop());
        assert!(
            next.await.is_some(),
            "a finished write lets the next one go"
        );
    }
}
