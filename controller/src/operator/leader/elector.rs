//! The election loop behind [`super::spawn`]: read the Lease, create, renew or take it over with
//! the resourceVersion read, step down by clearing the holder. The timing argument is in the
//! parent module's documentation.

use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
// The jiff that k8s-openapi's MicroTime wraps (0.2), which differs from the workspace's.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::share::ShareGate;
use super::tenure::Tenure;
use super::{LeaderError, LeaseSettings};

/// The sending side of "am I the leader", which says `false` when the task owning it ends,
/// including by abort: the receiver never keeps saying `true` for a dead elector. It also keeps
/// the [`Tenure`] writers check, ended before `false` is said.
pub(super) struct FalseOnDrop(pub(super) watch::Sender<bool>, pub(super) Tenure);

impl FalseOnDrop {
    fn set(&self, leading: bool) {
        if !leading {
            self.1.end();
        }
        self.0
            .send_if_modified(|l| std::mem::replace(l, leading) != leading);
    }

    /// Writers may write until `until` (a renew deadline on this replica's clock).
    fn hold_until(&self, until: Instant) {
        self.1.extend(until);
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

impl Attempt {
    /// Free, but this replica waits for its fair share until `ready`.
    fn held_for_share(ready: Instant) -> Attempt {
        Attempt::Held {
            holder: "(nobody; waiting for this replica's fair share)".to_string(),
            expires: ready,
        }
    }
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

/// One replica's side of the election: the loop that acquires, renews and releases the Lease.
pub(super) struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Mutex<Option<Observed>>,
    /// With several shards: this replica's fair share, consulted before taking a free Lease.
    gate: Option<ShareGate>,
    /// Since when (our clock) the Lease has been seen empty or missing, for the fair share.
    free_since: Mutex<Option<Instant>>,
}

impl Elector {
    pub(super) fn new(api: Api<Lease>, settings: LeaseSettings, gate: Option<ShareGate>) -> Self {
        Elector {
            api,
            settings,
            observed: Mutex::new(None),
            gate,
            free_since: Mutex::new(None),
        }
    }

    pub(super) async fn run(
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
                    if let Some(gate) = &self.gate {
                        gate.share.holding(gate.shard).await;
                    }
                    let ended = self.lead(&leading, &mut stop, start).await;
                    if let Some(gate) = &self.gate {
                        gate.share.released(gate.shard).await;
                    }
                    match ended {
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
        // The tenure first: a writer that sees `true` finds it already set.
        leading.hold_until(acquired_at + s.renew_deadline);
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
                    leading.hold_until(start + s.renew_deadline);
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
            let free_at = self.free_since(seen);
            let turn = match &self.gate {
                Some(gate) => {
                    let turn = gate.share.turn().await;
                    let ready = turn.ready_at(gate.shard, free_at, false);
                    if Instant::now() < ready {
                        return Ok(Attempt::held_for_share(ready));
                    }
                    Some((turn, gate.shard))
                }
                None => None,
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.next_spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.clear_free_since();
                    if let Some((turn, shard)) = turn {
                        turn.acquired(shard);
                    }
                    Ok(Attempt::Leading)
                }
                Err(e) if status_code(&e) == Some(409) => Err(self.conflict()),
                Err(e) => Err(api_error("creating", e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let free_at = if let Some(holder) = holder.filter(|h| *h != s.identity) {
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
                self.clear_free_since();
                if let Some(gate) = &self.gate {
                    gate.share.seen_held(gate.shard, holder, expires);
                }
                return Ok(Attempt::Held {
                    holder: holder.to_string(),
                    expires,
                });
            }
            Some(expires)
        } else if holder.is_none() {
            Some(self.free_since(seen))
        } else {
            None
        };
        // A Lease that is not ours (empty or expired): with shards, wait for our fair share.
        let takeover = holder.is_some_and(|h| h != s.identity);
        let turn = match (&self.gate, free_at) {
            (Some(gate), Some(free_at)) => {
                let turn = gate.share.turn().await;
                let ready = turn.ready_at(gate.shard, free_at, takeover);
                if Instant::now() < ready {
                    return Ok(Attempt::held_for_share(ready));
                }
                Some((turn, gate.shard))
            }
            _ => None,
        };
        if let Some(previous) = holder.filter(|h| *h != s.identity) {
            tracing::info!(lease = %s.lease(), %previous, "the lease expired; taking it over");
        }
        let mut next = current.clone();
        next.spec = Some(self.next_spec(Some(&spec), now));
        match self
            .api
            .replace(&s.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                self.clear_free_since();
                if let Some((turn, shard)) = turn {
                    turn.acquired(shard);
                }
                Ok(Attempt::Leading)
            }
            Err(e) if status_code(&e) == Some(409) => Err(self.conflict()),
            Err(e) => Err(api_error("updating", e)),
        }
    }

    /// Since when the Lease has been seen free: the first of our looks that found it so.
    fn free_since(&self, seen: Instant) -> Instant {
        let mut free = self.free_since.lock().unwrap_or_else(|p| p.into_inner());
        *free.get_or_insert(seen)
    }

    fn clear_free_since(&self) {
        *self.free_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
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
