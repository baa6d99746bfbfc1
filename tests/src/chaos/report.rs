//! One row of the fault matrix per fault run: what was injected, what Switchback did, how long
//! it took to recover, how many users' requests failed meanwhile, and which invariants held.
//! Printed as a markdown table row (seen with `--nocapture`) and appended to the file named by
//! `CHAOS_REPORT` when set, so `make chaos` collects the table `docs/reliability.md` shows.

use std::io::Write as _;
use std::time::Duration;

use super::invariants::Outcome;
use crate::load::Load;
use crate::operator_fixture::Cluster;

/// The environment variable naming the file rows are appended to.
pub const REPORT_ENV: &str = "CHAOS_REPORT";

/// The rate the fault-window users send each pod: a second set of users beside the ones the
/// analysis needs, counting only what failed while the fault lasted.
pub const WINDOW_RPS: u32 = 10;

/// One fault run.
#[derive(Debug)]
pub struct Row {
    /// The fault, e.g. `API server down 30 s mid-canary`.
    pub fault: String,
    /// When and how it was injected, e.g. `canary step 1/4`.
    pub injected: String,
    /// What Switchback did, e.g. `promoted v1` or `rolled back, quarantined`.
    pub did: String,
    /// From the injection to the rollout's settling (Idle with every pod caught up).
    pub recovery: Duration,
    /// Requests of the fault-window users that failed (5xx or no answer).
    pub requests_failed: u64,
    /// Each invariant by name, with its violations.
    pub invariants: Vec<(&'static str, Outcome)>,
}

impl Row {
    /// The table's header, two lines.
    pub fn header() -> &'static str {
        "| fault | injected | Switchback did | recovery | requests failed | invariants |\n|---|---|---|---|---|---|"
    }

    /// Whether every invariant held.
    pub fn held(&self) -> bool {
        self.invariants.iter().all(|(_, o)| o.is_ok())
    }

    /// The row in markdown.
    pub fn markdown(&self) -> String {
        let invariants = if self.held() {
            format!("all {} held", self.invariants.len())
        } else {
            let broken: Vec<&str> = self
                .invariants
                .iter()
                .filter(|(_, o)| o.is_err())
                .map(|(n, _)| *n)
                .collect();
            format!("BROKEN: {}", broken.join(", "))
        };
        format!(
            "| {} | {} | {} | {:.1} s | {} | {} |",
            self.fault,
            self.injected,
            self.did,
            self.recovery.as_secs_f64(),
            self.requests_failed,
            invariants
        )
    }

    /// Prints the row (and, once per process, the header) and appends it to `CHAOS_REPORT`.
    pub fn print(&self) {
        static HEADER: std::sync::Once = std::sync::Once::new();
        HEADER.call_once(|| println!("{}", Row::header()));
        let line = self.markdown();
        println!("{line}");
        if let Some(path) = std::env::var_os(REPORT_ENV) {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                eprintln!("cannot append to {}: {e}", path.to_string_lossy());
            }
        }
    }

    /// Prints the row, then fails the test naming every violation if an invariant did not hold.
    pub fn print_and_assert(&self) {
        self.print();
        let violations: Vec<String> = self
            .invariants
            .iter()
            .filter_map(|(n, o)| o.as_ref().err().map(|v| format!("{n}: {}", v.join("; "))))
            .collect();
        assert!(
            violations.is_empty(),
            "{}: invariants broken:\n{}",
            self.fault,
            violations.join("\n")
        );
    }
}

/// Users sending [`WINDOW_RPS`] to every Ready pod from the injection on; stop them with
/// [`FaultWindow::failed`] once recovered.
pub struct FaultWindow {
    load: Load,
    started: tokio::time::Instant,
}

impl FaultWindow {
    /// Starts the window's users and clock now: call right before injecting.
    pub async fn open(c: &Cluster) -> FaultWindow {
        FaultWindow {
            load: c.start_traffic(WINDOW_RPS).await,
            started: tokio::time::Instant::now(),
        }
    }

    /// Time since the window opened.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the users; returns the time since the injection and how many requests failed.
    pub async fn close(self) -> (Duration, u64) {
        let elapsed = self.started.elapsed();
        let seen = self.load.stop().await;
        (elapsed, seen.tally.failed)
    }
}

/// How many times each fault runs: `CHAOS_REPETITIONS`, default 1.
pub fn repetitions() -> u32 {
    std::env::var("CHAOS_REPETITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// How long the API server stays down: `CHAOS_OUTAGE_SECS`, default 10 (`make chaos`: 30).
pub fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("CHAOS_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    )
}
