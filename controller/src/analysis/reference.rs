//! A baseline for steps that leave no pod on the baseline: the 100% step, and every step of a
//! one-pod fleet. Without one, the analysis saw `0 baseline requests` and could never call a
//! healthy canary healthy. The principled stand-in is the stable revision's own recent record:
//! its traffic over the last minutes, recorded while pods still served it (the earlier steps of
//! the same rollout, or the time before the rollout began). The canary is then compared with
//! that record as with a second, independent sample. What it cannot do is cancel trouble both
//! share: a backend outage that starts during the step looks like the canary's fault
//! (`docs/analysis.md`, "A baseline for every step").
//!
//! [`TrafficRecord`] keeps the record from the agents' cumulative counters, pod by pod (so a pod
//! that leaves or restarts is neither a drop nor a jump in the sum), in coarse buckets so a long
//! record stays small. It is pure: the caller passes the time.

use std::collections::{BTreeMap, VecDeque};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::counters::Counters;

/// The stable revision's recorded traffic, handed to an analysis whose step has no baseline pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// Start of the recorded span.
    pub from: Timestamp,
    /// End of the recorded span.
    pub to: Timestamp,
    /// Everything the revision's pods served in the span, summed.
    pub counters: Counters,
}

/// How far back the record reaches by default: ten minutes, enough for three or more bakes of
/// the earlier steps at the default bake, short enough that the rates are those of the same hour.
pub const DEFAULT_KEEP: SignedDuration = SignedDuration::from_mins(10);

/// Bucket width: the record's resolution in time.
const BUCKET: SignedDuration = SignedDuration::from_secs(10);

/// One revision's traffic across the fleet, recorded as it happens.
#[derive(Debug, Clone)]
pub struct TrafficRecord {
    keep: SignedDuration,
    /// Each pod's last cumulative counters and when they were read.
    pods: BTreeMap<String, (Timestamp, Counters)>,
    /// Bucket start (aligned to [`BUCKET`]) and what all pods served in it.
    buckets: VecDeque<(Timestamp, Counters)>,
}

impl Default for TrafficRecord {
    fn default() -> Self {
        TrafficRecord::new(DEFAULT_KEEP)
    }
}

impl TrafficRecord {
    /// A record reaching back `keep`.
    pub fn new(keep: SignedDuration) -> Self {
        TrafficRecord {
            keep,
            pods: BTreeMap::new(),
            buckets: VecDeque::new(),
        }
    }

    /// Takes one read of the pods serving the revision: each pod's cumulative counters for it.
    /// A pod read for the first time only sets its starting point (its earlier counts accrued
    /// at an unknown time); a pod whose counters went down restarted (as in
    /// [`Counters::delta_since`]). Pods not in this read keep their last counters for a while,
    /// so one missed read loses nothing.
    pub fn observe<'a>(
        &mut self,
        at: Timestamp,
        pods: impl IntoIterator<Item = (&'a str, &'a Counters)>,
    ) {
        let mut window = Counters::default();
        let mut any = false;
        for (pod, counters) in pods {
            if let Some((_, last)) = self.pods.get(pod) {
                window.merge(&counters.delta_since(last));
                any = true;
            }
            self.pods.insert(pod.to_string(), (at, counters.clone()));
        }
        if any && window.total() > 0 {
            let start = bucket_start(at);
            match self.buckets.back_mut() {
                Some((s, c)) if *s == start => c.merge(&window),
                _ => self.buckets.push_back((start, window)),
            }
        }
        let horizon = at - self.keep;
        self.pods.retain(|_, (seen, _)| *seen >= horizon);
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s + BUCKET <= horizon)
        {
            self.buckets.pop_front();
        }
    }

    /// Forgets every pod's last counters (not what was recorded): the next read of each pod is
    /// a new starting point. For a caller whose pods start counting again from zero together.
    pub fn forget_pods(&mut self) {
        self.pods.clear();
    }

    /// What the revision served over the last `keep` before `now`, or `None` when nothing was
    /// recorded in that span.
    pub fn reference(&self, now: Timestamp) -> Option<Reference> {
        let horizon = now - self.keep;
        let mut counters = Counters::default();
        let mut span: Option<(Timestamp, Timestamp)> = None;
        for (start, c) in self.buckets.iter().filter(|(s, _)| *s + BUCKET > horizon) {
            counters.merge(c);
            let end = *start + BUCKET;
            span = Some(span.map_or((*start, end), |(f, _)| (f, end)));
        }
        let (from, to) = span?;
        Some(Reference {
            from: from.max(horizon),
            to: to.min(now),
            counters,
        })
    }
}

fn bucket_start(at: Timestamp) -> Timestamp {
    let width = BUCKET.as_secs();
    let secs = at.as_second().div_euclid(width) * width;
    Timestamp::from_second(secs).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn served(ok: u64, bad: u64) -> Counters {
        let mut c = Counters::default();
        for _ in 0..ok {
            c.record(200, 10.0);
        }
        for _ in 0..bad {
            c.record(502, 10.0);
        }
        c
    }

    #[test]
    fn the_record_sums_what_pods_served_after_they_were_first_read() {
        let mut r = TrafficRecord::default();
        r.observe(at(0), [("a", &served(100, 1)), ("b", &served(50, 0))]);
        assert_eq!(
            r.reference(at(0)),
            None,
            "a first read is only a starting point"
        );
        r.observe(at(5), [("a", &served(150, 2)), ("b", &served(90, 0))]);
        // A pod that leaves is no drop, one that restarts is its new counts.
        r.observe(at(12), [("a", &served(10, 0))]);
        let got = r.reference(at(12)).expect("recorded");
        assert_eq!(got.counters.total(), 50 + 1 + 40 + 10);
        assert_eq!(got.counters.status_5xx, 1);
    }

    #[test]
    fn old_traffic_falls_out_of_the_record() {
        let mut r = TrafficRecord::new(SignedDuration::from_mins(1));
        r.observe(at(0), [("a", &served(0, 0))]);
        r.observe(at(1), [("a", &served(100, 0))]);
        r.observe(at(100), [("a", &served(130, 0))]);
        let got = r.reference(at(100)).expect("recorded");
        assert_eq!(got.counters.total(), 30);
        assert!(got.from >= at(40));
        assert_eq!(r.reference(at(1000)), None);
    }
}
