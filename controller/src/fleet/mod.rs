//! The edge's view of the proxy pods (DESIGN §3.6): list them, tell one a bundle, read what it
//! applied and its health counters. The runner drives the rollout engine through this trait only,
//! so the same engine runs on local nginx processes (`switchback demo`, `local`, the tests) and on
//! Kubernetes pods.

pub mod kube;
pub mod local;
pub mod pod_cache;

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::analysis::Counters;
use crate::render::{Bundle, Digest};

/// Why a pod could not be reached or told.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The pod's agent did not answer.
    #[error("pod {pod}: agent unreachable: {message}")]
    Unreachable {
        /// The pod.
        pod: String,
        /// What the transport said.
        message: String,
    },
    /// No such pod.
    #[error("no pod {0}")]
    NoSuchPod(String),
    /// The pods could not be listed.
    #[error("listing pods: {0}")]
    List(String),
}

/// What telling a pod a bundle came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyResult {
    /// The pod serves the digest now.
    Applied,
    /// The pod refused or failed; it still serves what it served before.
    Failed(String),
    /// The tell is recorded where the pod's agent reads it when it starts (Kubernetes mode: the
    /// pod's annotations), but the agent gave no answer (restarting, or out of reach). Not a
    /// failure of the config: the pod's reads say when it applies, and the rollout's apply
    /// timeout counts it failed if it never does.
    Unconfirmed(String),
}

/// One pod as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodObservation {
    /// The digest nginx serves, when any.
    pub applied: Option<Digest>,
    /// Cumulative user-traffic counters per digest served.
    pub traffic: BTreeMap<Digest, Counters>,
    /// Cumulative active-probe counters per digest, kept apart from user traffic.
    pub probes: BTreeMap<Digest, Counters>,
    /// Whether the live config still is what was applied (`docs/drift.md`). Reported to people
    /// only: the rollout engine never reads it.
    #[serde(default)]
    pub drift: crate::agent::DriftStatus,
}

/// The pods of one rollout.
pub trait Fleet: Send + Sync + 'static {
    /// Pod names, sorted. An error means "not known now", never "no pods": a failed list must not
    /// look like every pod going away.
    fn pods(&self) -> impl Future<Output = Result<Vec<String>, FleetError>> + Send;

    /// Tells `pod` to serve `bundle`; resolves when the pod applied it or failed.
    fn apply(
        &self,
        pod: &str,
        bundle: &Bundle,
        commit: &str,
    ) -> impl Future<Output = Result<ApplyResult, FleetError>> + Send;

    /// Reads what `pod` serves and its counters; `reading` says whether it is read again soon.
    fn observe(
        &self,
        pod: &str,
        reading: Reading,
    ) -> impl Future<Output = Result<PodObservation, FleetError>> + Send;
}

/// Whether a pod is read again at the next poll. A kept-alive agent connection holds about
/// 35 KiB of buffers; worth it for a pod read every poll, waste for one read once per heartbeat,
/// whose connection would idle out before its next read anyway (hundreds of them at 1,000 pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read at the poll rate (a canary, a baseline sample, a pod changing config): keep the
    /// connection.
    Often,
    /// Read once (a heartbeat, a report): close the connection after the answer.
    Once,
}

impl From<crate::agent::AgentState> for PodObservation {
    /// What an agent's `/v1/state` says, as the runner reads it.
    fn from(state: crate::agent::AgentState) -> Self {
        let mut obs = PodObservation {
            applied: state.applied.map(|r| r.digest),
            drift: state.drift,
            ..PodObservation::default()
        };
        for c in state.counters {
            obs.traffic.insert(c.digest, c.traffic);
            obs.probes.insert(c.digest, c.probes);
        }
        obs
    }
}

impl From<crate::agent::ApplyOutcome> for ApplyResult {
    /// An agent's answer to `/v1/apply`, as the engine reads it.
    fn from(outcome: crate::agent::ApplyOutcome) -> Self {
        match outcome {
            crate::agent::ApplyOutcome::Applied { .. } => ApplyResult::Applied,
            crate::agent::ApplyOutcome::ApplyFailed { step, reason, .. } => {
                ApplyResult::Failed(format!("{step:?}: {reason}"))
            }
        }
    }
}

/// Tells one pod's agent a bundle: the one path both fleets use, so an agent's refusal and an
/// unreachable agent mean the same thing to the engine wherever the pod runs.
pub(crate) async fn apply_via(
    agent: &crate::agent::AgentClient,
    pod: &str,
    bundle: &Bundle,
    commit: &str,
    entry: &str,
) -> Result<ApplyResult, FleetError> {
    agent
        .apply(bundle, commit, entry)
        .await
        .map(ApplyResult::from)
        .map_err(|e| FleetError::Unreachable {
            pod: pod.to_string(),
            message: e.to_string(),
        })
}

/// Reads one pod's agent.
pub(crate) async fn observe_via(
    agent: &crate::agent::AgentClient,
    pod: &str,
    reading: Reading,
) -> Result<PodObservation, FleetError> {
    agent
        .state_then(reading == Reading::Often)
        .await
        .map(PodObservation::from)
        .map_err(|e| FleetError::Unreachable {
            pod: pod.to_string(),
            message: e.to_string(),
        })
}
