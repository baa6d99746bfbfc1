//! One Lease per shard (`<lease-name>-shard-<k>`), each elected by the single-Lease elector of
//! [`crate::operator::leader`] with its safety argument unchanged, and a fair share
//! ([`crate::operator::leader::share`]) so that replicas spread the shards between them. The set
//! of shards held is a `watch` channel: a shard leaves it as soon as its elector reports `false`.

use std::collections::BTreeSet;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::operator::leader::share::{FairShare, ShareGate};
use crate::operator::leader::{self, LeaderError, LeaderHandle, LeaseSettings};

/// The Lease name of shard `k`.
pub fn lease_name(base: &str, shard: u32) -> String {
    format!("{base}-shard-{shard}")
}

/// The elections of every shard, run by one replica.
#[derive(Debug)]
pub struct ShardElection {
    handles: Vec<LeaderHandle>,
    held: watch::Receiver<BTreeSet<u32>>,
    forwarders: Vec<JoinHandle<()>>,
}

impl ShardElection {
    /// Starts electing on `count` Leases named after `base.name`, with `base`'s namespace,
    /// identity and timing. A replica already holding `h` shards waits `h × 2 × retry_period`
    /// before taking a free one, so that replicas holding fewer get it first.
    pub fn spawn(
        client: kube::Client,
        base: &LeaseSettings,
        count: u32,
    ) -> Result<ShardElection, LeaderError> {
        let share = FairShare::new(base.retry_period.saturating_mul(2), count.max(1));
        let (tx, held) = watch::channel(BTreeSet::new());
        let mut handles = Vec::new();
        let mut forwarders = Vec::new();
        for shard in 0..count.max(1) {
            let settings = LeaseSettings {
                name: lease_name(&base.name, shard),
                ..base.clone()
            };
            let gate = ShareGate {
                share: share.clone(),
                shard,
            };
            let handle = leader::spawn_gated(client.clone(), settings, Some(gate))?;
            let mut leading = handle.subscribe();
            let tx = tx.clone();
            // Mirrors this shard's flag into the set at once; when the elector ends (the
            // receiver errs), the shard leaves the set.
            forwarders.push(tokio::spawn(async move {
                loop {
                    let now = *leading.borrow_and_update();
                    tx.send_if_modified(|set| {
                        if now {
                            set.insert(shard)
                        } else {
                            set.remove(&shard)
                        }
                    });
                    if leading.changed().await.is_err() {
                        tx.send_if_modified(|set| set.remove(&shard));
                        return;
                    }
                }
            }));
            handles.push(handle);
        }
        Ok(ShardElection {
            handles,
            held,
            forwarders,
        })
    }

    /// A receiver of the shards held now; a shard leaves it at its renew deadline at the latest.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.held.clone()
    }

    /// Each shard's [`leader::Tenure`], by shard, for fencing the writes of its rollouts.
    pub fn tenures(&self) -> Vec<leader::Tenure> {
        self.handles.iter().map(LeaderHandle::tenure).collect()
    }

    /// Stops every election and releases the Leases held, so that other replicas take them at
    /// their next poll. Stop driving pods before calling this.
    pub async fn step_down(self) -> Result<(), LeaderError> {
        let mut result = Ok(());
        // All at once: each release is bounded by the renew deadline.
        let steps: Vec<_> = self
            .handles
            .into_iter()
            .map(|h| tokio::spawn(h.step_down()))
            .collect();
        for step in steps {
            match step.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(LeaderError::Task(e)),
            }
        }
        for f in &self.forwarders {
            f.abort();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_leases_are_named_after_the_base_lease() {
        assert_eq!(
            lease_name("switchback-controller", 2),
            "switchback-controller-shard-2"
        );
    }
}
