//! The machine's view of the pods: what each was told, what it reports, whether it failed. The
//! edge's `Fleet` is the source of these facts; this view is what lets the machine count pods per
//! revision, respect the surge limit and notice a pod that never answers.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::command::Command;
use super::event::ListedPod;
use super::revision::RevisionId;
use crate::render::Digest;

/// How soon a pod that failed to apply what it was told (towards stable: a failure to apply the
/// target is a rollback signal instead) is told again.
pub const RETRY_FAILED: SignedDuration = SignedDuration::from_secs(5);

/// One pod as the machine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// The digest it was last told (`None`: never told anything).
    pub desired: Option<Digest>,
    /// When it was last told.
    pub told_at: Option<Timestamp>,
    /// The digest its agent last reported serving.
    pub applied: Option<Digest>,
    /// Why it could not apply `desired`, until it is told again.
    pub error: Option<String>,
    /// When that failure was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// Appeared during a canary: it gets stable and is not chosen for the target until promotion.
    pub late: bool,
    /// Serves a digest it was not told after it had settled on what it was told (a predecessor
    /// controller's tell that its checkpoint never recorded, an agent put back by hand): nobody
    /// is bringing it back, so it is told again at once rather than an apply timeout after the
    /// old tell. Cleared by the next tell.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strayed: bool,
}

impl PodView {
    /// Told something it has not applied yet and not failed on: its config is changing.
    pub fn in_flight(&self) -> bool {
        self.desired.is_some() && self.applied != self.desired && self.error.is_none()
    }

    /// Told `digest` and serving it.
    pub fn settled_on(&self, digest: Digest) -> bool {
        self.desired == Some(digest) && self.applied == Some(digest)
    }

    /// Learns that the pod serves `digest`: a success for what it was told clears its error; a
    /// move away from what it had settled on marks it strayed.
    fn learn_applied(&mut self, digest: Digest) {
        if self.desired.is_some() && self.applied == self.desired && self.desired != Some(digest) {
            self.strayed = true;
        }
        self.applied = Some(digest);
        if self.desired == Some(digest) {
            self.error = None;
            self.failed_at = None;
            self.strayed = false;
        }
    }

    /// Told something at least `timeout` ago.
    pub(crate) fn told_before(&self, now: Timestamp, timeout: SignedDuration) -> bool {
        self.told_at
            .is_some_and(|t| now.duration_since(t) >= timeout)
    }

    /// Not serving what it was told, and due to be told again: it strayed from it, it failed (an
    /// agent not up yet, a pod without its address) at least [`RETRY_FAILED`] ago, or said
    /// nothing for `timeout`.
    pub(crate) fn due_again(&self, now: Timestamp, timeout: SignedDuration) -> bool {
        self.strayed
            || self.told_before(now, timeout)
            || (self.error.is_some()
                && self
                    .failed_at
                    .is_some_and(|t| now.duration_since(t) >= RETRY_FAILED.min(timeout)))
    }
}

/// All pods of one rollout, sorted by name so every choice the machine makes is deterministic.
/// A sorted `Vec` rather than a map: every decision scans the whole fleet, and a flat scan is
/// what keeps a 1,000-pod reconcile cheap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pods: Vec<PodView>,
}

/// How [`Fleet::converge`] may move pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Converge {
    /// At most this many pods changing config at once.
    Surge(usize),
    /// All at once (rollbacks).
    Unlimited,
    /// Only pods never told anything (while paused: new pods get the stable config, nobody else moves).
    NewOnly,
}

impl Fleet {
    /// Number of pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// No pods.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn find(&self, pod: &str) -> Result<usize, usize> {
        self.pods.binary_search_by(|p| p.name.as_str().cmp(pod))
    }

    fn get_mut(&mut self, pod: &str) -> Option<&mut PodView> {
        let i = self.find(pod).ok()?;
        self.pods.get_mut(i)
    }

    /// One pod.
    pub fn get(&self, pod: &str) -> Option<&PodView> {
        self.pods.get(self.find(pod).ok()?)
    }

    /// Every pod, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PodView)> {
        self.pods.iter().map(|p| (p.name.as_str(), p))
    }

    /// Pods told `digest`.
    pub fn count_desired(&self, digest: Digest) -> usize {
        self.pods
            .iter()
            .filter(|p| p.desired == Some(digest))
            .count()
    }

    /// Pods serving `digest`.
    pub fn count_applied(&self, digest: Digest) -> usize {
        self.pods
            .iter()
            .filter(|p| p.applied == Some(digest))
            .count()
    }

    /// Pods whose config is changing.
    pub fn in_flight(&self) -> usize {
        self.pods.iter().filter(|p| p.in_flight()).count()
    }

    /// Records a pod; a pod already known only learns what it runs.
    pub(crate) fn appear(&mut self, pod: String, applied: Option<Digest>, late: bool) {
        match self.find(&pod) {
            Ok(i) => {
                if applied.is_some() {
                    self.pods[i].applied = applied;
                }
            }
            Err(i) => self.pods.insert(
                i,
                PodView {
                    name: pod,
                    desired: None,
                    told_at: None,
                    applied,
                    error: None,
                    failed_at: None,
                    late,
                    strayed: false,
                },
            ),
        }
    }

    /// Replaces the membership with `listed`: unlisted pods are forgotten, new ones recorded,
    /// known ones learn what they serve. Updates in place (a relist of an unchanged fleet moves
    /// nothing), so a relist of a large fleet is one pass.
    pub(crate) fn resync(&mut self, mut listed: Vec<ListedPod>, late: bool) {
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        listed.dedup_by(|a, b| a.name == b.name);
        let mut keep = vec![false; self.pods.len()];
        let mut added = Vec::new();
        let mut i = 0;
        for ListedPod { name, applied } in listed {
            while self.pods.get(i).is_some_and(|p| p.name < name) {
                i += 1;
            }
            match self.pods.get_mut(i).filter(|p| p.name == name) {
                Some(p) => {
                    keep[i] = true;
                    i += 1;
                    if let Some(d) = applied {
                        p.learn_applied(d);
                    }
                }
                None => added.push(PodView {
                    name,
                    desired: None,
                    told_at: None,
                    applied,
                    error: None,
                    failed_at: None,
                    late,
                    strayed: false,
                }),
            }
        }
        let mut kept = keep.into_iter();
        self.pods.retain(|_| kept.next().unwrap_or(false));
        if !added.is_empty() {
            self.pods.extend(added);
            self.pods.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    /// Forgets a pod.
    pub(crate) fn remove(&mut self, pod: &str) {
        if let Ok(i) = self.find(pod) {
            self.pods.remove(i);
        }
    }

    /// Records what a pod serves; a success for what it was told clears its error.
    pub(crate) fn applied(&mut self, pod: &str, digest: Digest) {
        if let Some(p) = self.get_mut(pod) {
            p.learn_applied(digest);
        }
    }

    /// Records a failure to apply what the pod was told; a failure for anything else is stale.
    pub(crate) fn failed(&mut self, pod: &str, digest: Digest, message: String, now: Timestamp) {
        if let Some(p) = self.get_mut(pod)
            && p.desired == Some(digest)
            && p.applied != Some(digest)
        {
            p.error = Some(message);
            p.failed_at = Some(now);
        }
    }

    /// Forgets which pods appeared mid-canary (a new canary, or promotion).
    pub(crate) fn clear_late(&mut self) {
        for p in &mut self.pods {
            p.late = false;
        }
    }

    /// Tells `pods` the revision and emits the one command that does it.
    pub(crate) fn tell(
        &mut self,
        mut pods: Vec<String>,
        to: &RevisionId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        if pods.is_empty() {
            return;
        }
        pods.sort();
        pods.dedup();
        for name in &pods {
            if let Some(p) = self.get_mut(name) {
                p.desired = Some(to.digest);
                p.told_at = Some(now);
                p.error = None;
                p.failed_at = None;
                p.strayed = false;
            }
        }
        out.push(Command::Tell {
            digest: to.digest,
            commit: to.commit.clone(),
            pods,
        });
    }

    /// Brings pods to `to`: pods that already serve it are told for free, pods told `to` that
    /// have not applied it within `timeout` are told again, and the others as `mode` allows.
    /// The surge room is counted after the free tells (a pod that was changing towards something
    /// else and already serves `to` stops changing), so a second call finds nothing more to do.
    pub(crate) fn converge(
        &mut self,
        to: &RevisionId,
        mode: Converge,
        timeout: SignedDuration,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let d = Some(to.digest);
        let movable = |p: &PodView| mode != Converge::NewOnly || p.desired.is_none();
        let free: Vec<String> = self
            .pods
            .iter()
            .filter(|p| {
                if p.desired != d {
                    movable(p) && p.applied == d
                } else {
                    p.applied != d && p.due_again(now, timeout)
                }
            })
            .map(|p| p.name.clone())
            .collect();
        self.tell(free, to, now, out);

        let mut room = match mode {
            Converge::Surge(limit) => limit.saturating_sub(self.in_flight()),
            Converge::Unlimited | Converge::NewOnly => usize::MAX,
        };
        let mut changing = Vec::new();
        for p in self.pods.iter().filter(|p| p.desired != d && movable(p)) {
            // A pod already changing (towards something else) is already counted.
            if p.in_flight() {
                changing.push(p.name.clone());
            } else if room > 0 {
                room -= 1;
                changing.push(p.name.clone());
            }
        }
        self.tell(changing, to, now, out);
    }
}
