//! Agents telling the controller that something changed (`POST /v1/agents/changed` on the health
//! and metrics port): an apply, a drift episode opening or closing, the agent starting. Idle
//! pods are read only once per heartbeat (`runner::reads`); a report makes the worker driving
//! the pod read it at its next poll, so what changed is seen within a poll, not a heartbeat.
//!
//! A report carries nothing the controller believes but the pod's name: the worker then reads
//! the pod's state from its agent, as it always does. The rules are the agents' token rules
//! turned around: the agents of namespace N hold `Token::for_namespace(N)` of the controller's
//! master, and a report for a pod of N must carry that token. A report that cannot be queued
//! (the controller is behind) is dropped: the heartbeat still reads the pod.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::agent::Token;

/// Where agents report (`--report-to http://<controller>:<metrics port>/v1/agents/changed`).
pub const AGENT_REPORT_PATH: &str = "/v1/agents/changed";

/// Reports waiting for the controller; more are dropped.
const QUEUE: usize = 4096;

/// One agent's report: its pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
}

/// The receiving end, shared by the HTTP route and the controller (which may start and stop
/// several times in one process, as leadership comes and goes).
#[derive(Clone)]
pub struct AgentReports {
    master: Token,
    tx: mpsc::Sender<AgentReport>,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<AgentReport>>>,
}

impl std::fmt::Debug for AgentReports {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentReports").finish_non_exhaustive()
    }
}

impl AgentReports {
    /// Reports checked against the agents' token master.
    pub fn new(master: Token) -> AgentReports {
        let (tx, rx) = mpsc::channel(QUEUE);
        AgentReports {
            master,
            tx,
            rx: std::sync::Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    /// The next report; `None` once no sender is left. One consumer at a time.
    pub async fn next(&self) -> Option<AgentReport> {
        self.rx.lock().await.recv().await
    }

    /// The route, for the health server's router.
    pub fn router(&self) -> Router {
        Router::new()
            .route(AGENT_REPORT_PATH, post(receive))
            .layer(DefaultBodyLimit::max(1024))
            .with_state(self.clone())
    }
}

async fn receive(
    State(reports): State<AgentReports>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(report) = serde_json::from_slice::<AgentReport>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if !is_name(&report.namespace) || !is_name(&report.pod) {
        return StatusCode::BAD_REQUEST;
    }
    let presented = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !reports
        .master
        .for_namespace(&report.namespace)
        .authorizes(presented)
    {
        return StatusCode::UNAUTHORIZED;
    }
    match reports.tx.try_send(report) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(mpsc::error::TrySendError::Full(_)) => StatusCode::TOO_MANY_REQUESTS,
        Err(mpsc::error::TrySendError::Closed(_)) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A Kubernetes object name (DNS-1123 subdomain characters, at most 253).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn post(body: &str, token: Option<&str>) -> Request<Body> {
        let mut req = Request::post(AGENT_REPORT_PATH);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        req.body(Body::from(body.to_string())).expect("request")
    }

    #[tokio::test]
    async fn a_report_needs_its_namespaces_agent_token_and_is_queued() {
        let master = Token::new("a-master-token-of-enough-length", "test").expect("token");
        let reports = AgentReports::new(master.clone());
        let body = r#"{"namespace":"edge","pod":"proxy-0"}"#;
        let edge = master.for_namespace("edge");
        let other = master.for_namespace("other");
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(other.expose()), StatusCode::UNAUTHORIZED),
            (Some(master.expose()), StatusCode::UNAUTHORIZED),
            (Some(edge.expose()), StatusCode::ACCEPTED),
        ] {
            let got = reports
                .router()
                .oneshot(post(body, token))
                .await
                .expect("answer");
            assert_eq!(got.status(), want, "token {token:?}");
        }
        let bad = r#"{"namespace":"edge","pod":"../x"}"#;
        let got = reports
            .router()
            .oneshot(post(bad, Some(edge.expose())))
            .await
            .expect("answer");
        assert_eq!(got.status(), StatusCode::BAD_REQUEST);
        let queued = reports.next().await.expect("one report");
        assert_eq!(queued.pod, "proxy-0");
        assert!(
            reports.rx.lock().await.try_recv().is_err(),
            "only the authorized one"
        );
    }
}
