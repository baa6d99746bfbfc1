//! What a rollout remembers across revisions: the quarantine, the known-good revisions a person
//! may roll back to, a short history, the last incident, and the counters that name analysis
//! windows and incidents. Kept in status, so a restarted controller forgets none of it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::command::Incident;
use super::revision::{Release, RevisionId};

/// Manual request ids remembered. A request is re-delivered until the edge clears it, which takes
/// one reconcile, so a handful would do; 32 leaves room for a burst of CLI calls.
const REQUESTS_KEPT: usize = 32;

/// A revision that is not rolled out again by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The revision, whole, so `retry` can roll it out again.
    pub release: Release,
    /// Why it was quarantined.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// What became of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Became stable without a canary: the first revision, with no baseline to compare against.
    Adopted,
    /// Became stable after its canary (or a person's promote).
    Promoted,
    /// Same config as the stable revision under a new commit.
    Relabelled,
    /// Failed validation; never reached a pod.
    Rejected,
    /// Replaced by a newer revision before it finished.
    Superseded,
    /// Rolled back (analysis, apply failure, stall, or a person).
    RolledBack,
    /// Dropped by a person while being validated.
    Aborted,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Which revision.
    pub revision: RevisionId,
    /// What became of it.
    pub outcome: Outcome,
    /// When.
    pub at: Timestamp,
}

/// The memory of one rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Unbounded on purpose: dropping an entry would let a bad commit roll out again by itself.
    pub(crate) quarantine: Vec<QuarantineEntry>,
    /// Revisions that were stable, oldest first, bounded by `historyLimit`.
    pub(crate) known_good: Vec<Release>,
    /// Newest last, bounded by `historyLimit`.
    pub(crate) history: Vec<HistoryEntry>,
    pub(crate) last_incident: Option<Incident>,
    /// Ids of the latest manual requests carried out, newest last, so a re-delivered verb is
    /// not carried out twice (an abort repeated after the rollback finished would otherwise drop
    /// the next revision).
    pub(crate) requests: Vec<String>,
    pub(crate) next_window: u64,
    pub(crate) next_incident: u64,
}

impl Ledger {
    /// The entry that blocks a revision: one with the same config. Quarantine is by digest
    /// (DESIGN §3.2: same digest, same config, same outage), so the bad config stays out under
    /// any commit that renders to it, while the same commit rendered with changed values (a new
    /// config a person chose) is not blocked.
    pub fn blocking(&self, id: &RevisionId) -> Option<&QuarantineEntry> {
        self.quarantine
            .iter()
            .find(|q| q.release.digest == id.digest)
    }

    /// Quarantined revisions, oldest first.
    pub fn quarantined(&self) -> &[QuarantineEntry] {
        &self.quarantine
    }

    /// Revisions that were stable, oldest first.
    pub fn known_good(&self) -> &[Release] {
        &self.known_good
    }

    /// History, newest last.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// The last incident recorded.
    pub fn last_incident(&self) -> Option<&Incident> {
        self.last_incident.as_ref()
    }

    pub(crate) fn quarantine(&mut self, release: &Release, reason: String, at: Timestamp) {
        if self
            .quarantine
            .iter()
            .any(|q| q.release.digest == release.digest)
        {
            return;
        }
        self.quarantine.push(QuarantineEntry {
            release: release.clone(),
            reason,
            at,
        });
    }

    /// A revision judged bad (failed validation, dropped, rolled back): quarantined, and its
    /// outcome written to history, the two things every such end records.
    pub(crate) fn reject(
        &mut self,
        release: &Release,
        reason: String,
        outcome: Outcome,
        at: Timestamp,
        limit: usize,
    ) {
        self.quarantine(release, reason, at);
        self.record(release.id(), outcome, at, limit);
    }

    /// Takes a commit out of quarantine (its newest entry: the config it was last quarantined
    /// with). Returns the revision to roll out.
    pub(crate) fn release(&mut self, commit: &str) -> Option<Release> {
        let entry = self
            .quarantine
            .iter()
            .rfind(|q| q.release.commit() == commit)?
            .release
            .clone();
        self.quarantine.retain(|q| q.release.digest != entry.digest);
        Some(entry)
    }

    /// The newest known-good revision with this commit.
    pub(crate) fn find_known_good(&self, commit: &str) -> Option<&Release> {
        self.known_good.iter().rev().find(|r| r.commit() == commit)
    }

    pub(crate) fn remember_good(&mut self, release: &Release, limit: usize) {
        self.known_good.retain(|r| r.commit() != release.commit());
        self.known_good.push(release.clone());
        trim(&mut self.known_good, limit);
    }

    pub(crate) fn record(
        &mut self,
        revision: RevisionId,
        outcome: Outcome,
        at: Timestamp,
        limit: usize,
    ) {
        self.history.push(HistoryEntry {
            revision,
            outcome,
            at,
        });
        trim(&mut self.history, limit);
    }

    /// Records a manual request id; false when it was seen before.
    pub(crate) fn first_time(&mut self, request: String) -> bool {
        if self.requests.contains(&request) {
            return false;
        }
        self.requests.push(request);
        trim(&mut self.requests, REQUESTS_KEPT);
        true
    }

    pub(crate) fn new_window(&mut self) -> u64 {
        self.next_window += 1;
        self.next_window
    }

    pub(crate) fn new_incident_id(&mut self) -> u64 {
        self.next_incident += 1;
        self.next_incident
    }
}

fn trim<T>(v: &mut Vec<T>, limit: usize) {
    if v.len() > limit {
        v.drain(..v.len() - limit);
    }
}
