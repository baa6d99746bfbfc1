//! The controller's (and the local fleet's) side of the agent API: typed calls over the same
//! [`super::wire`] types the server uses.

use std::net::SocketAddr;
use std::time::Duration;

use crate::render::Bundle;

use super::base64;
use super::wire::{AgentState, ApplyOutcome, ApplyRequest};

/// Why a call to an agent failed. An apply the agent refused is not an error: it is an
/// [`ApplyOutcome::ApplyFailed`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, timeout, broken response.
    #[error("agent at {addr}: {source}")]
    Http {
        /// The agent.
        addr: SocketAddr,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the API documents.
    #[error("agent at {addr} answered {status}: {body}")]
    Unexpected {
        /// The agent.
        addr: SocketAddr,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// A client for one agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    addr: SocketAddr,
    http: reqwest::Client,
    apply_timeout: Duration,
}

/// Builds the body of `POST /v1/apply` for a bundle.
pub fn apply_request(bundle: &Bundle, commit: &str, entry: &str) -> ApplyRequest {
    ApplyRequest {
        digest: bundle.digest(),
        commit: commit.to_string(),
        entry: entry.to_string(),
        files: bundle
            .files()
            .iter()
            .map(|(p, b)| (p.clone(), base64::encode(b)))
            .collect(),
    }
}

impl AgentClient {
    /// A client for the agent whose API listens on `addr`. Proxy settings of the environment are
    /// ignored: agents are reached directly.
    pub fn new(addr: SocketAddr) -> Result<AgentClient, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|source| ClientError::Http { addr, source })?;
        Ok(AgentClient {
            addr,
            http,
            apply_timeout: Duration::from_secs(120),
        })
    }

    /// Bounds one apply call (default 120 s: an apply may queue behind another and waits for
    /// nginx to reload).
    pub fn with_apply_timeout(mut self, timeout: Duration) -> Self {
        self.apply_timeout = timeout;
        self
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn http_err(&self) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
        move |source| ClientError::Http {
            addr: self.addr,
            source,
        }
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let resp = self
            .http
            .get(self.url("/healthz"))
            .send()
            .await
            .map_err(self.http_err())?;
        self.expect_ok(resp).await.map(|_| ())
    }

    /// `GET /v1/state`.
    pub async fn state(&self) -> Result<AgentState, ClientError> {
        let resp = self
            .http
            .get(self.url("/v1/state"))
            .send()
            .await
            .map_err(self.http_err())?;
        let resp = self.expect_ok(resp).await?;
        resp.json().await.map_err(self.http_err())
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .map_err(self.http_err())?;
        let resp = self.expect_ok(resp).await?;
        resp.text().await.map_err(self.http_err())
    }

    /// `POST /v1/apply` with `bundle`.
    pub async fn apply(
        &self,
        bundle: &Bundle,
        commit: &str,
        entry: &str,
    ) -> Result<ApplyOutcome, ClientError> {
        self.apply_raw(&apply_request(bundle, commit, entry)).await
    }

    /// `POST /v1/apply` with a prepared request (tests use it to send tampered ones).
    pub async fn apply_raw(&self, req: &ApplyRequest) -> Result<ApplyOutcome, ClientError> {
        let resp = self
            .http
            .post(self.url("/v1/apply"))
            .timeout(self.apply_timeout)
            .json(req)
            .send()
            .await
            .map_err(self.http_err())?;
        let status = resp.status().as_u16();
        if matches!(status, 200 | 400 | 422) {
            let body = resp.bytes().await.map_err(self.http_err())?;
            if let Ok(outcome) = serde_json::from_slice::<ApplyOutcome>(&body) {
                return Ok(outcome);
            }
            return Err(self.unexpected(status, &body));
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(self.unexpected(status, &body))
    }

    async fn expect_ok(&self, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(self.unexpected(status, &body))
    }

    fn unexpected(&self, status: u16, body: &[u8]) -> ClientError {
        let text = String::from_utf8_lossy(body);
        ClientError::Unexpected {
            addr: self.addr,
            status,
            body: text.chars().take(500).collect(),
        }
    }
}
