//! Fair shares when one replica elects on several Leases (one per shard, `super::super::shard`):
//! a replica that already holds `h` shards takes a free or expired shard only `h × step` after it
//! first saw that shard free, so a replica holding fewer shards (waiting `0 × step` when it holds
//! none) gets there first. Acquisitions of one replica are serialised, so it cannot take every
//! free shard in the same instant before its count says it holds any.
//!
//! A takeover (a shard whose holder let its Lease expire: it died or hung) is not delayed for a
//! replica that holds fewer than its fair share, `ceil(shards / live replicas)`, counting the
//! holders of the other shards whose Leases it saw unexpired, and itself. Those replicas are
//! known by then, unlike at start, when every Lease is free and nobody has seen the others: the
//! step is what spreads the shards then. Without this, a dead replica's shard was taken one
//! step after its Lease expired (the bench's SIGKILL takeover: 18 s for a 15 s Lease).
//!
//! This only orders who acquires; it never lets a replica take a Lease that the election's own
//! rules (the module doc of `super`) would not let it take. There is no rebalancing: a replica
//! that holds more than its share keeps it until it dies or steps down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// The shards this replica holds, as the electors record them, and the delay per shard held.
#[derive(Debug)]
pub struct FairShare {
    held: Mutex<BTreeSet<u32>>,
    /// Shards other replicas hold, as this replica's electors last saw them: holder and until
    /// when its Lease runs.
    others: std::sync::Mutex<BTreeMap<u32, (String, Instant)>>,
    shards: u32,
    step: Duration,
}

impl FairShare {
    /// A share of `shards` with `step` of delay per shard already held. Pick a step above the
    /// retry period (every replica looks at a free Lease within one retry period), e.g. twice
    /// it.
    pub fn new(step: Duration, shards: u32) -> Arc<FairShare> {
        Arc::new(FairShare {
            held: Mutex::new(BTreeSet::new()),
            others: std::sync::Mutex::default(),
            shards,
            step,
        })
    }

    /// Waits for this replica's turn to acquire (one acquisition at a time); the guard says
    /// when `shard`, free since `free_at`, may be taken.
    pub(super) async fn turn(&self) -> Turn<'_> {
        Turn {
            held: self.held.lock().await,
            share: self,
        }
    }

    /// Records that the elector of `shard` no longer leads.
    pub(super) async fn released(&self, shard: u32) {
        self.held.lock().await.remove(&shard);
    }

    /// Records that the elector of `shard` leads (idempotent).
    pub(super) async fn holding(&self, shard: u32) {
        self.others().remove(&shard);
        self.held.lock().await.insert(shard);
    }

    /// Records that `holder`, another replica, holds `shard` until `expires`.
    pub(super) fn seen_held(&self, shard: u32, holder: &str, expires: Instant) {
        self.others().insert(shard, (holder.to_string(), expires));
    }

    fn others(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, (String, Instant)>> {
        self.others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `ceil(shards / live replicas)`: the replicas are the holders of other shards whose Leases
    /// have not expired, and this one.
    fn fair_share(&self, now: Instant) -> usize {
        let others = self.others();
        let live: BTreeSet<&str> = others
            .values()
            .filter(|(_, expires)| *expires > now)
            .map(|(holder, _)| holder.as_str())
            .collect();
        let shards = usize::try_from(self.shards).unwrap_or(usize::MAX);
        shards.div_ceil(live.len() + 1)
    }
}

/// One replica's turn to acquire a shard; dropping it lets the next elector try.
pub(super) struct Turn<'a> {
    held: MutexGuard<'a, BTreeSet<u32>>,
    share: &'a FairShare,
}

impl Turn<'_> {
    /// When a shard that is free since `free_at` may be taken, given the shards held now
    /// (`shard` itself not counted). `takeover`: its last holder let its Lease expire; then a
    /// replica below its fair share takes it at once.
    pub(super) fn ready_at(&self, shard: u32, free_at: Instant, takeover: bool) -> Instant {
        let mine = self.held.iter().filter(|s| **s != shard).count();
        if takeover && mine < self.share.fair_share(Instant::now()) {
            return free_at;
        }
        free_at + delay(self.share.step, mine)
    }

    /// Records a successful acquisition before the next elector's turn.
    pub(super) fn acquired(mut self, shard: u32) {
        self.share.others().remove(&shard);
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
        let share = FairShare::new(Duration::from_secs(4), 3);
        let free = Instant::now();
        assert_eq!(share.turn().await.ready_at(0, free, false), free);
        share.turn().await.acquired(0);
        // Shard 0 itself does not count against re-acquiring shard 0.
        assert_eq!(share.turn().await.ready_at(0, free, false), free);
        assert_eq!(
            share.turn().await.ready_at(1, free, false),
            free + Duration::from_secs(4)
        );
        share.holding(1).await;
        assert_eq!(
            share.turn().await.ready_at(2, free, false),
            free + Duration::from_secs(8)
        );
        share.released(0).await;
        share.released(1).await;
        assert_eq!(share.turn().await.ready_at(2, free, false), free);
    }

    #[tokio::test]
    async fn turns_are_one_at_a_time() {
        let share = FairShare::new(Duration::from_secs(1), 5);
        let first = share.turn().await;
        assert!(
            share.turn().now_or_never().is_none(),
            "a second turn while the first is open"
        );
        first.acquired(3);
        let free = Instant::now();
        assert_eq!(
            share.turn().await.ready_at(4, free, false),
            free + Duration::from_secs(1)
        );
    }

    /// Three replicas held a shard each; one died. A survivor below its fair share (3 shards
    /// over 2 live replicas: 2) takes the dead one's shard as soon as its Lease expired; one at
    /// its fair share still waits its steps, and so does any replica at start, when no other
    /// holder has been seen.
    #[tokio::test]
    async fn a_replica_below_its_fair_share_takes_over_an_expired_shard_at_once() {
        let step = Duration::from_secs(4);
        let share = FairShare::new(step, 3);
        share.holding(1).await;
        let now = Instant::now();
        share.seen_held(2, "replica-b", now + Duration::from_secs(10));
        share.seen_held(0, "replica-dead", now - Duration::from_secs(1));
        let expired = now;
        assert_eq!(share.turn().await.ready_at(0, expired, true), expired);
        assert_eq!(
            share.turn().await.ready_at(0, expired, false),
            expired + step,
            "a shard nobody held: the start's spreading rule"
        );
        let alone = FairShare::new(step, 2);
        alone.holding(1).await;
        alone.seen_held(0, "replica-dead", now - Duration::from_secs(1));
        // 2 shards, one live replica (this one): fair share 2, it holds 1: at once.
        assert_eq!(alone.turn().await.ready_at(0, expired, true), expired);
        let full = FairShare::new(step, 2);
        full.holding(1).await;
        full.seen_held(0, "replica-dead", now - Duration::from_secs(1));
        full.seen_held(2, "replica-b", now + Duration::from_secs(10));
        // 2 shards over two live replicas: fair share 1, it holds 1: it waits a step.
        assert_eq!(full.turn().await.ready_at(0, expired, true), expired + step);
    }
}
