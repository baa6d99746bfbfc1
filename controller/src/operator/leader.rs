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

use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
// The jiff that k8s-openapi's MicroTime wraps (0.2), which differs from the workspace's.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    /// The election task panicked.
    #[error("the leader election task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running election. Dropping it aborts the election without releasing the Lease (as a crash
/// would); call [`LeaderHandle::step_down`] on a graceful shutdown instead.
#[derive(Debug)]
pub struct LeaderHandle {
    leading: watch::Receiver<bool>,
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
    settings.check()?;
    let (tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let elector = Elector {
        api: Api::namespaced(client, &settings.namespace),
        settings,
        observed: Mutex::new(None),
    };
    let task = tokio::spawn(elector.run(FalseOnDrop(tx), stop_rx));
    Ok(LeaderHandle {
        leading,
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

/// The sending side of "am I the leader", which says `false` when the task owning it ends,
/// including by abort: the receiver never keeps saying `true` for a dead elector.
struct FalseOnDrop(watch::Sender<bool>);

impl FalseOnDrop {
    fn set(&self, leading: bool) {
        self.0
            .send_if_modified(|l| std::mem::replace(l, leading) != leading);
    }
}

impl Drop for FalseOnDrop {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// What one look at the Lease found.
enum Attempt {
    /// We hold it (created, renewed or taken over).
    Leading,
    /// Someone else holds it until `expires` on our clock, unless they renew.
    Held { holder: String, expires: Instant },
}

/// The last Lease record a standby saw and when it first saw it.
struct Observed {
    resource_version: String,
    at: Instant,
}

/// Why the leading phase ended.
enum Ended {
    Stopped,
    Lost,
}

struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Mutex<Option<Observed>>,
}

impl Elector {
    async fn run(
        self,
        leading: FalseOnDrop,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LeaderError> {
        let s = &self.settings;
        let mut backoff = self.backoff().build();
        loop {
            let start = Instant::now();
            let wait = match self.bounded(self.attempt()).await {
                Ok(Attempt::Leading) => {
                    backoff = self.backoff().build();
                    match self.lead(&leading, &mut stop, start).await {
                        Ended::Stopped => return self.release().await,
                        Ended::Lost => s.retry_period,
                    }
                }
                Ok(Attempt::Held { holder, expires }) => {
                    backoff = self.backoff().build();
                    tracing::debug!(lease = %s.lease(), %holder, "standing by");
                    // Wake at the expiry, not up to a whole period after it.
                    s.retry_period
                        .min(expires.saturating_duration_since(Instant::now()))
                }
                Err(LeaderError::Conflict { .. }) => {
                    tracing::debug!(lease = %s.lease(), "another replica acquired first");
                    s.retry_period
                }
                Err(e) => {
                    tracing::warn!(lease = %s.lease(), error = %e, "reading the lease failed");
                    backoff.next().unwrap_or(s.retry_period)
                }
            };
            let asked_to_stop = tokio::select! {
                biased;
                () = stopped(&mut stop) => true,
                () = tokio::time::sleep(wait) => false,
            };
            if asked_to_stop {
                // The Lease may still name us after a renewal whose reply was lost.
                return self.release().await;
            }
        }
    }

    /// Leads from `acquired_at` until stopped or until a renewal misses the deadline.
    #[tracing::instrument(skip_all, fields(lease = %self.settings.lease(), identity = %self.settings.identity))]
    async fn lead(
        &self,
        leading: &FalseOnDrop,
        stop: &mut watch::Receiver<bool>,
        acquired_at: Instant,
    ) -> Ended {
        let s = &self.settings;
        leading.set(true);
        tracing::info!("acquired the lease; leading");
        let mut renewed = acquired_at;
        loop {
            let deadline = renewed + s.renew_deadline;
            let renew = (|| async {
                let start = Instant::now();
                match self.attempt().await? {
                    Attempt::Leading => Ok(start),
                    Attempt::Held { holder, .. } => Err(LeaderError::Lost {
                        lease: s.lease(),
                        holder,
                    }),
                }
            })
            .retry(self.backoff())
            .when(|e| !matches!(e, LeaderError::Lost { .. }))
            .notify(|e, after| {
                tracing::warn!(error = %e, retry_in = ?after, "renewing the lease failed");
            });
            let next = tokio::select! {
                biased;
                () = stopped(stop) => None,
                // The wait before renewing counts against the deadline too, so even a late
                // wake-up cannot keep the flag up past it.
                r = tokio::time::timeout_at(deadline, async {
                    tokio::time::sleep(s.retry_period).await;
                    renew.await
                }) => Some(r),
            };
            match next {
                None => {
                    leading.set(false);
                    tracing::info!("stepping down");
                    return Ended::Stopped;
                }
                Some(Ok(Ok(start))) => {
                    renewed = start;
                    tracing::trace!("renewed the lease");
                }
                Some(Ok(Err(e))) => {
                    leading.set(false);
                    tracing::warn!(error = %e, "lost the lease");
                    return Ended::Lost;
                }
                Some(Err(_)) => {
                    leading.set(false);
                    tracing::warn!(
                        renew_deadline = ?s.renew_deadline,
                        "could not renew the lease before the renew deadline; no longer leading"
                    );
                    return Ended::Lost;
                }
            }
        }
    }

    /// Retries within a renewal: quick at first, never slower than the retry period.
    fn backoff(&self) -> ExponentialBuilder {
        let period = self.settings.retry_period;
        ExponentialBuilder::default()
            .with_min_delay((period / 8).max(Duration::from_millis(10)))
            .with_max_delay(period)
            .with_jitter()
            .without_max_times()
    }

    /// Bounds one look at the Lease by the renew deadline, so a hung connection cannot stall
    /// a standby forever.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, LeaderError>>,
    ) -> Result<T, LeaderError> {
        let after = self.settings.renew_deadline;
        tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
            Err(LeaderError::Timeout {
                lease: self.settings.lease(),
                after,
            })
        })
    }

    /// One read and at most one write: create, renew or take over the Lease, or report who
    /// holds it and until when.
    async fn attempt(&self) -> Result<Attempt, LeaderError> {
        let s = &self.settings;
        let api_error = |action, source| LeaderError::Api {
            action,
            lease: s.lease(),
            source,
        };
        let current = self
            .api
            .get_opt(&s.name)
            .await
            .map_err(|e| api_error("reading", e))?;
        let seen = Instant::now();
        let now = Timestamp::now();
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.next_spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(e) if status_code(&e) == Some(409) => Err(self.conflict()),
                Err(e) => Err(api_error("creating", e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        if let Some(holder) = holder.filter(|h| *h != s.identity) {
            let resource_version = current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            let first_seen = {
                let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
                match observed.as_ref() {
                    Some(o) if o.resource_version == resource_version => o.at,
                    _ => {
                        *observed = Some(Observed {
                            resource_version,
                            at: seen,
                        });
                        seen
                    }
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|d| u64::try_from(d).ok())
                .filter(|d| *d > 0)
                .map_or(s.lease_duration, Duration::from_secs);
            let expires = first_seen + duration;
            if seen < expires {
                return Ok(Attempt::Held {
                    holder: holder.to_string(),
                    expires,
                });
            }
            tracing::info!(lease = %s.lease(), previous = %holder, "the lease expired; taking it over");
        }
        let mut next = current.clone();
        next.spec = Some(self.next_spec(Some(&spec), now));
        match self
            .api
            .replace(&s.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(e) if status_code(&e) == Some(409) => Err(self.conflict()),
            Err(e) => Err(api_error("updating", e)),
        }
    }

    /// The spec we write when we create, renew or take over the Lease.
    fn next_spec(&self, old: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let s = &self.settings;
        let ours = old.and_then(|o| o.holder_identity.as_deref()) == Some(s.identity.as_str());
        let old = old.cloned().unwrap_or_default();
        LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(s.duration_seconds()),
            acquire_time: if ours {
                old.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(match old.lease_transitions {
                Some(n) if !ours => n.saturating_add(1),
                Some(n) => n,
                None => 0,
            }),
            ..old
        }
    }

    /// Clears `holderIdentity` if we still hold the Lease, so a standby need not wait.
    async fn release(&self) -> Result<(), LeaderError> {
        let s = &self.settings;
        let release = async {
            let api_error = |action, source| LeaderError::Api {
                action,
                lease: s.lease(),
                source,
            };
            let Some(mut lease) = self
                .api
                .get_opt(&s.name)
                .await
                .map_err(|e| api_error("reading", e))?
            else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match self
                .api
                .replace(&s.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(lease = %s.lease(), "released the lease");
                    Ok(())
                }
                Err(e) if status_code(&e) == Some(409) => Err(self.conflict()),
                Err(e) => Err(api_error("releasing", e)),
            }
        };
        self.bounded(release).await
    }

    fn conflict(&self) -> LeaderError {
        LeaderError::Conflict {
            lease: self.settings.lease(),
        }
    }
}

/// Resolves when the handle asks the election to stop (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
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
