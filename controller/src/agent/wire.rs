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
}
