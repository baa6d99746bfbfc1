//! Which pods the runner reads in a round. Reading every pod at every poll costs a request per
//! pod four times a second, 40,000 a second at 10,000 pods, and almost all of them say nothing
//! new. A pod is read at the poll rate only while a decision needs it:
//!
//! - it is changing config (told, not yet serving it) or failed to, so the machine sees it land;
//! - it is a canary pod of an open analysis window, or one of that window's baseline sample
//!   ([`BASELINE_SAMPLE`] pods at most, the same ones for the window's life);
//! - something said it changed: its Pod object (a restart, a new address), its agent's report,
//!   or it was never read.
//!
//! Every other pod is read once per heartbeat, at a moment of its own within the period (a
//! hash of its name), so a large idle fleet is read evenly rather than all at once.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::stable_hash::fnv1a64;

/// How many baseline pods an analysis window reads. The comparison's power is bounded by its
/// smaller group, and its rates are rates: 32 pods of a uniform fleet estimate the baseline's
/// error rate as well as all of them, at a bounded cost however large the fleet.
pub const BASELINE_SAMPLE: usize = 32;

/// When each pod was last read and which pods must be read at the next round.
#[derive(Debug)]
pub(crate) struct ReadSchedule {
    started: Instant,
    heartbeat: Duration,
    last_read: HashMap<String, Instant>,
    soon: BTreeSet<String>,
}

impl ReadSchedule {
    /// A schedule reading idle pods once per `heartbeat`.
    pub(crate) fn new(heartbeat: Duration, now: Instant) -> Self {
        ReadSchedule {
            started: now,
            heartbeat: heartbeat.max(Duration::from_millis(1)),
            last_read: HashMap::new(),
            soon: BTreeSet::new(),
        }
    }

    /// Reads `pod` at the next round whatever else holds.
    pub(crate) fn read_soon(&mut self, pod: &str) {
        self.soon.insert(pod.to_string());
    }

    /// The pods to read now among `listed`: every pod in `fast`, every pod flagged or never
    /// read, and every pod whose heartbeat moment passed since its last read. Marks them read.
    pub(crate) fn due(
        &mut self,
        listed: &[String],
        fast: &BTreeSet<String>,
        now: Instant,
    ) -> Vec<String> {
        self.last_read
            .retain(|pod, _| listed.binary_search(pod).is_ok());
        let mut due = Vec::new();
        for pod in listed {
            let read = match self.last_read.get(pod) {
                None => true,
                Some(&last) => {
                    fast.contains(pod) || self.soon.contains(pod) || self.beat(pod, last, now)
                }
            };
            if read {
                self.last_read.insert(pod.clone(), now);
                due.push(pod.clone());
            }
        }
        self.soon.clear();
        due
    }

    /// Whether `pod`'s heartbeat moment fell in `(last, now]`: the periods are offset per pod.
    fn beat(&self, pod: &str, last: Instant, now: Instant) -> bool {
        let period = self.heartbeat.as_millis().max(1);
        let phase = u128::from(fnv1a64(pod.as_bytes())) % period;
        let slot =
            |t: Instant| (t.saturating_duration_since(self.started).as_millis() + phase) / period;
        slot(now) > slot(last)
    }
}

/// The baseline pods a window reads: of `candidates`, the [`BASELINE_SAMPLE`] whose hash with the
/// window's number is lowest. The same set for the same candidates, a different one per window,
/// and a pod leaving replaces only itself.
pub(crate) fn baseline_sample<'a>(
    window: u64,
    candidates: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut ranked: Vec<(u64, &str)> = candidates
        .map(|pod| {
            let mut key = window.to_le_bytes().to_vec();
            key.extend_from_slice(pod.as_bytes());
            (fnv1a64(&key), pod)
        })
        .collect();
    ranked.sort_unstable();
    ranked
        .into_iter()
        .take(BASELINE_SAMPLE)
        .map(|(_, pod)| pod.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pod-{i:04}")).collect()
    }

    #[test]
    fn every_pod_is_read_first_then_only_the_fast_ones_until_their_heartbeat() {
        let t0 = Instant::now();
        let mut s = ReadSchedule::new(Duration::from_secs(10), t0);
        let listed = pods(100);
        let fast: BTreeSet<String> = ["pod-0003".to_string()].into();
        assert_eq!(s.due(&listed, &fast, t0).len(), 100, "never read: all");
        let next = s.due(&listed, &fast, t0 + Duration::from_millis(250));
        assert!(next.contains(&"pod-0003".to_string()));
        assert!(
            next.len() < 10,
            "a quarter second reads few idle pods: {next:?}"
        );
    }

    #[test]
    fn idle_pods_are_read_once_per_heartbeat_spread_over_it() {
        let t0 = Instant::now();
        let mut s = ReadSchedule::new(Duration::from_secs(10), t0);
        let listed = pods(400);
        let none = BTreeSet::new();
        s.due(&listed, &none, t0);
        let mut reads: HashMap<String, usize> = HashMap::new();
        let mut busiest = 0;
        // Two heartbeats of quarter-second rounds.
        for round in 1..=80u64 {
            let due = s.due(&listed, &none, t0 + Duration::from_millis(250 * round));
            busiest = busiest.max(due.len());
            for pod in due {
                *reads.entry(pod).or_default() += 1;
            }
        }
        assert_eq!(reads.len(), 400, "every pod read within two heartbeats");
        assert!(reads.values().all(|&n| n == 2), "twice each: {reads:?}");
        assert!(
            busiest <= 40,
            "spread, not all at once: {busiest} in one round"
        );
    }

    #[test]
    fn a_pod_flagged_or_new_is_read_at_the_next_round_and_a_gone_one_forgotten() {
        let t0 = Instant::now();
        let mut s = ReadSchedule::new(Duration::from_secs(3600), t0);
        let none = BTreeSet::new();
        s.due(&pods(3), &none, t0);
        s.read_soon("pod-0001");
        let mut listed = pods(4);
        listed.remove(0);
        let due = s.due(&listed, &none, t0 + Duration::from_millis(250));
        assert_eq!(due, vec!["pod-0001".to_string(), "pod-0003".to_string()]);
        assert!(!s.last_read.contains_key("pod-0000"));
        assert!(
            s.due(&listed, &none, t0 + Duration::from_millis(500))
                .is_empty()
        );
    }

    #[test]
    fn the_baseline_sample_is_bounded_stable_and_replaces_only_a_leaver() {
        let all = pods(500);
        let sample = baseline_sample(7, all.iter().map(String::as_str));
        assert_eq!(sample.len(), BASELINE_SAMPLE);
        assert_eq!(sample, baseline_sample(7, all.iter().map(String::as_str)));
        assert_ne!(sample, baseline_sample(8, all.iter().map(String::as_str)));
        let gone = &sample[0];
        let rest: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|p| p != gone)
            .collect();
        let after = baseline_sample(7, rest.into_iter());
        let kept = after.iter().filter(|p| sample.contains(p)).count();
        assert_eq!(kept, BASELINE_SAMPLE - 1);
        let small = pods(5);
        assert_eq!(
            baseline_sample(1, small.iter().map(String::as_str)).len(),
            5
        );
    }
}
