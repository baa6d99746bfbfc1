//! The runner: the edge that drives one [`Rollout`] machine. It feeds the machine events (new
//! revisions, validation results, pods applying, analysis verdicts, clock ticks) and carries out
//! the commands it answers with (validate, tell pods, open analysis windows, record incidents),
//! against any [`Fleet`]. The machine decides; the runner only does I/O and keeps time.
//!
//! One loop, one task: events are handled one at a time in arrival order, so the machine never
//! sees two events at once; slow work (validation, applies) runs in spawned tasks that report
//! back as events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::DriftStatus;
use crate::analysis::{Analysis, AnalysisConfig, Plan, Reference, TrafficRecord, Verdict};
use crate::fleet::{ApplyResult, Fleet};
use crate::render::{Bundle, Digest};
use crate::rollout::{
    Command, ConfigError, Event, Incident, Release, Rollout, RolloutConfig, State, Status,
    ValidationOutcome, Verb,
};
use crate::validate::{self, sandbox::Nginx};
use lanes::PodLanes;

mod lanes;
mod poll;
mod reads;
mod tally;

pub use reads::BASELINE_SAMPLE;

/// How often a quiet runner ([`Runner::is_quiet`]) polls: for the heartbeats due and the clock.
pub const QUIET_POLL: Duration = Duration::from_secs(1);

/// How the runner runs a rollout.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Steps, bakes and limits of the rollout.
    pub rollout: RolloutConfig,
    /// How canaries are judged.
    pub analysis: AnalysisConfig,
    /// How often the pods a decision waits on are read and the analysis fed (`reads`): the
    /// canary, a baseline sample, pods changing config. Detection can be no faster than this.
    pub poll_every: Duration,
    /// How often every other pod is read: a pod nobody is deciding about only needs to be seen
    /// now and then, and its Pod object and its agent say when it changed meanwhile.
    pub heartbeat: Duration,
    /// The bundle's entry file.
    pub entry: String,
    /// The nginx for the `nginx -t` gate (the agents run their own before every reload).
    pub nginx: Option<Nginx>,
    /// The config root the bundle stands for and the image's files (when none are named, the
    /// `nginx`'s own packaged files).
    pub layout: validate::ProxyLayout,
    /// Count active-probe results as canary and baseline evidence alongside user traffic, so a
    /// quiet site still gives the analysis something to judge.
    pub count_probes: bool,
}

impl RunnerConfig {
    /// Whether a runner can start with these settings (the reconciler checks before it stops
    /// a working runner to start one with new settings).
    pub fn check(&self) -> Result<(), RunnerError> {
        self.rollout.validate()?;
        self.analysis.check()?;
        Ok(())
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            rollout: RolloutConfig::default(),
            analysis: AnalysisConfig::default(),
            poll_every: Duration::from_millis(250),
            heartbeat: Duration::from_secs(10),
            entry: validate::DEFAULT_ENTRY.to_string(),
            nginx: None,
            layout: validate::ProxyLayout::default(),
            count_probes: true,
        }
    }
}

/// Why the runner could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The rollout settings are invalid.
    #[error("rollout settings: {0}")]
    Rollout(#[from] ConfigError),
    /// The analysis settings are invalid.
    #[error("analysis settings: {0}")]
    Analysis(#[from] crate::analysis::ConfigError),
    /// The condition waited for did not come in time; carries the machine's state and fleet as
    /// they were, so a timed-out wait says where it stuck.
    #[error("gave up after {0:?} waiting for the rollout to {1}; it stood at {2}")]
    Deadline(Duration, String, String),
}

/// What the runner reports as it goes: every command the machine gave, every poll of the pods and
/// every verdict, with the time. Progress displays, `--events json` and tests read these.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Note {
    /// The machine asked for this.
    Command {
        /// When.
        at: Timestamp,
        /// What.
        command: Command,
    },
    /// What each pod serves, after a poll.
    Pods {
        /// When.
        at: Timestamp,
        /// Pod name and the digest it serves.
        pods: Vec<(String, Option<Digest>)>,
    },
    /// An analysis window's verdict changed.
    Verdict {
        /// When.
        at: Timestamp,
        /// The canary digest judged.
        digest: Digest,
        /// The verdict.
        verdict: Verdict,
    },
}

/// One open analysis window.
struct WindowRun {
    canary: Digest,
    baseline: Digest,
    analysis: Box<dyn Analysis + Send>,
    last: Option<Verdict>,
    /// The pods serving the canary, sorted; read every round.
    canary_pods: Vec<String>,
    /// The baseline sample ([`reads::baseline_sample`]), sorted; read every round.
    baseline_pods: Vec<String>,
    canary_tally: tally::Tally,
    baseline_tally: tally::Tally,
}

/// Drives one rollout against a fleet.
pub struct Runner<F: Fleet> {
    rollout: Rollout,
    fleet: Arc<F>,
    config: RunnerConfig,
    bundles: HashMap<Digest, Bundle>,
    windows: BTreeMap<u64, WindowRun>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    notes: mpsc::UnboundedSender<Note>,
    incidents: BTreeMap<u64, Incident>,
    status: Option<Status>,
    next_poll: Instant,
    lanes: PodLanes,
    reads: reads::ReadSchedule,
    drift: BTreeMap<String, DriftStatus>,
    /// The traffic of the stable and target revisions, recorded as pods serve them: the
    /// baseline of a step that leaves no pod on the stable revision.
    records: BTreeMap<Digest, TrafficRecord>,
}

impl<F: Fleet> Runner<F> {
    /// A runner whose pods already serve `stable` (or nothing). Returns the stream of notes.
    pub fn new(
        config: RunnerConfig,
        fleet: Arc<F>,
        stable: Option<(Release, Bundle)>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Note>), RunnerError> {
        config.analysis.check()?;
        let mut bundles = HashMap::new();
        let stable = stable.map(|(release, bundle)| {
            bundles.insert(release.digest, bundle);
            release
        });
        let rollout = Rollout::new(config.rollout.clone(), stable)?;
        let reads = reads::ReadSchedule::new(config.heartbeat, Instant::now());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (notes, notes_rx) = mpsc::unbounded_channel();
        Ok((
            Runner {
                rollout,
                fleet,
                config,
                bundles,
                windows: BTreeMap::new(),
                events_tx,
                events_rx,
                notes,
                incidents: BTreeMap::new(),
                status: None,
                next_poll: Instant::now(),
                lanes: PodLanes::default(),
                reads,
                drift: BTreeMap::new(),
                records: BTreeMap::new(),
            },
            notes_rx,
        ))
    }

    /// A runner that continues `rollout` where a previous controller left it (the checkpoint in
    /// status). `bundles` are every bundle the checkpoint names that could be found. Whatever
    /// was in progress is picked up again: a validation is run again, an open bake gets a fresh
    /// analysis window (evidence starts over; the bake's clock does not), and pods are read at once.
    pub fn resume(
        config: RunnerConfig,
        fleet: Arc<F>,
        mut rollout: Rollout,
        bundles: Vec<Bundle>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Note>), RunnerError> {
        rollout.reconfigure(config.rollout.clone())?;
        let (mut runner, notes) = Runner::new(config, fleet, None)?;
        runner.rollout = rollout;
        for bundle in bundles {
            runner.bundles.insert(bundle.digest(), bundle);
        }
        let active = runner.rollout.state().active().clone();
        match active {
            State::Validating { target, .. } => {
                runner.execute(Command::Validate {
                    digest: target.digest,
                    commit: target.revision.commit.clone(),
                });
            }
            State::Canary(c) => {
                if let Some(bake) = &c.bake {
                    runner.execute(Command::StartAnalysis {
                        window: bake.window,
                        canary: c.target.id(),
                        baseline: c.stable.id(),
                        bake: runner.config.rollout.bake,
                        // Checkpoints from before this was kept had baseline pods.
                        baseline_pods: bake.baseline_pods.unwrap_or(1),
                        reference: bake.reference.clone(),
                    });
                }
            }
            _ => {}
        }
        Ok((runner, notes))
    }

    /// The machine and every bundle it may still need, for a successor runner to resume from.
    pub fn checkpoint(&self) -> (Rollout, Vec<Bundle>) {
        (
            self.rollout.clone(),
            self.bundles.values().cloned().collect(),
        )
    }

    /// Polls at the next step instead of waiting for the poll interval (something changed).
    pub fn poll_soon(&mut self) {
        self.next_poll = Instant::now();
    }

    /// Reads `pod` at the next step whatever its schedule (its Pod object or its agent said it
    /// changed).
    pub fn read_soon(&mut self, pod: &str) {
        self.reads.read_soon(pod);
        self.next_poll = Instant::now();
    }

    /// The machine, for its state, ledger and status.
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// Incidents recorded so far, by id.
    pub fn incidents(&self) -> &BTreeMap<u64, Incident> {
        &self.incidents
    }

    /// What each pod's agent last said about drift, by pod: for people (pod conditions, Events,
    /// status) only. The machine never sees it, so a drifted pod is never a failed canary and
    /// never causes a rollback.
    pub fn drift(&self) -> &BTreeMap<String, DriftStatus> {
        &self.drift
    }

    /// The last status the machine asked to write.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// A bundle the runner knows by digest (stable, targets, quarantined).
    pub fn bundle(&self, digest: &Digest) -> Option<&Bundle> {
        self.bundles.get(digest)
    }

    /// A new head of the source: its commit and the rendered bundle.
    pub fn submit(&mut self, release: Release, bundle: Bundle) {
        self.bundles.insert(release.digest, bundle);
        let event = Event::RevisionSeen {
            digest: release.digest,
            revision: release.revision,
        };
        self.handle(event);
    }

    /// A person's verb with the id of the request that carried it: the machine acts on each id
    /// once, however often it is delivered.
    pub fn request(&mut self, verb: Verb, by: &str, id: &str) {
        self.handle(Event::Manual {
            verb,
            by: by.to_string(),
            request: id.to_string(),
        });
    }

    /// A person's verb (pause, promote, abort, rollback-to, retry).
    pub fn manual(&mut self, verb: Verb, by: &str) {
        let request = format!("{verb:?}");
        self.handle(Event::Manual {
            verb,
            by: by.to_string(),
            request,
        });
    }

    /// Runs until `done` holds for the machine, or fails after `limit`.
    pub async fn run_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Rollout) -> bool,
    ) -> Result<(), RunnerError> {
        let deadline = Instant::now() + limit;
        while !done(&self.rollout) {
            if Instant::now() >= deadline {
                let stood = serde_json::json!({
                    "state": self.rollout.state(),
                    "fleet": self.rollout.fleet(),
                    "quarantined": self.rollout.ledger().quarantined(),
                });
                return Err(RunnerError::Deadline(
                    limit,
                    what.to_string(),
                    stood.to_string(),
                ));
            }
            self.step(deadline).await;
        }
        Ok(())
    }

    /// Runs for `period`, handling events and polling pods as they come (`switchback local` calls it
    /// between polls of the git source).
    pub async fn run_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while Instant::now() < deadline {
            self.step(deadline).await;
        }
    }

    /// Handles the next event, or polls the pods when it is time; returns at `deadline` at the
    /// latest.
    async fn step(&mut self, deadline: Instant) {
        let wake = self.next_poll.min(deadline);
        tokio::select! {
            Some(event) = self.events_rx.recv() => self.handle(event),
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= self.next_poll {
                    self.poll().await;
                    // Nothing to watch closely: the heartbeats are spread over their period and
                    // every change (a poke, a finished apply, a new revision) polls at once, so
                    // an idle rollout need not wake four times a second.
                    let every = if self.is_quiet() {
                        self.config.poll_every.max(QUIET_POLL.min(self.config.heartbeat))
                    } else {
                        self.config.poll_every
                    };
                    self.next_poll = Instant::now() + every;
                }
            }
        }
    }

    /// No pod is changing config or failed to, no analysis window is open and no validation
    /// runs: nothing waits on a fast look at the pods.
    pub fn is_quiet(&self) -> bool {
        self.windows.is_empty()
            && matches!(self.rollout.state(), State::Idle { .. })
            && self
                .rollout
                .fleet()
                .iter()
                .all(|(_, p)| !p.in_flight() && p.error.is_none())
    }

    fn handle(&mut self, event: Event) {
        let finished_tell = matches!(
            event,
            Event::PodApplied { .. } | Event::PodApplyFailed { .. }
        );
        if let Event::PodApplied { pod, .. } | Event::PodApplyFailed { pod, .. } = &event {
            // What it serves now is read at the next poll, for the machine, the notes and the
            // drift it reports.
            self.reads.read_soon(pod);
        }
        let now = Timestamp::now();
        let commands = self.rollout.handle(event, now);
        if finished_tell || !commands.is_empty() {
            // Something moved: back to the poll rate if a quiet wait was scheduled.
            self.next_poll = self.next_poll.min(Instant::now() + self.config.poll_every);
        }
        for command in commands {
            let _ = self.notes.send(Note::Command {
                at: now,
                command: command.clone(),
            });
            self.execute(command);
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Validate { digest, commit } => self.validate(digest, commit),
            Command::Tell {
                digest,
                commit,
                pods,
            } => self.tell(digest, commit, pods),
            Command::StartAnalysis {
                window,
                canary,
                baseline,
                bake,
                baseline_pods,
                reference,
            } => self.start_analysis(
                window,
                canary.digest,
                baseline.digest,
                bake,
                baseline_pods,
                reference,
            ),
            Command::StopAnalysis { window } => {
                self.windows.remove(&window);
            }
            Command::RecordIncident(incident) => {
                self.incidents.insert(incident.id, *incident);
            }
            Command::Emit(notice) => {
                tracing::info!(reason = ?notice.reason, "{}", notice.message);
            }
            Command::UpdateStatus(status) => self.status = Some(*status),
        }
    }

    /// Opens an analysis window. A step with no baseline pods compares with the stable
    /// revision's record: the one the machine kept (a resumed window), else the one recorded
    /// here, which the machine is then given to keep.
    fn start_analysis(
        &mut self,
        window: u64,
        canary: Digest,
        baseline: Digest,
        bake: jiff::SignedDuration,
        baseline_pods: usize,
        reference: Option<Box<Reference>>,
    ) {
        let reference = match reference {
            Some(r) => Some(*r),
            None if baseline_pods == 0 => {
                let taken = self
                    .records
                    .get(&baseline)
                    .and_then(|r| r.reference(Timestamp::now()));
                if let Some(r) = &taken {
                    let _ = self.events_tx.send(Event::ReferenceTaken {
                        window,
                        reference: Box::new(r.clone()),
                    });
                }
                taken
            }
            None => None,
        };
        match self.config.analysis.start(Plan { bake, reference }) {
            Ok(analysis) => {
                self.windows.insert(
                    window,
                    WindowRun {
                        canary,
                        baseline,
                        analysis,
                        last: None,
                        canary_pods: Vec::new(),
                        baseline_pods: Vec::new(),
                        canary_tally: tally::Tally::default(),
                        baseline_tally: tally::Tally::default(),
                    },
                );
            }
            Err(e) => tracing::error!(error = %e, "analysis settings were checked at start"),
        }
    }

    fn validate(&self, digest: Digest, commit: String) {
        let tx = self.events_tx.clone();
        let Some(bundle) = self.bundles.get(&digest).cloned() else {
            let _ = tx.send(Event::ValidationFinished {
                digest,
                outcome: ValidationOutcome::Failed {
                    summary: format!("bundle {digest} of {commit} is not known to this runner"),
                },
            });
            return;
        };
        let entry = self.config.entry.clone();
        let nginx = self.config.nginx.clone();
        let layout = self.config.layout.clone().or_packaged(nginx.as_ref());
        tokio::spawn(async move {
            let report = tokio::task::spawn_blocking(move || {
                validate::shared::validate_shared(&bundle, &entry, nginx.as_ref(), &layout)
            })
            .await;
            let outcome = match report {
                Ok(Ok(report)) if report.passed(false) => ValidationOutcome::Passed,
                Ok(Ok(report)) => ValidationOutcome::Failed {
                    summary: report
                        .diagnostics
                        .iter()
                        .filter(|d| d.is_error())
                        .take(5)
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                },
                Ok(Err(e)) => ValidationOutcome::Failed {
                    summary: format!("nginx -t could not run: {e}"),
                },
                Err(e) => ValidationOutcome::Failed {
                    summary: format!("validation task failed: {e}"),
                },
            };
            let _ = tx.send(Event::ValidationFinished { digest, outcome });
        });
    }

    fn tell(&mut self, digest: Digest, commit: String, pods: Vec<String>) {
        let Some(bundle) = self.bundles.get(&digest).cloned() else {
            for pod in pods {
                let _ = self.events_tx.send(Event::PodApplyFailed {
                    pod,
                    digest,
                    message: format!("bundle {digest} is not known to this runner"),
                });
            }
            return;
        };
        let bundle = Arc::new(bundle);
        for pod in pods {
            let (fleet, tx, bundle, commit) = (
                Arc::clone(&self.fleet),
                self.events_tx.clone(),
                Arc::clone(&bundle),
                commit.clone(),
            );
            let ticket = self.lanes.ticket(&pod);
            tokio::spawn(async move {
                let Some(_turn) = ticket.turn().await else {
                    tracing::debug!(pod = %pod, %digest, "tell overtaken by a newer one, not sent");
                    return;
                };
                let event = match fleet.apply(&pod, &bundle, &commit).await {
                    Ok(ApplyResult::Applied) => Event::PodApplied { pod, digest },
                    Ok(ApplyResult::Failed(message)) => Event::PodApplyFailed {
                        pod,
                        digest,
                        message,
                    },
                    Ok(ApplyResult::Unconfirmed(why)) => {
                        tracing::info!(pod = %pod, %digest, %why, "told, but the agent did not answer the nudge; its reads will say when it applies");
                        return;
                    }
                    Err(e) => Event::PodApplyFailed {
                        pod,
                        digest,
                        message: e.to_string(),
                    },
                };
                let _ = tx.send(event);
            });
        }
    }
}

#[cfg(test)]
mod tests;
