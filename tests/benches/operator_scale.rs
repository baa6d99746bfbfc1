//! The operator scale bench (DESIGN §6: controller memory and reconcile latency at 1,000 pods, time
//! to restore). A real `switchback controller` process runs against the in-repo Kubernetes API
//! test server; the pods are Pods in that server whose `status.podIP` points at a farm of fake
//! agents ([`switchback_tests::fake_agents`]) on loopback, so the controller does all of its real
//! work (watches, git, render, `nginx -t`, tells, reads, status, pod marks) without a thousand nginx.
//!
//! Two runs, each with its own API server, farm and controller:
//! 1. scale: `SCALE_PODS` pods (1,000) in `SCALE_ROLLOUTS` ProxyRollouts (100), one git repository;
//!    the controller adopts v0, then one commit rolls out everywhere. Prints the controller's RSS
//!    (VmRSS, VmHWM) after adoption and after the rollout, reconcile p50/p99 estimated from the
//!    `switchback_reconcile_duration_seconds` histogram, and commit → every pod applied.
//! 2. restore: one ProxyRollout over `SCALE_RESTORE_PODS` pods (500); a commit whose digest the
//!    fake agents answer with 85% 502 is pushed; prints the time from the incident decision
//!    (`status.lastIncident.decidedAt`) to every pod's `switchback.dev/applied-digest` being the
//!    stable digest again.
//!
//! It prints figures and asserts no times. Run: `make bench-operator` (builds the release binary
//! first; `cargo bench -p switchback-tests --bench operator_scale` needs `target/release/switchback`
//! or `SWITCHBACK_BIN`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchback::operator::crd::ProxyRollout;
use switchback::render::{self, ConfigTree, Digest};
use switchback_tests::bin::switchback_bin;
use switchback_tests::fake_agents::{FakeAgents, loopback_addresses};
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::kube::KubeServer;
use tokio::process::{Child, Command};
use tokio::sync::broadcast::error::RecvError;

/// How long any one wait may take before the bench gives up saying what it saw.
const PATIENCE: Duration = Duration::from_secs(120);
const AGENT_PORT: u16 = 9180;
const MIB: f64 = 1024.0 * 1024.0;

struct Settings {
    pods: usize,
    rollouts: usize,
    restore_pods: usize,
    restore_step: String,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let s = Settings {
            pods: env_usize("SCALE_PODS", 1000),
            rollouts: env_usize("SCALE_ROLLOUTS", 100),
            restore_pods: env_usize("SCALE_RESTORE_PODS", 500),
            restore_step: std::env::var("SCALE_RESTORE_STEP").unwrap_or_else(|_| "50%".into()),
        };
        assert!(
            s.pods <= 10_000 && s.restore_pods <= 10_000,
            "at most 10,000 pods"
        );
        assert!(
            s.rollouts <= s.pods,
            "SCALE_ROLLOUTS must not exceed SCALE_PODS"
        );
        s
    }
}

/// One line of the result table.
struct Row {
    figure: String,
    value: String,
    goal: String,
    met: Option<bool>,
}

fn row(figure: &str, value: String, goal: &str, met: Option<bool>) -> Row {
    Row {
        figure: figure.to_string(),
        value,
        goal: goal.to_string(),
        met,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = Settings::from_env();
    let bin = switchback_bin();
    println!("operator scale bench: controller {}", bin.display());
    let mut rows = Vec::new();
    if settings.rollouts > 0 && settings.pods > 0 {
        rows.extend(scale(&settings, &bin).await);
    }
    if settings.restore_pods > 0 {
        rows.extend(restore(&settings, &bin).await);
    }
    println!();
    let w = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let v = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
    println!("{:<w$}  {:>v$}  {:<10}  met?", "figure", "value", "goal");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{:<w$}  {:>v$}  {:<10}  {met}", r.figure, r.value, r.goal);
    }
}

// ---------------------------------------------------------------- the cluster

/// The nginx config of version `v`.
fn site(v: &str) -> String {
    format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.0.1:9001; }}\n    server {{\n        listen 8080;\n        location / {{ return 200 \"{v}\\n\"; }}\n        location /app {{ proxy_pass http://app; }}\n    }}\n}}\n"
    )
}

/// The digest the controller will compute for `text` as `nginx.conf` (no values): the farm is
/// told which digest is bad before the commit exists, so no read ever sees it good.
fn digest_of(text: &str) -> Digest {
    let mut tree = ConfigTree::new();
    tree.insert_file("nginx.conf", text.as_bytes().to_vec());
    render::render(&tree, &Value::Null)
        .expect("the bench's config renders")
        .digest()
}

struct Repo {
    path: PathBuf,
}

impl Repo {
    fn new(dir: &Path) -> Repo {
        let path = dir.join("repo");
        std::fs::create_dir(&path).expect("mkdir repo");
        git(&path, &["init", "-q", "-b", "main"]);
        Repo { path }
    }

    fn commit(&self, text: &str, message: &str) -> String {
        std::fs::write(self.path.join("nginx.conf"), text).expect("write nginx.conf");
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", message]);
        git(&self.path, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

async fn install_crd(client: &kube::Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/proxyrollout.yaml");
    let text = std::fs::read_to_string(&path).expect("read crds/proxyrollout.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("the CRD parses");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create the CRD");
}

/// Creates the namespace and one Pod per address (labels from `labels(i)`), then reports each
/// Running and Ready on its address through the status subresource, as a kubelet would.
async fn create_pods(
    client: &kube::Client,
    namespace: &str,
    addrs: &[SocketAddr],
    labels: impl Fn(usize) -> BTreeMap<String, String>,
) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    for chunk in addrs.iter().enumerate().collect::<Vec<_>>().chunks(64) {
        let mut writes = tokio::task::JoinSet::new();
        for &(i, addr) in chunk {
            let (pods, addr, labels) = (pods.clone(), *addr, labels(i));
            writes.spawn(async move {
                let name = format!("pod-{i:05}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &pod)
                    .await
                    .expect("create a pod");
                let now = jiff::Timestamp::now().to_string();
                let ip = addr.ip().to_string();
                let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let status = json!({"status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": "127.0.0.1",
                    "startTime": now,
                    "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                }});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .expect("report the pod Ready");
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("pod write task");
        }
    }
    println!(
        "  {} pods created and Ready in {}",
        addrs.len(),
        secs(started.elapsed())
    );
}

fn rollout(
    name: &str,
    namespace: &str,
    repo: &Path,
    selector: Value,
    strategy: Value,
) -> ProxyRollout {
    serde_json::from_value(json!({
        "apiVersion": "switchback.dev/v1alpha1",
        "kind": "ProxyRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"url": format!("file://{}", repo.display()), "ref": "main", "interval": "1s"},
            "target": {"selector": selector},
            "strategy": strategy,
        },
    }))
    .expect("a ProxyRollout")
}

/// The objects of one resource as the API server holds them, followed in-process (no HTTP, so
/// watching costs the controller nothing); `changed` is when the last change arrived.
#[derive(Clone)]
struct Mirror {
    objects: Arc<Mutex<HashMap<String, Value>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Mirror {
    fn follow(server: &KubeServer, group: &'static str, plural: &'static str) -> Mirror {
        let (initial, mut rx) = server.list_and_subscribe(group, plural);
        let objects: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let name = |o: &Value| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        {
            let mut map = objects.lock().expect("mirror lock");
            for o in initial {
                map.insert(name(&o), o);
            }
        }
        let map = Arc::clone(&objects);
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.key.group == group && e.key.plural == plural => {
                        let mut map = map.lock().expect("mirror lock");
                        if e.kind == "DELETED" {
                            map.remove(&e.key.name);
                        } else {
                            map.insert(e.key.name.clone(), e.object.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        // Missed changes; the next change of each object brings it up to date.
                        eprintln!("  (mirror of {plural} lagged by {n} events)");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Mirror {
            objects,
            task: Arc::new(task),
        }
    }

    fn all(&self, pred: impl Fn(&Value) -> bool) -> bool {
        let map = self.objects.lock().expect("mirror lock");
        !map.is_empty() && map.values().all(pred)
    }

    fn get(&self, name: &str) -> Option<Value> {
        self.objects.lock().expect("mirror lock").get(name).cloned()
    }

    fn stop(&self) {
        self.task.abort();
    }
}

/// Polls `done` every 10 ms until it holds; panics with `what` after [`PATIENCE`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- the controller process

struct Controller {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
}

impl Controller {
    async fn start(bin: &Path, server: &KubeServer, namespace: &str, dir: &Path) -> Controller {
        let metrics = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address")
        };
        let log = dir.join("controller.log");
        let file = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(bin)
            .args(["controller", "--namespace", namespace])
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .env("KUBECONFIG", server.kubeconfig_path())
            // The fake agents take any bearer token, as real ones take the Secret's.
            .env("SWITCHBACK_AGENT_TOKEN", "bench-agent-token")
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
            log,
            http,
        };
        let ready = Instant::now() + PATIENCE;
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

    fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("the controller is running")
    }

    /// (VmRSS, VmHWM) in bytes.
    fn memory(&self) -> (u64, u64) {
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
    fn cpu(&self) -> f64 {
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

    async fn scrape(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    async fn stop(mut self) {
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
fn reconcile_quantiles(text: &str) -> (u64, Duration, Duration) {
    let name = "switchback_reconcile_duration_seconds_bucket{";
    let mut buckets: BTreeMap<u64, u64> = BTreeMap::new(); // le in ns (u64::MAX = +Inf) -> count
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
    let total = buckets.get(&u64::MAX).copied().unwrap_or(0);
    let quantile = |q: f64| {
        let rank = q * total as f64;
        let (mut lower, mut below) = (0u64, 0u64);
        for (&le, &count) in &buckets {
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

fn status_str<'a>(o: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = &o["status"];
    for p in path {
        v = &v[*p];
    }
    v.as_str()
}

// ---------------------------------------------------------------- 1. scale

async fn scale(s: &Settings, bin: &Path) -> Vec<Row> {
    println!(
        "\n== scale: {} pods in {} ProxyRollouts ({} pods each), one git repository",
        s.pods,
        s.rollouts,
        s.pods / s.rollouts
    );
    let server = KubeServer::start().await.expect("the API test server");
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path());
    let v0 = repo.commit(&site("v0"), "v0");
    let (d0, d1) = (digest_of(&site("v0")), digest_of(&site("v1")));
    install_crd(&client).await;
    let farm = FakeAgents::start(loopback_addresses(1, s.pods, AGENT_PORT))
        .await
        .expect("the fake agents (127.1.x.y:9180)");
    let per = s.pods.div_ceil(s.rollouts);
    let group = |i: usize| format!("r{:03}", i / per);
    create_pods(&client, "scale", farm.addresses(), |i| {
        BTreeMap::from([
            ("app".to_string(), "edge".to_string()),
            ("rollout".to_string(), group(i)),
        ])
    })
    .await;
    let rollouts: Api<ProxyRollout> = Api::namespaced(client.clone(), "scale");
    let strategy = json!({"steps": ["1", "100%"], "bake": "1s", "maxSurge": "100%", "onInconclusive": "Promote"});
    let groups = s.pods.div_ceil(per);
    for r in 0..groups {
        let name = format!("r{r:03}");
        let object = rollout(
            &name,
            "scale",
            &repo.path,
            json!({"app": "edge", "rollout": name}),
            strategy.clone(),
        );
        rollouts
            .create(&PostParams::default(), &object)
            .await
            .expect("create a ProxyRollout");
    }
    let mirror = Mirror::follow(&server, "switchback.dev", "proxyrollouts");
    let stable_is = |commit: String| {
        move |o: &Value| status_str(o, &["stable", "commit"]) == Some(commit.as_str())
    };

    let started = Instant::now();
    let controller = Controller::start(bin, &server, "scale", dir.path()).await;
    let ready = started.elapsed();
    wait_until(&format!("{groups} rollouts stable on v0"), || {
        mirror.all(stable_is(v0.clone())) && farm.all_applied_at(&d0).is_some()
    })
    .await;
    let adopted = started.elapsed();
    println!(
        "  controller ready in {}, every rollout stable on v0 and every pod on it {} after start",
        secs(ready),
        secs(adopted)
    );
    // Let the adoption's status writes and reconciles settle before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_adopted, hwm_adopted) = controller.memory();
    let (cpu0, reads0, at0) = (controller.cpu(), farm.counts(), Instant::now());
    let api0 = server.requests().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = at0.elapsed().as_secs_f64();
    let idle_cpu = (controller.cpu() - cpu0) / idle;
    let idle_reads = (farm.counts().reads - reads0.reads) as f64 / idle;
    let idle_api = (server.requests().len() - api0) as f64 / idle;
    println!(
        "  idle (all stable), over {idle:.0} s: controller CPU {:.0}% of a core, {idle_reads:.0} agent state reads/s, {idle_api:.0} API requests/s",
        idle_cpu * 100.0
    );

    let committed = Instant::now();
    let v1 = repo.commit(&site("v1"), "v1");
    let applied_at = wait_until("every pod to apply v1", || {
        farm.all_applied_at(&d1).is_some()
    })
    .await;
    let applied = farm
        .all_applied_at(&d1)
        .unwrap_or(applied_at)
        .duration_since(committed);
    let promoted = wait_until(&format!("{groups} rollouts stable on v1"), || {
        mirror.all(stable_is(v1.clone()))
    })
    .await
    .duration_since(committed);
    println!(
        "  v1 committed: every pod applied it after {}, every rollout stable on it after {}",
        secs(applied),
        secs(promoted)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, hwm_after) = controller.memory();
    let metrics = controller.scrape().await;
    let (count, p50, p99) = reconcile_quantiles(&metrics);
    let counts = farm.counts();
    println!(
        "  memory: after adoption VmRSS {:.1} MiB (peak {:.1}), after v1 VmRSS {:.1} MiB (peak {:.1})",
        rss_adopted as f64 / MIB,
        hwm_adopted as f64 / MIB,
        rss_after as f64 / MIB,
        hwm_after as f64 / MIB
    );
    println!(
        "  {count} reconciles; agents answered {} applies, {} nudges, {} state reads; the API server {} requests; controller CPU {:.1} s",
        counts.applies,
        counts.nudges,
        counts.reads,
        server.requests().len(),
        controller.cpu()
    );
    print_api_breakdown(&server);
    println!(
        "  controller log: {} (kept in the temp dir until the run ends)",
        controller.log.display()
    );
    controller.stop().await;
    mirror.stop();
    farm.stop().await;

    let goal_rss = 64.0 * MIB;
    let peak = hwm_after.max(hwm_adopted);
    vec![
        row(
            &format!("controller VmRSS, {} pods adopted", s.pods),
            format!("{:.1} MiB", rss_adopted as f64 / MIB),
            "< 64 MiB",
            Some((rss_adopted as f64) < goal_rss),
        ),
        row(
            "controller VmRSS after v1 everywhere",
            format!("{:.1} MiB", rss_after as f64 / MIB),
            "< 64 MiB",
            Some((rss_after as f64) < goal_rss),
        ),
        row(
            "controller VmHWM (peak RSS)",
            format!("{:.1} MiB", peak as f64 / MIB),
            "< 64 MiB",
            Some((peak as f64) < goal_rss),
        ),
        row(
            &format!("reconciles (of {} rollouts)", groups),
            count.to_string(),
            "",
            None,
        ),
        row(
            "reconcile p50 (bucket-interpolated)",
            format!("{:.2} ms", p50.as_secs_f64() * 1e3),
            "",
            None,
        ),
        row(
            "reconcile p99 (bucket-interpolated)",
            format!("{:.2} ms", p99.as_secs_f64() * 1e3),
            "< 50 ms",
            Some(p99 < Duration::from_millis(50)),
        ),
        row(
            &format!("adopt: start -> {} pods on v0", s.pods),
            secs(adopted),
            "",
            None,
        ),
        row(
            &format!("commit -> all {} pods applied", s.pods),
            secs(applied),
            "",
            None,
        ),
        row(
            &format!("commit -> all {groups} rollouts stable"),
            secs(promoted),
            "",
            None,
        ),
        row(
            "controller CPU while idle",
            format!("{:.0}% core", idle_cpu * 100.0),
            "",
            None,
        ),
    ]
}

/// Requests the API server answered, by method and resource, most first: what the controller
/// spends its API traffic on.
fn print_api_breakdown(server: &KubeServer) {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in server.requests() {
        let path = r.uri.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // /api/v1/namespaces/ns/<plural>[/name[/sub]] or /apis/g/v/namespaces/ns/<plural>/...
        let at = parts.iter().position(|p| *p == "namespaces").map(|i| i + 2);
        let resource = match at {
            Some(i) if i < parts.len() => {
                let sub = parts
                    .get(i + 2)
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!("{}{sub}", parts[i])
            }
            _ => parts.last().copied().unwrap_or_default().to_string(),
        };
        let watch = if r.uri.contains("watch=true") {
            " (watch)"
        } else {
            ""
        };
        *by.entry(format!("{} {resource}{watch}", r.method))
            .or_default() += 1;
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort_by_key(|b| std::cmp::Reverse(b.1));
    let top: Vec<String> = by
        .iter()
        .take(8)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    println!("  API requests by kind: {}", top.join(", "));
}

// ---------------------------------------------------------------- 2. restore

async fn restore(s: &Settings, bin: &Path) -> Vec<Row> {
    println!(
        "\n== restore: one ProxyRollout over {} pods, canary step {}, a commit answered with 85% 502",
        s.restore_pods, s.restore_step
    );
    let server = KubeServer::start().await.expect("the API test server");
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path());
    let v0 = repo.commit(&site("v0"), "v0");
    let (d0, bad) = (digest_of(&site("v0")), digest_of(&site("bad")));
    install_crd(&client).await;
    let farm = FakeAgents::start(loopback_addresses(2, s.restore_pods, AGENT_PORT))
        .await
        .expect("the fake agents (127.2.x.y:9180)");
    create_pods(&client, "restore", farm.addresses(), |_| {
        BTreeMap::from([("app".to_string(), "edge".to_string())])
    })
    .await;
    let strategy = json!({"steps": [s.restore_step, "100%"], "bake": "30s", "maxSurge": "100%", "onInconclusive": "Promote"});
    Api::<ProxyRollout>::namespaced(client.clone(), "restore")
        .create(
            &PostParams::default(),
            &rollout(
                "edge",
                "restore",
                &repo.path,
                json!({"app": "edge"}),
                strategy,
            ),
        )
        .await
        .expect("create the ProxyRollout");
    let rollouts = Mirror::follow(&server, "switchback.dev", "proxyrollouts");
    let pods = Mirror::follow(&server, "", "pods");
    let annotated = |digest: String| {
        move |p: &Value| {
            p["metadata"]["annotations"]["switchback.dev/applied-digest"].as_str()
                == Some(digest.as_str())
        }
    };
    let controller = Controller::start(bin, &server, "restore", dir.path()).await;
    wait_until("the rollout stable on v0 with every pod marked", || {
        rollouts
            .get("edge")
            .as_ref()
            .and_then(|o| status_str(o, &["stable", "commit"]))
            == Some(v0.as_str())
            && pods.all(annotated(d0.to_string()))
    })
    .await;
    println!("  v0 adopted on {} pods", s.restore_pods);

    farm.set_bad(bad);
    let committed = Instant::now();
    let commit = repo.commit(&site("bad"), "bad upstream");
    let mut most_bad = 0;
    wait_until("the incident decision", || {
        most_bad = most_bad.max(farm.count_applied(&bad));
        rollouts
            .get("edge")
            .as_ref()
            .and_then(|o| status_str(o, &["lastIncident", "commit"]))
            .is_some_and(|c| c == commit)
    })
    .await;
    let seen_decided = Instant::now();
    // Restored: every agent serves stable again and every pod says so in its annotation.
    let restored_seen = wait_until("every pod restored and marked on the stable digest", || {
        most_bad = most_bad.max(farm.count_applied(&bad));
        farm.all_applied_at(&d0).is_some() && pods.all(annotated(d0.to_string()))
    })
    .await;
    let restored_wall = jiff::Timestamp::now();
    let (anchor_wall, anchor) = (jiff::Timestamp::now(), Instant::now());
    let agents_restored = farm.all_applied_at(&d0);
    let object = rollouts.get("edge").expect("the rollout");
    let decided: jiff::Timestamp = status_str(&object, &["lastIncident", "decidedAt"])
        .expect("lastIncident.decidedAt")
        .parse()
        .expect("decidedAt is RFC 3339");
    let restored_at = status_str(&object, &["lastIncident", "restoredAt"]).map(str::to_string);
    let to_duration = |from: jiff::Timestamp, to: jiff::Timestamp| {
        let d = to.duration_since(from);
        Duration::try_from(d).unwrap_or(Duration::ZERO)
    };
    let restore_marks = to_duration(decided, restored_wall);
    // The farm's Instant as a wall time, to compare with decidedAt.
    let restore_agents = agents_restored.map(|at| {
        let wall = anchor_wall
            .checked_sub(
                jiff::SignedDuration::try_from(anchor.duration_since(at)).unwrap_or_default(),
            )
            .unwrap_or(anchor_wall);
        to_duration(decided, wall)
    });
    let detect = seen_decided.duration_since(committed);
    println!(
        "  commit -> decision seen {}; {} pods had applied the bad digest at most; decidedAt {decided}, restoredAt {}",
        secs(detect),
        most_bad,
        restored_at.as_deref().unwrap_or("(empty)")
    );
    println!(
        "  decision -> every agent on stable {}, -> every pod annotated stable {} (observed {} after the decision was seen)",
        restore_agents.map(secs).unwrap_or_else(|| "?".into()),
        secs(restore_marks),
        secs(restored_seen.duration_since(seen_decided))
    );
    let restored_status = restored_at
        .as_deref()
        .and_then(|r| r.parse::<jiff::Timestamp>().ok())
        .map(|r| to_duration(decided, r));
    println!("  controller log: {}", controller.log.display());
    controller.stop().await;
    rollouts.stop();
    pods.stop();
    farm.stop().await;
    let mut rows = vec![
        row(
            &format!("commit -> incident decision seen ({} pods)", s.restore_pods),
            secs(detect),
            "",
            None,
        ),
        row(
            &format!("decision -> all {} pods annotated stable", s.restore_pods),
            secs(restore_marks),
            "< 5 s",
            Some(restore_marks < Duration::from_secs(5)),
        ),
    ];
    if let Some(d) = restore_agents {
        rows.push(row(
            "decision -> all agents serve stable",
            secs(d),
            "",
            None,
        ));
    }
    if let Some(d) = restored_status {
        rows.push(row("decision -> status restoredAt", secs(d), "", None));
    }
    rows
}
