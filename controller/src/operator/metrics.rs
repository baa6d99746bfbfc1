//! The controller's Prometheus metrics (STYLE rule 14): what a person on call needs to see that
//! the operator works (reconcile latency and outcome, errors by where they came from, rollbacks,
//! rollouts per phase, who leads, git fetch latency). The controller calls the methods of
//! [`Metrics`]; `/metrics` (see [`super::health`]) encodes them.
//!
//! Labels are bounded: a result (2 values), an error category (6), a phase (4). A rollout's name
//! is never a label: `switchback_rollouts{phase}` counts rollouts per phase, and the per-rollout
//! phase is kept beside it only to move the counts when a rollout changes phase or goes away.
//!
//! Quantiles for the scale bench come from an optional exact sample store rather than from the
//! histogram: interpolating inside a bucket can be off by the bucket's width (up to 2x here),
//! which is too coarse to compare one run with the next. The store is off unless asked for
//! ([`Metrics::with_reconcile_samples`]) so a long-running controller keeps no growing state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::rollout::Phase;

/// Upper bounds of the latency buckets, in seconds: 0.5 ms to 5 s, each at most twice the last,
/// so a p99 read from the histogram is within a factor of 1.5–2 of the truth.
pub const LATENCY_BUCKETS: [f64; 24] = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
];

type Label = [(&'static str, &'static str); 1];
type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// How a reconcile ended, the `result` label of the reconcile histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// The reconcile did what it set out to do.
    Ok,
    /// It failed (and the error was counted by category).
    Error,
}

impl ReconcileResult {
    fn label(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
        }
    }
}

/// Where an error came from, the `category` label of `switchback_errors_total`: tells a bad
/// commit (render, validation) from an unreachable git host (source) or API server (kube).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorCategory {
    /// The spec cannot be used as written (a bad duration, step or analysis setting).
    Spec,
    /// Fetching or reading git.
    Source,
    /// Rendering templates into a bundle.
    Render,
    /// Parse, lint or `nginx -t` rejected the bundle.
    Validation,
    /// Telling pods or an agent applying a bundle.
    Apply,
    /// Reading counters or deciding a verdict.
    Analysis,
    /// The Kubernetes API.
    Kube,
}

impl ErrorCategory {
    /// Every category, so each series exists (at 0) from the start.
    pub const ALL: [ErrorCategory; 7] = [
        ErrorCategory::Spec,
        ErrorCategory::Source,
        ErrorCategory::Render,
        ErrorCategory::Validation,
        ErrorCategory::Apply,
        ErrorCategory::Analysis,
        ErrorCategory::Kube,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCategory::Spec => "spec",
            ErrorCategory::Source => "source",
            ErrorCategory::Render => "render",
            ErrorCategory::Validation => "validation",
            ErrorCategory::Apply => "apply",
            ErrorCategory::Analysis => "analysis",
            ErrorCategory::Kube => "kube",
        }
    }
}

const PHASES: [Phase; 4] = [
    Phase::Idle,
    Phase::Validating,
    Phase::Canary,
    Phase::RollingBack,
];

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "idle",
        Phase::Validating => "validating",
        Phase::Canary => "canary",
        Phase::RollingBack => "rolling_back",
    }
}

/// The controller's metrics; cheap to clone (one shared registry), safe to call from any task.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reconcile: HistogramFamily,
    errors: Family<Label, Counter>,
    rollbacks: Counter,
    held_steps: Counter,
    rollouts: Family<Label, Gauge>,
    phases: Mutex<BTreeMap<(String, String), Phase>>,
    is_leader: Gauge,
    shards_held: Gauge,
    git_fetch: Histogram,
    webhook: crate::source::webhook::WebhookMetrics,
    samples: Option<Mutex<Samples>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a controller, every series registered (at zero).
    pub fn new() -> Metrics {
        Metrics::build(None)
    }

    /// Metrics that also keep the last `capacity` reconcile durations exactly, for
    /// [`Metrics::reconcile_quantiles`] (the scale bench).
    pub fn with_reconcile_samples(capacity: usize) -> Metrics {
        Metrics::build(Some(Samples::new(capacity)))
    }

    fn build(samples: Option<Samples>) -> Metrics {
        let mut registry = Registry::default();
        let reconcile = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "switchback_reconcile_duration_seconds",
            "Time one reconcile of a ProxyRollout took, by result (ok, error)",
            reconcile.clone(),
        );
        let errors = Family::<Label, Counter>::default();
        registry.register(
            "switchback_errors",
            "Errors by category (source, render, validation, apply, analysis, kube)",
            errors.clone(),
        );
        let rollbacks = Counter::default();
        registry.register(
            "switchback_rollbacks",
            "Rollbacks started, automatic or asked for",
            rollbacks.clone(),
        );
        let held_steps = Counter::default();
        registry.register(
            "switchback_steps_held",
            "Canary steps whose bake ended without a conclusive verdict (too little traffic or \
             evidence) and were held",
            held_steps.clone(),
        );
        let rollouts = Family::<Label, Gauge>::default();
        registry.register(
            "switchback_rollouts",
            "ProxyRollouts in each phase of the engine",
            rollouts.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "switchback_is_leader",
            "1 while this replica holds the leader Lease and drives rollouts, else 0",
            is_leader.clone(),
        );
        let shards_held = Gauge::default();
        registry.register(
            "switchback_shards_held",
            "Shards whose Lease this replica holds and whose rollouts it drives (--shards; 0 \
             without)",
            shards_held.clone(),
        );
        let git_fetch = latency_histogram();
        registry.register(
            "switchback_git_fetch_duration_seconds",
            "Time one git fetch of a rollout's source took",
            git_fetch.clone(),
        );
        let webhook = crate::source::webhook::WebhookMetrics::default();
        webhook.register(&mut registry);
        // Every bounded series exists from the start, at zero, so rate() and absent() work.
        for result in [ReconcileResult::Ok, ReconcileResult::Error] {
            drop(reconcile.get_or_create(&[("result", result.label())]));
        }
        for category in ErrorCategory::ALL {
            drop(errors.get_or_create(&[("category", category.label())]));
        }
        for phase in PHASES {
            drop(rollouts.get_or_create(&[("phase", phase_label(phase))]));
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                reconcile,
                errors,
                rollbacks,
                held_steps,
                rollouts,
                phases: Mutex::new(BTreeMap::new()),
                is_leader,
                shards_held,
                git_fetch,
                webhook,
                samples: samples.map(Mutex::new),
            }),
        }
    }

    /// The push webhook receiver's counters, registered here so `/metrics` serves them.
    pub fn webhook(&self) -> crate::source::webhook::WebhookMetrics {
        self.inner.webhook.clone()
    }

    /// Records one reconcile: how long it took and how it ended.
    pub fn observe_reconcile(&self, took: Duration, result: ReconcileResult) {
        self.inner
            .reconcile
            .get_or_create(&[("result", result.label())])
            .observe(took.as_secs_f64());
        if let Some(samples) = &self.inner.samples {
            lock(samples).push(took);
        }
    }

    /// Counts one error of `category`.
    pub fn count_error(&self, category: ErrorCategory) {
        self.inner
            .errors
            .get_or_create(&[("category", category.label())])
            .inc();
    }

    /// Counts one rollback started.
    pub fn count_rollback(&self) {
        self.inner.rollbacks.inc();
    }

    /// Counts one canary step held at the end of its bake.
    pub fn count_held_step(&self) {
        self.inner.held_steps.inc();
    }

    /// Records the phase a rollout is in now (moving it out of its previous phase's count).
    pub fn set_phase(&self, namespace: &str, name: &str, phase: Phase) {
        let key = (namespace.to_string(), name.to_string());
        let previous = lock(&self.inner.phases).insert(key, phase);
        if previous == Some(phase) {
            return;
        }
        if let Some(previous) = previous {
            self.phase_gauge(previous).dec();
        }
        self.phase_gauge(phase).inc();
    }

    /// Forgets a rollout that was deleted (or that this replica no longer drives).
    pub fn remove_rollout(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(previous) = lock(&self.inner.phases).remove(&key) {
            self.phase_gauge(previous).dec();
        }
    }

    fn phase_gauge(&self, phase: Phase) -> Gauge {
        self.inner
            .rollouts
            .get_or_create_owned(&[("phase", phase_label(phase))])
    }

    /// Records how many shards this replica holds now (follow the shard election's receiver).
    pub fn set_shards_held(&self, held: usize) {
        self.inner
            .shards_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Records whether this replica leads now (follow the leader election's receiver).
    pub fn set_leader(&self, leading: bool) {
        self.inner.is_leader.set(i64::from(leading));
    }

    /// Records one git fetch's duration.
    pub fn observe_git_fetch(&self, took: Duration) {
        self.inner.git_fetch.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition, what `/metrics` serves.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// Exact quantiles (each in 0.0..=1.0, nearest rank) of the kept reconcile durations, or
    /// `None` when samples are not kept or none was recorded yet.
    pub fn reconcile_quantiles(&self, quantiles: &[f64]) -> Option<Vec<Duration>> {
        let samples = self.inner.samples.as_ref()?;
        lock(samples).quantiles(quantiles)
    }
}

/// The last `capacity` durations, oldest dropped first.
struct Samples {
    capacity: usize,
    kept: VecDeque<Duration>,
}

impl Samples {
    fn new(capacity: usize) -> Samples {
        Samples {
            capacity: capacity.max(1),
            kept: VecDeque::new(),
        }
    }

    fn push(&mut self, d: Duration) {
        if self.kept.len() == self.capacity {
            self.kept.pop_front();
        }
        self.kept.push_back(d);
    }

    fn quantiles(&self, qs: &[f64]) -> Option<Vec<Duration>> {
        let mut sorted: Vec<Duration> = self.kept.iter().copied().collect();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        Some(
            qs.iter()
                .map(|q| {
                    // Nearest rank: the smallest sample with at least q of them at or below it.
                    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
                    sorted[rank.saturating_sub(1).min(last)]
                })
                .collect(),
        )
    }
}

/// A poisoned lock still holds consistent data: every update completes under the lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_family_served_is_in_the_metrics_reference() {
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
        )
        .expect("docs/operations.md");
        let text = Metrics::new().encode().unwrap();
        for declared in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = declared.split_once(' ').unwrap_or((declared, ""));
            let shown = if kind == "counter" {
                format!("`{name}_total`")
            } else {
                format!("`{name}`")
            };
            assert!(
                page.contains(&format!("| {shown} | {kind} |")),
                "docs/operations.md has no row `| {shown} | {kind} |`"
            );
        }
    }

    #[test]
    fn every_family_is_exposed_with_its_labels_from_the_start() {
        let text = Metrics::new().encode().unwrap();
        for family in [
            "# TYPE switchback_reconcile_duration_seconds histogram",
            "# TYPE switchback_errors counter",
            "# TYPE switchback_rollbacks counter",
            "# TYPE switchback_steps_held counter",
            "# TYPE switchback_rollouts gauge",
            "# TYPE switchback_is_leader gauge",
            "# TYPE switchback_shards_held gauge",
            "# TYPE switchback_git_fetch_duration_seconds histogram",
            "# TYPE switchback_webhook_requests counter",
            "# TYPE switchback_webhook_triggers_dropped counter",
        ] {
            assert!(text.contains(family), "{family} missing in\n{text}");
        }
        for series in [
            "switchback_errors_total{category=\"kube\"} 0",
            "switchback_errors_total{category=\"validation\"} 0",
            "switchback_rollbacks_total 0",
            "switchback_rollouts{phase=\"rolling_back\"} 0",
            "switchback_is_leader 0",
            "switchback_shards_held 0",
            "switchback_reconcile_duration_seconds_count{result=\"error\"} 0",
            "switchback_reconcile_duration_seconds_bucket{le=\"0.0005\",result=\"ok\"} 0",
            "switchback_reconcile_duration_seconds_bucket{le=\"5.0\",result=\"ok\"} 0",
        ] {
            assert!(line(&text, series).is_some(), "{series} missing in\n{text}");
        }
    }

    #[test]
    fn observations_land_in_the_right_series() {
        let m = Metrics::new();
        m.observe_reconcile(Duration::from_micros(700), ReconcileResult::Ok);
        m.observe_reconcile(Duration::from_secs(10), ReconcileResult::Error);
        m.count_error(ErrorCategory::Source);
        m.count_error(ErrorCategory::Source);
        m.count_rollback();
        m.set_leader(true);
        m.set_shards_held(2);
        m.observe_git_fetch(Duration::from_millis(40));
        let text = m.encode().unwrap();
        for series in [
            "switchback_reconcile_duration_seconds_bucket{le=\"0.0005\",result=\"ok\"} 0",
            "switchback_reconcile_duration_seconds_bucket{le=\"0.001\",result=\"ok\"} 1",
            "switchback_reconcile_duration_seconds_bucket{le=\"5.0\",result=\"error\"} 0",
            "switchback_reconcile_duration_seconds_bucket{le=\"+Inf\",result=\"error\"} 1",
            "switchback_errors_total{category=\"source\"} 2",
            "switchback_errors_total{category=\"render\"} 0",
            "switchback_rollbacks_total 1",
            "switchback_is_leader 1",
            "switchback_shards_held 2",
            "switchback_git_fetch_duration_seconds_bucket{le=\"0.03\"} 0",
            "switchback_git_fetch_duration_seconds_bucket{le=\"0.05\"} 1",
        ] {
            assert!(line(&text, series).is_some(), "{series} missing in\n{text}");
        }
    }

    #[test]
    fn a_rollout_counts_in_one_phase_and_leaves_with_removal() {
        let m = Metrics::new();
        m.set_phase("shop", "edge", Phase::Validating);
        m.set_phase("shop", "edge", Phase::Canary);
        m.set_phase("shop", "edge", Phase::Canary);
        m.set_phase("shop", "api", Phase::Canary);
        m.set_phase("other", "edge", Phase::Idle);
        let text = m.encode().unwrap();
        assert!(
            line(&text, "switchback_rollouts{phase=\"canary\"} 2").is_some(),
            "{text}"
        );
        assert!(
            line(&text, "switchback_rollouts{phase=\"validating\"} 0").is_some(),
            "{text}"
        );
        assert!(
            line(&text, "switchback_rollouts{phase=\"idle\"} 1").is_some(),
            "{text}"
        );
        m.remove_rollout("shop", "edge");
        m.remove_rollout("shop", "gone");
        let text = m.encode().unwrap();
        assert!(
            line(&text, "switchback_rollouts{phase=\"canary\"} 1").is_some(),
            "{text}"
        );
        assert!(!text.contains("edge"), "no rollout name is a label: {text}");
    }

    #[test]
    fn exact_quantiles_from_kept_samples() {
        assert_eq!(Metrics::new().reconcile_quantiles(&[0.5]), None);
        let m = Metrics::with_reconcile_samples(100);
        assert_eq!(m.reconcile_quantiles(&[0.5]), None);
        // 1..=200 ms; only the last 100 (101..=200) are kept.
        for ms in 1..=200 {
            m.observe_reconcile(Duration::from_millis(ms), ReconcileResult::Ok);
        }
        let q = m.reconcile_quantiles(&[0.0, 0.5, 0.99, 1.0]).unwrap();
        let ms: Vec<u128> = q.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [101, 150, 199, 200]);
    }
}
