//! Push webhooks: a small HTTP server, on its own port, that turns an authenticated "someone
//! pushed" from a git host into a [`Trigger`] ("fetch this repository now"), so a push reaches the
//! canary in seconds instead of a poll interval. The poll stays as the fallback: the receiver never
//! decides what is rolled out, it only makes the next fetch happen sooner, so a lost or refused
//! request costs latency and nothing else.
//!
//! Routes are `POST /hooks/<provider>/<hook-id>` ([`Provider`]); the hook id selects the secret
//! through [`HookSecrets`], which the controller fills from Kubernetes Secrets. A request is
//! answered, in this order:
//! - 404 for an unknown provider or hook id (no secret): nothing to authenticate against;
//! - 401 (429 once its source address has failed too often, see [`RateLimiter`]), before its
//!   body is read, when it lacks the provider's signature (or token) header;
//! - 503 when [`WebhookConfig::max_in_flight`] bodies are already being read, or its source
//!   address has [`WebhookConfig::max_in_flight_per_source`] of them (so memory is bounded across
//!   connections too, and one address cannot take every slot);
//! - 413 when the body is larger than [`WebhookConfig::max_body`] (checked on `Content-Length` and
//!   while reading, so memory stays bounded), 408 when it does not arrive within
//!   [`WebhookConfig::body_timeout`];
//! - 401 (or 429 as above), with no detail, when the signature (or GitLab's token) does not match
//!   the exact body;
//! - 409 `duplicate delivery` when this delivery was accepted before ([`replay`]);
//! - 429 when the hook's token bucket is empty: authentication comes first, so requests without
//!   the secret cannot use up a hook's budget and make a signed push wait (issue 13, finding 8);
//! - 200 `ignored` for an authenticated event that is not a push (ping, issues...);
//! - 400 for an authenticated push whose payload names no repository or ref;
//! - 202 otherwise, one [`Trigger`] per ref, sent with `try_send` on a bounded channel: when the
//!   controller is behind, the trigger is dropped (logged, counted), never waited for.
//!
//! [`serve`] serves the routes with a request-head deadline and a connection cap
//! ([`crate::http_server`]), so idle or half-sent connections cannot pile up.

mod limit;
mod metrics;
mod provider;
pub mod replay;
mod trigger;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::http_server::ServeLimits;

pub use limit::{RateLimiter, SourceShares};
pub use metrics::{Outcome, WebhookMetrics};
pub use provider::{MAX_REFS_PER_PUSH, Provider, Push};
pub use replay::{DeliveryKeys, ReplayCache};
pub use trigger::{Trigger, full_ref, repository_key};

/// A webhook secret. Its `Debug` never shows the bytes, so it can sit in structs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct HookSecret(Arc<[u8]>);

impl HookSecret {
    /// Wraps the secret's bytes (a Secret's `token` value, as is).
    pub fn new(bytes: impl Into<Vec<u8>>) -> HookSecret {
        HookSecret(Arc::from(bytes.into()))
    }

    /// The bytes, to key the HMAC with.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSecret(***)")
    }
}

/// Where the receiver finds the secret of a hook id. A trait so the controller can back it with
/// whatever it keeps Secrets in, and tests with a map; [`SecretMap`] is the ready-made one.
pub trait HookSecrets: Send + Sync + 'static {
    /// The secret of `hook`, `None` when no such hook is configured (answered 404).
    fn secret(&self, hook: &str) -> Option<HookSecret>;
}

/// A hook id → secret map the controller updates as Secrets and rollouts come and go.
#[derive(Debug, Default)]
pub struct SecretMap {
    secrets: RwLock<HashMap<String, HookSecret>>,
}

impl SecretMap {
    /// An empty map: every hook answers 404 until a secret is set.
    pub fn new() -> SecretMap {
        SecretMap::default()
    }

    /// Sets (or replaces) the secret of `hook`.
    pub fn set(&self, hook: &str, secret: HookSecret) {
        // Poison only means a writer panicked between two whole inserts; the map is sound.
        let mut map = self.secrets.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(hook.to_string(), secret);
    }

    /// Forgets `hook`: it answers 404 from now on.
    pub fn remove(&self, hook: &str) {
        let mut map = self.secrets.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(hook);
    }

    /// Replaces every secret at once (a full resync from the API).
    pub fn replace_all(&self, secrets: HashMap<String, HookSecret>) {
        let mut map = self.secrets.write().unwrap_or_else(PoisonError::into_inner);
        *map = secrets;
    }
}

impl HookSecrets for SecretMap {
    fn secret(&self, hook: &str) -> Option<HookSecret> {
        let map = self.secrets.read().unwrap_or_else(PoisonError::into_inner);
        map.get(hook).cloned()
    }
}

/// The receiver's limits. The defaults suit a git host's webhooks; tests shrink them.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The largest body accepted; larger is 413. Push payloads are a few KiB to a few hundred.
    pub max_body: usize,
    /// How long the whole body may take to arrive; slower is 408.
    pub body_timeout: Duration,
    /// Requests one hook may send at once before 429.
    pub burst: u32,
    /// Requests per second one hook may send on average.
    pub per_second: f64,
    /// Requests whose bodies may be read at once, over all hooks; more are answered 503. With
    /// `max_body` it bounds the memory bodies can take: `max_in_flight × max_body`.
    pub max_in_flight: usize,
    /// Of those, how many one source address may have at once; more are answered 503.
    pub max_in_flight_per_source: usize,
    /// Failed authentications one source address may have at once before its failures are
    /// answered 429 instead of 401.
    pub unauthenticated_burst: u32,
    /// Failed authentications per second one source address may have on average.
    pub unauthenticated_per_second: f64,
    /// Deliveries remembered per provider to refuse replays ([`replay`]).
    pub replay_capacity: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            burst: 20,
            per_second: 1.0,
            max_in_flight: 32,
            max_in_flight_per_source: 8,
            unauthenticated_burst: 10,
            unauthenticated_per_second: 1.0,
            replay_capacity: replay::DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
struct Receiver {
    secrets: Arc<dyn HookSecrets>,
    config: Arc<WebhookConfig>,
    limiter: Arc<RateLimiter>,
    unauthenticated: Arc<RateLimiter>,
    replays: Arc<ReplayCache>,
    in_flight: Arc<tokio::sync::Semaphore>,
    shares: Arc<SourceShares>,
    triggers: mpsc::Sender<Trigger>,
    metrics: WebhookMetrics,
}

/// The webhook routes. `triggers` should be bounded (e.g. `mpsc::channel(256)`); the receiver
/// only ever `try_send`s on it. Serve it with [`serve`] on its own listener, so the webhook port
/// can be exposed through an Ingress without exposing `/metrics` or the health endpoints.
pub fn router(
    secrets: Arc<dyn HookSecrets>,
    config: WebhookConfig,
    triggers: mpsc::Sender<Trigger>,
    metrics: WebhookMetrics,
) -> Router {
    let limiter = Arc::new(RateLimiter::new(config.burst, config.per_second));
    let unauthenticated = Arc::new(RateLimiter::new(
        config.unauthenticated_burst,
        config.unauthenticated_per_second,
    ));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1)));
    let state = Receiver {
        secrets,
        in_flight,
        shares: Arc::new(SourceShares::new(config.max_in_flight_per_source)),
        unauthenticated,
        replays: Arc::new(ReplayCache::new(config.replay_capacity)),
        config: Arc::new(config),
        limiter,
        triggers,
        metrics,
    };
    Router::new()
        .route("/hooks/{provider}/{hook}", post(receive))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes (STYLE rule 16: the task is owned and
/// ends on SIGTERM with the rest of the controller), with the default request-head deadline
/// (10 s) and connection cap (64).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServeLimits::default(), shutdown).await
}

/// [`serve`] with other limits (tests shorten the head deadline).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http_server::serve(listener, router, limits, shutdown).await
}

/// Whether a hook id can be one: 1–253 characters of `[A-Za-z0-9._-]`, like a Kubernetes name
/// joined with its namespace by a dot.
fn valid_hook_id(hook: &str) -> bool {
    (1..=253).contains(&hook.len())
        && hook
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[tracing::instrument(name = "webhook", skip_all, fields(provider = %provider, hook = %hook))]
async fn receive(
    State(receiver): State<Receiver>,
    Path((provider, hook)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(kind) = Provider::from_path(&provider) else {
        return reply(StatusCode::NOT_FOUND, "no such hook");
    };
    let (status, outcome) = handle(&receiver, kind, &hook, request).await;
    receiver.metrics.count(kind.label(), outcome);
    if outcome != Outcome::Accepted {
        tracing::debug!(outcome = outcome.label(), "webhook request not accepted");
    }
    let text = match outcome {
        Outcome::Accepted => "accepted",
        Outcome::Ignored => "ignored",
        Outcome::UnknownHook => "no such hook",
        Outcome::RateLimited | Outcome::SourceLimited => "too many requests",
        Outcome::Duplicate => "duplicate delivery",
        Outcome::Busy => "busy",
        Outcome::TooLarge => "body too large",
        Outcome::Timeout => "body too slow",
        Outcome::Unauthorized => "unauthorized",
        Outcome::BadPayload => "not a push payload",
    };
    reply(status, text)
}

async fn handle(
    receiver: &Receiver,
    provider: Provider,
    hook: &str,
    request: Request,
) -> (StatusCode, Outcome) {
    let secret = match valid_hook_id(hook).then(|| receiver.secrets.secret(hook)) {
        // An empty secret would let anyone sign (HMAC with an empty key): treated as no secret.
        Some(Some(secret)) if !secret.expose().is_empty() => secret,
        _ => return (StatusCode::NOT_FOUND, Outcome::UnknownHook),
    };
    let source = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    if !provider.has_credentials(request.headers()) {
        return receiver.refuse_unauthenticated(&source);
    }
    let Ok(_permit) = receiver.in_flight.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, Outcome::Busy);
    };
    let Some(_share) = receiver.shares.enter(&source) else {
        return (StatusCode::SERVICE_UNAVAILABLE, Outcome::Busy);
    };
    let (parts, body) = request.into_parts();
    let config = &receiver.config;
    if declared_length(&parts.headers).is_some_and(|n| n > config.max_body as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, Outcome::TooLarge);
    }
    let body = match tokio::time::timeout(config.body_timeout, read_capped(body, config.max_body))
        .await
    {
        Err(_elapsed) => return (StatusCode::REQUEST_TIMEOUT, Outcome::Timeout),
        Ok(Err(BodyError::TooLarge)) => return (StatusCode::PAYLOAD_TOO_LARGE, Outcome::TooLarge),
        // A broken connection: nobody is left to read the answer, and nothing was authenticated.
        Ok(Err(BodyError::Broken)) => return (StatusCode::BAD_REQUEST, Outcome::BadPayload),
        Ok(Ok(body)) => body,
    };
    if !provider.authenticate(&parts.headers, &body, secret.expose()) {
        return receiver.refuse_unauthenticated(&source);
    }
    // A replay is refused before it can take from the hook's bucket, and recorded only once it
    // passed the bucket, so a delivery refused with 429 can be delivered again.
    let keys = DeliveryKeys::of(provider, hook, &parts.headers, &body);
    if receiver.replays.seen(provider, &keys) {
        return (StatusCode::CONFLICT, Outcome::Duplicate);
    }
    if !receiver.limiter.allow(hook, Instant::now()) {
        return (StatusCode::TOO_MANY_REQUESTS, Outcome::RateLimited);
    }
    if !receiver.replays.record(provider, &keys) {
        return (StatusCode::CONFLICT, Outcome::Duplicate);
    }
    if !provider.is_push(&parts.headers) {
        return (StatusCode::OK, Outcome::Ignored);
    }
    let Some(push) = provider.parse_push(&body) else {
        return (StatusCode::BAD_REQUEST, Outcome::BadPayload);
    };
    for git_ref in push.refs {
        let trigger = Trigger {
            hook: hook.to_string(),
            repository_urls: push.repository_urls.clone(),
            git_ref,
        };
        match receiver.triggers.try_send(trigger) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(trigger)) => {
                receiver.metrics.dropped.inc();
                tracing::warn!(git_ref = %trigger.git_ref, "trigger queue full; dropped (the poll will catch up)");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("trigger queue closed; push ignored");
            }
        }
    }
    tracing::info!("push accepted");
    (StatusCode::ACCEPTED, Outcome::Accepted)
}

impl Receiver {
    /// The answer to a request that did not authenticate: 401, or 429 once `source` has failed
    /// more than its bucket allows. Either way nothing a signed request needs is spent.
    fn refuse_unauthenticated(&self, source: &str) -> (StatusCode, Outcome) {
        if self.unauthenticated.allow(source, Instant::now()) {
            (StatusCode::UNAUTHORIZED, Outcome::Unauthorized)
        } else {
            (StatusCode::TOO_MANY_REQUESTS, Outcome::SourceLimited)
        }
    }
}

/// The `Content-Length` the sender declared, if any and readable.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Why the body could not be read.
enum BodyError {
    /// It went past the cap.
    TooLarge,
    /// The connection failed mid-body.
    Broken,
}

/// Reads the body, giving up as soon as it passes `cap` bytes, so at most `cap` plus one chunk is
/// ever held.
async fn read_capped(body: Body, cap: usize) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buf.len().saturating_add(chunk.len()) > cap {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn reply(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}
