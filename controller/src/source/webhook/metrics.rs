//! The receiver's counters: how each request ended, by provider, and the triggers dropped
//! because the controller was behind.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::provider::Provider;

/// How a request ended, the `outcome` label of `switchback_webhook_requests`: a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A push was accepted and its triggers queued.
    Accepted,
    /// Authenticated, but not a push.
    Ignored,
    /// No such provider or hook id.
    UnknownHook,
    /// The hook's token bucket was empty.
    RateLimited,
    /// A request that failed authentication from a source that failed too often.
    SourceLimited,
    /// A delivery accepted before, sent again.
    Duplicate,
    /// Too many requests were being read at once.
    Busy,
    /// The body was over the cap.
    TooLarge,
    /// The body did not arrive in time.
    Timeout,
    /// The signature or token did not match.
    Unauthorized,
    /// An authenticated push that could not be read.
    BadPayload,
}

impl Outcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ignored => "ignored",
            Outcome::UnknownHook => "unknown_hook",
            Outcome::RateLimited => "rate_limited",
            Outcome::SourceLimited => "source_limited",
            Outcome::Duplicate => "duplicate",
            Outcome::Busy => "busy",
            Outcome::TooLarge => "too_large",
            Outcome::Timeout => "timeout",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadPayload => "bad_payload",
        }
    }
}

type Labels = [(&'static str, &'static str); 2];

/// The receiver's counters, so on-call can see pushes arriving, being refused, or being dropped
/// because the controller was behind. Labels are the provider and the outcome (both bounded),
/// never the hook id or a URL.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    requests: Family<Labels, Counter>,
    pub(super) dropped: Counter,
}

impl WebhookMetrics {
    /// Registers the counters (`switchback_webhook_requests`, `switchback_webhook_triggers_dropped`)
    /// in the controller's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "switchback_webhook_requests",
            "Webhook requests by provider and outcome",
            self.requests.clone(),
        );
        registry.register(
            "switchback_webhook_triggers_dropped",
            "Triggers dropped because the controller's queue was full (the poll catches up)",
            self.dropped.clone(),
        );
        // The series alerts watch exist from the start, at zero, so rate() works.
        for provider in Provider::ALL {
            for outcome in [Outcome::Accepted, Outcome::Unauthorized] {
                drop(self.requests.get_or_create(&[
                    ("provider", provider.label()),
                    ("outcome", outcome.label()),
                ]));
            }
        }
    }

    /// How many requests of `provider` ended with `outcome`.
    pub fn requests(&self, provider: Provider, outcome: Outcome) -> u64 {
        self.requests
            .get_or_create(&[("provider", provider.label()), ("outcome", outcome.label())])
            .get()
    }

    /// How many triggers were dropped on a full channel.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    pub(super) fn count(&self, provider: &'static str, outcome: Outcome) {
        self.requests
            .get_or_create(&[("provider", provider), ("outcome", outcome.label())])
            .inc();
    }
}
