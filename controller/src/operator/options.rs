//! What a controller process is told at start: where to watch, where its caches live, what it
//! serves and how often it reads what.

use std::path::PathBuf;
use std::time::Duration;

use super::health::Readiness;
use super::metrics::Metrics;

/// Controller settings.
#[derive(Clone)]
pub struct ControllerOptions {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Where git caches live.
    pub cache_dir: PathBuf,
    /// How often every rollout is reconciled even when nothing changed.
    pub resync: Duration,
    /// The master of the agents' bearer tokens: the agents of namespace N require
    /// [`crate::agent::Token::for_namespace`]`(N)` of it, which is all their Secret holds.
    pub agent_token: Option<crate::agent::Token>,
    /// This replica's name in Events (the pod name in a cluster).
    pub instance: Option<String>,
    /// Where reconciles, errors, rollbacks, phases and git fetches are counted.
    pub metrics: Metrics,
    /// Flipped to ready once the watch caches are filled.
    pub readiness: Option<Readiness>,
    /// Serve push webhooks here (`/hooks/<provider>/<namespace>.<secret>`); off when `None`.
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// Follow `http://`, `git://`, `file://` and local-path sources too (for tests); off, only
    /// `https://` and ssh sources are followed (`source_policy`).
    pub allow_insecure_sources: bool,
    /// The proxy image's files below the config root (`--image-files`), read once at start;
    /// `None`: the packaged files of the nginx that runs `nginx -t`.
    pub image_files: Option<crate::validate::ImageFiles>,
    /// How often an agent nobody is deciding about is read (`runner::reads`); its Pod object and
    /// its reports say when it changed meanwhile.
    pub heartbeat: Duration,
    /// Agents' change reports, received on the health port: each makes the worker driving the
    /// pod read it now.
    pub agent_reports: Option<super::agent_reports::AgentReports>,
    /// With `--shards N`: drive only the rollouts of the shards this replica holds (`None`:
    /// every rollout).
    pub shards: Option<super::shard::Shards>,
    /// With `--leader-elect` (one Lease): until when this replica leads. Every API write, nudge
    /// and write-back checks it at the moment it is made (`leader::tenure`), so a replica
    /// paused past its Lease writes nothing once it wakes, whatever task runs first.
    pub tenure: Option<super::leader::Tenure>,
    /// With `--shards N`: each shard's tenure, by shard (empty: writes are not fenced).
    pub shard_tenures: Vec<super::leader::Tenure>,
}

impl ControllerOptions {
    /// Defaults: all namespaces, a five-minute resync, no agent token, https and ssh sources only,
    /// idle agents read every ten seconds.
    pub fn new(cache_dir: PathBuf) -> Self {
        ControllerOptions {
            namespace: None,
            cache_dir,
            resync: Duration::from_secs(300),
            agent_token: None,
            instance: None,
            metrics: Metrics::new(),
            readiness: None,
            webhook_addr: None,
            allow_insecure_sources: false,
            image_files: None,
            agent_reports: None,
            heartbeat: crate::runner::RunnerConfig::default().heartbeat,
            shards: None,
            tenure: None,
            shard_tenures: Vec::new(),
        }
    }
}
