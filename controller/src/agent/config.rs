//! The agent's settings: the `switchback agent` flags ([`AgentArgs`]) and the validated
//! [`AgentConfig`] the rest of the agent reads, kept apart so tests and the local fleet can build
//! a config without going through a command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::token::Token;
use super::wire::DriftPolicy;

/// Default number of version directories kept (the current and previous-good are always kept).
pub const DEFAULT_KEEP_VERSIONS: usize = 5;
/// Highest probe rate per probe; the prober is a health check, not a load generator.
pub const MAX_PROBE_RATE: f64 = 50.0;
/// Most probes one agent runs.
pub const MAX_PROBES: usize = 16;

/// Flags of `switchback agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// State directory: versions, the `current` symlink, the applied record, nginx's pid and logs.
    #[arg(long, env = "SWITCHBACK_AGENT_STATE")]
    pub state_dir: PathBuf,
    /// Address of the agent's HTTP API (`/v1/state`, `/v1/apply`, `/metrics`, `/healthz`). In
    /// local mode a loopback address unless `--allow-remote-api` is given.
    #[arg(long, default_value = "127.0.0.1:9180")]
    pub listen: SocketAddr,
    /// Local mode: let `--listen` be a non-loopback address. Whoever reaches the API with the
    /// token can make nginx serve any config, so a token must then be given explicitly
    /// (`--token-file` or `$SWITCHBACK_AGENT_TOKEN`).
    #[arg(long)]
    pub allow_remote_api: bool,
    /// Address nginx listens on, where probes are sent (a loopback address).
    #[arg(long)]
    pub nginx_listen: Option<SocketAddr>,
    /// The nginx binary (default: $SWITCHBACK_NGINX, `nginx` on PATH, /usr/sbin/nginx).
    #[arg(long)]
    pub nginx: Option<PathBuf>,
    /// Version directories to keep besides the current and the previous-good one.
    #[arg(long, default_value_t = DEFAULT_KEEP_VERSIONS)]
    pub keep_versions: usize,
    /// An active health check through nginx, e.g. `host=example.test,path=/healthz,status=200,rate=5`
    /// (repeatable).
    #[arg(long = "probe")]
    pub probes: Vec<ProbeSpec>,
    /// A rendered config directory to apply at start when nothing else is applied yet.
    #[arg(long)]
    pub initial_bundle: Option<PathBuf>,
    /// The entry file of the initial bundle.
    #[arg(long, default_value = crate::validate::DEFAULT_ENTRY)]
    pub entry: String,
    /// The directory the bundles stand for (where the proxy image keeps nginx's config):
    /// absolute paths below it are served from the bundle, files the bundle lacks from here.
    /// In Kubernetes mode the Pod's `switchback.dev/config-root` annotation (written by the
    /// controller from the ProxyRollout's `spec.render.configRoot`) overrides it.
    #[arg(long, default_value = crate::validate::paths::DEFAULT_CONFIG_ROOT)]
    pub config_root: String,
    /// The bundle's `user` names an account of the proxy image that this machine may lack:
    /// replace its arguments with `--worker-user` (the local fleet's pods share this machine).
    #[arg(long)]
    pub replace_bundle_user: bool,
    /// Do not start nginx: it is started by someone else (the pod) with the arguments in
    /// `docs/agent.md`, and the agent finds it through `STATE/nginx.pid`.
    #[arg(long)]
    pub external_nginx: bool,
    /// Pin every `listen` of the bundle to this address in the agent's copy (the digest is of
    /// the bundle as sent). For pods that share one network namespace, as the local fleet's do:
    /// five nginx processes can each `listen 8080` on their own 127.0.x.y like five pods.
    #[arg(long)]
    pub pin_listen: Option<std::net::IpAddr>,
    /// Kubernetes mode: learn the desired digest from the controller's nudges and this Pod's
    /// annotations, fetch the bundle from its ConfigMaps, and refuse bundles over HTTP; every
    /// endpoint but `/healthz` then wants the bearer token (`docs/agent-kubernetes.md`).
    #[arg(long)]
    pub kubernetes: bool,
    /// This Pod's name (Kubernetes mode), from the downward API.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// This Pod's namespace (Kubernetes mode), from the downward API.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// A file holding the API's bearer token (mounted from a Secret in Kubernetes mode); without
    /// it the token is read from `$SWITCHBACK_AGENT_TOKEN`. In local mode, with neither, the
    /// agent makes one and writes it to `STATE/api-token` (mode 0600).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The user nginx's workers run as when the agent runs as root and the bundle names no
    /// `user` (never root unless this says `root`; docs/agent.md, "Running as root").
    #[arg(long, default_value = DEFAULT_WORKER_USER)]
    pub worker_user: String,
    /// Seconds a connection to the API may take to send a request head (also between requests
    /// on a kept-alive connection) before the agent closes it.
    #[arg(
        long,
        env = "SWITCHBACK_AGENT_HEADER_READ_TIMEOUT",
        default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS
    )]
    pub header_read_timeout: f64,
    /// Connections to the API open at once; more wait in the kernel's backlog.
    #[arg(long, default_value_t = crate::http_server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds between full re-hashes of the live config (drift detection); changes are also
    /// seen at once through inotify. `0` turns drift detection off.
    #[arg(long, default_value_t = DEFAULT_DRIFT_INTERVAL_SECS)]
    pub drift_interval: f64,
    /// What a drift leads to: `report` it only, or `repair` it by re-applying the applied
    /// digest. In Kubernetes mode the Pod's `switchback.dev/drift-policy` annotation (written by
    /// the controller from `spec.drift.policy`) overrides it.
    #[arg(long, value_enum, default_value_t = DriftPolicy::Report)]
    pub drift_policy: DriftPolicy,
    /// Kubernetes mode: tell the controller at this URL
    /// (`http://<controller service>:<metrics port>/v1/agents/changed`) the moment the applied
    /// config, a drift or the agent's start changes what it would read here, so it need not poll
    /// idle pods often (`docs/agent-kubernetes.md`).
    #[arg(long, env = "SWITCHBACK_REPORT_TO")]
    pub report_to: Option<String>,
}

/// Default seconds between drift re-hashes; inotify catches most changes long before.
pub const DEFAULT_DRIFT_INTERVAL_SECS: f64 = 30.0;
/// Default `--header-read-timeout`, [`crate::http_server::DEFAULT_HEADER_READ_TIMEOUT`] in seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: f64 = 10.0;
/// Default `--worker-user`: the unprivileged user nginx builds default to.
pub const DEFAULT_WORKER_USER: &str = "nobody";
/// Default largest `POST /v1/apply` body, in bytes of JSON (a bundle of about 72 MiB of files).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 96 * 1024 * 1024;
/// Default number of applies that may wait for their turn while one runs; more are answered
/// 503 with `Retry-After`.
pub const DEFAULT_MAX_WAITING_APPLIES: usize = 8;
/// Default time a `POST /v1/apply` body may take to arrive once its turn has come.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Limits of the HTTP API, so no client can hold the agent's connections or memory.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Head deadline and connection cap of the API port.
    pub serve: crate::http_server::ServeLimits,
    /// Largest `POST /v1/apply` body, in bytes of JSON; larger is 413.
    pub max_request_bytes: usize,
    /// Applies waiting for their turn (bodies not yet read) besides the one running; more are
    /// 503 with `Retry-After`. Only one apply's body is in memory at a time.
    pub max_waiting_applies: usize,
    /// How long an apply's body may take to arrive once its turn has come; slower is 408.
    pub body_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            serve: crate::http_server::ServeLimits::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_waiting_applies: DEFAULT_MAX_WAITING_APPLIES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Drift detection settings (`docs/drift.md`).
#[derive(Debug, Clone)]
pub struct DriftSettings {
    /// How often the live config is re-hashed whatever inotify says; `None`: no detection.
    pub interval: Option<Duration>,
    /// The policy until the Pod's annotation says otherwise.
    pub policy: DriftPolicy,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            interval: Some(Duration::from_secs_f64(DEFAULT_DRIFT_INTERVAL_SECS)),
            policy: DriftPolicy::Report,
        }
    }
}

/// What Kubernetes mode needs: who this Pod is, the API token, and the bundle's entry file.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// This Pod's name (its own Pod is the only one the agent reads).
    pub pod_name: String,
    /// This Pod's namespace, where the bundle ConfigMaps live.
    pub namespace: String,
    /// The bearer token every endpoint but `/healthz` requires.
    pub token: Token,
    /// The main file of the bundles fetched (nginx's `-c`).
    pub entry: String,
    /// Where changes are reported (`--report-to`), when anywhere.
    pub report_to: Option<ReportTo>,
}

/// The controller's report endpoint (`--report-to`): plain `http://host:port/path`, reached at
/// every address the host resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTo {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path, from `/`.
    pub path: String,
}

impl ReportTo {
    /// Parses `http://host[:port]/path`; the controller's health port speaks plain HTTP.
    pub fn parse(url: &str) -> Result<ReportTo, String> {
        let bad = |why: &str| format!("--report-to {url:?}: {why}");
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad(
                "only http:// (the controller's health and metrics port)",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("no credentials in the URL: the agent sends its token"));
        }
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        Ok(ReportTo {
            host: host.trim_matches(['[', ']']).to_string(),
            port: parsed.port().unwrap_or(80),
            path: parsed.path().to_string(),
        })
    }
}

/// One active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// The `Host` header.
    pub host: String,
    /// The path, starting with `/`.
    pub path: String,
    /// The status that counts as healthy.
    pub status: u16,
    /// Requests per second (bounded by [`MAX_PROBE_RATE`]).
    pub rate: f64,
}

impl FromStr for ProbeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut spec = ProbeSpec {
            host: "localhost".to_string(),
            path: "/".to_string(),
            status: 200,
            rate: 1.0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("probe part {part:?} is not key=value"))?;
            match k {
                "host" => spec.host = v.to_string(),
                "path" => spec.path = v.to_string(),
                "status" => {
                    spec.status = v
                        .parse()
                        .ok()
                        .filter(|s| (100..600).contains(s))
                        .ok_or_else(|| format!("probe status {v:?} is not an HTTP status"))?;
                }
                "rate" => {
                    spec.rate = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0 && *r <= MAX_PROBE_RATE)
                        .ok_or_else(|| {
                            format!("probe rate {v:?} is not in (0, {MAX_PROBE_RATE}] per second")
                        })?;
                }
                _ => {
                    return Err(format!(
                        "unknown probe key {k:?} (host, path, status, rate)"
                    ));
                }
            }
        }
        if !spec.path.starts_with('/') || spec.path.chars().any(|c| c.is_whitespace()) {
            return Err(format!(
                "probe path {:?} must start with / and have no blanks",
                spec.path
            ));
        }
        if spec.host.is_empty() || spec.host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("probe host {:?} is not a host name", spec.host));
        }
        Ok(spec)
    }
}

/// Time limits of the agent's waits; each bounds one wait so nothing hangs forever.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// One `nginx -t`.
    pub nginx_test: Duration,
    /// nginx start until workers run, and a reload until the new generation appears.
    pub reload: Duration,
    /// Graceful stop (`SIGQUIT`) before `SIGTERM`.
    pub stop_grace: Duration,
    /// One probe request.
    pub probe: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            nginx_test: Duration::from_secs(30),
            reload: Duration::from_secs(15),
            stop_grace: Duration::from_secs(10),
            probe: Duration::from_secs(2),
        }
    }
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Absolute state directory.
    pub state_dir: PathBuf,
    /// API address.
    pub listen: SocketAddr,
    /// Where probes go.
    pub nginx_listen: Option<SocketAddr>,
    /// The address every `listen` is pinned to, in local mode.
    pub pin_listen: Option<std::net::IpAddr>,
    /// nginx binary, when given explicitly.
    pub nginx: Option<PathBuf>,
    /// Versions kept besides current and previous-good.
    pub keep_versions: usize,
    /// Active health checks.
    pub probes: Vec<ProbeSpec>,
    /// Config directory to apply at start, with its entry.
    pub initial_bundle: Option<(PathBuf, String)>,
    /// Whether the agent starts, supervises and stops nginx (local mode) or only signals a
    /// master someone else runs (pod mode).
    pub manage_nginx: bool,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Limits of the HTTP API (head deadline, connections, apply bodies and queue).
    pub limits: ApiLimits,
    /// Local mode: the bearer token every endpoint but `/healthz` wants; `None` makes the agent
    /// create one at start in `STATE/api-token` (mode 0600). Kubernetes mode uses its own.
    pub token: Option<Token>,
    /// The user nginx's workers run as when the agent runs as root and the bundle has no `user`.
    pub worker_user: String,
    /// The config root bundles stand for, until a Pod annotation says otherwise.
    pub config_root: crate::validate::ConfigRoot,
    /// Whether the bundle's `user` is replaced by the worker user (local mode).
    pub replace_bundle_user: bool,
    /// Kubernetes mode, when set: bundles come from ConfigMaps named by nudges and the Pod's
    /// annotations, never over HTTP, and the API wants the token.
    pub kubernetes: Option<KubeSettings>,
    /// Test hook: the apply stage at which the agent kills itself with `SIGKILL`
    /// (`$SWITCHBACK_AGENT_CRASH_AT`), used by the crash-safety tests.
    pub crash_at: Option<String>,
    /// Drift detection.
    pub drift: DriftSettings,
}

impl AgentConfig {
    /// Validates the flags: an absolute state directory, a loopback API address in local mode
    /// (unless `--allow-remote-api`, which needs a token), a loopback probe target, bounded probes.
    pub fn from_args(args: AgentArgs) -> Result<AgentConfig, String> {
        let token = if args.kubernetes {
            None
        } else {
            local_token(&args)?
        };
        let state_dir = if args.state_dir.is_absolute() {
            args.state_dir
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot read the working directory: {e}"))?
                .join(args.state_dir)
        };
        if args.probes.len() > MAX_PROBES {
            return Err(format!("at most {MAX_PROBES} probes"));
        }
        if !args.probes.is_empty() && args.nginx_listen.is_none() {
            return Err("probes need --nginx-listen (where nginx listens)".to_string());
        }
        if let Some(addr) = args.nginx_listen.filter(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "--nginx-listen {addr} is not a loopback address; probes only go to the \
                 agent's own nginx"
            ));
        }
        if !args.drift_interval.is_finite() || args.drift_interval < 0.0 {
            return Err(format!(
                "--drift-interval {} is not a number of seconds >= 0",
                args.drift_interval
            ));
        }
        let drift = DriftSettings {
            // Below a tenth of a second a re-hash loop would only burn the CPU nginx needs.
            interval: (args.drift_interval > 0.0)
                .then(|| Duration::from_secs_f64(args.drift_interval.max(0.1))),
            policy: args.drift_policy,
        };
        if !args.header_read_timeout.is_finite()
            || !(0.01..=3600.0).contains(&args.header_read_timeout)
        {
            return Err(format!(
                "--header-read-timeout {} is not a number of seconds in [0.01, 3600]",
                args.header_read_timeout
            ));
        }
        if args.max_connections == 0 {
            return Err("--max-connections must be at least 1".to_string());
        }
        if args.worker_user.trim().is_empty()
            || !args
                .worker_user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!(
                "--worker-user {:?} is not a user name (letters, digits, `._-`)",
                args.worker_user
            ));
        }
        let kubernetes = if args.kubernetes {
            let need = |v: Option<String>, flag: &str, env: &str| {
                v.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                    format!("--kubernetes needs {flag} (or ${env} from the downward API)")
                })
            };
            Some(KubeSettings {
                pod_name: need(args.pod_name, "--pod-name", "POD_NAME")?,
                namespace: need(args.pod_namespace, "--pod-namespace", "POD_NAMESPACE")?,
                token: Token::load(args.token_file.as_deref()).map_err(|e| e.to_string())?,
                entry: args.entry.clone(),
                report_to: args.report_to.as_deref().map(ReportTo::parse).transpose()?,
            })
        } else if args.report_to.is_some() {
            return Err("--report-to needs --kubernetes: a report names this Pod".to_string());
        } else {
            None
        };
        Ok(AgentConfig {
            drift,
            kubernetes,
            state_dir,
            listen: args.listen,
            nginx_listen: args.nginx_listen,
            pin_listen: args.pin_listen,
            nginx: args.nginx,
            keep_versions: args.keep_versions.max(1),
            probes: args.probes,
            initial_bundle: args.initial_bundle.map(|p| (p, args.entry)),
            manage_nginx: !args.external_nginx,
            timeouts: Timeouts::default(),
            limits: ApiLimits {
                serve: crate::http_server::ServeLimits {
                    header_read_timeout: Duration::from_secs_f64(args.header_read_timeout),
                    max_connections: args.max_connections,
                },
                ..ApiLimits::default()
            },
            token,
            worker_user: args.worker_user,
            config_root: crate::validate::ConfigRoot::new(&args.config_root)
                .map_err(|e| format!("--config-root: {e}"))?,
            replace_bundle_user: args.replace_bundle_user,
            crash_at: std::env::var("SWITCHBACK_AGENT_CRASH_AT")
                .ok()
                .filter(|s| !s.is_empty()),
        })
    }
}

/// Local mode's token and where the API may listen: a loopback address, or any address with
/// `--allow-remote-api` and a token given explicitly (a generated one would only be known to
/// whoever can read the state directory, which a remote caller cannot).
fn local_token(args: &AgentArgs) -> Result<Option<Token>, String> {
    let given = args.token_file.is_some() || std::env::var_os(super::token::TOKEN_ENV).is_some();
    let token = if given {
        Some(Token::load(args.token_file.as_deref()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let ip = args.listen.ip();
    if !ip.is_loopback() && !args.allow_remote_api {
        return Err(format!(
            "--listen {} is not a loopback address: whoever reaches the agent's API can change \
             what nginx serves. Listen on 127.0.0.1, or pass --allow-remote-api with a token \
             (--token-file or ${})",
            args.listen,
            super::token::TOKEN_ENV
        ));
    }
    if !ip.is_loopback() && token.is_none() {
        return Err(format!(
            "--allow-remote-api needs a token given explicitly: --token-file or ${}",
            super::token::TOKEN_ENV
        ));
    }
    Ok(token)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
