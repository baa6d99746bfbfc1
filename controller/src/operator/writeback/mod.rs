//! Git write-back (`spec.rollback.writeBack`): after a rollback, a revert commit so git names
//! again what every pod runs ("git tells the truth again", docs/runbook-rolled-back.md).
//!
//! Off the worker's hot path: the engine has decided and the pods are being restored before this
//! starts; the git work runs as its own task (libgit2 on the blocking pool) under a deadline, and
//! its end is picked up by the worker on a later turn as an Event (`RevertPushed`,
//! `RevertNotNeeded`, `RevertFailed`) and `status.lastIncident.revert`.
//!
//! Level-based: the last incident is written back when status does not say it was (once per
//! worker, never retried in a loop), so a restarted or newly elected controller finishes a
//! write-back that was cut short; a repeat is harmless (the branch or head already has the
//! revert: `NotNeeded`).

mod spec;

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{EventType, Recorder};
use tokio::task::JoinHandle;

pub use spec::{
    AuthorSpec, COMMIT_PLACEHOLDER, RevertResult, RevertStatus, WriteBackMode, WriteBackSpec,
    branch_for, settings,
};

use super::crd::{ProxyRollout, ProxyRolloutStatus};
use super::events::publish;
use super::incident::report_name;
use super::leader::Tenure;
use crate::rollout::Incident;
use crate::rollout::revision::short;
use crate::source::git::{GitSource, RevertOutcome, RevertRequest, RevertTarget};

/// How long one write-back (fetch, build, push) may take. libgit2 cannot be interrupted, so past
/// this the result is recorded as failed and the git thread is left to end on its own.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// One rollout's write-backs: at most one running, and the end of the last one.
pub(super) struct WriteBack {
    spec: Option<WriteBackSpec>,
    source: GitSource,
    /// `namespace/name`, for the commit message.
    rollout: String,
    namespace: String,
    name: String,
    git_ref: String,
    path: String,
    /// The incident being written back.
    running: Option<(u64, JoinHandle<RevertStatus>)>,
    /// The incident last written back and how it ended.
    done: Option<(u64, RevertStatus)>,
    /// When electing: no push is started, or made, once this replica's tenure lapsed.
    tenure: Option<Tenure>,
}

impl WriteBack {
    /// Write-back for `object` with the checked settings (`None`: off, nothing ever happens).
    pub(super) fn new(
        spec: Option<WriteBackSpec>,
        source: GitSource,
        object: &ProxyRollout,
    ) -> Self {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        WriteBack {
            spec,
            source,
            rollout: format!("{namespace}/{name}"),
            namespace,
            name,
            git_ref: object.spec.source.git_ref.clone(),
            path: object.spec.source.path.clone(),
            running: None,
            done: None,
            tenure: None,
        }
    }

    /// The same, pushing only while `tenure` holds (`None`: not electing, always).
    pub(super) fn fenced(mut self, tenure: Option<Tenure>) -> Self {
        self.tenure = tenure;
        self
    }

    /// Starts writing back `incident` unless write-back is off, it is running or done, or the
    /// status written before (`previous`) already says what became of it.
    pub(super) fn ensure(
        &mut self,
        incident: Option<&Incident>,
        previous: Option<&ProxyRolloutStatus>,
    ) {
        let (Some(spec), Some(incident)) = (&self.spec, incident) else {
            return;
        };
        let seen = |id: u64| id == incident.id;
        if self.running.as_ref().is_some_and(|(id, _)| seen(*id))
            || self.done.as_ref().is_some_and(|(id, _)| seen(*id))
            || recorded(previous, &report_name(&self.name, incident.id)).is_some()
        {
            return;
        }
        if !self.tenure.as_ref().is_none_or(Tenure::holds) {
            // Not leading any more: the replica that leads now writes it back.
            return;
        }
        if let Some((_, task)) = self.running.take() {
            // A newer incident replaces an older write-back still running.
            task.abort();
        }
        let request = self.request(spec, incident);
        let mode = spec.mode;
        let source = self.source.clone();
        let tenure = self.tenure.clone();
        let span = tracing::info_span!("write_back", incident = incident.id, bad = %short(&request.bad), mode = ?mode);
        tracing::info!(parent: &span, "writing the rollback back to git");
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Checked again as the push starts: the task may run after a pause.
                if let Some(tenure) = tenure.filter(|t| !t.holds()) {
                    return failed(mode, &request, tenure.lapsed().to_string());
                }
                let outcome =
                    tokio::time::timeout(TIMEOUT, source.write_back(request.clone())).await;
                let status = match outcome {
                    Ok(Ok(outcome)) => from_outcome(mode, &request, outcome),
                    Ok(Err(e)) => failed(mode, &request, e.to_string()),
                    Err(_) => failed(
                        mode,
                        &request,
                        format!("did not finish within {}s", TIMEOUT.as_secs()),
                    ),
                };
                tracing::info!(result = ?status.result, message = %status.message, "write-back ended");
                status
            },
            span,
        ));
        self.running = Some((incident.id, task));
    }

    /// The end of a finished write-back, published as an Event once.
    pub(super) async fn collect(&mut self, recorder: &Recorder, reference: &ObjectReference) {
        if !self
            .running
            .as_ref()
            .is_some_and(|(_, task)| task.is_finished())
        {
            return;
        }
        let Some((id, task)) = self.running.take() else {
            return;
        };
        let status = match task.await {
            Ok(status) => status,
            Err(e) => RevertStatus {
                mode: self.spec.as_ref().map(|s| s.mode).unwrap_or_default(),
                result: RevertResult::Failed,
                branch: None,
                commit: None,
                pushed_at: None,
                error: Some(e.to_string()),
                message: "the write-back task did not finish".to_string(),
            },
        };
        let (kind, reason) = match status.result {
            RevertResult::Pushed => (EventType::Normal, "RevertPushed"),
            RevertResult::NotNeeded => (EventType::Normal, "RevertNotNeeded"),
            RevertResult::Failed => (EventType::Warning, "RevertFailed"),
        };
        publish(recorder, reference, kind, reason, &status.message).await;
        self.done = Some((id, status));
    }

    /// Puts what became of the last incident's write-back on `status.lastIncident.revert`: this
    /// worker's result, else what the previous status said.
    pub(super) fn annotate(
        &self,
        status: &mut ProxyRolloutStatus,
        previous: Option<&ProxyRolloutStatus>,
    ) {
        let Some(brief) = status.last_incident.as_mut() else {
            return;
        };
        let Some(report) = brief.report.clone() else {
            return;
        };
        brief.revert = match &self.done {
            Some((id, done)) if report_name(&self.name, *id) == report => Some(done.clone()),
            _ => recorded(previous, &report).cloned(),
        };
    }

    /// Stops a running write-back's task (the worker is stopping); its successor sees no result
    /// in status and starts it again.
    pub(super) fn abort(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }

    fn request(&self, spec: &WriteBackSpec, incident: &Incident) -> RevertRequest {
        let bad = incident.revision.commit().to_string();
        let stable = incident.restored_to.commit.clone();
        let report = report_name(&self.name, incident.id);
        let why = format!(
            "Switchback rolled back ProxyRollout {rollout} from {bad_short} to {stable_short}: {reason}.\n\
             Incident report: ConfigMap {namespace}/{report}\n  \
             (kubectl get configmap -n {namespace} {report} -o jsonpath='{{.data.report\\.md}}')\n\n\
             Switchback-Incident: {namespace}/{report}",
            rollout = self.rollout,
            bad_short = short(&bad),
            stable_short = short(&stable),
            reason = incident.reason.summary(),
            namespace = self.namespace,
        );
        let target = match spec.mode {
            WriteBackMode::Branch => RevertTarget::Branch(branch_for(&spec.branch, &bad)),
            WriteBackMode::Push => RevertTarget::Followed,
        };
        RevertRequest {
            git_ref: self.git_ref.clone(),
            path: self.path.clone(),
            bad,
            stable,
            target,
            author_name: spec.author.name.clone(),
            author_email: spec.author.email.clone(),
            why,
        }
    }
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The revert status the previous status holds for the incident whose report is `report`.
fn recorded<'a>(
    previous: Option<&'a ProxyRolloutStatus>,
    report: &str,
) -> Option<&'a RevertStatus> {
    previous
        .and_then(|p| p.last_incident.as_ref())
        .filter(|i| i.report.as_deref() == Some(report))
        .and_then(|i| i.revert.as_ref())
}

fn from_outcome(
    mode: WriteBackMode,
    request: &RevertRequest,
    outcome: RevertOutcome,
) -> RevertStatus {
    let bad = short(&request.bad);
    match outcome {
        RevertOutcome::Pushed { branch, commit, .. } => RevertStatus {
            mode,
            result: RevertResult::Pushed,
            message: format!(
                "pushed {} reverting {bad} to branch {branch}{}",
                short(&commit),
                match mode {
                    WriteBackMode::Branch => "; merge it so git names what runs",
                    WriteBackMode::Push => "",
                }
            ),
            branch: Some(branch),
            commit: Some(commit),
            pushed_at: Some(jiff::Timestamp::now().to_string()),
            error: None,
        },
        RevertOutcome::AlreadyReverted { head } => RevertStatus {
            mode,
            result: RevertResult::NotNeeded,
            message: format!(
                "{} is at {}, which already has the config every pod runs; nothing to push",
                request.git_ref,
                short(&head)
            ),
            branch: Some(request.git_ref.clone()),
            commit: Some(head),
            pushed_at: None,
            error: None,
        },
        RevertOutcome::BranchUpToDate { branch, commit } => RevertStatus {
            mode,
            result: RevertResult::NotNeeded,
            message: format!(
                "branch {branch} already has the revert of {bad} (at {})",
                short(&commit)
            ),
            branch: Some(branch),
            commit: Some(commit),
            pushed_at: None,
            error: None,
        },
    }
}

fn failed(mode: WriteBackMode, request: &RevertRequest, error: String) -> RevertStatus {
    RevertStatus {
        mode,
        result: RevertResult::Failed,
        branch: match &request.target {
            RevertTarget::Branch(b) => Some(b.clone()),
            RevertTarget::Followed => Some(request.git_ref.clone()),
        },
        commit: None,
        pushed_at: None,
        message: format!(
            "could not write the rollback of {} back to git (the rollback itself stands): {error}",
            short(&request.bad)
        ),
        error: Some(error.chars().take(1000).collect()),
    }
}
