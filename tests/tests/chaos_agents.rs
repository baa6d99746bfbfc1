//! Issue 16's fault matrix, the agents' own faults, on the rig of `switchback_tests::chaos::rig`
//! (three real nginx pods, default strategy, 8 s bake, every policy at its default): the canary
//! pod's agent state disk full during an apply, and the canary pod's agent clock 30 s ahead and
//! 30 s behind. Each run must end with every invariant held and prints one row of the fault
//! table (see docs/reliability.md).
//!
//! The canary is the first pod by name (`edge-0`): the default strategy's first step takes one
//! pod, the first eligible in name order. The tests assert it, so a change of that choice fails
//! here loudly rather than faulting a pod that is not the canary.
//!
//! Loopback subnets taken here: 127.0.178.x and 127.0.179.x, one per test.
//! `CHAOS_REPETITIONS` (default 1) repeats each fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use switchback::agent::{AgentClient, AgentState, Clock};
use switchback_tests::chaos::report::{FaultWindow, repetitions};
use switchback_tests::chaos::rig::{ROLLOUT_PATIENCE, Rig, did};
use switchback_tests::kube::kubelet::{AGENT_PORT, NGINX_PORT};

/// The pod the default strategy makes the canary.
const CANARY: &str = "edge-0";

/// The tmpfs over the canary's `versions/`: room for the versions it holds, not for a filler.
const TMPFS_SIZE: &str = "1m";

/// What the kernel says when a write finds the disk full (`ENOSPC`).
const NO_SPACE: &str = "No space left on device";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_on_the_canary_fails_its_apply_keeps_stable_served_and_a_later_commit_promotes()
 {
    if let Err(why) = tmpfs_works() {
        eprintln!("skipping: this test mounts a tmpfs (root and `mount -t tmpfs`), and {why}");
        return;
    }
    let Some(mut b) = Rig::up(178, "", false).await else {
        return;
    };
    let versions = state_dir(&b, CANARY).join("versions");
    let disk = FullDisk::mount(&versions).expect("a tmpfs over the canary's versions/");
    let agent = agent_client(&b, CANARY).await;
    let started = agent.state().await.expect("the canary's state").started_at;
    for _ in 0..repetitions() {
        let before = body(&b, CANARY).await;
        let failed_before = failed_applies(&agent).await;
        let free_before = disk.free_bytes();
        disk.fill().expect("fill the tmpfs");
        let window = FaultWindow::open(&b.c).await;
        let (v, tell) = b.commit_good_and_wait_tell().await;
        assert_eq!(tell.pod, CANARY, "the canary is the first pod by name");
        let verdict = b
            .witness
            .wait_status(ROLLOUT_PATIENCE, |s| {
                s["stable"]["commit"] == v.as_str() || quarantined(s, &v)
            })
            .await;
        b.wait_rolled_back(&v).await;
        let reason = verdict["lastIncident"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let after = body(&b, CANARY).await;
        let failed = failed_applies(&agent).await - failed_before;
        let state = agent.state().await.expect("the canary's agent answers");
        let leftovers = leftovers(&state_dir(&b, CANARY));
        let row = b
            .row(
                "agent state disk full during an apply (canary pod)",
                format!("{CANARY}'s versions/ on a {TMPFS_SIZE} tmpfs, filled; a good commit"),
                format!(
                    "{}: {}; {CANARY} kept serving stable, its agent up ({failed} failed \
                     apply attempts counted, {})",
                    did(&b.c, &v).await,
                    reason.replace('|', "/"),
                    if leftovers.is_empty() {
                        "no file left behind".to_string()
                    } else {
                        format!("LEFT {}", leftovers.join(", "))
                    }
                ),
                window,
            )
            .await;
        row.print_and_assert();
        assert!(
            quarantined(&verdict, &v),
            "an apply failure on the canary rolls back (maxApplyFailures: 0): {verdict}"
        );
        assert!(
            reason.contains("failed to apply") && reason.contains(NO_SPACE),
            "the incident names the failed apply and its cause: {reason}"
        );
        assert_eq!(after, before, "what {CANARY} serves after the failed apply");
        // The nudge's apply, and the annotation's when it is read before the rollback's.
        assert!(
            (1..=2).contains(&failed),
            "the agent counts the failed apply (once per request for the digest): {failed}"
        );
        assert_eq!(
            state.started_at, started,
            "the agent did not restart (crash) on the full disk"
        );
        if let Some(last) = &state.last_apply {
            eprintln!("{CANARY}'s last apply: {:?}", last.outcome);
        }
        assert!(
            leftovers.is_empty(),
            "the failed apply left {leftovers:?} behind"
        );

        // The space freed (nothing of the failed apply holds any), a new commit promotes.
        disk.free().expect("remove the filler");
        assert!(
            disk.free_bytes() >= free_before,
            "the failed apply still holds space on the tmpfs ({} bytes free, {free_before} before)",
            disk.free_bytes()
        );
        let window = FaultWindow::open(&b.c).await;
        let next = b.commit_good();
        b.assert_promoted_row(
            "agent state disk full, then freed",
            format!("the filler removed, a new good commit after {}", short(&v)),
            &next,
            window,
        )
        .await;
        assert_eq!(
            body(&b, CANARY).await,
            format!("v{}", b.runs),
            "what {CANARY} serves once promoted"
        );
    }
    drop(disk);
    b.down().await;
}

/// Clock skew cannot change a decision: the controller never compares a time an agent reports
/// with its own clock. It reads an agent's applied digest, its counters (cumulative counts) and
/// its drift report, and stamps each read with its own `Timestamp::now()` (`runner`); drift
/// episodes are told apart by equality of the agent's `detected_at`, never by age
/// (`operator/drift.rs`). The agent's own waits run on the monotonic clock. So the canary's
/// agent is restarted with its wall clock 30 s ahead, then 30 s behind ([`Clock::skewed`], the
/// seam the agent stamps its reports with), and a good commit must promote and a bad one roll
/// back at the same step and for the same reason as with the clock right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_agent_clock_30s_ahead_or_behind_promotes_good_and_rolls_back_bad_as_before() {
    let Some(mut b) = Rig::up(179, "", false).await else {
        return;
    };
    // The reference: a bad commit with every clock right.
    let reference = bad_commit(
        &mut b,
        "bad commit, every clock right (clock skew's reference)",
        "a commit whose upstream is dead",
        None,
    )
    .await;
    for _ in 0..repetitions() {
        for skew in [30, -30] {
            let restarted =
                b.c.kubelet()
                    .restart_agent_with_clock(
                        "edge",
                        CANARY,
                        Clock::skewed(SignedDuration::from_secs(skew)),
                    )
                    .await;
            assert!(restarted, "{CANARY} had no agent to restart");
            let agent = agent_client(&b, CANARY).await;
            let seen = skew_seen(&agent).await;
            assert!(
                (seen - skew).abs() <= 5,
                "{CANARY}'s agent reports times {seen} s off, not {skew} s"
            );
            let label = format!("{skew:+} s");

            let window = FaultWindow::open(&b.c).await;
            let (good, tell) = b.commit_good_and_wait_tell().await;
            assert_eq!(tell.pod, CANARY, "the skewed pod is the canary");
            b.assert_promoted_row(
                &format!("clock skew {label} on the canary's agent, good commit"),
                format!("{CANARY}'s agent clock {label} (reports stamped {seen:+} s)"),
                &good,
                window,
            )
            .await;

            let bad = bad_commit(
                &mut b,
                &format!("clock skew {label} on the canary's agent, bad commit"),
                &format!("{CANARY}'s agent clock {label}; a commit whose upstream is dead"),
                Some(&reference),
            )
            .await;
            assert_eq!(
                bad.step, reference.step,
                "detected at another step with the clock {label}"
            );
            assert_eq!(
                bad.kind, reference.kind,
                "rolled back for another reason with the clock {label}"
            );
        }
    }
    // Back to the right clock, so the pod ends as it began.
    b.c.kubelet()
        .restart_agent_with_clock("edge", CANARY, Clock::system())
        .await;
    b.down().await;
}

/// How a bad commit was caught.
struct Detection {
    /// The last canary step status showed before the rollback (`1/4`).
    step: String,
    /// The incident's reason up to its first `(` or `:` (`analysis`, `1 pod(s) failed to
    /// apply`, ...).
    kind: String,
    /// From the canary's tell to the status naming the commit quarantined.
    detected: Duration,
}

/// Commits a bad change, waits until it is rolled back on every pod, prints its row (`fault`,
/// `injected`; `reference`'s detection beside this one's when given) and asserts every
/// invariant held and that analysis caught it.
async fn bad_commit(
    b: &mut Rig,
    fault: &str,
    injected: &str,
    reference: Option<&Detection>,
) -> Detection {
    let window = FaultWindow::open(&b.c).await;
    let stable =
        b.c.jsonpath("proxyrollout/edge", "{.status.stable.digest}")
            .await;
    let from = b.witness.tells().len();
    let v = b.commit_bad();
    let tell = b.wait_first_tell(from, &stable, &v).await;
    assert_eq!(tell.pod, CANARY, "the canary is the first pod by name");
    let last_step = std::sync::Mutex::new(String::from("?"));
    let verdict = b
        .witness
        .wait_status(ROLLOUT_PATIENCE, |s| {
            if s["target"]["commit"] == v.as_str()
                && let Some(step) = s["analysis"]["step"].as_str()
            {
                *last_step.lock().unwrap_or_else(|e| e.into_inner()) = step.to_string();
            }
            quarantined(s, &v) || s["stable"]["commit"] == v.as_str()
        })
        .await;
    let detected = tell.at.elapsed();
    let step = last_step.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(quarantined(&verdict, &v), "the bad commit {v} promoted");
    b.wait_rolled_back(&v).await;
    let reason = verdict["lastIncident"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = reason
        .split(['(', ':'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let compared = reference
        .map(|r| {
            format!(
                " (clock right: step {}, {:.1} s, {})",
                r.step,
                r.detected.as_secs_f64(),
                r.kind
            )
        })
        .unwrap_or_default();
    b.row(
        fault,
        injected.to_string(),
        format!(
            "{}; caught by {kind} at step {step}, {:.1} s after the canary's tell{compared}",
            did(&b.c, &v).await,
            detected.as_secs_f64()
        ),
        window,
    )
    .await
    .print_and_assert();
    assert!(
        kind.starts_with("analysis"),
        "a bad commit is caught by analysis: {reason}"
    );
    Detection {
        step,
        kind,
        detected,
    }
}

/// Whether status names `commit` quarantined.
fn quarantined(status: &Value, commit: &str) -> bool {
    status["quarantined"]
        .as_array()
        .is_some_and(|q| q.iter().any(|e| e["commit"] == commit))
}

fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// The state directory of `pod`'s agent.
fn state_dir(b: &Rig, pod: &str) -> PathBuf {
    let current = b.c.live_config(pod);
    current
        .parent()
        .expect("`current` is inside the state directory")
        .to_path_buf()
}

/// What the agent left of a failed apply: stages in `versions/`, temp files in `bundles/`, a
/// half-made `current.new` or `applied.new`.
fn leftovers(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (dir, prefix) in [("versions", ".stage-"), ("bundles", ".")] {
        for e in std::fs::read_dir(state.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    for name in ["current.new", "applied.new"] {
        if state.join(name).symlink_metadata().is_ok() {
            out.push(name.to_string());
        }
    }
    out
}

/// A client for `pod`'s agent API, with its namespace's token.
async fn agent_client(b: &Rig, pod: &str) -> AgentClient {
    let ip = b.c.jsonpath(&format!("pod/{pod}"), "{.status.podIP}").await;
    let addr = SocketAddr::new(ip.parse().expect("a pod IP"), AGENT_PORT);
    AgentClient::new(addr)
        .expect("agent client")
        .with_token(b.c.kubelet().agent_token_for("edge"))
}

/// The agent's failed applies so far (`switchback_agent_applies_total{result="failed"}`).
async fn failed_applies(agent: &AgentClient) -> u64 {
    let metrics = agent.metrics().await.expect("the agent's metrics");
    metrics
        .lines()
        .find(|l| l.starts_with("switchback_agent_applies_total{") && l.contains("\"failed\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// Waits (bounded) until the restarted agent answers, and returns how far, in whole seconds, the
/// time it stamps its state with is from this machine's clock (its `started_at` against the time
/// it was read).
async fn skew_seen(agent: &AgentClient) -> i64 {
    let deadline = tokio::time::Instant::now() + ROLLOUT_PATIENCE;
    loop {
        let before = Timestamp::now();
        if let Ok(AgentState { started_at, .. }) = agent.state().await {
            return started_at.duration_since(before).as_secs();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted agent never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `pod`'s nginx answers on `/`.
async fn body(b: &Rig, pod: &str) -> String {
    let ip = b.c.jsonpath(&format!("pod/{pod}"), "{.status.podIP}").await;
    let url = format!("http://{ip}:{NGINX_PORT}/");
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_else(|e| e.to_string()),
        Err(e) => e.to_string(),
    }
    .trim()
    .to_string()
}

/// Why a tmpfs cannot be mounted here, if it cannot: one is mounted on a temp dir and taken
/// down again.
fn tmpfs_works() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
    let path = dir.path().display().to_string();
    run("mount", &["-t", "tmpfs", "-o", "size=64k", "tmpfs", &path])?;
    run("umount", &[&path])
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("`{program}` cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A small tmpfs over a directory, holding a copy of what the directory held (made on a tmpfs
/// mounted aside, then moved over the directory in one step, so the directory never shows
/// empty), and a filler that takes all its free space; unmounted when dropped.
struct FullDisk {
    dir: PathBuf,
    filler: PathBuf,
    /// Where the tmpfs was first mounted (empty once it is moved).
    _aside: tempfile::TempDir,
}

impl FullDisk {
    fn mount(dir: &Path) -> Result<FullDisk, String> {
        let aside = tempfile::tempdir().map_err(|e| e.to_string())?;
        let at = aside.path().display().to_string();
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
            format!("{:o}", m.permissions().mode() & 0o7777)
        };
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={TMPFS_SIZE},mode={mode}"),
                "tmpfs",
                &at,
            ],
        )?;
        let copied = run("cp", &["-a", &format!("{}/.", dir.display()), &at])
            .and_then(|()| run("mount", &["--move", &at, &dir.display().to_string()]));
        if let Err(e) = copied {
            let _ = run("umount", &[&at]);
            return Err(e);
        }
        Ok(FullDisk {
            dir: dir.to_path_buf(),
            filler: dir.join("filler"),
            _aside: aside,
        })
    }

    /// Writes the filler, a page at a time, until the tmpfs is full (bounded by its size).
    fn fill(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)?;
        let page = [0u8; 4096];
        for _ in 0..(4 * 1024 * 1024 / page.len()) {
            match f.write_all(&page) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("the tmpfs never filled"))
    }

    fn free(&self) -> std::io::Result<()> {
        std::fs::remove_file(&self.filler)
    }

    fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs the tmpfs");
        s.blocks_available() * s.fragment_size()
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        // Lazily: nginx or the agent may still hold a file open in it.
        if let Err(e) = run("umount", &["-l", &self.dir.display().to_string()]) {
            eprintln!("cannot unmount the tmpfs at {}: {e}", self.dir.display());
        }
    }
}
