//! `switchback local` on a user's repository: it adopts the branch head, rolls out each new
//! commit, rolls back one whose upstream is dead (seen by the agents' probes alone), reports one
//! JSON object per line, and stops every process on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchback_tests::agent_harness::nginx_available;
use switchback_tests::bin::switchback_bin;

use switchback_tests::git_fixture::git_cli as git;

fn site(body: &str) -> String {
    format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.21.2:9001; }}\n    server {{\n        listen 8080;\n        location / {{ {body} }}\n    }}\n}}\n"
    )
}

/// Reads event lines until one contains `want`; fails at `deadline` or when the process ends.
fn wait_for(lines: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let hit = line.contains(want);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no event with {want:?}; saw:\n{}", seen.join("\n"));
}

/// Stops `switchback local` with SIGINT (as Ctrl-C would) when the test ends, also on failure.
struct Running(std::process::Child);

impl Running {
    fn interrupt(&mut self) {
        let Ok(pid) = i32::try_from(self.0.id()) else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
            let _ = self.0.wait();
        }
    }
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
            "2",
            "--subnet",
            "0.21",
            "--bake",
            "1",
            "--poll",
            "0.3",
            "--events",
            "json",
            "--on-inconclusive",
            "promote",
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
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for(&lines, "\"adopted\"", &mut seen);

    std::fs::write(
        repo.join("nginx.conf"),
        site("proxy_pass http://app; add_header X-V 2;"),
    )
    .expect("write");
    git(&repo, &["commit", "-q", "-am", "a header"]);
    wait_for(&lines, "\"Promoted\"", &mut seen);

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
