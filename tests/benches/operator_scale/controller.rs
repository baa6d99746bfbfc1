//! The `switchback controller` process under test: started, measured (memory, CPU, metrics) and stopped.

use super::*;

pub(crate) struct Controller {
    pub(crate) child: Child,
    pub(crate) metrics: SocketAddr,
    /// Where it serves push webhooks.
    pub(crate) webhook: SocketAddr,
    pub(crate) log: PathBuf,
    pub(crate) http: reqwest::Client,
}

impl Controller {
    pub(crate) async fn start(
        bin: &Path,
        server: &KubeServer,
        namespace: &str,
        dir: &Path,
    ) -> Controller {
        Controller::start_with(bin, server, namespace, dir, &[]).await
    }

    /// [`Controller::start`] with more arguments (a replica's `--leader-elect --shards`); `dir`
    /// holds its cache and log.
    pub(crate) async fn start_with(
        bin: &Path,
        server: &KubeServer,
        namespace: &str,
        dir: &Path,
        extra: &[String],
    ) -> Controller {
        // Both probes held until both are known, so the two ports differ.
        let probe = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let (a, b) = (probe(), probe());
        let (metrics, webhook) = (
            a.local_addr().expect("its address"),
            b.local_addr().expect("its address"),
        );
        drop((a, b));
        let log = dir.join("controller.log");
        let file = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(bin)
            // The repository is a local one.
            .args([
                "controller",
                "--allow-insecure-sources",
                "--namespace",
                namespace,
            ])
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--webhook-addr")
            .arg(webhook.to_string())
            .args(extra)
            .env("KUBECONFIG", server.kubeconfig_path())
            // The fake agents take any bearer token, as real ones take the Secret's.
            .env("SWITCHBACK_AGENT_TOKEN", "bench-agent-token")
            // As the chart's Deployment sets it.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchback controller");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        let c = Controller {
            child,
            metrics,
            webhook,
            log,
            http,
        };
        let ready = Instant::now() + patience();
        loop {
            // /healthz, not /readyz: /readyz stayed "connecting to the Kubernetes API" in the
            // restore run while the controller was already driving the rollout (reported).
            let got = c.http.get(format!("http://{metrics}/healthz")).send().await;
            if got.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < ready,
                "the controller was not ready; its log:\n{}",
                std::fs::read_to_string(&c.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("the controller is running")
    }

    /// (VmRSS, VmHWM) in bytes.
    pub(crate) fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("{name} missing in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// (user + system) CPU seconds the process used so far.
    pub(crate) fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // Fields after the ")" that ends the command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        let ticks = 100.0; // USER_HZ on Linux
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
    }

    pub(crate) async fn scrape(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// SIGKILL: no step-down, its Leases expire.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub(crate) async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("  the controller did not stop on SIGTERM in 15 s; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// Reconcile count and the p50/p99 estimated from the histogram's cumulative buckets (both
/// results summed), interpolating linearly inside the bucket the rank falls in, as PromQL's
/// `histogram_quantile` does.
pub(crate) fn reconcile_quantiles(text: &str) -> (u64, Duration, Duration) {
    quantiles_of(&reconcile_buckets(text))
}

/// The reconcile histogram's cumulative buckets (both results summed): bound in ns
/// (`u64::MAX` = +Inf) -> count.
pub(crate) fn reconcile_buckets(text: &str) -> BTreeMap<u64, u64> {
    let name = "switchback_reconcile_duration_seconds_bucket{";
    let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let Some((labels, count)) = line[name.len()..].split_once("} ") else {
            continue;
        };
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("a bucket bound");
        let le = if le == "+Inf" {
            u64::MAX
        } else {
            (le.parse::<f64>().expect("a bound") * 1e9) as u64
        };
        let count: u64 = count.trim().parse().expect("a bucket count");
        *buckets.entry(le).or_default() += count;
    }
    buckets
}

/// What a histogram gained between two scrapes.
pub(crate) fn buckets_since(
    before: &BTreeMap<u64, u64>,
    after: &BTreeMap<u64, u64>,
) -> BTreeMap<u64, u64> {
    after
        .iter()
        .map(|(le, n)| (*le, n - before.get(le).copied().unwrap_or(0)))
        .collect()
}

/// Count, p50 and p99 of cumulative `buckets`.
pub(crate) fn quantiles_of(buckets: &BTreeMap<u64, u64>) -> (u64, Duration, Duration) {
    let total = buckets.get(&u64::MAX).copied().unwrap_or(0);
    let quantile = |q: f64| {
        let rank = q * total as f64;
        let (mut lower, mut below) = (0u64, 0u64);
        for (&le, &count) in buckets {
            if count as f64 >= rank {
                if le == u64::MAX {
                    return Duration::from_nanos(lower); // past the last bound: its bound
                }
                let share = if count == below {
                    0.0
                } else {
                    (rank - below as f64) / (count - below) as f64
                };
                return Duration::from_nanos(lower + ((le - lower) as f64 * share) as u64);
            }
            (lower, below) = (le, count);
        }
        Duration::ZERO
    };
    (total, quantile(0.5), quantile(0.99))
}

pub(crate) fn status_str<'a>(o: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = &o["status"];
    for p in path {
        v = &v[*p];
    }
    v.as_str()
}
