//! The fake-agent farm in child processes: at 10,000 pods one process cannot hold the farm.
//!
//! Each fake pod is a listener, and the controller keeps one pooled connection to each, so a farm
//! of N pods holds 2N descriptors. The hard `RLIMIT_NOFILE` here (and on many machines) is 20,000,
//! and raising it needs `CAP_SYS_RESOURCE`; so the bench serves the farm from child processes of
//! at most [`PODS_PER_PROCESS`] pods each (the bench binary again, told by [`FARM_ENV`] which
//! addresses to serve), and asks them for their counts over a line protocol on stdin/stdout:
//!
//! - `counts` → `<applies> <nudges> <reads>`
//! - `count <digest>` → how many pods serve the digest
//! - `all <digest>` → `-`, or how many nanoseconds ago the last pod applied it when all serve it
//! - `bad <digest>` → `ok` (the digest answers 85% 502 from now on)
//!
//! End of stdin ends the child.

use std::io::{BufRead, BufReader, Write};

use switchback_tests::fake_agents::FarmCounts;

use super::*;

/// The environment variable that makes the bench binary a farm child: `<second> <from> <n> <port>`
/// (serve `loopback_addresses(second, from + n, port)[from..]`).
pub(crate) const FARM_ENV: &str = "OPERATOR_SCALE_FARM";

/// Pods one farm process serves at most: 2 descriptors each, well under a 20,000 limit.
const PODS_PER_PROCESS: usize = 4_000;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children inherit it: the
/// controller holds a connection per pod) and says what the limit is.
pub(crate) fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The farm child's whole life: serve its pods, answer the parent until stdin ends.
pub(crate) async fn serve_child(spec: &str) {
    let parts: Vec<usize> = spec
        .split_whitespace()
        .map(|p| p.parse().expect("a farm spec number"))
        .collect();
    let [second, from, n, port] = parts[..] else {
        panic!("{FARM_ENV}={spec:?} is not `<second> <from> <n> <port>`");
    };
    let second = u8::try_from(second).expect("the second octet");
    let port = u16::try_from(port).expect("the port");
    let addrs = loopback_addresses(second, from + n, port).split_off(from);
    let mut out = std::io::stdout();
    let farm = match FakeAgents::start(addrs).await {
        Ok(farm) => farm,
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            return;
        }
    };
    // The questions are answered on a blocking thread (std's stdin); the pods keep serving on
    // the runtime.
    let farm = tokio::task::spawn_blocking(move || {
        writeln!(out, "ready").expect("write to the bench");
        out.flush().expect("flush to the bench");
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let digest = || arg.parse::<Digest>().expect("a digest from the bench");
            let answer = match verb {
                "counts" => {
                    let c = farm.counts();
                    format!("{} {} {}", c.applies, c.nudges, c.reads)
                }
                "count" => farm.count_applied(&digest()).to_string(),
                "all" => match farm.all_applied_at(&digest()) {
                    Some(at) => at.elapsed().as_nanos().to_string(),
                    None => "-".to_string(),
                },
                "bad" => {
                    farm.set_bad(digest());
                    "ok".to_string()
                }
                other => panic!("the farm child got {other:?}"),
            };
            writeln!(out, "{answer}").expect("write to the bench");
            out.flush().expect("flush to the bench");
        }
        farm
    })
    .await
    .expect("the farm child's question loop");
    farm.stop().await;
}

/// One farm child: its process and the two ends of its protocol.
struct Part {
    child: std::process::Child,
    /// `None` once closed, which ends the child.
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Part {
    fn call(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("a farm child still running");
        writeln!(stdin, "{line}").expect("write to a farm child");
        stdin.flush().expect("flush to a farm child");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("read from a farm child");
        assert!(!answer.is_empty(), "a farm child ended (see its stderr)");
        answer.trim_end().to_string()
    }
}

/// The fake agents of one run, served by child processes; the same questions as
/// [`FakeAgents`] answers, summed over the children.
pub(crate) struct Farm {
    addrs: Vec<SocketAddr>,
    parts: Vec<Mutex<Part>>,
}

impl Farm {
    /// Starts the farm for `loopback_addresses(second, n, port)` and waits until every pod
    /// listens.
    pub(crate) async fn start(second: u8, n: usize, port: u16) -> Farm {
        let exe = std::env::current_exe().expect("the bench's own path");
        tokio::task::spawn_blocking(move || {
            let mut parts = Vec::new();
            for from in (0..n).step_by(PODS_PER_PROCESS) {
                let count = PODS_PER_PROCESS.min(n - from);
                let mut child = std::process::Command::new(&exe)
                    .env(FARM_ENV, format!("{second} {from} {count} {port}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn a farm child");
                let stdin = child.stdin.take().expect("its stdin");
                let stdout = BufReader::new(child.stdout.take().expect("its stdout"));
                parts.push(Part {
                    child,
                    stdin: Some(stdin),
                    stdout,
                });
            }
            for part in &mut parts {
                let mut first = String::new();
                part.stdout
                    .read_line(&mut first)
                    .expect("read from a farm child");
                assert_eq!(
                    first.trim_end(),
                    "ready",
                    "a farm child did not start (127.{second}.x.y:{port})"
                );
            }
            Farm {
                addrs: loopback_addresses(second, n, port),
                parts: parts.into_iter().map(Mutex::new).collect(),
            }
        })
        .await
        .expect("the farm start task")
    }

    fn ask(&self, line: &str) -> Vec<String> {
        self.parts
            .iter()
            .map(|p| p.lock().expect("farm part lock").call(line))
            .collect()
    }

    /// The pod addresses.
    pub(crate) fn addresses(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// From now on `digest` answers 85% 502 on every pod.
    pub(crate) fn set_bad(&self, digest: Digest) {
        self.ask(&format!("bad {digest}"));
    }

    /// How many pods serve `digest` now.
    pub(crate) fn count_applied(&self, digest: &Digest) -> usize {
        self.ask(&format!("count {digest}"))
            .iter()
            .map(|a| a.parse::<usize>().expect("a count"))
            .sum()
    }

    /// When the last pod that serves `digest` applied it, if every pod serves it now.
    pub(crate) fn all_applied_at(&self, digest: &Digest) -> Option<Instant> {
        let now = Instant::now();
        let mut last: Option<Instant> = None;
        for answer in self.ask(&format!("all {digest}")) {
            let ago: u64 = answer.parse().ok()?;
            let at = now.checked_sub(Duration::from_nanos(ago)).unwrap_or(now);
            last = last.max(Some(at));
        }
        last
    }

    /// Calls answered so far, over every pod.
    pub(crate) fn counts(&self) -> FarmCounts {
        let mut c = FarmCounts::default();
        for answer in self.ask("counts") {
            let n: Vec<u64> = answer
                .split_whitespace()
                .map(|x| x.parse().expect("a count"))
                .collect();
            c.applies += n[0];
            c.nudges += n[1];
            c.reads += n[2];
        }
        c
    }

    /// Ends every child (end of stdin) and waits for it.
    pub(crate) async fn stop(self) {
        tokio::task::spawn_blocking(move || {
            for part in self.parts {
                let mut part = part.into_inner().expect("farm part lock");
                part.stdin = None;
                let _ = part.child.wait();
            }
        })
        .await
        .expect("the farm stop task");
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        // A bench that panics must not leave listeners behind: the child's stdin closes with
        // this struct, and a child that did not end by then is killed.
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
