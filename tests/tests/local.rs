//! `switchback local` on a user's repository, with its defaults (the operator's steps `1, 25%,
//! 50%, 100%`, hold when inconclusive, sequential analysis; only the bake shortened) and users
//! sending 50 requests/s to each of its three pods: it adopts the branch head, promotes a
//! harmless commit through every step, the 100% step included, rolls back one whose upstream is
//! dead, reports one JSON object per line, and stops every process on Ctrl-C (SIGINT).

use std::process::{Command, Stdio};
use std::time::Duration;

use switchback_tests::agent_harness::nginx_available;
use switchback_tests::bin::switchback_bin;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::load::{Load, LoadSpec, PER_POD_RPS};
use switchback_tests::local_run::{Running, wait_for};

fn site(body: &str) -> String {
    format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.21.2:9001; }}\n    server {{\n        listen 8080;\n        location / {{ {body} }}\n    }}\n}}\n"
    )
}

#[test]
fn local_follows_the_branch_and_rolls_back_a_dead_upstream() {
    if !nginx_available() {
        return;
    }
    let tmp = switchback_tests::files::searchable_tempdir();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("nginx.conf"), site("proxy_pass http://app;")).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);

    let child = Command::new(switchback_bin())
        .args(["local", "--repo"])
        .arg(&repo)
        .args([
            "--pods",
            "3",
            "--subnet",
            "0.21",
            // The default bake (3m) shortened: at 50 requests/s per pod a step's one canary pod
            // serves more in 8 s than the ~330 clean requests a healthy verdict needs.
            "--bake",
            "8",
            "--poll",
            "0.3",
            "--events",
            "json",
            "--upstream",
            "app-1=127.0.21.2:9001",
            "--probe",
            "host=localhost,path=/,status=200,rate=20",
            "--dir",
        ])
        .arg(tmp.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start switchback local");
    let mut child = Running(child);
    let lines = child.lines();
    let mut seen = Vec::new();
    wait_for(&lines, "\"adopted\"", &mut seen);
    // The users: 50 requests/s to each pod (127.0.21.10 and up, as --subnet says).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the users");
    let pods: Vec<std::net::SocketAddr> = (10..13)
        .map(|octet| std::net::SocketAddr::from(([127, 0, 21, octet], 8080)))
        .collect();
    let users = {
        let _in = runtime.enter();
        Load::fixed(pods, LoadSpec::new(PER_POD_RPS))
    };
    runtime.block_on(users.wait_flowing(3, 150, Duration::from_secs(60)));

    std::fs::write(
        repo.join("nginx.conf"),
        site("proxy_pass http://app; add_header X-V 2;"),
    )
    .expect("write");
    git(&repo, &["commit", "-q", "-am", "a header"]);
    wait_for(&lines, "\"Promoted\"", &mut seen);
    let promoted = seen.iter().rev().find(|l| l.contains("\"Promoted\""));
    assert!(
        promoted.is_some_and(|l| l.contains("every step baked healthy")),
        "promoted by the analysis: {promoted:?}"
    );
    for step in 2..=4 {
        assert!(
            seen.iter()
                .any(|l| l.contains("\"StepAdvanced\"") && l.contains(&format!("step {step}/4:"))),
            "no StepAdvanced to step {step}/4:\n{}",
            seen.join("\n")
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("\"AnalysisStarted\"")
            && l.contains("step 4/4:")
            && l.contains("no baseline pods at this step")),
        "the 100% step compares with the stable revision's record:\n{}",
        seen.join("\n")
    );

    std::fs::write(
        repo.join("nginx.conf"),
        site("proxy_pass http://app;").replace("127.0.21.2:9001", "127.0.21.2:9011"),
    )
    .expect("write");
    git(&repo, &["commit", "-q", "-am", "move app to 9011"]);
    wait_for(&lines, "\"RolledBack\"", &mut seen);
    for line in &seen {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    let answered = runtime.block_on(users.stop());
    assert!(answered.tally.requests > 0, "{answered:?}");
    child.interrupt();
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let state = tmp.path().join("state").display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&state))
        .collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
