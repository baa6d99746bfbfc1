//! The controller's (and the local fleet's) side of the agent API: typed calls over the same
//! [`super::wire`] types the server uses. For agents in Kubernetes mode the client carries the
//! bearer token ([`AgentClient::with_token`]) and nudges ([`AgentClient::nudge`]) instead of
//! posting bundles.

use std::net::SocketAddr;
use std::time::Duration;

use crate::render::{Bundle, Digest};

use super::base64;
use super::token::Token;
use super::wire::{AgentState, ApplyOutcome, ApplyRequest, NudgeRequest};

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
    token: Option<Token>,
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

/// Writes the JSON of [`apply_request`] to `out` without building it: the same bytes
/// `serde_json::to_vec(&apply_request(..))` gives, but each file is base64-encoded a slice at a
/// time, so the agent, which keeps every applied bundle in this form, holds no second copy of
/// it (issue 13, finding 9).
pub fn write_apply_request(
    out: &mut (impl std::io::Write + ?Sized),
    bundle: &Bundle,
    commit: &str,
    entry: &str,
) -> std::io::Result<()> {
    out.write_all(b"{\"digest\":")?;
    serde_json::to_writer(&mut *out, &bundle.digest())?;
    out.write_all(b",\"commit\":")?;
    serde_json::to_writer(&mut *out, commit)?;
    out.write_all(b",\"entry\":")?;
    serde_json::to_writer(&mut *out, entry)?;
    out.write_all(b",\"files\":{")?;
    for (i, (path, bytes)) in bundle.files().iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, path)?;
        // Base64's alphabet needs no JSON escaping.
        out.write_all(b":\"")?;
        base64::encode_to(out, bytes)?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"}}")
}

impl AgentClient {
    /// A client for the agent whose API listens on `addr`. Proxy settings of the environment are
    /// ignored: agents are reached directly.
    pub fn new(addr: SocketAddr) -> Result<AgentClient, ClientError> {
        let http = Self::http().map_err(|source| ClientError::Http { addr, source })?;
        Ok(Self::with_http(addr, http))
    }

    /// The HTTP client agents are reached with: no proxies, bounded connects and calls. One of
    /// these can be shared by the clients of many agents (its connection pool keeps the connection
    /// of an agent read every poll open), which is what a controller reading a thousand pods wants.
    pub fn http() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            // reqwest's default `TCP_USER_TIMEOUT` (30 s) would cut an apply that waits its turn:
            // the agent reads a queued apply's body only when the ones ahead are done, so its
            // bytes stay unacknowledged meanwhile. Each call's own timeout bounds the wait.
            .tcp_user_timeout(None)
            // Pods read at the poll rate (canaries, a baseline sample) keep their connection;
            // an idle pod's heartbeat read closes its own (`fleet::Reading::Once`): a kept-alive
            // connection holds about 35 KiB of buffers, 35 MiB at 1,000 pods
            // (docs/benchmarks.md). This drops a kept one once its pod is no longer read fast.
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
    }

    /// A client for the agent at `addr` over a shared [`AgentClient::http`] client.
    pub fn with_http(addr: SocketAddr, http: reqwest::Client) -> AgentClient {
        AgentClient {
            addr,
            http,
            apply_timeout: Duration::from_secs(120),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every call, as agents in Kubernetes mode
    /// require (`None` sends none, for agents in local mode).
    pub fn with_token(mut self, token: impl Into<Option<Token>>) -> Self {
        self.token = token.into();
        self
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

    /// A request to `path`, carrying the token when there is one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
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
            .request(reqwest::Method::GET, "/healthz")
            .send()
            .await
            .map_err(self.http_err())?;
        self.expect_ok(resp).await.map(|_| ())
    }

    /// `GET /v1/state`.
    pub async fn state(&self) -> Result<AgentState, ClientError> {
        self.state_then(true).await
    }

    /// `GET /v1/state`, closing the connection after the answer unless `keep_alive`: a pod read
    /// once per heartbeat would otherwise hold an idle connection's buffers until it times out.
    pub async fn state_then(&self, keep_alive: bool) -> Result<AgentState, ClientError> {
        let mut req = self.request(reqwest::Method::GET, "/v1/state");
        if !keep_alive {
            req = req.header(reqwest::header::CONNECTION, "close");
        }
        let resp = req.send().await.map_err(self.http_err())?;
        let resp = self.expect_ok(resp).await?;
        resp.json().await.map_err(self.http_err())
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, "/metrics")
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
        self.post_for_outcome("/v1/apply", req).await
    }

    /// `POST /v1/nudge`: tells an agent in Kubernetes mode to fetch `digest` from its ConfigMaps
    /// and apply it now; resolves with the outcome of that apply.
    pub async fn nudge(&self, digest: Digest, commit: &str) -> Result<ApplyOutcome, ClientError> {
        let req = NudgeRequest {
            digest,
            commit: commit.to_string(),
        };
        self.post_for_outcome("/v1/nudge", &req).await
    }

    /// Posts `body` and reads an [`ApplyOutcome`] from a 200, 400 or 422 answer.
    async fn post_for_outcome(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<ApplyOutcome, ClientError> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .timeout(self.apply_timeout)
            .json(body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_request_is_the_serialised_one() {
        let mut files = std::collections::BTreeMap::new();
        files.insert("nginx.conf".to_string(), b"events {}\n".to_vec());
        files.insert(
            "conf.d/\u{e9}t\u{e9} \"q\".conf".to_string(),
            vec![0, 255, 10, 34],
        );
        files.insert("big.map".to_string(), vec![7u8; 100_001]);
        let bundle = Bundle::new(files);
        let (commit, entry) = ("c0ffee \"\\ \n", "nginx.conf");
        let mut streamed = Vec::new();
        write_apply_request(&mut streamed, &bundle, commit, entry).unwrap();
        let whole = serde_json::to_vec(&apply_request(&bundle, commit, entry)).unwrap();
        assert_eq!(streamed, whole);
    }

    /// A loopback server answering `{}` to every request, counting the connections it accepted.
    async fn counting_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            seen.clear();
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                            if conn.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_read_once_closes_its_connection_and_a_read_often_keeps_it() {
        let (addr, accepted) = counting_server().await;
        let client = AgentClient::new(addr).unwrap();
        for _ in 0..3 {
            // `{}` is no agent state: the answer is an error, the connection is what counts.
            let _ = client.state_then(true).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        for _ in 0..3 {
            let _ = client.state_then(false).await;
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the first read once closes the kept connection, each later one opens its own"
        );
    }
}
