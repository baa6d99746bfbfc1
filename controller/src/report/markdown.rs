//! [`Report`] → Markdown, laid out for the person paged at 3 a.m.: the answer first (what was
//! rolled back, why, how fast, how bad), then the timeline, the numbers behind the decision, the
//! commit, the config diff and the lint findings. Everything taken from a commit, a pod or an
//! agent is escaped or fenced, so no commit message can forge a section of the report.

use std::fmt::Write as _;

use super::build::{EvidenceReport, Report, RevisionReport};
use super::diff::{ChangeKind, MAX_DIFF_LINES};
use super::format::{code, fenced, inline, number, offset, percent, span, utc, utc_date};
use super::{EventKind, Reason};

/// Renders the whole report.
pub(crate) fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Incident: {} \"{}\" rolled back on {}\n",
        code(&r.bad.short_commit),
        inline(&r.bad.subject),
        code(&r.rollout)
    );
    let _ = writeln!(out, "**Summary.** {}\n", inline(&r.summary));
    key_facts(&mut out, r);
    timeline(&mut out, r);
    evidence(&mut out, r);
    commit(&mut out, r);
    diff(&mut out, r);
    lint(&mut out, r);
    out
}

/// The answers, as a two-column table.
fn key_facts(out: &mut String, r: &Report) {
    let detect = r.time_to_detect_secs.map_or_else(
        || "n/a (never applied)".to_string(),
        |s| format!("{} (first applied → decision)", span(s)),
    );
    let restore = r.time_to_restore_secs.map_or_else(
        || format!("in progress ({} pods restored so far)", r.pods_restored),
        |s| format!("{} (decision → all pods restored)", span(s)),
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Reason | {} |", inline(&r.reason_short()));
    let _ = writeln!(out, "| Time to detect | {detect} |");
    let _ = writeln!(out, "| Time to restore | {restore} |");
    if let Some(t) = &r.traffic {
        let _ = writeln!(
            out,
            "| Requests failed during the incident | {} of {} ({}) |",
            t.failed,
            t.requests,
            percent(t.failed_share)
        );
    }
    let _ = writeln!(
        out,
        "| Rolled back | {} → restored {} |\n",
        code(&r.bad.short_commit),
        code(&r.restored.short_commit)
    );
}

fn timeline(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "## Timeline\n\nOffsets from {} UTC ({}).\n",
        utc(r.timeline_origin, true),
        if r.timeline.iter().any(|e| e.event == EventKind::Seen) {
            "when Switchback saw the commit"
        } else {
            "the first step Switchback recorded"
        }
    );
    let _ = writeln!(out, "| Offset | Time (UTC) | Event |\n|---:|---|---|");
    let day = utc_date(r.timeline_origin);
    for e in &r.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            offset(e.offset_ms as f64 / 1000.0),
            utc(e.at, utc_date(e.at) != day),
            inline(&e.description)
        );
    }
    out.push('\n');
}

/// What the bound means for each method, so the statistic can be read.
fn statistic_meaning(method: &str) -> &'static str {
    match method {
        "sequential" => "e-value; the bound is 1/alpha",
        "threshold" => "failed checks; the bound is the threshold",
        "ceiling" => "bad share; the bound is the ceiling",
        _ => "the method's statistic and bound",
    }
}

fn evidence(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Evidence\n");
    match (&r.evidence, &r.reason) {
        (Some(e), _) => evidence_table(out, e),
        (None, Reason::ApplyFailed { pod, message }) => {
            let _ = writeln!(out, "The agent on {} reported:\n", code(pod));
            out.push_str(&fenced("text", message));
            out.push('\n');
        }
        (None, Reason::ManualAbort { .. }) => {
            let _ = writeln!(out, "None: the rollout was aborted by hand.\n");
        }
        (None, Reason::CanaryFailing) => {
            let _ = writeln!(out, "No analysis evidence was recorded.\n");
        }
    }
}

fn evidence_table(out: &mut String, e: &EvidenceReport) {
    let bad = if e.signal == "latency" { "Slow" } else { "Bad" };
    let _ = writeln!(
        out,
        "Method {}, signal {}, decided after {} of analysis.\n",
        code(&e.method),
        code(&e.signal),
        span(e.elapsed_secs)
    );
    let _ = writeln!(
        out,
        "| Group | {bad} | Total | Rate |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| Canary | {} | {} | {} |",
        e.canary_bad,
        e.canary_total,
        percent(e.canary_rate)
    );
    let _ = writeln!(
        out,
        "| Baseline | {} | {} | {} |\n",
        e.baseline_bad,
        e.baseline_total,
        percent(e.baseline_rate)
    );
    let _ = writeln!(
        out,
        "Statistic {} against a bound of {} ({}).\n",
        number(e.statistic),
        number(e.bound),
        statistic_meaning(&e.method)
    );
    if !e.summary.is_empty() {
        let _ = writeln!(out, "> {}\n", inline(&e.summary));
    }
}

fn commit(out: &mut String, r: &Report) {
    let (b, s) = (&r.bad, &r.restored);
    let row = |label: &str, f: &dyn Fn(&RevisionReport) -> String| {
        format!("| {label} | {} | {} |\n", f(b), f(s))
    };
    let _ = writeln!(out, "## Commit\n");
    out.push_str("| | Rolled back | Restored |\n|---|---|---|\n");
    out.push_str(&row("Commit", &|x| code(&x.commit)));
    out.push_str(&row("Bundle digest", &|x| code(&x.digest)));
    out.push_str(&row("Author", &|x| inline(&x.author)));
    out.push_str(&row("Committed", &|x| {
        format!("{} UTC", utc(x.committed_at, true))
    }));
    out.push_str(&row("Subject", &|x| inline(&x.subject)));
    let _ = writeln!(out, "\nFull message of {}:\n", code(&b.short_commit));
    out.push_str(&fenced("text", &b.message));
    out.push('\n');
}

fn diff(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "## Rendered config diff\n\n{} (restored) → {} (rolled back), as nginx read it.\n",
        code(&r.restored.short_commit),
        code(&r.bad.short_commit)
    );
    let Some(d) = &r.diff else {
        let _ = writeln!(
            out,
            "_The rendered bundles were not available for this report._\n"
        );
        return;
    };
    if d.files.is_empty() {
        let _ = writeln!(out, "No difference in the rendered config.\n");
        return;
    }
    for f in &d.files {
        let what = match (f.change, f.binary) {
            (_, true) => "binary, changed".to_string(),
            (ChangeKind::Added, _) => format!("added (+{})", f.lines_added),
            (ChangeKind::Removed, _) => format!("removed (−{})", f.lines_removed),
            (ChangeKind::Modified, _) => format!("+{} −{}", f.lines_added, f.lines_removed),
        };
        let _ = writeln!(out, "- {} {what}", code(&f.path));
    }
    out.push('\n');
    out.push_str(&fenced("diff", &d.unified));
    if d.truncated {
        let _ = writeln!(
            out,
            "\n_Diff cut at {MAX_DIFF_LINES} lines: {} more lines not shown. `switchback render` \
             both commits for the whole of it._",
            d.omitted_lines
        );
    }
    out.push('\n');
}

fn lint(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Lint findings on {}\n", code(&r.bad.short_commit));
    if r.lint.is_empty() {
        let _ = writeln!(out, "None.");
        return;
    }
    for f in &r.lint {
        let line = format!(
            "{}:{}:{}: {}[{}]: {}",
            f.path, f.line, f.col, f.severity, f.rule, f.message
        );
        let _ = writeln!(out, "- {}", code(&line));
    }
}
