//! The controller's HTTP side for the kubelet and Prometheus: `/healthz` (the process answers),
//! `/readyz` (the controller's caches are synced; a standby replica is ready too, since it is
//! ready to take over) and `/metrics` ([`Metrics`] in the OpenMetrics text format); and, on the
//! same port, the agents' change reports ([`super::agent_reports`]).
//!
//! Readiness is a flag the controller flips ([`Readiness::set_ready`]); until then `/readyz`
//! answers 503 with the reason, so a rolling update waits for a replica that can work.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::Metrics;

/// Whether the controller can do its work yet, and why not; cheap to clone and share with the
/// controller, which flips it.
#[derive(Debug, Clone)]
pub struct Readiness {
    not_ready: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// Not ready, for `reason` (shown by `/readyz`).
    pub fn not_ready(reason: impl Into<String>) -> Readiness {
        Readiness {
            not_ready: Arc::new(Mutex::new(Some(reason.into()))),
        }
    }

    /// The caches are synced: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    /// Not ready any more (a watch that cannot recover), for `reason`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), String> {
        match self.lock().as_ref() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// A poisoned lock still holds a whole value: every write replaces it in one step.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.not_ready.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct HealthState {
    /// Served by `/metrics`.
    pub metrics: Metrics,
    /// Served by `/readyz`.
    pub readiness: Readiness,
    /// Agents' change reports ([`super::agent_reports`]), taken when the controller has the
    /// agents' token master.
    pub reports: Option<super::agent_reports::AgentReports>,
}

/// Why the health server stopped.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The address could not be bound.
    #[error("binding the health and metrics address {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving health and metrics: {0}")]
    Serve(std::io::Error),
}

/// The three endpoints (and the agents' reports when taken), for serving on a listener of
/// one's own.
pub fn router(state: HealthState) -> Router {
    let reports = state.reports.as_ref().map(|r| r.router());
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match reports {
        Some(reports) => router.merge(reports),
        None => router,
    }
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    serve_on(listener, state, shutdown).await
}

/// Serves on a bound listener until `shutdown` resolves (tests bind port 0 and read the port).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HealthError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HealthError::Serve)
}

async fn readyz(State(state): State<HealthState>) -> Response {
    match state.readiness.check() {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<HealthState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer_and_readyz_flips() {
        let listener = tokio::net::TcpListener::bind("127.0.96.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Metrics::new();
        let readiness = Readiness::not_ready("waiting for the ProxyRollout cache to sync");
        let state = HealthState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            reports: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, state, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{base}{path}")).send();

        let r = get("/healthz").await.unwrap();
        assert_eq!(r.status(), 200);

        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("ProxyRollout cache"));
        readiness.set_ready();
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        readiness.set_not_ready("watch failed");
        assert_eq!(get("/readyz").await.unwrap().status(), 503);

        metrics.set_leader(true);
        metrics.count_error(super::super::metrics::ErrorCategory::Kube);
        let r = get("/metrics").await.unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        let text = r.text().await.unwrap();
        assert!(text.contains("switchback_is_leader 1"), "{text}");
        assert!(
            text.contains("switchback_errors_total{category=\"kube\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");

        assert_eq!(get("/nope").await.unwrap().status(), 404);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
