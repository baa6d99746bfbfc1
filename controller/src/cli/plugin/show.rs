//! What `kubectl switchback status` and `history` print, from a `ProxyRollout` and the time:
//! pure, so the layout is unit-tested without a cluster. Written for a person woken at 3 a.m.:
//! the phase first, commits short (12 characters, as in Events and conditions) with their age,
//! what is wrong before what is fine.

use std::fmt::Write as _;

use jiff::Timestamp;
use switchback::operator::crd::{ProxyRollout, ProxyRolloutStatus};
use switchback::operator::request::{self, Request};

/// The short commit people read and type (the same length Events and conditions use).
pub(crate) fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// `5s`, `3m20s`, `2h5m`, `4d3h`: how long ago `at` (RFC 3339) was, or the text itself when it is
/// not a time.
pub(crate) fn age(now: Timestamp, at: &str) -> String {
    let Ok(at) = at.parse::<Timestamp>() else {
        return at.to_string();
    };
    let secs = now.as_second().saturating_sub(at.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        0..60 => format!("{secs}s"),
        60..600 => format!("{m}m{}s", secs % 60),
        600..3600 => format!("{m}m"),
        3600..36_000 => format!("{h}h{}m", m % 60),
        36_000..86_400 => format!("{h}h"),
        86_400..864_000 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// `namespace/name`.
pub(crate) fn key(rollout: &ProxyRollout) -> String {
    format!(
        "{}/{}",
        rollout.metadata.namespace.as_deref().unwrap_or(""),
        rollout.metadata.name.as_deref().unwrap_or("")
    )
}

/// The request state in one phrase.
fn request_line(rollout: &ProxyRollout, now: Timestamp) -> String {
    let handled = rollout
        .status
        .as_ref()
        .and_then(|s| s.handled_request.as_deref());
    match request::pending(rollout) {
        Some(Ok(r)) => format!(
            "PENDING: {}{} by {}, {} ago (id {}); the controller has not acted on it yet",
            r.verb,
            r.commit
                .as_deref()
                .map(|c| format!(" {}", short(c)))
                .unwrap_or_default(),
            r.by,
            age(now, &r.at.to_string()),
            r.id
        ),
        Some(Err(e)) => format!("UNUSABLE: {e}"),
        None => match handled {
            Some(id) => format!("none pending (last handled: {id})"),
            None => "none".to_string(),
        },
    }
}

/// When the stable commit became stable, from history.
fn stable_since(status: &ProxyRolloutStatus, commit: &str) -> Option<(String, String)> {
    status
        .history
        .iter()
        .find(|h| h.commit == commit && is_good_outcome(&h.outcome))
        .map(|h| (h.outcome.to_lowercase(), h.at.clone()))
}

/// Outcomes after which a commit was the stable one, so `rollback` may go back to it.
pub(crate) fn is_good_outcome(outcome: &str) -> bool {
    matches!(outcome, "Adopted" | "Promoted" | "Relabelled")
}

/// `kubectl switchback status NAME`.
pub(crate) fn status(rollout: &ProxyRollout, now: Timestamp) -> String {
    let mut out = String::new();
    let Some(status) = rollout.status.as_ref().filter(|s| s.phase.is_some()) else {
        let _ = writeln!(
            out,
            "{}: no status yet: the controller has not reported on this rollout (is it running? `kubectl get pods -A -l app.kubernetes.io/name=switchback`)",
            key(rollout)
        );
        let _ = writeln!(out, "  request     {}", request_line(rollout, now));
        return out;
    };
    let phase = status.phase.as_deref().unwrap_or("?");
    let _ = writeln!(out, "{}  {phase}", key(rollout));
    match &status.stable {
        Some(s) => {
            let since = stable_since(status, &s.commit)
                .map(|(how, at)| format!("  {how} {} ago", age(now, &at)))
                .unwrap_or_default();
            let _ = writeln!(out, "  stable      {}{since}", short(&s.commit));
        }
        None => {
            let _ = writeln!(out, "  stable      none yet");
        }
    }
    match &status.target {
        Some(t) => {
            let since = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Reconciling" && c.status == "True")
                .map(|c| format!("  rolling out for {}", age(now, &c.last_transition_time)))
                .unwrap_or_default();
            let _ = writeln!(out, "  target      {}{since}", short(&t.commit));
        }
        None => {
            let _ = writeln!(out, "  target      none (nothing in progress)");
        }
    }
    if let Some(p) = &status.pods {
        let _ = writeln!(
            out,
            "  pods        {} ready of {} selected: {} on stable, {} on target, {} changing, {} failed{}",
            p.ready.split('/').next().unwrap_or(&p.ready),
            p.total,
            p.stable,
            p.target,
            p.changing,
            p.failed,
            if p.failed > 0 {
                "  <- pods failed to apply; see `kubectl get events`"
            } else {
                ""
            }
        );
    }
    if let Some(a) = &status.analysis {
        let baking = a
            .baking_since
            .as_deref()
            .map(|t| format!(", baking {}", age(now, t)))
            .unwrap_or_else(|| ", pods moving".to_string());
        let held = a
            .held_since
            .as_deref()
            .map(|t| {
                format!(
                    "  <- HELD {} (not enough evidence when the bake ended): `kubectl switchback \
                     promote {}` moves it on, or wait for traffic",
                    age(now, t),
                    rollout.metadata.name.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  step        {} ({} pods){baking}: {}{held}",
            a.step, a.pods, a.verdict
        );
        if !a.message.is_empty() {
            let _ = writeln!(out, "  analysis    {}", a.message);
        }
    }
    let _ = writeln!(out, "  request     {}", request_line(rollout, now));
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "  conditions");
        let width = |f: fn(&switchback::operator::crd::Condition) -> usize| {
            status.conditions.iter().map(f).max().unwrap_or(0)
        };
        let (wt, wr) = (width(|c| c.type_.len()), width(|c| c.reason.len()));
        for c in &status.conditions {
            let message = if c.message.is_empty() {
                String::new()
            } else {
                format!("  {}", c.message)
            };
            let _ = writeln!(
                out,
                "    {:<wt$}  {:<5}  {:<wr$}  {:>6} ago{message}",
                c.type_,
                c.status,
                c.reason,
                age(now, &c.last_transition_time),
            );
        }
    }
    match &status.last_incident {
        Some(i) => {
            // How long the site was degraded matters more at 3 a.m. than when it ended.
            let restored = match i.restored_at.as_deref().map(str::parse::<Timestamp>) {
                Some(Ok(r)) => format!(", every pod restored {} later", age(r, &i.decided_at)),
                Some(Err(_)) => String::new(),
                None => ", not every pod restored yet".to_string(),
            };
            let _ = writeln!(
                out,
                "  last incident  {} rolled back {} ago{restored}: {}",
                short(&i.commit),
                age(now, &i.decided_at),
                i.reason
            );
        }
        None => {
            let _ = writeln!(out, "  last incident  none");
        }
    }
    if status.quarantined.is_empty() {
        let _ = writeln!(out, "  quarantined  none");
    } else {
        let _ = writeln!(
            out,
            "  quarantined (never rolled out again without `kubectl switchback retry`)"
        );
        for q in &status.quarantined {
            let _ = writeln!(
                out,
                "    {}  {:>6} ago  {}",
                short(&q.commit),
                age(now, &q.at),
                q.reason
            );
        }
    }
    out
}

/// Aligns rows into columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `kubectl switchback status` without a name: one line per rollout.
pub(crate) fn list(rollouts: &[ProxyRollout], now: Timestamp) -> String {
    let mut rows = vec![
        [
            "NAME",
            "PHASE",
            "STABLE",
            "TARGET",
            "READY",
            "CHANGING",
            "FAILED",
            "QUARANTINED",
            "REQUEST",
            "STABLE-AGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rollouts {
        let s = r.status.clone().unwrap_or_default();
        let pods = s.pods.clone().unwrap_or_default();
        let dash = || "-".to_string();
        let request = match request::pending(r) {
            Some(Ok(req)) => format!("{} (pending)", req.verb),
            Some(Err(_)) => "unusable".to_string(),
            None => dash(),
        };
        rows.push(vec![
            r.metadata.name.clone().unwrap_or_default(),
            s.phase.clone().unwrap_or_else(|| "<no status>".to_string()),
            s.stable
                .as_ref()
                .map_or_else(dash, |x| short(&x.commit).to_string()),
            s.target
                .as_ref()
                .map_or_else(dash, |x| short(&x.commit).to_string()),
            if s.pods.is_some() {
                pods.ready.clone()
            } else {
                dash()
            },
            pods.changing.to_string(),
            pods.failed.to_string(),
            s.quarantined.len().to_string(),
            request,
            s.stable
                .as_ref()
                .and_then(|x| stable_since(&s, &x.commit))
                .map_or_else(dash, |(_, at)| age(now, &at)),
        ]);
    }
    table(&rows)
}

/// `kubectl switchback history NAME`: newest first, the stable and quarantined ones marked.
pub(crate) fn history(rollout: &ProxyRollout, now: Timestamp) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    if status.history.is_empty() {
        return format!("{}: no history yet\n", key(rollout));
    }
    let mut rows = vec![
        ["COMMIT", "OUTCOME", "AGE", "AT", "NOTE"]
            .map(String::from)
            .to_vec(),
    ];
    let stable = status.stable.as_ref().map(|s| s.commit.as_str());
    for h in &status.history {
        let mut notes = Vec::new();
        if Some(h.commit.as_str()) == stable && is_good_outcome(&h.outcome) {
            notes.push("stable now".to_string());
        }
        if let Some(q) = status.quarantined.iter().find(|q| q.commit == h.commit) {
            notes.push(format!("quarantined: {}", q.reason));
        }
        rows.push(vec![
            short(&h.commit).to_string(),
            h.outcome.clone(),
            age(now, &h.at),
            h.at.clone(),
            notes.join("; "),
        ]);
    }
    table(&rows)
}

/// The JSON `status -o json` prints for one rollout: its status without the engine's private
/// checkpoint, plus name, namespace and the pending request.
pub(crate) fn status_json(rollout: &ProxyRollout) -> serde_json::Value {
    let mut value = rollout
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = value.as_object_mut() {
        map.remove("engine");
        map.insert(
            "name".to_string(),
            rollout.metadata.name.clone().unwrap_or_default().into(),
        );
        map.insert(
            "namespace".to_string(),
            rollout
                .metadata
                .namespace
                .clone()
                .unwrap_or_default()
                .into(),
        );
        let pending = match request::pending(rollout) {
            Some(Ok(r)) => serde_json::to_value::<Request>(r).unwrap_or_default(),
            Some(Err(e)) => serde_json::json!({"error": e.to_string()}),
            None => serde_json::Value::Null,
        };
        map.insert("pendingRequest".to_string(), pending);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchback::operator::request::{ANNOTATION, RequestVerb};

    const NOW: &str = "2026-11-25T03:00:00Z";
    const A: &str = "aaaaaaaaaaaa1111111111111111111111111111";
    const B: &str = "bbbbbbbbbbbb2222222222222222222222222222";
    const C: &str = "cccccccccccc3333333333333333333333333333";

    fn now() -> Timestamp {
        NOW.parse().expect("time")
    }

    fn rollout() -> ProxyRollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchback.dev/v1alpha1",
            "kind": "ProxyRollout",
            "metadata": {"name": "edge", "namespace": "prod"},
            "spec": {"source": {"url": "https://git.example.test/x.git"}, "target": {"selector": {"app": "edge"}}},
            "status": {
                "phase": "Canary",
                "stable": {"commit": A, "digest": "sha256:1"},
                "target": {"commit": B, "digest": "sha256:2"},
                "pods": {"total": 4, "stable": 3, "target": 1, "changing": 0, "failed": 1, "ready": "4/4"},
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Progressing", "message": "3 of 4 pods on aaaaaaaaaaaa; phase Canary", "lastTransitionTime": "2026-11-25T02:55:00Z"},
                    {"type": "Reconciling", "status": "True", "reason": "RollingOut", "message": "Canary bbbbbbbbbbbb", "lastTransitionTime": "2026-11-25T02:55:00Z"}
                ],
                "quarantined": [{"commit": C, "digest": "sha256:3", "reason": "canary 502 rate 41% vs baseline 0.2%", "at": "2026-11-25T01:00:00Z"}],
                "lastIncident": {"commit": C, "reason": "canary 502 rate 41% vs baseline 0.2%", "decidedAt": "2026-11-25T01:00:00Z"},
                "history": [
                    {"commit": C, "outcome": "RolledBack", "at": "2026-11-25T01:00:00Z"},
                    {"commit": A, "outcome": "Promoted", "at": "2026-11-24T23:00:00Z"}
                ],
                "handledRequest": "old"
            }
        }))
        .expect("a ProxyRollout")
    }

    #[test]
    fn ages_read_like_kubectl() {
        let n = now();
        assert_eq!(age(n, "2026-11-25T02:59:58Z"), "2s");
        assert_eq!(age(n, "2026-11-25T02:56:40Z"), "3m20s");
        assert_eq!(age(n, "2026-11-25T02:00:00Z"), "1h0m");
        assert_eq!(age(n, "2026-11-25T02:10:00Z"), "50m");
        assert_eq!(age(n, "2026-11-24T23:00:00Z"), "4h0m");
        assert_eq!(age(n, "2026-11-20T03:00:00Z"), "5d0h");
        assert_eq!(age(n, "2026-12-01T00:00:00Z"), "0s");
        assert_eq!(age(n, "not a time"), "not a time");
    }

    #[test]
    fn status_leads_with_phase_commits_and_what_is_wrong() {
        let text = status(&rollout(), now());
        assert!(text.starts_with("prod/edge  Canary\n"), "{text}");
        assert!(
            text.contains("stable      aaaaaaaaaaaa  promoted 4h0m ago"),
            "{text}"
        );
        assert!(
            text.contains("target      bbbbbbbbbbbb  rolling out for 5m0s"),
            "{text}"
        );
        assert!(text.contains("4 ready of 4 selected: 3 on stable, 1 on target, 0 changing, 1 failed  <- pods failed"), "{text}");
        assert!(
            text.contains("Ready        False  Progressing    5m0s ago  3 of 4 pods"),
            "{text}"
        );
        assert!(
            text.contains("last incident  cccccccccccc rolled back 2h0m ago, not every pod restored yet: canary 502 rate 41%"),
            "{text}"
        );
        assert!(
            text.contains("cccccccccccc    2h0m ago  canary 502 rate 41%"),
            "{text}"
        );
        assert!(text.contains("none pending (last handled: old)"), "{text}");
    }

    #[test]
    fn a_held_step_says_what_it_needs_and_how_to_move_on() {
        let mut r = rollout();
        let status = r.status.as_mut().expect("status");
        status.analysis = Some(switchback::operator::crd::AnalysisStatus {
            step: "1/4".to_string(),
            pods: 1,
            baking_since: Some("2026-11-25T02:55:00Z".to_string()),
            verdict: "Inconclusive".to_string(),
            message: "too little traffic: canary 0.00% bad (120/…); need 200 requests in each"
                .to_string(),
            held_since: Some("2026-11-25T02:58:00Z".to_string()),
        });
        let text = self::status(&r, now());
        assert!(
            text.contains("step        1/4 (1 pods), baking 5m0s: Inconclusive  <- HELD 2m0s"),
            "{text}"
        );
        assert!(text.contains("kubectl switchback promote edge"), "{text}");
        assert!(text.contains("analysis    too little traffic"), "{text}");
    }

    #[test]
    fn a_pending_request_is_shown_until_acknowledged() {
        let mut r = rollout();
        let req = Request::with_id(
            "r1",
            RequestVerb::Rollback,
            Some(A.to_string()),
            "alice",
            "2026-11-25T02:59:30Z".parse().expect("time"),
        );
        r.metadata.annotations = Some([(ANNOTATION.to_string(), req.to_annotation())].into());
        let text = status(&r, now());
        assert!(
            text.contains("PENDING: rollback aaaaaaaaaaaa by alice, 30s ago (id r1)"),
            "{text}"
        );
        assert!(list(&[r.clone()], now()).contains("rollback (pending)"));
        assert_eq!(status_json(&r)["pendingRequest"]["id"], "r1");
        if let Some(s) = r.status.as_mut() {
            s.handled_request = Some("r1".to_string());
        }
        assert!(status(&r, now()).contains("none pending (last handled: r1)"));
        assert!(status_json(&r)["pendingRequest"].is_null());
    }

    #[test]
    fn a_rollout_without_status_says_the_controller_has_not_reported() {
        let mut r = rollout();
        r.status = None;
        assert!(status(&r, now()).contains("no status yet"));
        assert!(list(&[r], now()).contains("<no status>"));
    }

    #[test]
    fn list_and_history_are_aligned_tables() {
        let text = list(&[rollout()], now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("NAME  PHASE   STABLE"), "{text}");
        assert!(
            lines[1].starts_with("edge  Canary  aaaaaaaaaaaa  bbbbbbbbbbbb  4/4"),
            "{text}"
        );
        assert!(lines[1].ends_with(" -        4h0m"), "{text}");

        let text = history(&rollout(), now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "COMMIT        OUTCOME     AGE   AT                    NOTE"
        );
        assert!(
            lines[1].ends_with("quarantined: canary 502 rate 41% vs baseline 0.2%"),
            "{text}"
        );
        assert!(lines[2].starts_with("aaaaaaaaaaaa  Promoted"), "{text}");
        assert!(lines[2].ends_with("stable now"), "{text}");
    }

    #[test]
    fn json_leaves_out_the_engine_checkpoint() {
        let mut r = rollout();
        if let Some(s) = r.status.as_mut() {
            s.engine = Some(serde_json::json!({"state": "x"}).into());
        }
        let v = status_json(&r);
        assert!(v.get("engine").is_none());
        assert_eq!(v["name"], "edge");
        assert_eq!(v["phase"], "Canary");
    }
}
