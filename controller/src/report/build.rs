//! [`IncidentInput`] → [`Report`]: every figure and sentence of the report computed once, so the
//! Markdown and the JSON say the same thing. Plain text here; Markdown escaping is the renderer's.

use jiff::Timestamp;
use serde::Serialize;

use super::diff::{ConfigDiff, diff_bundles};
use super::format::{percent, share, short_commit, span, subject, utc};
use super::{IncidentInput, Reason, ReportError, RevisionRef};
use crate::validate::Severity;

/// The incident report: the JSON form as is, and what [`Report::to_markdown`] renders.
/// Field names are camelCase and stable; times are RFC 3339 UTC; durations are in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// One line: commit, subject, rollout.
    pub title: String,
    /// The rollout's name.
    pub rollout: String,
    /// One paragraph: what, why, how fast it was detected and restored, how many requests failed.
    pub summary: String,
    /// Why it was rolled back.
    pub reason: Reason,
    /// The analysis method, when one decided or was watching.
    pub method: Option<String>,
    /// The revision rolled back.
    pub bad: RevisionReport,
    /// The revision restored.
    pub restored: RevisionReport,
    /// First applied → decision, seconds; `None` when nothing was applied.
    pub time_to_detect_secs: Option<f64>,
    /// Decision → all pods restored, seconds; `None` while restoring.
    pub time_to_restore_secs: Option<f64>,
    /// How many pods were restored (so far).
    pub pods_restored: usize,
    /// The instant offsets are counted from: when Switchback saw the commit (or the first known
    /// step after it).
    pub timeline_origin: Timestamp,
    /// The steps, in time order.
    pub timeline: Vec<TimelineEntry>,
    /// What analysis saw, in numbers.
    pub evidence: Option<EvidenceReport>,
    /// Client-side requests during the incident, when counted.
    pub traffic: Option<TrafficReport>,
    /// Findings on the bad revision.
    pub lint: Vec<Finding>,
    /// The rendered config's diff, stable → bad; `None` when the bundles were not available.
    pub diff: Option<ConfigDiff>,
}

/// A revision as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionReport {
    /// Full commit id.
    pub commit: String,
    /// First 7 characters, as git shows it.
    pub short_commit: String,
    /// Bundle digest, `sha256:…`.
    pub digest: String,
    /// `Name <email>`.
    pub author: String,
    /// Committer time.
    pub committed_at: Timestamp,
    /// First line of the message.
    pub subject: String,
    /// The full message.
    pub message: String,
}

impl RevisionReport {
    fn from_ref(r: &RevisionRef) -> Self {
        RevisionReport {
            commit: r.revision.commit.clone(),
            short_commit: short_commit(&r.revision.commit),
            digest: r.digest.to_string(),
            author: r.revision.author.clone(),
            committed_at: r.revision.committed_at,
            subject: subject(&r.revision.message),
            message: r.revision.message.clone(),
        }
    }

    /// The author's name without the email, for prose.
    fn author_name(&self) -> &str {
        self.author
            .split_once(" <")
            .map_or(self.author.as_str(), |(name, _)| name)
    }
}

/// What a timeline entry records. Serialised in camelCase (`firstApplied`, `podRestored`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// The bad commit was made.
    Committed,
    /// Switchback saw it.
    Seen,
    /// Its bundle passed validation.
    Validated,
    /// The first pod applied it.
    FirstApplied,
    /// The first bad response from the canary.
    FirstBadResponse,
    /// The decision to roll back.
    Decision,
    /// One pod back on the restored revision.
    PodRestored,
    /// Every pod back.
    AllRestored,
}

/// One step of the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// What happened.
    pub event: EventKind,
    /// When.
    pub at: Timestamp,
    /// Milliseconds from [`Report::timeline_origin`] (negative before it).
    pub offset_ms: i64,
    /// The pod concerned, for per-pod steps.
    pub pod: Option<String>,
    /// The step in words.
    pub description: String,
}

/// Analysis evidence with its rates worked out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceReport {
    /// Method that decided.
    pub method: String,
    /// `errors` or `latency`.
    pub signal: String,
    /// The method's one-line summary.
    pub summary: String,
    /// Canary bad (or slow) responses.
    pub canary_bad: u64,
    /// Canary responses.
    pub canary_total: u64,
    /// `canary_bad / canary_total`.
    pub canary_rate: f64,
    /// Baseline bad (or slow) responses.
    pub baseline_bad: u64,
    /// Baseline responses.
    pub baseline_total: u64,
    /// `baseline_bad / baseline_total`.
    pub baseline_rate: f64,
    /// The method's statistic at the decision.
    pub statistic: f64,
    /// The value it had to reach.
    pub bound: f64,
    /// Seconds of analysis before the decision.
    pub elapsed_secs: f64,
}

/// Client-side requests during the incident.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficReport {
    /// Requests sent.
    pub requests: u64,
    /// Failed ones.
    pub failed: u64,
    /// `failed / requests`.
    pub failed_share: f64,
}

/// A lint finding, with names fixed for the report's JSON whatever the validator's type becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Bundle-relative path.
    pub path: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub col: u32,
    /// `warning` or `error`.
    pub severity: Severity,
    /// Rule id.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
fn secs(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

impl Report {
    /// Works out the whole report from its input. Pure: same input, same report.
    pub fn build(input: &IncidentInput) -> Report {
        let bad = RevisionReport::from_ref(&input.bad);
        let restored = RevisionReport::from_ref(&input.restored);
        let method = input
            .method
            .clone()
            .or_else(|| input.evidence.as_ref().map(|e| e.method.clone()));
        let t = &input.timeline;
        let detect = t.first_applied.as_ref().map(|p| secs(p.at, t.decision));
        let restore = t.all_restored.map(|r| secs(t.decision, r));
        let origin = t
            .seen
            .or(t.first_applied.as_ref().map(|p| p.at))
            .unwrap_or(t.decision);
        let evidence = input.evidence.as_ref().map(|e| EvidenceReport {
            method: e.method.clone(),
            signal: if e.signal.is_empty() {
                "errors".to_string()
            } else {
                e.signal.clone()
            },
            summary: e.summary.clone(),
            canary_bad: e.canary_bad,
            canary_total: e.canary_total,
            canary_rate: share(e.canary_bad, e.canary_total),
            baseline_bad: e.baseline_bad,
            baseline_total: e.baseline_total,
            baseline_rate: share(e.baseline_bad, e.baseline_total),
            statistic: e.statistic,
            bound: e.bound,
            elapsed_secs: e.elapsed_secs,
        });
        let traffic = input.traffic.map(|t| TrafficReport {
            requests: t.requests,
            failed: t.failed,
            failed_share: share(t.failed, t.requests),
        });
        let diff = match (&input.stable_bundle, &input.bad_bundle) {
            (Some(stable), Some(bad)) => Some(diff_bundles(stable, bad)),
            _ => None,
        };
        let lint = input
            .lint
            .iter()
            .map(|d| Finding {
                path: d.path.clone(),
                line: d.line,
                col: d.col,
                severity: d.severity,
                rule: d.rule.clone(),
                message: d.message.clone(),
            })
            .collect();
        let mut report = Report {
            title: format!(
                "Incident: {} \"{}\" rolled back on {}",
                bad.short_commit, bad.subject, input.rollout
            ),
            rollout: input.rollout.clone(),
            summary: String::new(),
            reason: input.reason.clone(),
            method,
            timeline: timeline(input, &bad, &restored, origin),
            bad,
            restored,
            time_to_detect_secs: detect,
            time_to_restore_secs: restore,
            pods_restored: t.pods_restored.len(),
            timeline_origin: origin,
            evidence,
            traffic,
            lint,
            diff,
        };
        report.summary = summary(input, &report);
        report
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        super::markdown::render(self)
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self).map_err(|source| ReportError::Json {
            rollout: self.rollout.clone(),
            source,
        })
    }

    /// The reason in a few words: `canary failing (sequential)`, `apply failed on proxy-2`.
    pub fn reason_short(&self) -> String {
        match (&self.reason, &self.method) {
            (Reason::CanaryFailing, Some(m)) => format!("canary failing ({m})"),
            (Reason::CanaryFailing, None) => "canary failing".to_string(),
            (Reason::ApplyFailed { pod, .. }, _) => format!("apply failed on {pod}"),
            (Reason::ManualAbort { by: Some(by) }, _) => format!("manual abort by {by}"),
            (Reason::ManualAbort { by: None }, _) => "manual abort".to_string(),
        }
    }
}

/// The steps in time order (ties keep the order of the incident's logic).
fn timeline(
    input: &IncidentInput,
    bad: &RevisionReport,
    restored: &RevisionReport,
    origin: Timestamp,
) -> Vec<TimelineEntry> {
    let t = &input.timeline;
    let entry = |event, at: Timestamp, pod: Option<&str>, description: String| TimelineEntry {
        event,
        at,
        offset_ms: at.duration_since(origin).as_millis() as i64,
        pod: pod.map(str::to_string),
        description,
    };
    let back_on = &restored.short_commit;
    let mut entries = vec![entry(
        EventKind::Committed,
        bad.committed_at,
        None,
        format!("{} committed by {}", bad.short_commit, bad.author_name()),
    )];
    if let Some(at) = t.seen {
        entries.push(entry(
            EventKind::Seen,
            at,
            None,
            "Switchback saw the commit".into(),
        ));
    }
    if let Some(at) = t.validated {
        let digest = input.bad.digest.short();
        let text = format!("rendered config validated (digest {digest})");
        entries.push(entry(EventKind::Validated, at, None, text));
    }
    if let Some(p) = &t.first_applied {
        let text = format!("first applied, on {}", p.pod);
        entries.push(entry(EventKind::FirstApplied, p.at, Some(&p.pod), text));
    }
    if let Some(at) = t.first_bad_response {
        let text = "first bad response from the canary".to_string();
        entries.push(entry(EventKind::FirstBadResponse, at, None, text));
    }
    let reason = match &input.reason {
        Reason::CanaryFailing => "canary failing".to_string(),
        Reason::ApplyFailed { pod, .. } => format!("apply failed on {pod}"),
        Reason::ManualAbort { .. } => "manual abort".to_string(),
    };
    let text = format!("decision: roll back ({reason})");
    entries.push(entry(EventKind::Decision, t.decision, None, text));
    let mut pods: Vec<_> = t.pods_restored.iter().collect();
    pods.sort_by(|a, b| (a.at, &a.pod).cmp(&(b.at, &b.pod)));
    for p in pods {
        let text = format!("{} back on {back_on}", p.pod);
        entries.push(entry(EventKind::PodRestored, p.at, Some(&p.pod), text));
    }
    if let Some(at) = t.all_restored {
        let text = format!("all pods back on {back_on}");
        entries.push(entry(EventKind::AllRestored, at, None, text));
    }
    // Stable sort: equal times keep the logical order above.
    entries.sort_by_key(|e| e.at);
    entries
}

/// The one paragraph a person reads first.
fn summary(input: &IncidentInput, r: &Report) -> String {
    let t = &input.timeline;
    let why = match &input.reason {
        Reason::CanaryFailing => {
            let detail = match (&r.method, &r.evidence) {
                (Some(m), Some(e)) if !e.summary.is_empty() => format!(" ({m}: {})", e.summary),
                (Some(m), _) => format!(" ({m})"),
                (None, _) => String::new(),
            };
            format!("the canary was failing{detail}")
        }
        Reason::ApplyFailed { pod, message } => format!("it failed to apply on {pod}: {message}"),
        Reason::ManualAbort { by: Some(by) } => format!("{by} aborted the rollout"),
        Reason::ManualAbort { by: None } => "the rollout was aborted by hand".to_string(),
    };
    let mut s = format!(
        "Commit {} (\"{}\") by {} was rolled back on rollout {} because {why}.",
        r.bad.short_commit,
        r.bad.subject,
        r.bad.author_name(),
        r.rollout
    );
    match (&t.first_applied, r.time_to_detect_secs) {
        (Some(p), Some(detect)) => s.push_str(&format!(
            " It was first applied on {} at {} UTC; the decision to roll back came {} later \
             (time to detect).",
            p.pod,
            utc(p.at, true),
            span(detect)
        )),
        _ => s.push_str(&format!(
            " It never went live on a pod; the decision to roll back came at {} UTC.",
            utc(t.decision, true)
        )),
    }
    let n = r.pods_restored;
    let pods = if n == 1 { "pod" } else { "pods" };
    let back = &r.restored.short_commit;
    match r.time_to_restore_secs {
        // Without per-pod times (the operator's engine keeps only when all were back), no count.
        Some(restore) if n == 0 => s.push_str(&format!(
            " Every pod was back on {back} {} after the decision (time to restore).",
            span(restore)
        )),
        Some(restore) => s.push_str(&format!(
            " Every pod was back on {back} {} after the decision (time to restore; {n} {pods} \
             restored).",
            span(restore)
        )),
        None => s.push_str(&format!(
            " Restoring is still in progress: {n} {pods} back on {back} so far."
        )),
    }
    if let Some(tr) = &r.traffic {
        s.push_str(&format!(
            " While the bad config was live, {} of {} requests failed ({}).",
            tr.failed,
            tr.requests,
            percent(tr.failed_share)
        ));
    }
    s
}
