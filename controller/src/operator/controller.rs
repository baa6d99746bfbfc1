//! The controller (`switchback controller`): a kube-rs `runtime::Controller` watching
//! ProxyRollouts, the pods they select and the bundle ConfigMaps they own. Reconcile is short and
//! level-based: it keeps exactly one [`WorkerHandle`] per rollout running the current spec
//! (restarted from its checkpoint when the spec changes), pokes it when a pod changes, and on
//! deletion stops it and cleans up behind a finalizer. The long work (git, validation, canary,
//! analysis) is the worker's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};

use super::bundle_store::{self, ROLLOUT_LABEL};
use super::crd::ProxyRollout;
use super::credentials::CredentialsError;
use super::marks::APPLIED_ANNOTATION;
use super::metrics::{ErrorCategory, ReconcileResult};
pub use super::options::ControllerOptions;
use super::spec::SpecError;
use super::worker::WorkerHandle;
use crate::agent::kube::{
    CONFIG_ROOT_ANNOTATION, DRIFT_POLICY_ANNOTATION, ENTRY_ANNOTATION, ROLLOUT_ANNOTATION,
};
use crate::fleet::kube::{COMMIT_ANNOTATION, DESIRED_ANNOTATION, FIELD_MANAGER};
use crate::fleet::pod_cache::{self, PodCache, matches};
use crate::source::git::redact_url;
use crate::source::webhook::{self, HookSecrets, SecretMap, Trigger, WebhookConfig};

/// The finalizer that lets the controller clean up bundles and pod annotations before a
/// ProxyRollout goes.
pub const FINALIZER: &str = "switchback.dev/cleanup";

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The Kubernetes API failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// The webhook receiver could not start.
    #[error("webhooks: {0}")]
    Webhook(String),
}

/// Why one reconcile failed, by category (the `switchback_errors_total` label and the log field),
/// so an SRE can tell a bad spec from a missing Secret from an API outage.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The spec cannot be used as written.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The git source cannot be opened or its credentials read.
    #[error("source: {0}")]
    Source(String),
    /// The Kubernetes API failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The spec names a source or a Secret this rollout may not use (issue 13); the message
    /// says what would allow it.
    #[error("{message}")]
    NotAllowed {
        /// The Event reason: `SourceNotAllowed` or `SecretNotAllowed`.
        reason: &'static str,
        /// What was refused and what to change.
        message: String,
    },
}

impl ReconcileError {
    /// The Event reason for an error a user can fix in the spec or the Secret it names; `None`
    /// for API failures, which only the logs and the metric report.
    pub fn event_reason(&self) -> Option<&'static str> {
        match self {
            ReconcileError::Spec(_) => Some("InvalidSpec"),
            ReconcileError::Source(_) => Some("SourceSetupFailed"),
            ReconcileError::NotAllowed { reason, .. } => Some(reason),
            ReconcileError::Kube(_) | ReconcileError::Finalizer(_) => None,
        }
    }

    /// The error category.
    pub fn category(&self) -> ErrorCategory {
        match self {
            ReconcileError::Spec(_) | ReconcileError::NotAllowed { .. } => ErrorCategory::Spec,
            ReconcileError::Source(_) => ErrorCategory::Source,
            ReconcileError::Kube(_) | ReconcileError::Finalizer(_) => ErrorCategory::Kube,
        }
    }
}

impl From<CredentialsError> for ReconcileError {
    fn from(e: CredentialsError) -> Self {
        match e {
            CredentialsError::NotAllowed { .. }
            | CredentialsError::NoHost { .. }
            | CredentialsError::OtherHost { .. } => ReconcileError::NotAllowed {
                reason: "SecretNotAllowed",
                message: e.to_string(),
            },
            other => ReconcileError::Source(other.to_string()),
        }
    }
}

pub(super) type Key = (String, String);

/// What every reconcile shares.
pub(super) struct Context {
    pub(super) client: kube::Client,
    pub(super) hooks: Arc<SecretMap>,
    pub(super) pods: PodCache,
    pub(super) options: ControllerOptions,
    pub(super) workers: tokio::sync::Mutex<HashMap<Key, WorkerHandle>>,
    failures: Mutex<HashMap<Key, usize>>,
}

/// Whether this replica drives `object`: always without shards, else while holding its shard.
fn owns(ctx: &Context, object: &ProxyRollout) -> bool {
    ctx.options.shards.as_ref().is_none_or(|s| s.holds(object))
}

pub(super) fn key_of(object: &ProxyRollout) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs until `shutdown`, then stops every worker.
pub async fn run(
    client: kube::Client,
    options: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), OperatorError> {
    let namespace = options.namespace.clone();
    // Electing on one Lease: nothing is written once the tenure lapsed (`leader::tenure`).
    let client = match &options.tenure {
        Some(tenure) => tenure.fence(client),
        None => client,
    };
    let rollouts: Api<ProxyRollout> = api(&client, namespace.as_deref());
    // One watch of pods feeds every rollout's fleet (names, addresses) and pokes the workers whose
    // selector matches a pod that changed, so a new or deleted pod is acted on at once.
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let context = Arc::new(Context {
        client: client.clone(),
        pods: PodCache::new(pod_store),
        hooks: Arc::new(SecretMap::new()),
        options,
        workers: tokio::sync::Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
    });
    let mut controller = Controller::new(rollouts, watcher::Config::default());
    let rollout_store = controller.store();
    // Shards: a lost shard's workers stop at once; any change reconciles every rollout, so the
    // rollouts of a shard just acquired start.
    let mut shard_stopper = None;
    if let Some(shards) = context.options.shards.clone() {
        controller = controller.reconcile_all_on(super::shard::changes(shards.held.clone()));
        shard_stopper = Some(tokio::spawn(super::shard::stop_workers_of_lost_shards(
            shards,
            rollout_store.clone(),
            Arc::clone(&context),
        )));
    }
    let pod_events = context
        .pods
        .counting(reflector::reflector(
            pod_writer,
            // Stored trimmed: only what the fleets and the poker read (see `pod_cache::trim`).
            watcher(
                api::<Pod>(&client, namespace.as_deref()),
                watcher::Config::default(),
            )
            .modify(pod_cache::trim),
        ))
        .default_backoff()
        .touched_objects();
    if let Some(readiness) = context.options.readiness.clone() {
        let (pods, rollouts) = (context.pods.clone(), rollout_store.clone());
        tokio::spawn(async move {
            pods.ready().await;
            let _ = rollouts.wait_until_ready().await;
            readiness.set_ready();
        });
    }
    let webhooks = match context.options.webhook_addr {
        Some(addr) => {
            Some(start_webhooks(addr, Arc::clone(&context), rollout_store.clone()).await?)
        }
        None => None,
    };
    let reports = context.options.agent_reports.clone().map(|reports| {
        tokio::spawn(read_reported_pods(
            reports,
            rollout_store.clone(),
            Arc::clone(&context),
        ))
    });
    let poker = tokio::spawn(poke_on_pod_changes(
        pod_events,
        rollout_store,
        Arc::clone(&context),
    ));
    let reconciling = controller
        .owns(
            api::<ConfigMap>(&client, namespace.as_deref()),
            watcher::Config::default().labels(ROLLOUT_LABEL),
        )
        .run(reconcile, error_policy, Arc::clone(&context))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile stream");
            }
        });
    // Not kube-runtime's graceful shutdown: it waits for its watches, and a watch backing off
    // (the CRD not installed yet, the API down) kept it from ever ending. Reconciles are short
    // and idempotent, so dropping one mid-way only means the next controller does it again.
    // Reconciles do not wait for the pod cache here: a deletion's cleanup needs no pods from
    // it, and only starting a worker waits (`ensure_worker`).
    tokio::select! {
        () = reconciling => {}
        () = shutdown => {}
    }
    tracing::debug!("controller stream ended; stopping workers");
    poker.abort();
    if let Some(task) = reports {
        task.abort();
    }
    if let Some(task) = shard_stopper {
        task.abort();
    }
    if let Some(tasks) = webhooks {
        for task in tasks {
            task.abort();
        }
    }
    let workers: Vec<WorkerHandle> = context
        .workers
        .lock()
        .await
        .drain()
        .map(|(_, w)| w)
        .collect();
    for worker in workers {
        worker.abort();
    }
    Ok(())
}

/// Serves push webhooks on `addr` and makes every worker a push is for fetch at once; a push
/// for a rollout another replica runs is handed on to it (`push_relay`).
async fn start_webhooks(
    addr: std::net::SocketAddr,
    ctx: Arc<Context>,
    rollouts: reflector::Store<ProxyRollout>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, OperatorError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Trigger>(256);
    let secrets: Arc<dyn HookSecrets> = Arc::clone(&ctx.hooks) as Arc<dyn HookSecrets>;
    let router = webhook::router(
        secrets,
        WebhookConfig::default(),
        tx,
        ctx.options.metrics.webhook(),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| OperatorError::Webhook(format!("binding {addr}: {e}")))?;
    tracing::info!(%addr, "serving push webhooks");
    let server = tokio::spawn(async move {
        if let Err(e) = webhook::serve(listener, router, std::future::pending()).await {
            tracing::error!(error = %e, "the webhook server stopped");
        }
    });
    let consumer = tokio::spawn(async move {
        while let Some(trigger) = rx.recv().await {
            let mut elsewhere = Vec::new();
            {
                let workers = ctx.workers.lock().await;
                for object in rollouts.state() {
                    if !super::push_relay::is_for(&trigger, &object) {
                        continue;
                    }
                    match workers.get(&key_of(&object)) {
                        Some(worker) => {
                            // The spec's URL as written may hold a token: logged redacted only.
                            tracing::info!(hook = %trigger.hook, url = %redact_url(&object.spec.source.url), "push: fetching now");
                            worker.fetch_now();
                        }
                        None => elsewhere.push(object),
                    }
                }
            }
            if ctx.options.shards.is_some() {
                super::push_relay::hand_on(&ctx, &elsewhere, &trigger).await;
            }
        }
    });
    Ok(vec![server, consumer])
}

/// Tells the worker of every rollout selecting a pod that changed to read it.
async fn poke_on_pod_changes(
    events: impl futures_util::Stream<Item = Result<Pod, watcher::Error>>,
    rollouts: reflector::Store<ProxyRollout>,
    ctx: Arc<Context>,
) {
    futures_util::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(pod) => pod_changed(&pod, &rollouts, &ctx).await,
            Err(e) => tracing::warn!(error = %e, "pod watch"),
        }
    }
}

/// Tells the worker of every rollout selecting a pod whose agent reported a change to read it.
async fn read_reported_pods(
    reports: super::agent_reports::AgentReports,
    rollouts: reflector::Store<ProxyRollout>,
    ctx: Arc<Context>,
) {
    while let Some(report) = reports.next().await {
        // Only a pod the watch knows: a report names a pod, it does not make one.
        if let Some(pod) = ctx.pods.get(&report.namespace, &report.pod) {
            pod_changed(&pod, &rollouts, &ctx).await;
        }
    }
}

/// Makes the workers of the rollouts selecting `pod` read it at their next poll.
async fn pod_changed(pod: &Pod, rollouts: &reflector::Store<ProxyRollout>, ctx: &Context) {
    let namespace = pod.namespace();
    let keys: Vec<Key> = rollouts
        .state()
        .iter()
        .filter(|r| r.namespace() == namespace && matches(pod, &r.spec.target.selector))
        .map(|r| key_of(r))
        .collect();
    if keys.is_empty() {
        return;
    }
    let name = pod.name_any();
    let workers = ctx.workers.lock().await;
    for key in keys {
        if let Some(worker) = workers.get(&key) {
            worker.pod_changed(&name);
        }
    }
}

#[tracing::instrument(name = "reconcile", skip_all, fields(rollout = %format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())))]
async fn reconcile(object: Arc<ProxyRollout>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<ProxyRollout> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = key_of(&object);
    let started = std::time::Instant::now();
    if !owns(&ctx, &object) {
        // Another replica's shard: stop a worker left from when it was ours, and know its hook
        // so a push for it that reaches this replica is accepted and handed on.
        if let Some(worker) = ctx.workers.lock().await.remove(&key) {
            worker.abort();
        }
        if ctx.options.webhook_addr.is_some()
            && let Err(e) = super::push_relay::register_hook(&ctx, &object).await
        {
            tracing::debug!(error = %e, "the hook of another replica's rollout is not usable here");
        }
        return Ok(Action::await_change());
    }
    tracing::debug!(
        finalizers = ?object.metadata.finalizers,
        resource_version = ?object.metadata.resource_version,
        "reconcile"
    );
    let action = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(object) => ensure_worker(&ctx, object).await,
            Finalizer::Cleanup(object) => cleanup(&ctx, object).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    });
    let result = if action.is_ok() {
        ReconcileResult::Ok
    } else {
        ReconcileResult::Error
    };
    let took = started.elapsed();
    tracing::debug!(
        took_ms = took.as_millis(),
        ok = action.is_ok(),
        "reconciled"
    );
    ctx.options.metrics.observe_reconcile(took, result);
    let action = action?;
    if let Ok(mut failures) = ctx.failures.lock() {
        failures.remove(&key);
    }
    Ok(action)
}

/// Exponential backoff per object (1 s doubling to 5 min, jittered), reset by a success.
fn error_policy(object: Arc<ProxyRollout>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = key_of(&object);
    ctx.options.metrics.count_error(error.category());
    let attempt = match ctx.failures.lock() {
        Ok(mut failures) => {
            let n = failures.entry(key).or_default();
            *n += 1;
            *n
        }
        Err(_) => 1,
    };
    let delay = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1))
        .unwrap_or(Duration::from_secs(300));
    tracing::warn!(
        rollout = %format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any()),
        category = error.category().label(),
        attempt,
        retry_in = ?delay,
        error = %error,
        "reconcile failed"
    );
    // The first failure of a run says why on the object itself, where `kubectl describe`
    // shows it; the retries stay in the logs and the metric.
    if let (1, Some(reason)) = (attempt, error.event_reason()) {
        let recorder = kube::runtime::events::Recorder::new(
            ctx.client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: ctx.options.instance.clone(),
            },
        );
        let reference = super::events::object_reference(&object);
        let message = error.to_string();
        tokio::spawn(async move {
            super::events::publish(
                &recorder,
                &reference,
                kube::runtime::events::EventType::Warning,
                reason,
                &message,
            )
            .await;
        });
    }
    Action::requeue(delay)
}

/// Keeps one worker running the object's current generation.
async fn ensure_worker(ctx: &Context, object: Arc<ProxyRollout>) -> Result<Action, ReconcileError> {
    let key = key_of(&object);
    let generation = object.metadata.generation.unwrap_or(0);
    // Before the lock: the pod watch that fills the cache takes the lock to poke workers.
    ctx.pods.ready().await;
    {
        let workers = ctx.workers.lock().await;
        if let Some(worker) = workers.get(&key)
            && worker.generation == generation
            && worker.is_running()
        {
            // Another replica received a push for this rollout and asked for a fetch.
            let asked = super::push_relay::fetch_requested(&object);
            if asked.is_some() && asked != super::push_relay::fetch_requested(&worker.object()) {
                tracing::info!("a push reached another replica: fetching now");
                worker.fetch_now();
            }
            worker.update(Arc::clone(&object));
            worker.poke();
            return Ok(Action::requeue(ctx.options.resync));
        }
    }
    // Not under the lock: every other rollout's reconcile and the pod watch need it, and setting
    // up (a Secret read, opening the git cache) or stopping a worker takes a while. kube-runtime
    // never runs two reconciles of one object at once, so nothing else touches this key meanwhile.
    // Build everything before stopping the old worker: a spec that fails here leaves the old
    // worker (and its safety: analysis, rollback) running.
    let mut setup = super::setup::setup(ctx, &object).await?;
    let old = ctx.workers.lock().await.remove(&key);
    if let Some(old) = old {
        setup.resume = old.stop().await;
    }
    let mut workers = ctx.workers.lock().await;
    // Under the lock the shard stopper takes too: a shard lost meanwhile starts nothing.
    if !owns(ctx, &object) {
        return Ok(Action::await_change());
    }
    tracing::info!(generation, "starting the rollout's worker");
    workers.insert(key, WorkerHandle::start(setup));
    Ok(Action::requeue(ctx.options.resync))
}

/// The object is going: stop its worker, delete its bundles, take the annotations off its pods.
async fn cleanup(ctx: &Context, object: Arc<ProxyRollout>) -> Result<Action, ReconcileError> {
    let key = key_of(&object);
    if let Some(worker) = ctx.workers.lock().await.remove(&key) {
        let _ = worker.stop().await;
    }
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    ctx.options.metrics.remove_rollout(&namespace, &name);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = bundle_store::rollout_selector(&name);
    for cm in maps
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        match maps.delete(&cm.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = object
        .spec
        .target
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let unmark = serde_json::json!({"metadata": {"annotations": {
        DESIRED_ANNOTATION: null, COMMIT_ANNOTATION: null, APPLIED_ANNOTATION: null,
        ROLLOUT_ANNOTATION: null, ENTRY_ANNOTATION: null, DRIFT_POLICY_ANNOTATION: null,
        CONFIG_ROOT_ANNOTATION: null,
    }}});
    for pod in pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        match pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&unmark),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!("cleaned up bundles and pod annotations");
    Ok(Action::await_change())
}
