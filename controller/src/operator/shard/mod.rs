//! Sharding the ProxyRollouts across controller replicas (issue 15, docs/operations.md
//! "Sharding: when and how"). With `--shards N` every rollout belongs to one shard in `0..N`,
//! each shard is held through its own Lease ([`election`]), and a replica drives only the
//! rollouts of the shards it holds.
//!
//! A rollout's shard is the label `switchback.dev/shard: "<k>"` when it names a shard that
//! exists (as Flux's sharding label does), else FNV-1a 64 of `namespace/name` modulo N: a hash
//! written here, so it never changes with the Rust release (std's `DefaultHasher` may).
//!
//! When a shard is lost, the workers of its rollouts are aborted at once, from the held set's
//! change, not from a reconcile that may be queued: the Lease's holder reports `false` at least
//! `lease_duration - renew_deadline` before any other replica may acquire it (the module doc of
//! [`super::leader`]), and that is the time the workers have to stop telling pods.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use super::controller::{Context, key_of};
use super::crd::ProxyRollout;
use crate::stable_hash::fnv1a64;

pub mod election;

/// The label that puts a ProxyRollout in a given shard, overriding the hash.
pub const SHARD_LABEL: &str = "switchback.dev/shard";

/// Where one rollout goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The shard, in `0..count`.
    pub shard: u32,
    /// The label's value when it was set but names no shard (not a number, or `>= count`): the
    /// hash decided instead, and the owner says so in its log.
    pub ignored_label: Option<String>,
}

/// The shard of the rollout `namespace/name` with the shard label `label` among `count` shards
/// (`count` 0 is treated as 1).
pub fn assign(namespace: &str, name: &str, label: Option<&str>, count: u32) -> Assignment {
    let count = count.max(1);
    let labelled = label.map(|l| (l, l.trim().parse::<u32>().ok().filter(|k| *k < count)));
    if let Some((_, Some(shard))) = labelled {
        return Assignment {
            shard,
            ignored_label: None,
        };
    }
    let hash = fnv1a64(format!("{namespace}/{name}").as_bytes());
    Assignment {
        // The remainder is below `count`, a u32.
        shard: u32::try_from(hash % u64::from(count)).unwrap_or(0),
        ignored_label: labelled.map(|(l, _)| l.to_string()),
    }
}

/// The shard of `object` among `count`.
pub fn shard_of(object: &ProxyRollout, count: u32) -> Assignment {
    assign(
        &object.namespace().unwrap_or_default(),
        &object.name_any(),
        object.labels().get(SHARD_LABEL).map(String::as_str),
        count,
    )
}

/// How many shards there are and which of them this replica holds now.
#[derive(Debug, Clone)]
pub struct Shards {
    /// `--shards`.
    pub count: u32,
    /// The shards held, from [`election::ShardElection::subscribe`].
    pub held: watch::Receiver<BTreeSet<u32>>,
}

impl Shards {
    /// Whether this replica holds the shard of `object` at this moment.
    pub fn holds(&self, object: &ProxyRollout) -> bool {
        self.held
            .borrow()
            .contains(&shard_of(object, self.count).shard)
    }
}

/// A stream that yields once each time the held set changes, for
/// `Controller::reconcile_all_on`; it ends with the election.
pub(super) fn changes(
    held: watch::Receiver<BTreeSet<u32>>,
) -> impl futures_util::Stream<Item = ()> + Send + 'static {
    futures_util::stream::unfold(held, |mut held| async move {
        held.changed().await.ok()?;
        Some(((), held))
    })
}

/// Aborts, each time the held set changes, the worker of every rollout whose shard is no longer
/// held (or whose object is gone from the cache, so its shard is unknown). Runs until the
/// election ends.
pub(super) async fn stop_workers_of_lost_shards(
    mut shards: Shards,
    rollouts: Store<ProxyRollout>,
    ctx: Arc<Context>,
) {
    while shards.held.changed().await.is_ok() {
        let held = shards.held.borrow_and_update().clone();
        let owned: BTreeSet<_> = rollouts
            .state()
            .iter()
            .filter(|r| held.contains(&shard_of(r, shards.count).shard))
            .map(|r| key_of(r))
            .collect();
        let mut workers = ctx.workers.lock().await;
        let lost: Vec<_> = workers
            .keys()
            .filter(|k| !owned.contains(*k))
            .cloned()
            .collect();
        for key in lost {
            if let Some(worker) = workers.remove(&key) {
                tracing::warn!(rollout = %format!("{}/{}", key.0, key.1), "shard lost: stopping the rollout's worker");
                worker.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_spreads_rollouts() {
        // Pinned values: a change here moves rollouts between shards on upgrade.
        assert_eq!(assign("edge", "edge", None, 3).shard, 2);
        let mut per_shard = [0u32; 4];
        for i in 0..400 {
            let a = assign("shop", &format!("rollout-{i}"), None, 4);
            assert_eq!(a, assign("shop", &format!("rollout-{i}"), None, 4));
            per_shard[a.shard as usize] += 1;
        }
        assert!(per_shard.iter().all(|n| *n > 60), "{per_shard:?}");
        // The namespace counts: the same name elsewhere is another key.
        let spread: BTreeSet<u32> = (0..20)
            .map(|i| assign(&format!("ns{i}"), "edge", None, 8).shard)
            .collect();
        assert!(spread.len() > 1);
    }

    #[test]
    fn the_label_overrides_the_hash_when_it_names_a_shard() {
        let hashed = assign("edge", "edge", None, 3).shard;
        let other = (hashed + 1) % 3;
        assert_eq!(
            assign("edge", "edge", Some(&other.to_string()), 3),
            Assignment {
                shard: other,
                ignored_label: None
            }
        );
        for bad in ["3", "-1", "one", ""] {
            assert_eq!(
                assign("edge", "edge", Some(bad), 3),
                Assignment {
                    shard: hashed,
                    ignored_label: Some(bad.to_string())
                },
                "label {bad:?}"
            );
        }
    }

    #[test]
    fn one_shard_holds_everything() {
        assert_eq!(assign("a", "b", None, 1).shard, 0);
        assert_eq!(assign("a", "b", None, 0).shard, 0);
        assert_eq!(assign("a", "b", Some("0"), 1).ignored_label, None);
    }
}
