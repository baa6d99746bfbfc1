//! Kubernetes mode (`switchback agent --kubernetes`, DESIGN §3.6, ADR 0001): the agent learns the
//! digest it should serve from its own Pod and fetches the bundle from the immutable ConfigMaps
//! the controller stored, instead of being sent files over HTTP, so reaching a pod IP is not
//! enough to push config.
//!
//! Where the desired digest comes from, fastest first:
//! 1. the controller's nudge (`POST /v1/nudge {digest, commit}`): "act now";
//! 2. the Pod's `switchback.dev/desired-digest` annotation, read when the agent starts;
//! 3. a watch on its own Pod (`metadata.name=<pod>`), when the nudge was lost.
//!
//! The annotation is the durable record; a nudge only says "act now", and is honoured even for a
//! digest the annotation does not (yet) name, as long as its ConfigMaps exist and hash to it.
//! Whatever the source, the bundle is reassembled by [`bundle_store::from_configmaps`], which
//! refuses content that does not hash to the digest, and applied through the same path as in
//! local mode. The agent only reads from the API server: get ConfigMaps, get/list/watch its Pod.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, ExponentialBackoff};
use tokio::sync::watch;
use tracing::Instrument;

use super::apply::{self, StepResult};
use super::config::KubeSettings;
use super::state::{Shared, lock};
use super::tells::Tells;
use super::wire::{ApplyOutcome, ApplyStep};
use crate::fleet::kube::{COMMIT_ANNOTATION, DESIRED_ANNOTATION};
use crate::operator::bundle_store::{self, MAX_PARTS, StoreError};
use crate::render::{Bundle, Digest};

/// The annotation naming the rollout whose ConfigMaps hold the Pod's bundles
/// (`<rollout>-<12 hex>[-p<n>]`, [`bundle_store::part_name`]). The controller writes it with the
/// desired digest; with it the agent finds a bundle by name, so it needs only `get` on ConfigMaps.
pub const ROLLOUT_ANNOTATION: &str = "switchback.dev/rollout";
/// The annotation naming the bundle's main file (nginx's `-c`, the rollout's `render.entry`);
/// without it the agent's `--entry` holds.
pub const ENTRY_ANNOTATION: &str = "switchback.dev/entry";

/// The annotation naming the config root the bundle stands for (the rollout's
/// `render.configRoot`); without it the agent's `--config-root` holds.
pub const CONFIG_ROOT_ANNOTATION: &str = "switchback.dev/config-root";

/// The annotation carrying the rollout's drift policy (`Report` or `Repair`,
/// `spec.drift.policy`); the controller writes it, and it overrides `--drift-policy`.
pub const DRIFT_POLICY_ANNOTATION: &str = "switchback.dev/drift-policy";

/// Why the agent could not learn or fetch what to serve. Each names the object it is about.
#[derive(Debug, thiserror::Error)]
pub enum KubeAgentError {
    /// The agent's own Pod could not be read.
    #[error("reading pod {namespace}/{pod}: {source}")]
    Pod {
        /// The namespace.
        namespace: String,
        /// The Pod.
        pod: String,
        /// What the API said.
        #[source]
        source: kube::Error,
    },
    /// The Pod carries no rollout annotation, so no ConfigMap name can be made.
    #[error(
        "pod {namespace}/{pod} has no {ROLLOUT_ANNOTATION} annotation; the controller writes it \
         with {DESIRED_ANNOTATION}"
    )]
    NoRollout {
        /// The namespace.
        namespace: String,
        /// The Pod.
        pod: String,
    },
    /// The desired-digest annotation is not a digest.
    #[error("pod {pod}: annotation {DESIRED_ANNOTATION}: {reason}")]
    BadAnnotation {
        /// The Pod.
        pod: String,
        /// Why.
        reason: String,
    },
    /// A ConfigMap of the bundle could not be read.
    #[error("reading ConfigMap {namespace}/{name}: {source}")]
    ConfigMap {
        /// The namespace.
        namespace: String,
        /// The ConfigMap.
        name: String,
        /// What the API said.
        #[source]
        source: kube::Error,
    },
    /// The ConfigMaps are malformed or do not hash to the digest: refused.
    #[error("bundle {digest} of rollout {rollout}: {source}")]
    Store {
        /// The rollout.
        rollout: String,
        /// The digest asked for.
        digest: Digest,
        /// What is wrong with it.
        #[source]
        source: Box<StoreError>,
    },
}

impl KubeAgentError {
    /// The apply step a failure is reported under: content that does not verify is `verify`,
    /// everything about reaching the API server is `fetch`.
    fn step(&self) -> ApplyStep {
        match self {
            KubeAgentError::Store { .. } => ApplyStep::Verify,
            _ => ApplyStep::Fetch,
        }
    }

    /// Whether trying again soon may help (the API server was unreachable or the object is not
    /// there yet); content that does not verify will not change, its ConfigMaps are immutable.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            KubeAgentError::Pod { .. } | KubeAgentError::ConfigMap { .. }
        )
    }
}

/// What the Pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The digest to serve.
    pub digest: Digest,
    /// Its commit (for people).
    pub commit: String,
}

/// The agent's read-only view of the API server: its own Pod and its namespace's ConfigMaps.
#[derive(Clone)]
pub struct PodSource {
    pods: Api<Pod>,
    configmaps: Api<ConfigMap>,
    pod: String,
    namespace: String,
    entry: String,
    /// The watch and the nudges ask for the same digests: one apply per ask that waited.
    tells: Arc<Tells>,
}

impl std::fmt::Debug for PodSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSource")
            .field("pod", &self.pod)
            .field("namespace", &self.namespace)
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl PodSource {
    /// The view for the Pod `settings` names, through `client` (in a Pod: its service account).
    pub fn new(client: kube::Client, settings: &KubeSettings) -> Self {
        PodSource {
            pods: Api::namespaced(client.clone(), &settings.namespace),
            configmaps: Api::namespaced(client, &settings.namespace),
            pod: settings.pod_name.clone(),
            namespace: settings.namespace.clone(),
            entry: settings.entry.clone(),
            tells: Arc::default(),
        }
    }

    async fn get_pod(&self) -> Result<Pod, KubeAgentError> {
        self.pods
            .get(&self.pod)
            .await
            .map_err(|source| KubeAgentError::Pod {
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                source,
            })
    }

    async fn get_configmap(&self, name: &str) -> Result<ConfigMap, KubeAgentError> {
        self.configmaps
            .get(name)
            .await
            .map_err(|source| KubeAgentError::ConfigMap {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                source,
            })
    }

    /// The rollout and entry named on the Pod now (a fresh read: a nudge may come right after
    /// the controller's first annotation). Without an entry annotation, `--entry` holds.
    async fn target(
        &self,
    ) -> Result<(String, String, Option<crate::validate::ConfigRoot>), KubeAgentError> {
        let pod = self.get_pod().await?;
        let rollout = rollout_of(&pod).ok_or_else(|| KubeAgentError::NoRollout {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
        })?;
        let entry = annotation(&pod, ENTRY_ANNOTATION).unwrap_or(&self.entry);
        let root = annotation(&pod, CONFIG_ROOT_ANNOTATION)
            .and_then(|r| crate::validate::ConfigRoot::new(r).ok());
        Ok((rollout, entry.to_string(), root))
    }

    /// Reads the bundle `digest` of `rollout` by name (part 0, then as many parts as its manifest
    /// says) and reassembles it, refusing content that does not hash to `digest`.
    pub async fn fetch(&self, rollout: &str, digest: &Digest) -> Result<Bundle, KubeAgentError> {
        let store_err = |source| KubeAgentError::Store {
            rollout: rollout.to_string(),
            digest: *digest,
            source: Box::new(source),
        };
        let first_name = bundle_store::part_name(rollout, digest, 0);
        let first = self.get_configmap(&first_name).await?;
        let count = parts_of(&first).ok_or_else(|| {
            store_err(StoreError::Malformed {
                name: first_name.clone(),
                what: format!("no `parts N` line (1..={MAX_PARTS}) in its manifest"),
            })
        })?;
        let mut parts = vec![first];
        for n in 1..count {
            let name = bundle_store::part_name(rollout, digest, n);
            parts.push(self.get_configmap(&name).await?);
        }
        bundle_store::from_configmaps(digest, &parts).map_err(store_err)
    }

    /// [`PodSource::fetch`], retried with jittered exponential backoff (a few times, a few
    /// seconds in all) while the failure is one that may pass.
    async fn fetch_retrying(
        &self,
        rollout: &str,
        digest: &Digest,
    ) -> Result<Bundle, KubeAgentError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(4)
            .with_jitter();
        (|| self.fetch(rollout, digest))
            .retry(policy)
            .when(KubeAgentError::is_transient)
            .notify(|e, after| tracing::debug!(error = %e, ?after, "fetch failed; retrying"))
            .await
    }
}

/// The `parts N` line of a part's manifest, when sane.
fn parts_of(cm: &ConfigMap) -> Option<usize> {
    let manifest = cm.data.as_ref()?.get("manifest")?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("parts "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| (1..=MAX_PARTS).contains(n))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn rollout_of(pod: &Pod) -> Option<String> {
    annotation(pod, ROLLOUT_ANNOTATION).map(str::to_string)
}

/// What the Pod's annotations ask for; `None` when it names no digest yet.
pub fn desired_of(pod: &Pod) -> Result<Option<Desired>, KubeAgentError> {
    let Some(text) = annotation(pod, DESIRED_ANNOTATION) else {
        return Ok(None);
    };
    let digest = text
        .parse::<Digest>()
        .map_err(|e| KubeAgentError::BadAnnotation {
            pod: pod.metadata.name.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
    Ok(Some(Desired {
        digest,
        commit: annotation(pod, COMMIT_ANNOTATION)
            .unwrap_or_default()
            .to_string(),
    }))
}

/// Fetches `digest` for the rollout named on the Pod and applies it through the one apply path.
/// `via` says what asked (`nudge`, `start`, `watch`), for the logs.
#[tracing::instrument(
    name = "kube_apply",
    skip(shared, source, commit),
    fields(pod = %source.pod, digest = %digest.short(), commit = %commit, via = via)
)]
async fn fetch_and_apply(
    shared: &Arc<Shared>,
    source: &PodSource,
    digest: Digest,
    commit: &str,
    via: &'static str,
) -> (ApplyOutcome, bool) {
    source
        .tells
        .apply_once(digest, || async {
            let mut transient = false;
            let mut fail = |e: KubeAgentError| {
                transient = e.is_transient();
                tracing::warn!(error = %e, "cannot fetch the bundle; nginx keeps what it serves");
                (e.step(), e.to_string())
            };
            let target = source.target().await;
            let entry = match &target {
                Ok((_, entry, root)) => {
                    let root = root
                        .clone()
                        .unwrap_or_else(|| shared.cfg.config_root.clone());
                    *lock(&shared.config_root) = root;
                    entry.clone()
                }
                Err(_) => source.entry.clone(),
            };
            let fetched = async {
                let result = match target {
                    Ok((rollout, _, _)) => source.fetch_retrying(&rollout, &digest).await,
                    Err(e) => Err(e),
                };
                result.map_err(&mut fail) as StepResult<Bundle>
            };
            let outcome = apply::apply_checked(shared, digest, commit, &entry, fetched).await;
            (outcome, transient)
        })
        .await
}

/// Handles a nudge: fetch `digest` and apply it now, whatever the annotation says yet.
pub async fn nudge(
    shared: &Arc<Shared>,
    source: &PodSource,
    digest: Digest,
    commit: &str,
) -> ApplyOutcome {
    fetch_and_apply(shared, source, digest, commit, "nudge")
        .await
        .0
}

/// Follows the Pod's annotation until `stop`: applies what it names at start, then whenever it
/// names another digest. The watch is only a trigger; each time the Pod is read afresh, so a
/// late event cannot take the agent back to an older digest than the one the controller wrote
/// last. A digest is acted on once per change of the annotation, by the watch or a nudge (a
/// refused one is not retried in a loop; a fetch that failed for want of the API server is
/// retried on the next event).
pub async fn follow(shared: Arc<Shared>, source: Arc<PodSource>, mut stop: watch::Receiver<bool>) {
    reconcile(&shared, &source, "start").await;
    let config = watcher::Config::default().fields(&format!("metadata.name={}", source.pod));
    let backoff = ExponentialBackoff::from(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(30))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times(),
    );
    let events = watcher::watcher(source.pods.clone(), config).backoff(backoff);
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = events.next() => e,
        };
        match event {
            None => return,
            Some(Ok(watcher::Event::Apply(_) | watcher::Event::InitApply(_))) => {
                reconcile(&shared, &source, "watch").await;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, pod = %source.pod, "watching the pod"),
        }
    }
}

/// Reads the Pod and applies its desired digest unless that was settled already (by the watch
/// or by a nudge).
async fn reconcile(shared: &Arc<Shared>, source: &PodSource, via: &'static str) {
    let pod = source.get_pod().await;
    if let Ok(p) = &pod {
        follow_policy(shared, p);
    }
    let desired = match pod.and_then(|p| desired_of(&p)) {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the desired digest");
            return;
        }
    };
    if source.tells.settled(desired.digest) {
        return;
    }
    let applied = lock(&shared.status).applied.as_ref().map(|a| a.digest);
    if applied == Some(desired.digest) {
        source.tells.settle(desired.digest);
        return;
    }
    let (outcome, _) = fetch_and_apply(shared, source, desired.digest, &desired.commit, via)
        .in_current_span()
        .await;
    tracing::info!(?outcome, via, "desired digest from the pod's annotation");
}

/// Takes the drift policy the Pod's annotation names, when it names a known one, and wakes drift
/// detection when it changed (a drift reported so far is repaired at once under `Repair`).
fn follow_policy(shared: &Shared, pod: &Pod) {
    let Some(text) = annotation(pod, DRIFT_POLICY_ANNOTATION) else {
        return;
    };
    let Some(policy) = super::wire::DriftPolicy::parse(text) else {
        tracing::warn!(
            value = text,
            "unknown {DRIFT_POLICY_ANNOTATION}; keeping the policy"
        );
        return;
    };
    let mut s = lock(&shared.status);
    if s.drift.policy != policy {
        tracing::info!(?policy, "drift policy from the pod's annotation");
        s.drift.policy = policy;
        drop(s);
        shared.drift_kick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("edge-0".to_string());
        p.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        p
    }

    #[test]
    fn the_desired_digest_is_read_from_the_annotations() {
        let b = Bundle::new(BTreeMap::from([("nginx.conf".to_string(), b"x".to_vec())]));
        let d = b.digest().to_string();
        let got = desired_of(&pod(&[
            (DESIRED_ANNOTATION, &d),
            (COMMIT_ANNOTATION, "abc"),
        ]))
        .expect("parses");
        assert_eq!(
            got,
            Some(Desired {
                digest: b.digest(),
                commit: "abc".to_string()
            })
        );
        assert_eq!(desired_of(&pod(&[])).expect("none"), None);
        assert!(desired_of(&pod(&[(DESIRED_ANNOTATION, "sha256:zz")])).is_err());
        assert_eq!(
            rollout_of(&pod(&[(ROLLOUT_ANNOTATION, "edge")])).as_deref(),
            Some("edge")
        );
        assert_eq!(rollout_of(&pod(&[(ROLLOUT_ANNOTATION, "")])), None);
    }

    #[test]
    fn the_part_count_is_read_from_the_first_part_and_bounded() {
        let b = Bundle::new(BTreeMap::from([("nginx.conf".to_string(), b"x".to_vec())]));
        let cms = bundle_store::to_configmaps("edge", "ns", None, &b).expect("store");
        assert_eq!(parts_of(&cms[0]), Some(1));
        let mut bad = cms[0].clone();
        if let Some(d) = bad.data.as_mut() {
            d.insert("manifest".to_string(), format!("parts {}\n", MAX_PARTS + 1));
        }
        assert_eq!(parts_of(&bad), None);
    }
}
