//! One side (canary or baseline) of an analysis window, summed pod by pod. The analysis takes
//! cumulative sums and reads the difference between two samples as what happened in between; a
//! plain sum over whichever pods answered would drop when one pod misses a read and jump when it
//! (or a pod joining the baseline sample) is read again, and a drop reads as a restart that
//! counted a pod's whole history at once. Summing each member's own increase since its previous
//! read keeps the sum what the members served in the window, whoever answered when.

use std::collections::BTreeMap;

use crate::analysis::Counters;

/// A window side's running totals: user traffic and agent probes apart.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Each member's last cumulative (traffic, probes) counters for the side's digest.
    last: BTreeMap<String, (Counters, Counters)>,
    traffic: Counters,
    probes: Counters,
}

impl Tally {
    /// Adds what `pod` served since its previous read. Its first read in the window is only a
    /// starting point (its earlier counts are from before the window); a pod whose counters went
    /// down restarted, and everything it reports now is new.
    pub(crate) fn observe(&mut self, pod: &str, traffic: &Counters, probes: &Counters) {
        if let Some((t, p)) = self.last.get(pod) {
            self.traffic.merge(&traffic.delta_since(t));
            self.probes.merge(&probes.delta_since(p));
        }
        self.last
            .insert(pod.to_string(), (traffic.clone(), probes.clone()));
    }

    /// What the side served in the window: user traffic, and probes too when they count.
    pub(crate) fn counted(&self, count_probes: bool) -> Counters {
        let mut total = self.traffic.clone();
        if count_probes {
            total.merge(&self.probes);
        }
        total
    }

    /// User requests and probe requests so far.
    pub(crate) fn seen(&self) -> (u64, u64) {
        (self.traffic.total(), self.probes.total())
    }

    /// Forgets the last counters of pods no longer members (a pod that comes back starts over).
    pub(crate) fn retain(&mut self, members: &[String]) {
        self.last
            .retain(|pod, _| members.binary_search(pod).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(ok: u64, bad: u64) -> Counters {
        let mut c = Counters::default();
        for _ in 0..ok {
            c.record(200, 5.0);
        }
        for _ in 0..bad {
            c.record(502, 5.0);
        }
        c
    }

    #[test]
    fn a_missed_read_neither_drops_nor_doubles_the_sum() {
        let none = Counters::default();
        let mut t = Tally::default();
        t.observe("a", &served(100, 0), &none);
        t.observe("b", &served(1000, 50), &none);
        t.observe("a", &served(110, 1), &none);
        // b misses a read, then is read again having served 20 more.
        t.observe("a", &served(120, 1), &none);
        t.observe("b", &served(1020, 50), &none);
        let got = t.counted(false);
        assert_eq!(got.total(), 20 + 1 + 20);
        assert_eq!(
            got.status_502, 1,
            "b's 50 old errors are from before the window"
        );
    }

    #[test]
    fn probes_count_only_when_asked_and_a_restart_counts_its_new_requests() {
        let mut t = Tally::default();
        t.observe("a", &served(10, 0), &served(5, 0));
        t.observe("a", &served(3, 0), &served(9, 0));
        assert_eq!(t.seen(), (3, 4));
        assert_eq!(t.counted(false).total(), 3);
        assert_eq!(t.counted(true).total(), 7);
        t.retain(&[]);
        t.observe("a", &served(50, 0), &served(9, 0));
        assert_eq!(
            t.seen(),
            (3, 4),
            "a pod that left and came back starts over"
        );
    }
}
