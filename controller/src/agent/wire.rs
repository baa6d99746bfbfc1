//! The JSON the agent speaks on its HTTP API, shared by the server ([`super::api`]) and the
//! [`super::client::AgentClient`], so the two can never disagree about a field name.
//!
//! Everything here is plain data: the shapes are documented in `docs/agent.md` with examples.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::analysis::Counters;
use crate::render::Digest;

/// Body of `POST /v1/apply`: a rendered bundle with its claimed digest.
///
/// Files travel base64-encoded because nginx config may hold any bytes (a `map` file with Latin-1,
/// a binary `ssl_session_ticket_key`), and JSON strings cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The digest the sender computed; the agent recomputes it before doing anything else.
    pub digest: Digest,
    /// The commit the bundle was rendered from, for people reading the agent's state.
    #[serde(default)]
    pub commit: String,
    /// The main file, relative to the bundle root (nginx's `-c`).
    #[serde(default = "default_entry")]
    pub entry: String,
    /// Bundle-relative path -> base64 of the content.
    pub files: BTreeMap<String, String>,
}

fn default_entry() -> String {
    crate::validate::DEFAULT_ENTRY.to_string()
}

/// Body of `POST /v1/nudge` (Kubernetes mode): "apply this digest now". The agent fetches the
/// bundle from its ConfigMaps and checks the digest itself; the Pod's annotation stays the durable
/// record of what it should serve, the nudge only makes it act at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NudgeRequest {
    /// The digest to apply.
    pub digest: Digest,
    /// Its commit, for people reading the agent's state.
    #[serde(default)]
    pub commit: String,
}

/// The step of an apply that failed, so the controller can tell a bad bundle (`verify`,
/// `prepare`, `nginx_test`) from trouble on the proxy (`write`, `reload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStep {
    /// The request itself: digest mismatch, bad base64, bad path, missing entry.
    Verify,
    /// Parsing the bundle to insert the agent's directives.
    Prepare,
    /// Writing the version directory.
    Write,
    /// The real `nginx -t` on the version directory.
    NginxTest,
    /// Swapping `current`, reloading (or starting) nginx and confirming the new workers.
    Reload,
    /// Persisting the applied record.
    Persist,
    /// Kubernetes mode: reading the Pod or the bundle's ConfigMaps from the API server.
    Fetch,
}

/// The result of one apply, as `POST /v1/apply` returns it and `/v1/state` remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// nginx now serves this digest (or already did: `noop`).
    Applied {
        /// The digest nginx serves.
        digest: Digest,
        /// Its commit, as the request named it.
        commit: String,
        /// True when this digest was already applied and nothing was done.
        noop: bool,
    },
    /// nginx still serves what it served before; `reason` says why the new one was refused.
    ApplyFailed {
        /// The digest that was refused.
        digest: Digest,
        /// Which step failed.
        step: ApplyStep,
        /// What went wrong, in nginx's words where nginx had words.
        reason: String,
    },
}

impl ApplyOutcome {
    /// The digest the outcome is about.
    pub fn digest(&self) -> Digest {
        match self {
            ApplyOutcome::Applied { digest, .. } | ApplyOutcome::ApplyFailed { digest, .. } => {
                *digest
            }
        }
    }

    /// Whether nginx serves the digest now.
    pub fn is_applied(&self) -> bool {
        matches!(self, ApplyOutcome::Applied { .. })
    }
}

/// A digest with the commit it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The bundle digest.
    pub digest: Digest,
    /// The commit, when the sender named one.
    pub commit: String,
}

/// The last apply and when it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastApply {
    /// What happened.
    pub outcome: ApplyOutcome,
    /// When it finished.
    pub finished_at: Timestamp,
    /// How long it took, in milliseconds (reported, never asserted on).
    pub duration_ms: u64,
}

/// What the agent knows about its nginx.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NginxStatus {
    /// Whether this agent starts and supervises nginx (local mode) or only signals it (pod mode).
    pub managed: bool,
    /// The master's pid, when one is running.
    pub pid: Option<i32>,
    /// Worker generations confirmed since the agent started: +1 per confirmed start or reload.
    pub generation: u64,
    /// The worker pids of the current generation, as last seen.
    pub workers: Vec<i32>,
    /// Times the agent restarted a dead nginx.
    pub restarts: u64,
    /// `nginx -v` of the binary in use.
    pub version: String,
}

/// Cumulative counters for one digest, user traffic and the agent's probes apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestCounters {
    /// The digest the requests were served under.
    pub digest: Digest,
    /// Requests from everyone except the agent's probes; connect errors from the error log.
    pub traffic: Counters,
    /// The agent's own probe requests (marked with the probe header).
    pub probes: Counters,
}

/// What the prober itself saw for one configured probe (client side, all digests together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// The `Host` header sent.
    pub host: String,
    /// The path requested.
    pub path: String,
    /// The status that counts as healthy.
    pub expected_status: u16,
    /// Requests sent.
    pub sent: u64,
    /// Answers with the expected status.
    pub ok: u64,
    /// Answers with another status.
    pub unexpected_status: u64,
    /// Requests with no answer (connect refused, timeout).
    pub errors: u64,
    /// The last status seen, if any.
    pub last_status: Option<u16>,
}

/// Log ingestion totals since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStatus {
    /// Access-log lines counted.
    pub access_lines: u64,
    /// Error-log lines read.
    pub error_lines: u64,
    /// Lines whose tag named no digest this agent knows (counted nowhere else).
    pub unattributed_lines: u64,
    /// Datagrams that were not in the agent's format.
    pub malformed_lines: u64,
}

/// Body of `GET /v1/state`.
///
/// Counters are cumulative and only go up while `started_at` stays the same; a new `started_at`
/// means the agent restarted and its counters began again from zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// When this agent process started (counter epoch).
    pub started_at: Timestamp,
    /// The agent's crate version.
    pub agent_version: String,
    /// What nginx serves: the last digest applied and confirmed.
    pub applied: Option<Revision>,
    /// The digest last asked for (the same as `applied` unless that apply failed or is running).
    pub desired: Option<Revision>,
    /// The last apply's outcome.
    pub last_apply: Option<LastApply>,
    /// The nginx process.
    pub nginx: NginxStatus,
    /// Counters per digest, most recently applied first.
    pub counters: Vec<DigestCounters>,
    /// Per-probe client-side results.
    pub probes: Vec<ProbeStatus>,
    /// Log ingestion totals.
    pub ingest: IngestStatus,
    /// Drift detection: whether the live config still is what was applied (`docs/drift.md`).
    /// Absent from agents that predate it, which read as detection off.
    #[serde(default)]
    pub drift: DriftStatus,
}

/// What the agent does when the live config no longer matches what it applied.
///
/// `Report` is the default: a hand edit on a live proxy is often an on-call's mitigation in the
/// middle of an incident, and undoing it unasked could bring the incident back; people opt in to
/// `Repair` per rollout once they want git to be the only way config changes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
pub enum DriftPolicy {
    /// Report the drift (state, metric, the controller's pod condition and Event); leave nginx
    /// and the files as they are.
    #[default]
    Report,
    /// Report it, then re-apply the applied digest from the state directory through the normal
    /// apply path (`nginx -t`, reload).
    Repair,
}

impl DriftPolicy {
    /// The policy named `text` (`Report`/`Repair`, any case), as a pod annotation carries it.
    pub fn parse(text: &str) -> Option<DriftPolicy> {
        match text.trim().to_ascii_lowercase().as_str() {
            "report" => Some(DriftPolicy::Report),
            "repair" => Some(DriftPolicy::Repair),
            _ => None,
        }
    }

    /// The name as written in the CRD and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Report => "Report",
            DriftPolicy::Repair => "Repair",
        }
    }
}

/// How a drift episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftResolution {
    /// The agent re-applied the digest (policy `Repair`).
    Repaired,
    /// The files became equal to what was applied again without the agent (someone undid the
    /// edit).
    Reverted,
    /// Another digest was applied, which rewrote the live config.
    Superseded,
}

/// One drift episode: from the first check that saw the live config differ until it matched
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// The applied digest whose files drifted.
    pub digest: Digest,
    /// When a check first saw the difference.
    pub detected_at: Timestamp,
    /// The tree hash recorded when the digest was applied.
    pub expected: String,
    /// The tree hash found by the latest check of the episode.
    pub found: String,
    /// Paths found that were not written (bounded, see `omitted`).
    pub added: Vec<String>,
    /// Paths written that are gone.
    pub removed: Vec<String>,
    /// Paths whose content or kind changed (`../current` when the `current` symlink was moved).
    pub changed: Vec<String>,
    /// Differing paths left out of the lists to keep them bounded.
    pub omitted: usize,
    /// Why the last repair failed, when it did (nginx keeps what it loaded; the drift stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_error: Option<String>,
    /// When the episode ended; `None` while the live config still differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<DriftResolution>,
}

impl DriftReport {
    /// Every differing path listed, changed first, for messages.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.changed
            .iter()
            .chain(&self.removed)
            .chain(&self.added)
            .map(String::as_str)
    }
}

/// Drift detection's state in `/v1/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftStatus {
    /// Whether detection runs (`--drift-interval 0` turns it off).
    pub enabled: bool,
    /// What a drift leads to.
    pub policy: DriftPolicy,
    /// Checks done since the agent started.
    pub checks: u64,
    /// When the last check finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<Timestamp>,
    /// Drift episodes seen since the agent started.
    pub episodes: u64,
    /// Repairs that restored the applied config.
    pub repairs: u64,
    /// Repairs that failed.
    pub repair_failures: u64,
    /// The current episode, or the last one (then `resolved_at` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<DriftReport>,
}

impl DriftStatus {
    /// The open episode, when the live config differs now.
    pub fn open(&self) -> Option<&DriftReport> {
        self.report.as_ref().filter(|r| r.resolved_at.is_none())
    }
}
