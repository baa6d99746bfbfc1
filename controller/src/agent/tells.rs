//! One tell, one apply. A Kubernetes-mode agent hears of a desired digest twice: its Pod watch
//! sees the controller's annotation, and the controller's nudge asks for the same digest
//! directly. An apply can take the whole reload timeout (15 s), so the second path used to wait
//! for the first and then apply the same digest again: a failing canary was reported after two
//! reload timeouts instead of one, and the repeat swapped the refused version back into
//! `current` while the controller was already rolling it back, so an nginx master that woke in
//! that window loaded a quarantined config (issue 16's failing-reload fault). Here an ask that
//! waited while the same digest was applied takes that apply's outcome, and the watch does not
//! act again on a digest either path has settled.

use std::future::Future;

use tokio::time::Instant;

use super::state::lock;
use super::wire::ApplyOutcome;
use crate::render::Digest;

/// The last apply this agent made for its Pod, and what the watch has acted on.
#[derive(Debug, Default)]
pub struct Tells {
    /// Held for the whole fetch and apply: one apply at a time, in the order asked.
    last: tokio::sync::Mutex<Option<Attempt>>,
    /// The last digest whose outcome was final (applied, or refused for a reason a retry does
    /// not change); the watch does not apply it again.
    settled: std::sync::Mutex<Option<Digest>>,
}

/// One finished apply.
#[derive(Debug)]
struct Attempt {
    digest: Digest,
    finished: Instant,
    outcome: ApplyOutcome,
    transient: bool,
}

impl Tells {
    /// Applies `digest` with `apply` (which says whether a failure was transient), unless an
    /// apply of the same digest finished while this ask waited its turn: then that apply's
    /// outcome, without applying again.
    pub async fn apply_once<F, Fut>(&self, digest: Digest, apply: F) -> (ApplyOutcome, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (ApplyOutcome, bool)>,
    {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(a) = last
            .as_ref()
            .filter(|a| a.digest == digest && a.finished >= asked)
        {
            tracing::debug!(digest = %digest.short(), "joined the apply that ran while this ask waited");
            return (a.outcome.clone(), a.transient);
        }
        let (outcome, transient) = apply().await;
        if !transient {
            self.settle(digest);
        }
        *last = Some(Attempt {
            digest,
            finished: Instant::now(),
            outcome: outcome.clone(),
            transient,
        });
        (outcome, transient)
    }

    /// Whether `digest` was settled by an earlier apply (or found applied already).
    pub fn settled(&self, digest: Digest) -> bool {
        *lock(&self.settled) == Some(digest)
    }

    /// Records `digest` as settled: applied, or refused for good.
    pub fn settle(&self, digest: Digest) {
        *lock(&self.settled) = Some(digest);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    use super::*;
    use crate::agent::wire::ApplyStep;

    fn digest(n: u8) -> Digest {
        crate::render::Bundle::new([("nginx.conf".to_string(), vec![n])].into_iter().collect())
            .digest()
    }

    fn failed(d: Digest) -> ApplyOutcome {
        ApplyOutcome::ApplyFailed {
            digest: d,
            step: ApplyStep::Reload,
            reason: "no new worker generation within 15s".to_string(),
        }
    }

    /// The watch and the nudge ask for one digest while its apply runs: it is applied once and
    /// both get its outcome; asked again afterwards (the controller's second nudge), it is
    /// applied again; the watch sees it settled.
    #[tokio::test(flavor = "current_thread")]
    async fn a_digest_asked_for_while_it_is_applied_is_applied_once() {
        let tells = Arc::new(Tells::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let d = digest(1);
        let apply = |tells: Arc<Tells>, runs: Arc<AtomicUsize>, release: Arc<Notify>| async move {
            tells
                .apply_once(d, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    (failed(d), false)
                })
                .await
        };
        let first = tokio::spawn(apply(
            Arc::clone(&tells),
            Arc::clone(&runs),
            Arc::clone(&release),
        ));
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn(apply(
            Arc::clone(&tells),
            Arc::clone(&runs),
            Arc::clone(&release),
        ));
        // One runtime thread: the second ask runs up to the lock the first holds.
        tokio::task::yield_now().await;
        release.notify_one();
        let (a, b) = (first.await.expect("first"), second.await.expect("second"));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "applied once for two asks");
        assert_eq!(a, b);
        assert!(tells.settled(d));
        release.notify_one();
        apply(Arc::clone(&tells), Arc::clone(&runs), Arc::clone(&release)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "asked again later: applied again"
        );
    }

    /// A transient failure (the API server away while fetching) settles nothing: the watch
    /// tries again on its next event.
    #[tokio::test]
    async fn a_transient_failure_settles_nothing() {
        let tells = Tells::default();
        let d = digest(2);
        tells.apply_once(d, || async { (failed(d), true) }).await;
        assert!(!tells.settled(d));
    }
}
