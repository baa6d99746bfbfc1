//! The agent's HTTP API. The controller drives agents through it (DESIGN §3.6): it posts bundles
//! and reads state; Prometheus scrapes `/metrics`; the kubelet asks `/healthz`.
//!
//! `POST /v1/apply` waits for its turn when another apply runs (applies are serialised on one
//! lock, in arrival order, each bounded by the nginx timeouts), so there is no 409: a caller
//! always gets the outcome of its own bundle.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::apply;
use super::metrics;
use super::state::Shared;
use super::wire::{ApplyOutcome, ApplyRequest, ApplyStep};

/// The router over the shared agent state.
pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.cfg.max_request_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/state", get(state))
        .route("/v1/apply", post(apply_handler))
        .route("/metrics", get(metrics_handler))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
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
