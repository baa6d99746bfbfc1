//! One ProxyRollout's long-lived task. The kube-rs reconciler is short and level-based: it makes
//! sure each rollout has exactly one worker running its current spec. The worker owns the engine
//! and its runner: it polls git at the jittered interval, renders, lets the runner validate, tell
//! pods and analyse, and writes what happened back (status by server-side apply, Events, the
//! applied digest on each pod). It stops when asked and hands back its checkpoint, so a spec change
//! continues the rollout where it was instead of starting over.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use tokio::sync::{Notify, watch};

use super::crd::{ProxyRollout, ProxyRolloutStatus};
use super::drift::{DriftMarks, status_lines};
use super::events::{object_reference, publish, report};
use super::fetch::{ReadTask, RenderMemo, spawn_read};
use super::incident::{self, report_inputs, write_reports};
use super::marks::PodMarks;
use super::metrics::Metrics;
use super::request;
use super::resume::from_status;
use super::status::to_status;
use super::writeback::{WriteBack, WriteBackSpec};
use crate::fleet::kube::{FIELD_MANAGER, KubeFleet};
use crate::render::Bundle;
use crate::rollout::Rollout;
use crate::runner::{Runner, RunnerConfig};
use crate::source::git::GitSource;
use crate::source::verify::TrustedKeys;

/// How long the worker lets the runner go between writes of status and pod marks.
const TURN: Duration = Duration::from_millis(500);
/// The same while the runner is quiet (nothing in flight, no bake, no validation): a poke, a
/// push or the next fetch still ends the turn at once.
const QUIET_TURN: Duration = Duration::from_secs(2);

/// What a stopped worker hands to its successor: the machine and the bundles it knows.
pub struct Checkpoint {
    /// The machine as it stood.
    pub rollout: Rollout,
    /// Bundles by digest (stable, target, quarantined).
    pub bundles: Vec<Bundle>,
    /// What the previous worker wrote and announced about drift, so a spec change (such as a
    /// new `spec.drift.policy`) does not announce an open drift episode a second time.
    pub drift: Option<DriftMarks>,
}

/// Everything a worker needs, built and checked by the reconciler (so a bad spec or a missing
/// Secret is a reconcile error with backoff, not a crashed task).
pub struct WorkerSetup {
    /// The object as last seen.
    pub rollout: Arc<ProxyRollout>,
    /// The API client (fenced by `tenure` when electing).
    pub client: kube::Client,
    /// When electing: until when this replica leads, checked before a git write-back.
    pub tenure: Option<super::leader::Tenure>,
    /// Runner settings from the spec.
    pub config: RunnerConfig,
    /// The git source, credentials applied.
    pub source: GitSource,
    /// How often to fetch.
    pub interval: Duration,
    /// The pods.
    pub fleet: KubeFleet,
    /// Who writes Events.
    pub reporter: Reporter,
    /// Where git fetches, rollbacks, phases and errors are counted.
    pub metrics: Metrics,
    /// When the spec asks for signed commits: the keys a head must be signed by.
    pub keys: Option<Arc<TrustedKeys>>,
    /// Where to continue from: the previous worker's checkpoint, if any.
    pub resume: Option<Checkpoint>,
    /// The checked `spec.rollback.writeBack`, when git write-back is on.
    pub write_back: Option<WriteBackSpec>,
}

/// A running worker, as the reconciler holds it.
pub struct WorkerHandle {
    /// The spec generation it runs.
    pub generation: i64,
    poke: Arc<Notify>,
    changed: ChangedPods,
    fetch: Arc<Notify>,
    latest: watch::Sender<Arc<ProxyRollout>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<Checkpoint>>,
}

impl WorkerHandle {
    /// Starts the worker.
    pub fn start(setup: WorkerSetup) -> Self {
        let generation = setup.rollout.metadata.generation.unwrap_or(0);
        let poke = Arc::new(Notify::new());
        let fetch = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let (latest, seen) = watch::channel(Arc::clone(&setup.rollout));
        let changed = ChangedPods::default();
        let signals = Signals {
            poke: Arc::clone(&poke),
            changed: changed.clone(),
            fetch: Arc::clone(&fetch),
        };
        let task = tokio::spawn(run(setup, signals, seen, stopped));
        WorkerHandle {
            generation,
            poke,
            changed,
            fetch,
            latest,
            stop,
            task,
        }
    }

    /// The object changed without a new generation (annotations: a `kubectl switchback`
    /// request; status): the worker reads requests from the newest copy.
    pub fn update(&self, object: Arc<ProxyRollout>) {
        self.latest.send_replace(object);
    }

    /// The object it runs, as last updated.
    pub fn object(&self) -> Arc<ProxyRollout> {
        Arc::clone(&self.latest.borrow())
    }

    /// The object changed: look at the pods that are due now rather than at the next poll.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// One of its pods changed (its Pod object, or its agent said so): read that pod now.
    pub fn pod_changed(&self, pod: &str) {
        if let Ok(mut pods) = self.changed.0.lock() {
            pods.insert(pod.to_string());
        }
        self.poke.notify_one();
    }

    /// A push arrived for its source: fetch now instead of at the next interval.
    pub fn fetch_now(&self) {
        self.fetch.notify_one();
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the worker and returns where it was.
    pub async fn stop(self) -> Option<Checkpoint> {
        let _ = self.stop.send(true);
        self.task.await.ok().flatten()
    }

    /// Stops the worker at once without waiting (shutdown, lost leadership).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// What wakes a worker early.
struct Signals {
    poke: Arc<Notify>,
    changed: ChangedPods,
    fetch: Arc<Notify>,
}

/// Pods that changed since the worker last looked, to be read at its next poll.
#[derive(Clone, Default)]
struct ChangedPods(Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl ChangedPods {
    fn take(&self) -> std::collections::BTreeSet<String> {
        self.0
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

#[tracing::instrument(name = "worker", skip_all, fields(rollout = %key(&setup.rollout)))]
async fn run(
    setup: WorkerSetup,
    signals: Signals,
    latest: watch::Receiver<Arc<ProxyRollout>>,
    mut stop: watch::Receiver<bool>,
) -> Option<Checkpoint> {
    let WorkerSetup {
        rollout: object,
        client,
        config,
        source,
        interval,
        fleet,
        reporter,
        metrics,
        keys,
        resume,
        write_back,
        tenure,
    } = setup;
    let Signals {
        poke,
        changed,
        fetch,
    } = signals;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let generation = object.metadata.generation.unwrap_or(0);
    let api: Api<ProxyRollout> = Api::namespaced(client.clone(), &namespace);
    let fleet = Arc::new(fleet);
    let recorder = Recorder::new(client.clone(), reporter);
    let reference = object_reference(&object);
    let mut marks = PodMarks::new(client.clone(), &namespace);
    let mut write_back = WriteBack::new(write_back, source.clone(), &object).fenced(tenure);

    let mut resume = match resume {
        Some(checkpoint) => Some(checkpoint),
        None => from_status(&object, &client, &source).await,
    };
    let mut drift_marks = resume
        .as_mut()
        .and_then(|c| c.drift.take())
        .unwrap_or_else(|| DriftMarks::new(client.clone(), &namespace));
    let started = match resume {
        Some(Checkpoint {
            rollout, bundles, ..
        }) => {
            tracing::info!(phase = ?rollout.state().phase(), "resuming from the checkpoint");
            Runner::resume(config.clone(), Arc::clone(&fleet), rollout, bundles)
        }
        None => Runner::new(config.clone(), Arc::clone(&fleet), None),
    };
    let started = match started {
        Ok(started) => Ok(started),
        Err(e) => {
            // The reconciler checked the settings, so this is a checkpoint they reject.
            tracing::error!(error = %e, "the checkpoint does not fit the spec; starting afresh");
            Runner::new(config, Arc::clone(&fleet), None)
        }
    };
    let (mut runner, mut notes) = match started {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runner");
            return None;
        }
    };

    let mut written: Option<ProxyRolloutStatus> = object.status.clone();
    let mut written_at = std::time::Instant::now();
    let mut checkpoint = CheckpointMemo::default();
    let mut next_fetch = tokio::time::Instant::now();
    // Whether the runner was quiet when the last turn's writes were made: only a turn that
    // follows a quiet one may be long, so what an active turn changed is written a short turn
    // later, not a quiet one.
    let mut was_quiet = false;
    // (reason, message) of the last source failure, until a read succeeds.
    let mut last_source_error: Option<(&'static str, String)> = None;
    // A head that does not render (deterministically) is not rendered again until it changes.
    let mut render_memo = RenderMemo::default();
    // The fetch and render in flight: it runs beside the runner, so a slow or hanging remote
    // delays new commits, never the decisions on the one being rolled out (issue 16).
    let mut reading: Option<ReadTask> = None;
    let mut handled = object
        .status
        .as_ref()
        .and_then(|s| s.handled_request.clone());
    loop {
        let current = Arc::clone(&latest.borrow());
        if let Some(id) = act_on_request(&current, handled.as_deref(), &mut runner) {
            if let Err(message) = &id.1 {
                publish(
                    &recorder,
                    &reference,
                    EventType::Warning,
                    "RequestRejected",
                    message,
                )
                .await;
            }
            handled = Some(id.0);
        }
        if reading.is_none() && !current.spec.suspend && tokio::time::Instant::now() >= next_fetch {
            next_fetch = tokio::time::Instant::now() + jittered(interval);
            reading = Some(spawn_read(
                source.clone(),
                Arc::clone(&object),
                keys.clone(),
                std::mem::take(&mut render_memo),
            ));
        }
        let mut finished = None;
        tokio::select! {
            () = runner.run_for(turn_length(&runner, was_quiet, next_fetch)) => {}
            () = poke.notified() => {
                runner.poll_soon();
                for pod in changed.take() {
                    runner.read_soon(&pod);
                }
            }
            () = fetch.notified() => next_fetch = tokio::time::Instant::now(),
            joined = async {
                match reading.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if reading.is_some() => {
                reading = None;
                finished = Some(joined);
            }
            _ = stop.changed() => {
                drop(reading.take());
                write_back.abort();
                let (rollout, bundles) = runner.checkpoint();
                return Some(Checkpoint { rollout, bundles, drift: Some(drift_marks) });
            }
        }
        match finished {
            Some(Ok((read, memo, took))) => {
                render_memo = memo;
                metrics.observe_git_fetch(took);
                match read {
                    Ok(read) => {
                        last_source_error = None;
                        if let Some((release, bundle)) = read {
                            runner.submit(release, bundle);
                        }
                    }
                    Err((category, reason, message)) => {
                        metrics.count_error(category);
                        tracing::warn!(error = %message, reason, "reading the source failed");
                        if last_source_error.as_ref().map(|(_, m)| m) != Some(&message) {
                            publish(&recorder, &reference, EventType::Warning, reason, &message)
                                .await;
                            last_source_error = Some((reason, message));
                        }
                    }
                }
            }
            // The read panicked: its memo is lost (the next read renders again).
            Some(Err(e)) => tracing::error!(error = %e, "reading the source failed unexpectedly"),
            None => {}
        }
        let incidents = report(&mut notes, &recorder, &reference, &metrics).await;
        let inputs = report_inputs(incidents, &runner, &current);
        write_reports(inputs, &current, &client).await;
        // After the engine decided and the pods were told: git is written back off this loop.
        write_back.ensure(runner.rollout().ledger().last_incident(), written.as_ref());
        write_back.collect(&recorder, &reference).await;
        metrics.set_phase(&namespace, &name, runner.rollout().state().phase());
        let mut status = to_status(
            &runner.rollout().status(),
            generation,
            written.as_ref(),
            jiff::Timestamp::now(),
        );
        status.handled_request.clone_from(&handled);
        super::status::describe_verdict(&mut status, runner.rollout().latest_verdict());
        if let (Some(brief), Some(incident)) = (
            status.last_incident.as_mut(),
            runner.rollout().ledger().last_incident(),
        ) {
            brief.decided_at = incident
                .timeline
                .decided_at
                .map_or_else(|| brief.decided_at.clone(), |t| t.to_string());
            brief.restored_at = incident.timeline.restored_at.map(|t| t.to_string());
            brief.report = Some(incident::report_name(&name, incident.id));
        }
        write_back.annotate(&mut status, written.as_ref());
        if let Some((reason, message)) = &last_source_error {
            source_stalled(&mut status, written.as_ref(), reason, message);
        }
        status.drift = status_lines(runner.drift());
        status.engine = checkpoint.of(runner.rollout());
        if super::status::needs_write(&status, written.as_ref(), written_at.elapsed()) {
            match write_status(&api, &name, &status).await {
                Ok(()) => {
                    written = Some(status);
                    written_at = std::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "writing status failed"),
            }
        }
        marks.sync(runner.rollout().fleet()).await;
        was_quiet = runner.is_quiet();
        let policy = current.spec.drift.policy;
        drift_marks
            .sync(runner.drift(), policy, &recorder, &reference)
            .await;
    }
}

/// A source that keeps failing (git unreachable, credentials refused, a commit that does not
/// render; reason `SourceFailed`) or whose head is not signed by a trusted key (reason
/// `UnverifiedCommit`) is `Stalled=True`, so `kubectl wait` and alerts see it; the
/// engine's own view (which knows nothing of the source) would say all is well.
fn source_stalled(
    status: &mut ProxyRolloutStatus,
    previous: Option<&ProxyRolloutStatus>,
    reason: &str,
    message: &str,
) {
    let Some(stalled) = status.conditions.iter_mut().find(|c| c.type_ == "Stalled") else {
        return;
    };
    if stalled.status != "True" {
        stalled.last_transition_time = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Stalled"))
            .filter(|c| c.status == "True")
            .map_or_else(
                || jiff::Timestamp::now().to_string(),
                |c| c.last_transition_time.clone(),
            );
    }
    stalled.status = "True".to_string();
    stalled.reason = reason.to_string();
    stalled.message = message.chars().take(1000).collect();
}

/// Hands a `kubectl switchback` request the controller has not acted on to the engine. Returns
/// the request's id (to write as `status.handledRequest`) and, for a request that cannot be read,
/// why (for a Warning Event). A request without a readable id cannot be acknowledged; it is
/// logged and left for a person to overwrite.
fn act_on_request<F: crate::fleet::Fleet>(
    object: &ProxyRollout,
    handled: Option<&str>,
    runner: &mut Runner<F>,
) -> Option<(String, Result<(), String>)> {
    let text = object
        .metadata
        .annotations
        .as_ref()?
        .get(request::ANNOTATION)?;
    match request::Request::parse(text) {
        Ok(req) if Some(req.id.as_str()) == handled => None,
        Ok(req) => {
            let outcome = match req.verb() {
                Ok(verb) => {
                    tracing::info!(id = %req.id, by = %req.by, ?verb, "acting on a request");
                    runner.request(verb, &req.by, &req.id);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            Some((req.id, outcome))
        }
        Err(e) => match e.id() {
            Some(id) if Some(id) == handled => None,
            Some(id) => Some((id.to_string(), Err(e.to_string()))),
            None => {
                tracing::warn!(error = %e, "a request without an id cannot be acknowledged");
                None
            }
        },
    }
}

/// Status by server-side apply, field manager `switchback`, forced: the controller is the only
/// writer of status.
async fn write_status(
    api: &Api<ProxyRollout>,
    name: &str,
    status: &ProxyRolloutStatus,
) -> Result<(), kube::Error> {
    let _permit = crate::fleet::kube::api_write_permit().await;
    let patch = serde_json::json!({
        "apiVersion": "switchback.dev/v1alpha1",
        "kind": "ProxyRollout",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// A turn: [`TURN`], or [`QUIET_TURN`] while the runner is quiet and was at the last writes,
/// ending by the next fetch.
fn turn_length<F: crate::fleet::Fleet>(
    runner: &Runner<F>,
    was_quiet: bool,
    next_fetch: tokio::time::Instant,
) -> Duration {
    if !(was_quiet && runner.is_quiet()) {
        return TURN;
    }
    let until_fetch = next_fetch.saturating_duration_since(tokio::time::Instant::now());
    QUIET_TURN.min(until_fetch).max(TURN)
}

/// The interval with up to 10% taken off at random, so rollouts created together do not fetch
/// together forever.
fn jittered(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let fraction = f64::from(nanos % 1000) / 10_000.0;
    interval.mul_f64(1.0 - fraction)
}

fn key(object: &ProxyRollout) -> String {
    format!(
        "{}/{}",
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    )
}

/// The engine's checkpoint as JSON, serialised again only when the engine changed: a quiet
/// rollout's turns (every 2 s) left it as it was, and each serialised it anyway.
#[derive(Default)]
struct CheckpointMemo {
    last: Option<(Rollout, Arc<serde_json::Value>)>,
}

impl CheckpointMemo {
    fn of(&mut self, rollout: &Rollout) -> Option<Arc<serde_json::Value>> {
        if let Some((seen, json)) = &self.last
            && seen == rollout
        {
            return Some(Arc::clone(json));
        }
        let json = Arc::new(serde_json::to_value(rollout).ok()?);
        self.last = Some((rollout.clone(), Arc::clone(&json)));
        Some(json)
    }
}
