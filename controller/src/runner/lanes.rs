//! One lane per pod for the runner's tells. The machine may tell a pod one digest and, a moment
//! later, another (every pod stable at start, then the canary the target); each tell is its own
//! task, and two requests racing to one agent could land in either order, leaving the pod on the
//! older digest while the machine waits for the newer one. A lane runs a pod's tells one at a
//! time in the order given, and a tell already overtaken by a newer one is dropped unsent.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A pod's queue: the number of the newest tell, and the turn lock (tokio's mutex is fair, so
/// tells take their turn in the order they asked).
#[derive(Default)]
struct Lane {
    newest: AtomicU64,
    turn: Arc<Mutex<()>>,
}

/// Every pod's lane.
#[derive(Default)]
pub(crate) struct PodLanes {
    lanes: HashMap<String, Arc<Lane>>,
}

/// A place in a pod's lane, handed to the task that will do the tell.
pub(crate) struct Ticket {
    lane: Arc<Lane>,
    number: u64,
}

impl PodLanes {
    /// Takes the next place in `pod`'s lane; it supersedes every earlier one.
    pub(crate) fn ticket(&mut self, pod: &str) -> Ticket {
        let lane = Arc::clone(self.lanes.entry(pod.to_string()).or_default());
        let number = lane.newest.fetch_add(1, Ordering::SeqCst) + 1;
        Ticket { lane, number }
    }

    /// Forgets the lanes of pods no longer listed (a tell still running keeps its own lane alive).
    pub(crate) fn retain(&mut self, listed: &[String]) {
        self.lanes.retain(|name, _| listed.contains(name));
    }
}

impl Ticket {
    /// Waits for this tell's turn. `None`: a newer tell to the same pod was given meanwhile, so
    /// this one must not be sent.
    pub(crate) async fn turn(self) -> Option<OwnedMutexGuard<()>> {
        let guard = Arc::clone(&self.lane.turn).lock_owned().await;
        (self.lane.newest.load(Ordering::SeqCst) == self.number).then_some(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_overtaken_tell_is_dropped_and_the_newest_runs() {
        let mut lanes = PodLanes::default();
        let first = lanes.ticket("a");
        let second = lanes.ticket("a");
        let other = lanes.ticket("b");
        assert!(first.turn().await.is_none());
        assert!(other.turn().await.is_some());
        let guard = second.turn().await;
        assert!(guard.is_some());
    }

    #[tokio::test]
    async fn a_newer_tell_waits_for_the_one_in_progress() {
        let mut lanes = PodLanes::default();
        let first = lanes.ticket("a");
        let held = first.turn().await.expect("first is newest");
        let second = lanes.ticket("a");
        let waiting = tokio::spawn(second.turn());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert!(waiting.await.expect("task").is_some());
    }

    #[test]
    fn lanes_of_pods_gone_are_forgotten() {
        let mut lanes = PodLanes::default();
        drop(lanes.ticket("a"));
        drop(lanes.ticket("b"));
        lanes.retain(&["b".to_string()]);
        assert_eq!(lanes.lanes.len(), 1);
        assert!(lanes.lanes.contains_key("b"));
    }
}
