//! The report on a realistic incident (the seed outage replayed: an `upstream` moved to ports
//! nothing listens on, the canary answers 502), checked line by line where a person would look,
//! plus the variants: apply failure, manual abort, hostile commit text, a huge diff.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn bundle(app_ports: [u16; 2], extra: &str) -> Bundle {
    let mut files = BTreeMap::new();
    files.insert(
        "nginx.conf".to_string(),
        b"events {}\nhttp {\n    include conf.d/*.conf;\n}\n".to_vec(),
    );
    let app = format!(
        "upstream app {{\n    server 127.0.0.1:{};\n    server 127.0.0.1:{};\n}}\n\
         server {{\n    listen 8080;\n{extra}    location / {{\n        proxy_pass http://app;\n    }}\n}}\n",
        app_ports[0], app_ports[1]
    );
    files.insert("conf.d/app.conf".to_string(), app.into_bytes());
    Bundle::new(files)
}

fn revision(commit: &str, at: &str, author: &str, message: &str) -> Revision {
    Revision {
        commit: commit.to_string(),
        committed_at: ts(at),
        author: author.to_string(),
        message: message.to_string(),
    }
}

/// The demo's incident: canary proxy-1 gets the bad upstream, sequential analysis decides.
fn example() -> IncidentInput {
    let stable = bundle([9001, 9002], "");
    let bad = bundle([9011, 9012], "    more_set_headers \"X-Pool: new\";\n");
    IncidentInput {
        rollout: "edge".into(),
        bad: RevisionRef {
            revision: revision(
                "3f9c2ab1e0d4c5b6a7980112233445566778899a",
                "2025-03-14T03:11:58Z",
                "Jane Doe <jane@example.com>",
                "Move app upstream to the new pool\n\nThe old pool (9001/9002) is being \
                 decommissioned.\nRefs: OPS-1234",
            ),
            digest: bad.digest(),
        },
        restored: RevisionRef {
            revision: revision(
                "9e1d2c4f00112233445566778899aabbccddeeff",
                "2025-03-13T16:40:00Z",
                "Sam Roe <sam@example.com>",
                "Add /api/items route",
            ),
            digest: stable.digest(),
        },
        reason: Reason::CanaryFailing,
        method: Some("sequential".into()),
        evidence: Some(Evidence {
            method: "sequential".into(),
            summary: "canary 502 rate 98.0% (49/50) vs baseline 0.5% (1/200)".into(),
            canary_bad: 49,
            canary_total: 50,
            baseline_bad: 1,
            baseline_total: 200,
            signal: "errors".into(),
            statistic: 15_230_000.0,
            bound: 20.0,
            elapsed_secs: 1.1,
        }),
        timeline: Timeline {
            seen: Some(ts("2025-03-14T03:12:04Z")),
            validated: Some(ts("2025-03-14T03:12:04.050Z")),
            first_applied: Some(PodTime {
                pod: "proxy-1".into(),
                at: ts("2025-03-14T03:12:04.400Z"),
            }),
            first_bad_response: Some(ts("2025-03-14T03:12:04.450Z")),
            decision: ts("2025-03-14T03:12:05.600Z"),
            pods_restored: vec![PodTime {
                pod: "proxy-1".into(),
                at: ts("2025-03-14T03:12:06.100Z"),
            }],
            all_restored: Some(ts("2025-03-14T03:12:06.400Z")),
        },
        lint: vec![Diagnostic::warning(
            "SB107",
            "conf.d/app.conf",
            7,
            5,
            "unknown directive \"more_set_headers\": not one Switchback knows; nginx -t decides \
             whether your nginx has a module for it",
        )],
        stable_bundle: Some(stable),
        bad_bundle: Some(bad),
        traffic: Some(TrafficFigures {
            requests: 480,
            failed: 61,
        }),
    }
}

/// Headings as a Markdown renderer sees them: lines starting with `#` outside fenced blocks (a
/// fence closes only on a line of at least as many backticks as opened it).
fn headings_outside_fences(md: &str) -> Vec<&str> {
    let mut open: Option<usize> = None;
    let mut headings = Vec::new();
    for line in md.lines() {
        let ticks = line.chars().take_while(|c| *c == '`').count();
        match open {
            Some(n) if ticks >= n && line.trim_start_matches('`').trim().is_empty() => open = None,
            Some(_) => {}
            None if ticks >= 3 => open = Some(ticks),
            None if line.starts_with('#') => headings.push(line),
            None => {}
        }
    }
    headings
}

fn has_line(md: &str, line: &str) -> bool {
    md.lines().any(|l| l == line)
}

#[test]
fn markdown_answers_first_then_gives_the_details() {
    let md = to_markdown(&example());
    let first = md.lines().next().unwrap();
    assert_eq!(
        first,
        "# Incident: `3f9c2ab` \"Move app upstream to the new pool\" rolled back on `edge`"
    );
    let summary = md.lines().find(|l| l.starts_with("**Summary.**")).unwrap();
    assert_eq!(
        summary,
        "**Summary.** Commit 3f9c2ab (\"Move app upstream to the new pool\") by Jane Doe was \
         rolled back on rollout edge because the canary was failing (sequential: canary 502 rate \
         98.0% (49/50) vs baseline 0.5% (1/200)). It was first applied on proxy-1 at 2025-03-14 \
         03:12:04.400 UTC; the decision to roll back came 1.20 s later (time to detect). Every \
         pod was back on 9e1d2c4 0.80 s after the decision (time to restore; 1 pod restored). \
         While the bad config was live, 61 of 480 requests failed (12.7%)."
    );
    for line in [
        "| Reason | canary failing (sequential) |",
        "| Time to detect | 1.20 s (first applied → decision) |",
        "| Time to restore | 0.80 s (decision → all pods restored) |",
        "| Requests failed during the incident | 61 of 480 (12.7%) |",
        "| Rolled back | `3f9c2ab` → restored `9e1d2c4` |",
    ] {
        assert!(has_line(&md, line), "missing {line:?} in\n{md}");
    }
    let sections: Vec<&str> = md.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(
        sections,
        [
            "## Timeline",
            "## Evidence",
            "## Commit",
            "## Rendered config diff",
            "## Lint findings on `3f9c2ab`",
        ]
    );
}

#[test]
fn timeline_table_has_offsets_from_when_the_commit_was_seen() {
    let md = to_markdown(&example());
    assert!(has_line(
        &md,
        "Offsets from 2025-03-14 03:12:04.000 UTC (when Switchback saw the commit)."
    ));
    let rows: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("| Offset |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(
        rows,
        [
            "| -6.00s | 03:11:58.000 | 3f9c2ab committed by Jane Doe |",
            "| +0.00s | 03:12:04.000 | Switchback saw the commit |",
            &format!(
                "| +0.05s | 03:12:04.050 | rendered config validated (digest {}) |",
                example().bad.digest.short()
            ),
            "| +0.40s | 03:12:04.400 | first applied, on proxy-1 |",
            "| +0.45s | 03:12:04.450 | first bad response from the canary |",
            "| +1.60s | 03:12:05.600 | decision: roll back (canary failing) |",
            "| +2.10s | 03:12:06.100 | proxy-1 back on 9e1d2c4 |",
            "| +2.40s | 03:12:06.400 | all pods back on 9e1d2c4 |",
        ]
    );
}

#[test]
fn evidence_commit_diff_and_lint_sections() {
    let md = to_markdown(&example());
    for line in [
        "Method `sequential`, signal `errors`, decided after 1.10 s of analysis.",
        "| Canary | 49 | 50 | 98.0% |",
        "| Baseline | 1 | 200 | 0.5% |",
        "Statistic 1.523e7 against a bound of 20 (e-value; the bound is 1/alpha).",
        "> canary 502 rate 98.0% (49/50) vs baseline 0.5% (1/200)",
        "| Author | Jane Doe \\<jane@example.com\\> | Sam Roe \\<sam@example.com\\> |",
        "| Committed | 2025-03-14 03:11:58.000 UTC | 2025-03-13 16:40:00.000 UTC |",
        "Refs: OPS-1234",
        "- `conf.d/app.conf` +3 −2",
        "- `conf.d/app.conf:7:5: warning[SB107]: unknown directive \"more_set_headers\": not one \
         Switchback knows; nginx -t decides whether your nginx has a module for it`",
    ] {
        assert!(has_line(&md, line), "missing {line:?} in\n{md}");
    }
    let diff = "\
```diff
--- a/conf.d/app.conf
+++ b/conf.d/app.conf
@@ -1,9 +1,10 @@
 upstream app {
-    server 127.0.0.1:9001;
-    server 127.0.0.1:9002;
+    server 127.0.0.1:9011;
+    server 127.0.0.1:9012;
 }
 server {
     listen 8080;
+    more_set_headers \"X-Pool: new\";
     location / {
         proxy_pass http://app;
     }
```
";
    assert!(md.contains(diff), "{md}");
    assert!(!md.contains("Diff cut at"));
}

#[test]
fn json_has_the_same_content_under_stable_camel_case_names() {
    let v: Value = serde_json::from_str(&to_json(&example()).unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "title",
            "rollout",
            "summary",
            "reason",
            "method",
            "bad",
            "restored",
            "timeToDetectSecs",
            "timeToRestoreSecs",
            "podsRestored",
            "timelineOrigin",
            "timeline",
            "evidence",
            "traffic",
            "lint",
            "diff",
        ]
    );
    assert_eq!(v["reason"], serde_json::json!({"kind": "canaryFailing"}));
    assert_eq!(v["bad"]["shortCommit"], "3f9c2ab");
    assert!(v["bad"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["bad"]["committedAt"], "2025-03-14T03:11:58Z");
    assert_eq!(v["restored"]["subject"], "Add /api/items route");
    assert!((v["timeToDetectSecs"].as_f64().unwrap() - 1.2).abs() < 1e-9);
    assert!((v["timeToRestoreSecs"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert_eq!(v["timelineOrigin"], "2025-03-14T03:12:04Z");
    assert_eq!(v["timeline"][0]["event"], "committed");
    assert_eq!(v["timeline"][0]["offsetMs"], -6000);
    assert_eq!(v["timeline"][3]["event"], "firstApplied");
    assert_eq!(v["timeline"][3]["pod"], "proxy-1");
    assert_eq!(v["evidence"]["canaryRate"], 0.98);
    assert_eq!(v["evidence"]["baselineTotal"], 200);
    assert_eq!(v["traffic"]["failed"], 61);
    assert_eq!(v["lint"][0]["severity"], "warning");
    assert_eq!(v["lint"][0]["rule"], "SB107");
    assert_eq!(v["diff"]["files"][0]["linesAdded"], 3);
    assert_eq!(v["diff"]["files"][0]["change"], "modified");
    assert_eq!(v["diff"]["truncated"], false);
    let md_summary = Report::build(&example()).summary;
    assert_eq!(v["summary"], md_summary.as_str());
}

#[test]
fn apply_failure_still_restoring_without_bundles() {
    let mut input = example();
    input.reason = Reason::ApplyFailed {
        pod: "proxy-2".into(),
        message: "nginx: [emerg] host not found in upstream \"app-new:9011\"".into(),
    };
    input.method = None;
    input.evidence = None;
    input.timeline.first_bad_response = None;
    input.timeline.all_restored = None;
    input.stable_bundle = None;
    input.traffic = None;
    let md = to_markdown(&input);
    assert!(
        md.contains("because it failed to apply on proxy-2: nginx: \\[emerg\\] host not found")
    );
    assert!(md.contains("Restoring is still in progress: 1 pod back on 9e1d2c4 so far."));
    assert!(has_line(&md, "| Reason | apply failed on proxy-2 |"));
    assert!(has_line(
        &md,
        "| Time to restore | in progress (1 pods restored so far) |"
    ));
    assert!(has_line(&md, "The agent on `proxy-2` reported:"));
    assert!(
        md.contains("```text\nnginx: [emerg] host not found in upstream \"app-new:9011\"\n```")
    );
    assert!(has_line(
        &md,
        "_The rendered bundles were not available for this report._"
    ));
    assert!(!md.contains("Requests failed"));
    let v: Value = serde_json::from_str(&to_json(&input).unwrap()).unwrap();
    assert_eq!(v["reason"]["kind"], "applyFailed");
    assert_eq!(v["reason"]["pod"], "proxy-2");
    assert_eq!(v["timeToRestoreSecs"], Value::Null);
    assert_eq!(v["diff"], Value::Null);
}

#[test]
fn manual_abort_before_any_pod_applied() {
    let mut input = example();
    input.reason = Reason::ManualAbort {
        by: Some("alice".into()),
    };
    input.method = None;
    input.evidence = None;
    input.timeline.seen = None;
    input.timeline.validated = None;
    input.timeline.first_applied = None;
    input.timeline.first_bad_response = None;
    input.timeline.pods_restored.clear();
    input.timeline.all_restored = Some(input.timeline.decision);
    let r = Report::build(&input);
    assert_eq!(r.time_to_detect_secs, None);
    assert_eq!(r.timeline_origin, input.timeline.decision);
    let md = r.to_markdown();
    assert!(md.contains("because alice aborted the rollout. It never went live on a pod;"));
    assert!(
        md.contains("after the decision (time to restore).") && !md.contains("0 pods restored"),
        "no count without per-pod times: {md}"
    );
    assert!(has_line(&md, "| Time to detect | n/a (never applied) |"));
    assert!(has_line(&md, "None: the rollout was aborted by hand."));
    assert!(md.contains("Offsets from 2025-03-14 03:12:05.600 UTC (the first step"));
}

#[test]
fn commit_text_cannot_forge_sections_or_break_fences() {
    let mut input = example();
    input.bad.revision.message =
        "Fix | things *now* <script>\n\n## Evidence\nall fine\n```\n# Incident: none".into();
    input.lint.clear();
    let md = to_markdown(&input);
    assert!(md.starts_with(
        "# Incident: `3f9c2ab` \"Fix \\| things \\*now\\* \\<script\\>\" rolled back on `edge`\n"
    ));
    assert_eq!(
        headings_outside_fences(&md),
        [
            "# Incident: `3f9c2ab` \"Fix \\| things \\*now\\* \\<script\\>\" rolled back on `edge`",
            "## Timeline",
            "## Evidence",
            "## Commit",
            "## Rendered config diff",
            "## Lint findings on `3f9c2ab`",
        ]
    );
    // The message is fenced with more backticks than it contains.
    assert!(md.contains("````text\nFix | things *now* <script>\n\n## Evidence\nall fine\n```\n"));
    assert!(has_line(&md, "None."));
}

#[test]
fn a_huge_diff_is_cut_with_a_note() {
    let mut input = example();
    let many = |k: u32| {
        let body: String = (0..2_000).map(|i| format!("# line {}\n", i * k)).collect();
        Bundle::new(BTreeMap::from([(
            "big.conf".to_string(),
            body.into_bytes(),
        )]))
    };
    input.stable_bundle = Some(many(1));
    input.bad_bundle = Some(many(3));
    let md = to_markdown(&input);
    let diff_lines = md
        .lines()
        .skip_while(|l| *l != "```diff")
        .skip(1)
        .take_while(|l| *l != "```")
        .count();
    assert_eq!(diff_lines, MAX_DIFF_LINES);
    assert!(md.contains("_Diff cut at 400 lines: "), "{md}");
}

/// The report is pure: no I/O, no clock.
#[test]
fn report_sources_do_no_io_and_read_no_clock() {
    crate::purity::assert_pure("report");
}
