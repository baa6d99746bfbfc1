//! The agent's HTTP API. The controller drives agents through it (DESIGN §3.6): it posts bundles
//! and reads state; Prometheus scrapes `/metrics`; the kubelet asks `/healthz`.
//!
//! `POST /v1/apply` waits for its turn when another apply runs (applies are serialised on one
//! lock, in arrival order, each bounded by the nginx timeouts), so there is no 409: a caller
//! always gets the outcome of its own bundle.
//!
//! In Kubernetes mode (`docs/agent-kubernetes.md`) bundles are not accepted over HTTP: the
//! controller nudges (`POST /v1/nudge`) and the agent fetches the bundle itself; every endpoint
//! but `/healthz` then wants `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::apply;
use super::kube;
use super::metrics;
use super::state::Shared;
use super::wire::{ApplyOutcome, ApplyRequest, ApplyStep, NudgeRequest};

/// The router over the shared agent state. In Kubernetes mode `/v1/apply` refuses every bundle
/// (they come from ConfigMaps), `/v1/nudge` is served instead, and every route but `/healthz`
/// wants the bearer token.
pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.cfg.max_request_bytes;
    let kubernetes = shared.cfg.kubernetes.is_some();
    let mut api = Router::new()
        .route("/v1/state", get(state))
        .route("/metrics", get(metrics_handler));
    if kubernetes {
        api = api
            .route("/v1/apply", post(apply_disabled))
            .route("/v1/nudge", post(nudge_handler))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&shared),
                require_token,
            ));
    } else {
        api = api.route("/v1/apply", post(apply_handler));
    }
    api.route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// Lets a request through only with `Authorization: Bearer <token>` (compared in constant
/// time); 401 otherwise. Neither the expected nor the presented token is logged.
async fn require_token(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let ok = shared
        .cfg
        .kubernetes
        .as_ref()
        .is_some_and(|k| k.token.authorizes(presented));
    if !ok {
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
/// the body is not the documented JSON at all (there is no digest to report then).
async fn apply_handler(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(req)) => req,
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
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
async fn nudge_handler(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<NudgeRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(req)) => req,
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
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
