//! `switchback demo` end to end, as a user runs it: real nginx pods, real git, real traffic on
//! loopback. The story must go as told (commits 1 and 3 promoted, commit 2 rolled back on every
//! pod and quarantined) and nothing the demo started may outlive it.

use std::process::Command;

use switchback_tests::bin::switchback_bin;

/// Processes whose command line mentions `needle` (nginx runs with `-p <state dir>`).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", name.to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn the_demo_rolls_back_the_bad_upstream_commit_and_leaves_nothing_behind() {
    if !switchback_tests::agent_harness::nginx_available() {
        return;
    }
    let dir = switchback_tests::files::searchable_tempdir();
    let reports = dir.path().join("reports");
    // The demo as a user runs it: every policy at its default, the demo's own 10-s bake.
    let out = Command::new(switchback_bin())
        .args(["demo", "--json", "--subnet", "0.20", "--dir"])
        .arg(dir.path().join("run"))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .expect("run switchback demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("demo printed no JSON ({e}); stderr:\n{stderr}"));
    assert_eq!(out.status.code(), Some(0), "{run:#}\n{stderr}");
    assert_eq!(run["ok"], true);
    let commits = run["runs"][0]["commits"].as_array().expect("commits");
    let results: Vec<&str> = commits
        .iter()
        .map(|c| c["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(results, ["promoted", "rolled back", "promoted"]);

    let figures = &run["runs"][0]["figures"];
    assert!(figures["timeToDetectSecs"].is_number(), "{figures:#}");
    assert!(figures["timeToRestoreSecs"].is_number(), "{figures:#}");
    assert!(
        figures["incidentFailed"].as_u64().unwrap_or(0) > 0,
        "the canary must have seen 502s: {figures:#}"
    );
    let incident = &run["runs"][0]["incident"];
    assert_eq!(
        incident["revision"]["revision"]["commit"], commits[1]["commit"],
        "the incident is about commit 2"
    );
    let report = std::fs::read_to_string(reports.join("incident-sequential.md")).expect("report");
    assert!(report.contains("Move app upstream"), "{report}");
    assert!(report.contains("```diff"), "{report}");

    let left = processes_mentioning(&dir.path().display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
