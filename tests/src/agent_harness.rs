//! Running real agents (with real nginx) in tests: in-process through the library, or as a
//! separate process (`sb-test-agent`) when a test must kill it with `SIGKILL`. Everything listens
//! on loopback at ports the kernel picked, and every wait polls with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use switchback::agent::config::ApiLimits;
use switchback::agent::{
    AgentClient, AgentConfig, AgentError, AgentState, ApplyOutcome, DriftSettings, ProbeSpec,
    Timeouts, Token,
};
use switchback::render::Bundle;
use switchback::validate::sandbox::Nginx;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for anything (nginx start, counters to arrive) before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Whether nginx is here. Without it the test fails, unless `SWITCHBACK_SKIP_NGINX=1`, in which
/// case this says so loudly and returns `false`.
pub fn nginx_available() -> bool {
    let skip = std::env::var("SWITCHBACK_SKIP_NGINX").is_ok_and(|v| v == "1");
    match Nginx::find(None) {
        Ok(Some(_)) => true,
        Ok(None) if skip => {
            eprintln!(
                "\n!!!!!!!! SKIPPING an agent test: no nginx found and SWITCHBACK_SKIP_NGINX=1 !!!!!!!!\n"
            );
            false
        }
        Ok(None) => panic!(
            "nginx not found (SWITCHBACK_NGINX, PATH, /usr/sbin/nginx): install nginx-light \
             or set SWITCHBACK_SKIP_NGINX=1 to skip these tests"
        ),
        Err(e) => panic!("nginx found but unusable: {e}"),
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("bound address")
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bundle of one `nginx.conf`.
pub fn bundle(conf: &str) -> Bundle {
    let mut files = BTreeMap::new();
    files.insert("nginx.conf".to_string(), conf.as_bytes().to_vec());
    Bundle::new(files)
}

/// A site on `listen` whose `/version` answers `version`, whose `/healthz` answers 200 and whose
/// other paths go to `upstream`.
pub fn site(listen: SocketAddr, upstream: SocketAddr, version: &str) -> Bundle {
    bundle(&format!(
        "worker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n  upstream app {{ server {upstream}; }}\n  server {{\n    listen {listen};\n    location = /version {{ return 200 \"{version}\\n\"; }}\n    location = /healthz {{ return 200 \"ok\\n\"; }}\n    location / {{ proxy_pass http://app; }}\n  }}\n}}\n"
    ))
}

/// A plain HTTP client that ignores proxy settings.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// `GET http://{addr}{path}`: status and body, or `None` when nothing answered.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let resp = http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Whether process `pid` runs (zombies do not count).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s.rsplit(") ").next().and_then(|r| r.chars().next());
        !matches!(state, Some('Z') | Some('X') | None)
    })
}

/// The pid in the state directory's nginx pid file.
pub fn pid_file(state: &Path) -> Option<i32> {
    std::fs::read_to_string(state.join("nginx.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Kills whatever nginx a failed test left behind in `state` (the agent starts nginx in its own
/// process group, so the group reaches the workers too).
pub struct NginxReaper(pub PathBuf);

impl Drop for NginxReaper {
    fn drop(&mut self) {
        if let Some(pid) = pid_file(&self.0).filter(|p| alive(*p)) {
            let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A test's state directory and addresses.
pub struct Site {
    /// Cleans up after a failure; first, so it runs while the pid file still exists.
    _reaper: NginxReaper,
    /// Holds the directory.
    pub dir: tempfile::TempDir,
    /// `dir/state`.
    pub state: PathBuf,
    /// Where nginx listens.
    pub nginx: SocketAddr,
    /// The agent's API token (a fresh one per site).
    pub token: Token,
}

impl Site {
    /// A fresh state directory and a free nginx address. The temporary directory is searchable
    /// by others (0711), so nginx's workers reach the agent's socket when the tests run as root
    /// and the agent runs them as `nobody`.
    pub fn new() -> Site {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix("sb-agent-")
            .permissions(std::fs::Permissions::from_mode(0o711))
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("state");
        Site {
            _reaper: NginxReaper(state.clone()),
            state,
            nginx: free_addr(),
            dir,
            token: switchback::agent::local_token::generate().expect("a token"),
        }
    }

    /// A client for the agent of this site at `api`, with its token.
    pub fn client(&self, api: SocketAddr) -> AgentClient {
        AgentClient::new(api)
            .expect("client")
            .with_token(self.token.clone())
    }

    /// An agent configuration for this site with its API at `api`.
    pub fn config(&self, api: SocketAddr, probes: Vec<ProbeSpec>) -> AgentConfig {
        AgentConfig {
            state_dir: self.state.clone(),
            listen: api,
            nginx_listen: Some(self.nginx),
            pin_listen: None,
            nginx: None,
            keep_versions: 3,
            probes,
            initial_bundle: None,
            manage_nginx: true,
            timeouts: Timeouts::default(),
            limits: ApiLimits {
                max_request_bytes: 16 * 1024 * 1024,
                ..ApiLimits::default()
            },
            token: Some(self.token.clone()),
            worker_user: switchback::agent::config::DEFAULT_WORKER_USER.to_string(),
            config_root: switchback::validate::ConfigRoot::default(),
            replace_bundle_user: false,
            crash_at: None,
            kubernetes: None,
            drift: DriftSettings::default(),
        }
    }
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

/// Waits until the agent at `client` answers and reports an nginx master (when `with_nginx`).
pub async fn ready(client: &AgentClient, with_nginx: bool) -> AgentState {
    eventually("the agent to answer", || async {
        let s = client.state().await.ok()?;
        (!with_nginx || s.nginx.pid.is_some()).then_some(s)
    })
    .await
}

/// An agent running inside the test process.
pub struct InProcess {
    /// Its client.
    pub client: AgentClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl InProcess {
    /// Starts `switchback::agent::run_with(cfg)` and waits until its API answers.
    pub async fn start(cfg: AgentConfig) -> InProcess {
        let token = match (&cfg.token, &cfg.kubernetes) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(kube)) => Some(kube.token.clone()),
            (None, None) => None,
        };
        let client = AgentClient::new(cfg.listen)
            .expect("client")
            .with_token(token);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(switchback::agent::run_with(cfg, async move {
            let _ = rx.await;
        }));
        let agent = InProcess {
            client,
            stop: Some(tx),
            task,
        };
        eventually("the agent API", || async {
            assert!(!agent.task.is_finished(), "the agent exited at start");
            agent.client.healthz().await.ok()
        })
        .await;
        agent
    }

    /// Asks the agent to stop and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the agent stops within the deadline")
            .expect("the agent task did not panic");
        r.expect("the agent ran without error");
    }
}

/// An agent running as its own process (`sb-test-agent`), so it can be killed for real.
pub struct Process {
    /// Its client.
    pub client: AgentClient,
    child: Child,
}

impl Process {
    /// Starts the test agent binary on `site` with `env` added to its environment (which
    /// carries the site's token in `$SWITCHBACK_AGENT_TOKEN`).
    pub fn spawn(bin: &Path, site: &Site, api: SocketAddr, env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(bin);
        cmd.env(switchback::agent::token::TOKEN_ENV, site.token.expose());
        cmd.arg("--state-dir")
            .arg(&site.state)
            .arg("--listen")
            .arg(api.to_string())
            .arg("--nginx-listen")
            .arg(site.nginx.to_string())
            .env_remove("SWITCHBACK_AGENT_CRASH_AT")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start sb-test-agent");
        Process {
            client: site.client(api),
            child,
        }
    }

    /// Waits (bounded) for the process to end and returns how: exit code or signal.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        eventually("the agent process to end", || {
            let r = self.child.try_wait().expect("wait for the agent");
            async move { r }
        })
        .await
    }

    /// `SIGTERM`, then waits for a clean exit.
    pub async fn terminate(self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        signal::kill(Pid::from_raw(pid), Signal::SIGTERM).expect("signal the agent");
        self.wait().await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an apply changed what nginx serves.
pub fn applied(outcome: &ApplyOutcome) -> bool {
    matches!(outcome, ApplyOutcome::Applied { noop: false, .. })
}

/// Sends `n` requests to `path` through nginx and returns their statuses.
pub async fn traffic(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr, path).await.map_or(0, |r| r.0));
    }
    out
}

/// Shuts the agent down and checks its nginx (master and workers) is gone.
pub async fn shutdown_leaves_nothing(agent: InProcess) {
    let s = agent.client.state().await.expect("state");
    let mut pids = s.nginx.workers.clone();
    pids.extend(s.nginx.pid);
    assert!(!pids.is_empty(), "nginx ran");
    agent.shutdown().await;
    for pid in pids {
        assert!(!alive(pid), "nginx process {pid} outlived the agent");
    }
}
