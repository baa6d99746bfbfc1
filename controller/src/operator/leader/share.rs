//! Fair shares when one replica elects on several Leases (one per shard, `super::super::shard`):
//! a replica that already holds `h` shards takes a free or expired shard only `h × step` after it
//! first saw that shard free, so a replica holding fewer shards (waiting `0 × step` when it holds
//! none) gets there first. Acquisitions of one replica are serialised, so it cannot take every
//! free shard in the same instant before its count says it holds any.
//!
//! This only orders who acquires; it never lets a replica take a Lease that the election's own
//! rules (the module doc of `super`) would not let it take. There is no rebalancing: a replica
//! that holds more than its share keeps it until it dies or steps down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// The shards this replica holds, as the electors record them, and the delay per shard held.
#[derive(Debug)]
pub struct FairShare {
    held: Mutex<BTreeSet<u32>>,
    step: Duration,
}

impl FairShare {
    /// A share with `step` of delay per shard already held. Pick a step above the retry period
    /// (every replica looks at a free Lease within one retry period), e.g. twice it.
    pub fn new(step: Duration) -> Arc<FairShare> {
        Arc::new(FairShare {
            held: Mutex::new(BTreeSet::new()),
            step,
        })
    }

    /// Waits for this replica's turn to acquire (one acquisition at a time); the guard says
    /// when `shard`, free since `free_at`, may be taken.
    pub(super) async fn turn(&self) -> Turn<'_> {
        Turn {
            held: self.held.lock().await,
            step: self.step,
        }
    }

    /// Records that the elector of `shard` no longer leads.
    pub(super) async fn released(&self, shard: u32) {
        self.held.lock().await.remove(&shard);
    }

    /// Records that the elector of `shard` leads (idempotent).
    pub(super) async fn holding(&self, shard: u32) {
        self.held.lock().await.insert(shard);
    }
}

/// One replica's turn to acquire a shard; dropping it lets the next elector try.
pub(super) struct Turn<'a> {
    held: MutexGuard<'a, BTreeSet<u32>>,
    step: Duration,
}

impl Turn<'_> {
    /// When a shard that is free since `free_at` may be taken, given the shards held now
    /// (`shard` itself not counted).
    pub(super) fn ready_at(&self, shard: u32, free_at: Instant) -> Instant {
        let others = self.held.iter().filter(|s| **s != shard).count();
        free_at + delay(self.step, others)
    }

    /// Records a successful acquisition before the next elector's turn.
    pub(super) fn acquired(mut self, shard: u32) {
        self.held.insert(shard);
    }
}

/// `step × held`, saturating.
fn delay(step: Duration, held: usize) -> Duration {
    step.saturating_mul(u32::try_from(held).unwrap_or(u32::MAX))
}

/// A shard's place in one replica's [`FairShare`].
#[derive(Debug, Clone)]
pub struct ShareGate {
    /// The replica's share, common to its electors.
    pub share: Arc<FairShare>,
    /// The shard this elector contends for.
    pub shard: u32,
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn each_shard_held_delays_the_next_acquisition_by_a_step() {
        let share = FairShare::new(Duration::from_secs(4));
        let free = Instant::now();
        assert_eq!(share.turn().await.ready_at(0, free), free);
        share.turn().await.acquired(0);
        // Shard 0 itself does not count against re-acquiring shard 0.
        assert_eq!(share.turn().await.ready_at(0, free), free);
        assert_eq!(
            share.turn().await.ready_at(1, free),
            free + Duration::from_secs(4)
        );
        share.holding(1).await;
        assert_eq!(
            share.turn().await.ready_at(2, free),
            free + Duration::from_secs(8)
        );
        share.released(0).await;
        share.released(1).await;
        assert_eq!(share.turn().await.ready_at(2, free), free);
    }

    #[tokio::test]
    async fn turns_are_one_at_a_time() {
        let share = FairShare::new(Duration::from_secs(1));
        let first = share.turn().await;
        assert!(
            share.turn().now_or_never().is_none(),
            "a second turn while the first is open"
        );
        first.acquired(3);
        let free = Instant::now();
        assert_eq!(
            share.turn().await.ready_at(4, free),
            free + Duration::from_secs(1)
        );
    }
}
