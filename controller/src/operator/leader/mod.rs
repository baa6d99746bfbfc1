//! Leader election on a `coordination.k8s.io/v1` Lease (DESIGN §3.7): two or more controller
//! replicas run, and only the one holding the Lease drives rollouts. A standby takes over within
//! the lease duration when the leader dies, and at once when the leader steps down.
//!
//! Every write is optimistic: read the Lease, then replace it carrying the resourceVersion that
//! was read (create it on 404). A 409 means another replica wrote first and won.
//!
//! # Why two leaders never drive pods at once
//!
//! Wall clocks are never compared across replicas (they may be skewed); each replica only
//! measures durations on its own monotonic clock, as client-go does.
//!
//! - The **leader** notes the instant `t` just *before* it sends the read that starts a
//!   successful renewal. The write that renewal makes reaches the API server after `t`.
//! - A **standby** notes the instant at which it *received* a Lease record it had not seen
//!   before (a new resourceVersion). That is after the record was written, so after the leader's
//!   `t`. It may take the Lease over only once `leaseDurationSeconds` (as written by the holder)
//!   has passed on its own clock since then, so not before `t + lease_duration`.
//! - The leader reports `false` on its watch channel at `t + renew_deadline` at the latest when
//!   no later renewal has succeeded: every renewal, retries included, runs under a timeout that
//!   ends there. [`LeaseSettings`] insists on `renew_deadline < lease_duration`, so the leader
//!   has said `false` for `lease_duration - renew_deadline` (5 s by default) before any standby
//!   could legally acquire. The controller must stop telling pods anything as soon as the
//!   receiver says `false`; that margin is what it has to do so.
//!
//! The argument assumes the two monotonic clocks run at about the same rate (true of any real
//! hardware over seconds) and that the leader's runtime is not stalled for longer than the
//! margin (a stalled process flips its flag late; the same holds for every lease-based
//! election). A renewal whose reply is lost counts as failed: the leader gives up although the
//! API server may name it holder, which is safe, and it renews that Lease again as soon as it
//! reads its own name in it.
//!
//! A graceful [`LeaderHandle::step_down`] reports `false` first, then clears `holderIdentity`;
//! a standby acquires an empty Lease at its next poll, without waiting out the duration.
//!
//! The flag turns `false` only when the elector's task runs; a process paused past its Lease
//! wakes with every timer due at once and may run a writer first. So every writer also checks
//! the [`Tenure`] (the same renew deadline, on the same clock) at the moment it writes; see
//! [`tenure`].
//!
//! With `--shards N` a replica runs one election per shard ([`spawn_gated`],
//! `crate::operator::shard::election`); the [`share`] gate only delays when a free or expired
//! Lease is taken (a replica holding more shards waits longer), after the same expiry rules and
//! with the same optimistic write, so the argument above holds for each shard's Lease unchanged.

use std::time::Duration;

use kube::api::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod elector;
pub mod share;
pub mod tenure;

use elector::{Elector, FalseOnDrop};
use share::ShareGate;
pub use tenure::Tenure;

/// Where the Lease lives, who we are, and the timing; see the module doc for how the three
/// durations relate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The namespace of the Lease (the controller's own namespace, usually).
    pub namespace: String,
    /// The Lease name, shared by every replica of one controller.
    pub name: String,
    /// This replica's identity, unique among the replicas (the pod name).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal, as standbys see it. Written to
    /// `leaseDurationSeconds`, rounded up to whole seconds.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it reports `false`. Must be below
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks at the Lease. Must be below
    /// `renew_deadline`.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with client-go's defaults: 15 s duration, 10 s renew deadline, 2 s retry period.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> LeaseSettings {
        LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Rejects timings under which the no-two-leaders argument does not hold.
    fn check(&self) -> Result<(), LeaderError> {
        let bad = |why: &str| Err(LeaderError::Settings(why.to_string()));
        if self.identity.is_empty() || self.name.is_empty() || self.namespace.is_empty() {
            return bad("namespace, name and identity must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return bad("lease_duration must be at least 1s (the Lease counts whole seconds)");
        }
        if self.renew_deadline >= self.lease_duration {
            return bad("renew_deadline must be shorter than lease_duration");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad("retry_period must be above zero and shorter than renew_deadline");
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: whole seconds, rounded up so that standbys never wait less.
    fn duration_seconds(&self) -> i32 {
        let secs = self
            .lease_duration
            .as_secs()
            .saturating_add(u64::from(self.lease_duration.subsec_nanos() > 0));
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why electing, renewing or stepping down failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The settings break the timing argument (see the module doc).
    #[error("lease settings: {0}")]
    Settings(String),
    /// The API server refused or could not be reached.
    #[error("{action} lease {lease}: {source}")]
    Api {
        /// What was being done: reading, creating, updating.
        action: &'static str,
        /// `namespace/name` of the Lease.
        lease: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Another replica wrote the Lease between our read and our write (HTTP 409).
    #[error("lease {lease} was written by another replica first (409 Conflict)")]
    Conflict {
        /// `namespace/name` of the Lease.
        lease: String,
    },
    /// While we thought we led, the Lease named someone else.
    #[error("lease {lease} is now held by {holder}")]
    Lost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The identity found in the Lease.
        holder: String,
    },
    /// A request did not finish in time.
    #[error("lease {lease}: no answer within {after:?}")]
    Timeout {
        /// `namespace/name` of the Lease.
        lease: String,
        /// How long we waited.
        after: Duration,
    },
    /// A write was refused because this replica's tenure lapsed (or never started): it may
    /// no longer lead, whether or not its elector has said so yet.
    #[error(
        "lease {lease}: not leading (past the renew deadline of the last renewal); write refused"
    )]
    NotLeading {
        /// `namespace/name` of the Lease.
        lease: String,
    },
    /// The election task panicked.
    #[error("the leader election task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running election. Dropping it aborts the election without releasing the Lease (as a crash
/// would); call [`LeaderHandle::step_down`] on a graceful shutdown instead.
#[derive(Debug)]
pub struct LeaderHandle {
    leading: watch::Receiver<bool>,
    tenure: Tenure,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), LeaderError>>>,
}

impl LeaderHandle {
    /// A receiver of "am I the leader now"; it turns `false` at the latest at the renew deadline
    /// and also when the election task ends for any reason.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Whether this replica leads at this moment.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Until when this replica may write, checked at each write ([`Tenure::fence`]): unlike
    /// the watch channel, it lapses by the clock alone, without the elector's task running.
    pub fn tenure(&self) -> Tenure {
        self.tenure.clone()
    }

    /// Stops the election and, if we lead, reports `false` and then releases the Lease so that a
    /// standby takes over at its next poll. Stop driving pods before calling this.
    pub async fn step_down(mut self) -> Result<(), LeaderError> {
        self.stop.send_replace(true);
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Ends the election at once without releasing the Lease, as a crash would: a standby takes
    /// over only after the lease duration. For tests and for a process that must not touch the
    /// API any more.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for LeaderHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts electing in a task of its own. The receiver from [`LeaderHandle::subscribe`] starts
/// `false`.
pub fn spawn(client: kube::Client, settings: LeaseSettings) -> Result<LeaderHandle, LeaderError> {
    spawn_gated(client, settings, None)
}

/// [`spawn`] for one shard's Lease among several: with a `gate`, a free or expired Lease is
/// taken only when this replica's fair share allows (see [`share`]); holding and renewing it
/// follow the same rules as a single Lease.
pub fn spawn_gated(
    client: kube::Client,
    settings: LeaseSettings,
    gate: Option<ShareGate>,
) -> Result<LeaderHandle, LeaderError> {
    settings.check()?;
    let (tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let tenure = Tenure::new(&settings.lease());
    let elector = Elector::new(Api::namespaced(client, &settings.namespace), settings, gate);
    let task = tokio::spawn(elector.run(FalseOnDrop(tx, tenure.clone()), stop_rx));
    Ok(LeaderHandle {
        leading,
        tenure,
        stop,
        task: Some(task),
    })
}

/// Resolves once `leading` says we lead; `false` when the election ended first.
pub async fn acquired(leading: &mut watch::Receiver<bool>) -> bool {
    leading.wait_for(|l| *l).await.is_ok()
}

/// Resolves once `leading` says we no longer lead (or the election ended): pass it as the
/// controller's shutdown future so that losing the Lease stops the rollouts.
pub async fn lost(mut leading: watch::Receiver<bool>) {
    let _ = leading.wait_for(|l| !*l).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_must_leave_a_margin() {
        let ok = LeaseSettings::new("ns", "lease", "a");
        assert!(ok.check().is_ok());
        assert_eq!(ok.duration_seconds(), 15);
        let equal = LeaseSettings {
            renew_deadline: ok.lease_duration,
            ..ok.clone()
        };
        assert!(matches!(equal.check(), Err(LeaderError::Settings(_))));
        let slow_retry = LeaseSettings {
            retry_period: ok.renew_deadline,
            ..ok.clone()
        };
        assert!(matches!(slow_retry.check(), Err(LeaderError::Settings(_))));
        let nobody = LeaseSettings {
            identity: String::new(),
            ..ok.clone()
        };
        assert!(nobody.check().is_err());
    }

    #[test]
    fn fractional_durations_round_up() {
        let s = LeaseSettings {
            lease_duration: Duration::from_millis(2500),
            ..LeaseSettings::new("ns", "lease", "a")
        };
        assert_eq!(s.duration_seconds(), 3);
    }
}
