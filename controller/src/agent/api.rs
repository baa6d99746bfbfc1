//! The agent's HTTP API. The controller drives agents through it (DESIGN §3.6): it posts bundles
//! and reads state; Prometheus scrapes `/metrics`; the kubelet asks `/healthz`.
//!
//! Every endpoint but `/healthz` wants `Authorization: Bearer <token>`, in both modes: whoever
//! can post a bundle decides what nginx serves (issue 13, finding 4).
//!
//! `POST /v1/apply` waits for its turn when another apply runs (applies are serialised, in
//! arrival order, each bounded by the nginx timeouts), so a caller gets the outcome of its own
//! bundle; its body is read only once its turn has come, so one bundle is in memory at a time
//! however many arrive together. At most `max_waiting_applies` wait; more are answered 503 with
//! `Retry-After` (issue 13, finding 9).
//!
//! In Kubernetes mode (`docs/agent-kubernetes.md`) bundles are not accepted over HTTP: the
//! controller nudges (`POST /v1/nudge`) and the agent fetches the bundle itself.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::apply;
use super::kube;
use super::metrics;
use super::state::Shared;
use super::wire::{ApplyOutcome, ApplyRequest, ApplyStep, NudgeRequest};

/// Seconds a client turned away by a full apply queue is told to wait.
const RETRY_AFTER_SECS: &str = "5";
/// Largest `/v1/nudge` body: a digest and a commit.
const MAX_NUDGE_BYTES: usize = 64 * 1024;

/// The router over the shared agent state. In Kubernetes mode `/v1/apply` refuses every bundle
/// (they come from ConfigMaps) and `/v1/nudge` is served instead. Every route but `/healthz`
/// wants the bearer token, checked before any body is read.
pub fn router(shared: Arc<Shared>) -> Router {
    let kubernetes = shared.cfg.kubernetes.is_some();
    let mut api = Router::new()
        .route("/v1/state", get(state))
        .route("/metrics", get(metrics_handler));
    if kubernetes {
        api = api
            .route("/v1/apply", post(apply_disabled))
            .route("/v1/nudge", post(nudge_handler));
    } else {
        api = api.route("/v1/apply", post(apply_handler));
    }
    api.route_layer(middleware::from_fn_with_state(
        Arc::clone(&shared),
        require_token,
    ))
    .route("/healthz", get(healthz))
    .with_state(shared)
}

/// Lets a request through only with `Authorization: Bearer <token>` (compared in constant
/// time); 401 otherwise. Neither the expected nor the presented token is logged.
async fn require_token(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !shared.api_token.authorizes(presented) {
        tracing::warn!(path = %req.uri().path(), with_header = presented.is_some(), "refused a request without the right bearer token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response();
    }
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.state()).into_response()
}

/// 200 with `applied`; 400 with `apply_failed` when the request itself is wrong (step
/// `verify`); 422 with `apply_failed` for every other refusal; 400 with a plain-text reason when
/// the body is not the documented JSON at all (there is no digest to report then); 413 for a
/// body over the limit, 408 for one that does not arrive in time, 503 with `Retry-After` when
/// the apply queue is full.
async fn apply_handler(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let limits = &shared.cfg.limits;
    let (parts, body) = request.into_parts();
    let declared = declared_length(&parts.headers);
    if declared.is_some_and(|n| n > limits.max_request_bytes as u64) {
        return too_large(limits.max_request_bytes);
    }
    let Some(place) = shared.apply_gate.enter() else {
        tracing::warn!("apply queue full; answered 503");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECS)],
            "applies are queued already; retry later\n",
        )
            .into_response();
    };
    let Some(_turn) = place.turn().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n").into_response();
    };
    let req: ApplyRequest = match read_json(
        body,
        declared,
        limits.max_request_bytes,
        limits.body_timeout,
    )
    .await
    {
        Ok(req) => req,
        Err(response) => return response,
    };
    let outcome = apply::apply(&shared, req).await;
    let code = match &outcome {
        ApplyOutcome::Applied { .. } => StatusCode::OK,
        ApplyOutcome::ApplyFailed {
            step: ApplyStep::Verify,
            ..
        } => StatusCode::BAD_REQUEST,
        ApplyOutcome::ApplyFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (code, Json(outcome)).into_response()
}

/// Reads a JSON body of at most `limit` bytes within `timeout` and parses it; the raw bytes are
/// dropped before the caller goes on. The error is the answer to give.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    declared: Option<u64>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<T, Response> {
    let bytes = match tokio::time::timeout(timeout, read_capped(body, declared, limit)).await {
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {timeout:?}\n"),
            )
                .into_response());
        }
        Ok(Err(BodyError::TooLarge)) => return Err(too_large(limit)),
        Ok(Err(BodyError::Broken(e))) => {
            return Err(
                (StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")).into_response(),
            );
        }
        Ok(Ok(bytes)) => bytes,
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("the body is not the documented JSON: {e}\n"),
        )
            .into_response()
    })
}

/// Why a body could not be read.
enum BodyError {
    /// Past the limit.
    TooLarge,
    /// The connection failed mid-body.
    Broken(axum::Error),
}

/// Reads a body chunk by chunk into one buffer sized from `Content-Length` (so it is not
/// reallocated, which would hold two copies for a moment), giving up past `limit`.
async fn read_capped(
    body: Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt as _;
    let expected = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let mut buf = Vec::with_capacity(expected);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        if buf.len().saturating_add(chunk.len()) > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The `Content-Length` the client declared, if any and readable.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(limit: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over the agent's limit of {limit} bytes\n"),
    )
        .into_response()
}

/// Kubernetes mode: bundles are never taken over HTTP, so reaching the pod IP (and even holding
/// the token) is not enough to push arbitrary config.
async fn apply_disabled() -> Response {
    (
        StatusCode::FORBIDDEN,
        "this agent runs in Kubernetes mode: it takes no bundles over HTTP; store them in \
         ConfigMaps and POST /v1/nudge {digest, commit}\n",
    )
        .into_response()
}

/// 200 with `applied`, 422 with `apply_failed` (step `fetch` when the API server could not be
/// read, `verify` when the ConfigMaps do not hash to the digest, others as for `/v1/apply`), 400
/// with a plain-text reason when the body is not the documented JSON.
async fn nudge_handler(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let timeout = shared.cfg.limits.body_timeout;
    let body = request.into_body();
    let req: NudgeRequest = match read_json(body, None, MAX_NUDGE_BYTES, timeout).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    let Some(source) = shared.pod_source.clone() else {
        return (StatusCode::FORBIDDEN, "not in Kubernetes mode\n").into_response();
    };
    let outcome = kube::nudge(&shared, &source, req.digest, &req.commit).await;
    let code = if outcome.is_applied() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (code, Json(outcome)).into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    match metrics::render(&shared) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
