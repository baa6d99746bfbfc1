//! The leader's tenure: until when, on this replica's monotonic clock, it may still write. The
//! elector's `false` on the watch channel stops the rollouts, but only once the runtime gets
//! round to the elector's task: a process paused past its Lease (SIGSTOP, a VM stall) wakes with
//! every timer due at once, and a worker or a detached tell can run before the elector and
//! write as a leader after another replica took over. A [`Tenure`] is checked at the write
//! itself: every API write of a [`Tenure::fence`]d client, and every nudge and git write-back,
//! is refused once `Instant::now()` is past the renew deadline of the last successful renewal,
//! whatever order the tasks run in (Kubernetes' leader election relies on the same
//! `RenewDeadline < LeaseDuration` margin).
//!
//! What it cannot stop: a write already handed to the kernel when the process was paused (the
//! API server reads it while the process is stopped, before the standby can take over), and a
//! write whose check passed an instant before the pause. Those are as old as the pause itself.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use super::LeaderError;

/// Until when this replica leads, shared by the elector (which extends it at each renewal and
/// ends it when it stops leading) and every writer (which checks it). Clones share the deadline.
#[derive(Debug, Clone)]
pub struct Tenure {
    until: Arc<Mutex<Option<Instant>>>,
    lease: Arc<str>,
}

impl Tenure {
    /// A tenure that has not started (nothing may be written yet) for the Lease `namespace/name`.
    pub fn new(lease: &str) -> Tenure {
        Tenure {
            until: Arc::default(),
            lease: Arc::from(lease),
        }
    }

    /// Whether this replica may still write now: leading, and before the renew deadline.
    pub fn holds(&self) -> bool {
        self.deadline().is_some_and(|until| Instant::now() < until)
    }

    /// The deadline, `None` when not leading.
    pub fn deadline(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why a write was refused: the tenure lapsed or never started.
    pub fn lapsed(&self) -> LeaderError {
        LeaderError::NotLeading {
            lease: self.lease.to_string(),
        }
    }

    /// Leads until `until` (a renewal succeeded).
    pub(super) fn extend(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    /// Ends the tenure (lost, stepping down, or the elector ended).
    pub(super) fn end(&self) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// `client` with every write (any method but GET, HEAD, OPTIONS: watches and reads go on)
    /// refused with [`LeaderError::NotLeading`] unless the tenure holds at the moment the request
    /// is sent. Needs a Tokio runtime (the client's buffer runs as a task).
    pub fn fence(&self, client: kube::Client) -> kube::Client {
        let namespace = client.default_namespace().to_string();
        let tenure = self.clone();
        let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
            let (client, tenure) = (client.clone(), tenure.clone());
            async move {
                if is_write(request.method()) && !tenure.holds() {
                    tracing::warn!(method = %request.method(), path = %request.uri().path(), "not leading any more; write refused");
                    return Err(Box::new(tenure.lapsed()) as tower::BoxError);
                }
                client
                    .send(request)
                    .await
                    .map_err(|e| Box::new(e) as tower::BoxError)
            }
        });
        kube::Client::new(service, namespace)
    }
}

/// Whether a request changes anything on the API server.
fn is_write(method: &hyper::Method) -> bool {
    !matches!(
        *method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_tenure_lapses_at_its_deadline_without_anyone_running() {
        let tenure = Tenure::new("ns/lease");
        assert!(!tenure.holds(), "not leading before the first acquisition");
        tenure.extend(Instant::now() + Duration::from_secs(10));
        assert!(tenure.holds());
        // A deadline now past (as for a process paused beyond it): nobody has to run.
        tenure.extend(Instant::now());
        assert!(
            !tenure.holds(),
            "lapsed at the renew deadline by the clock alone"
        );
        tenure.extend(Instant::now() + Duration::from_secs(10));
        assert!(tenure.clone().holds(), "clones share the deadline");
        tenure.end();
        assert!(!tenure.holds());
    }

    /// A client whose every request is logged and answered with one ConfigMap, so what the
    /// fence let through is visible without a server.
    fn logging_client() -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let sent: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&sent);
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let log = Arc::clone(&log);
            async move {
                log.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.uri().path()));
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "x", "namespace": "ns"}});
                let body = kube::client::Body::from(serde_json::to_vec(&body).unwrap());
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
            }
        });
        (kube::Client::new(service, "ns"), sent)
    }

    #[tokio::test]
    async fn a_fenced_client_sends_no_write_once_the_tenure_lapsed_but_still_reads() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, Patch, PatchParams};

        let (client, sent) = logging_client();
        let tenure = Tenure::new("ns/lease");
        let api: Api<ConfigMap> = Api::namespaced(tenure.fence(client), "ns");
        let tell = serde_json::json!({"metadata": {"annotations": {"a": "b"}}});
        let (params, tell) = (PatchParams::default(), Patch::Merge(&tell));
        let patch = || api.patch("x", &params, &tell);
        let refused = patch()
            .await
            .expect_err("no write before the tenure starts");
        assert!(refused.to_string().contains("not leading"), "{refused}");
        tenure.extend(Instant::now() + Duration::from_secs(10));
        patch().await.expect("written while leading");
        // Past the deadline (a pause): nothing ran, the clock moved on.
        tenure.extend(Instant::now());
        let refused = patch().await.expect_err("refused after the renew deadline");
        assert!(refused.to_string().contains("ns/lease"), "{refused}");
        api.get("x").await.expect("reads go on");
        assert_eq!(
            *sent.lock().unwrap(),
            [
                "PATCH /api/v1/namespaces/ns/configmaps/x",
                "GET /api/v1/namespaces/ns/configmaps/x"
            ]
        );
    }

    #[test]
    fn only_reads_pass_a_lapsed_fence() {
        assert!(!is_write(&hyper::Method::GET));
        assert!(!is_write(&hyper::Method::HEAD));
        for m in [
            hyper::Method::PATCH,
            hyper::Method::PUT,
            hyper::Method::POST,
            hyper::Method::DELETE,
        ] {
            assert!(is_write(&m), "{m}");
        }
    }
}
