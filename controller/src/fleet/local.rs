//! A local fleet: N "pods", each a real nginx supervised by a real agent, each on its own
//! loopback address (127.x.y.z, same ports, like pod IPs). Used by `switchback demo`, `switchback
//! local` and the end-to-end tests. The agents run in this process (one task each) and talk to
//! the runner over their real HTTP API, exactly as in a cluster.
//!
//! Every agent's API wants a bearer token, as in a cluster: the fleet makes one per fleet, writes
//! it to `<dir>/agent-token` (mode 0600) for the agents to read (never on a command line or in the
//! environment), and its clients send it. [`LocalFleet::token`] is for callers that talk to the
//! agents themselves.
//!
//! Pods on one machine share one network namespace, so each agent pins the bundle's `listen`
//! directives to its pod's address in its own copy (the digest is of the bundle as sent): five
//! nginx processes can all "listen 8080" as five pods would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ApplyResult, Fleet, FleetError, PodObservation, Reading};
use crate::agent::{self, AgentArgs, AgentClient, AgentError, ProbeSpec, Token};
use crate::render::Bundle;

/// How to lay out a local fleet.
#[derive(Debug, Clone)]
pub struct LocalFleetOptions {
    /// Number of pods.
    pub pods: usize,
    /// Where each pod's state directory goes (`<dir>/<pod>`).
    pub dir: PathBuf,
    /// The first two octets after 127 of the pods' addresses: pod i is `127.a.b.(10 + i)`.
    /// Tests pick different ones so fleets never collide.
    pub subnet: [u8; 2],
    /// The port nginx listens on in every pod (what the bundle's `listen` says).
    pub http_port: u16,
    /// The port of every agent's API.
    pub api_port: u16,
    /// The nginx binary.
    pub nginx: Option<PathBuf>,
    /// Active health checks every agent runs through its nginx.
    pub probes: Vec<ProbeSpec>,
    /// The bundle's entry file.
    pub entry: String,
    /// What every agent does when its live config drifts from what it applied.
    pub drift_policy: agent::DriftPolicy,
    /// The config root the bundles stand for (`/etc/nginx`).
    pub config_root: String,
}

impl LocalFleetOptions {
    /// Five pods on 127.0.1.10-14, nginx on 8080, agents on 9180.
    pub fn new(dir: PathBuf) -> Self {
        LocalFleetOptions {
            pods: 5,
            dir,
            subnet: [0, 1],
            http_port: 8080,
            api_port: 9180,
            nginx: None,
            probes: Vec::new(),
            entry: crate::validate::DEFAULT_ENTRY.to_string(),
            drift_policy: agent::DriftPolicy::Report,
            config_root: crate::validate::paths::DEFAULT_CONFIG_ROOT.to_string(),
        }
    }
}

/// One running pod.
struct LocalPod {
    name: String,
    address: IpAddr,
    client: AgentClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

/// N nginx + agent pairs on loopback.
pub struct LocalFleet {
    pods: Vec<LocalPod>,
    http_port: u16,
    entry: String,
    token: Token,
}

/// Permissions for a directory a local fleet's state goes below: searchable by others, not
/// listable (0711). When the agents run as root, nginx's workers run as an unprivileged user
/// (`--worker-user`), who must reach each pod's log socket through every directory above it;
/// `switchback demo` and `switchback local` make their temporary directories with these.
pub fn searchable() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::Permissions::from_mode(0o711)
}

/// The file under the fleet's directory holding the agents' token.
pub const TOKEN_FILE: &str = "agent-token";

/// Why a local fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalFleetError {
    /// Too many pods for one /24.
    #[error("at most 200 local pods, not {0}")]
    TooMany(usize),
    /// The fleet's directory or token file could not be made.
    #[error("preparing {path}: {message}")]
    Setup {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// An agent could not be reached after it started.
    #[error("pod {pod}: agent did not come up: {message}")]
    AgentDown {
        /// The pod.
        pod: String,
        /// Why.
        message: String,
    },
}

impl LocalFleet {
    /// Starts every pod's agent (each starts its nginx) and waits until all answer.
    pub async fn start(options: LocalFleetOptions) -> Result<LocalFleet, LocalFleetError> {
        if options.pods > 200 {
            return Err(LocalFleetError::TooMany(options.pods));
        }
        let setup = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |e: &dyn std::fmt::Display| LocalFleetError::Setup {
                path,
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(&options.dir).map_err(|e| setup(&options.dir)(&e))?;
        let token_file = options.dir.join(TOKEN_FILE);
        let token = agent::local_token::generate().map_err(|e| setup(&token_file)(&e))?;
        agent::local_token::write_private(&token_file, &token)
            .map_err(|e| setup(&token_file)(&e))?;
        let mut pods = Vec::new();
        for i in 0..options.pods {
            let name = format!("pod-{i}");
            let octet = u8::try_from(10 + i).map_err(|_| LocalFleetError::TooMany(options.pods))?;
            let ip = IpAddr::V4(Ipv4Addr::new(
                127,
                options.subnet[0],
                options.subnet[1],
                octet,
            ));
            let api = SocketAddr::new(ip, options.api_port);
            let args = AgentArgs {
                state_dir: options.dir.join(&name),
                listen: api,
                nginx_listen: Some(SocketAddr::new(ip, options.http_port)),
                nginx: options.nginx.clone(),
                keep_versions: agent::config::DEFAULT_KEEP_VERSIONS,
                probes: options.probes.clone(),
                initial_bundle: None,
                entry: options.entry.clone(),
                external_nginx: false,
                pin_listen: Some(ip),
                kubernetes: false,
                pod_name: None,
                pod_namespace: None,
                token_file: Some(token_file.clone()),
                allow_remote_api: false,
                worker_user: agent::config::DEFAULT_WORKER_USER.to_string(),
                header_read_timeout: agent::config::DEFAULT_HEADER_READ_TIMEOUT_SECS,
                max_connections: crate::http_server::DEFAULT_MAX_CONNECTIONS,
                drift_interval: agent::config::DEFAULT_DRIFT_INTERVAL_SECS,
                drift_policy: options.drift_policy,
                report_to: None,
                config_root: options.config_root.clone(),
                // The pods share this machine: its accounts, not the image's.
                replace_bundle_user: true,
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(agent::run(args, async move {
                let _ = stopped.await;
            }));
            let client = AgentClient::new(api)
                .map_err(|e| LocalFleetError::AgentDown {
                    pod: name.clone(),
                    message: e.to_string(),
                })?
                .with_token(token.clone());
            pods.push(LocalPod {
                name,
                address: ip,
                client,
                stop: Some(stop),
                task,
            });
        }
        let mut fleet = LocalFleet {
            pods,
            http_port: options.http_port,
            entry: options.entry,
            token,
        };
        for pod in &mut fleet.pods {
            wait_up(pod).await?;
        }
        Ok(fleet)
    }

    /// The agents' bearer token, for callers that talk to the agents themselves.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Where traffic goes: each pod's nginx address, in pod order.
    pub fn http_addresses(&self) -> Vec<SocketAddr> {
        self.pods
            .iter()
            .map(|p| SocketAddr::new(p.address, self.http_port))
            .collect()
    }

    /// Pod names in order.
    pub fn names(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.name.clone()).collect()
    }

    /// Stops every agent (each stops its nginx) and waits for them; returns the errors agents
    /// ended with, by pod.
    pub async fn shutdown(mut self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for pod in &mut self.pods {
            if let Some(stop) = pod.stop.take() {
                let _ = stop.send(());
            }
        }
        for pod in self.pods.drain(..) {
            match pod.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push((pod.name, e.to_string())),
                Err(e) => errors.push((pod.name, e.to_string())),
            }
        }
        errors
    }

    fn pod(&self, name: &str) -> Result<&LocalPod, FleetError> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| FleetError::NoSuchPod(name.to_string()))
    }
}

/// Waits until `pod`'s agent answers; an agent that stopped is reported with its own error
/// (a refused setting, a state directory its nginx workers cannot reach).
async fn wait_up(pod: &mut LocalPod) -> Result<(), LocalFleetError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let down = |message: String| LocalFleetError::AgentDown {
            pod: pod.name.clone(),
            message,
        };
        match pod.client.healthz().await {
            Ok(()) => return Ok(()),
            Err(_) if pod.task.is_finished() => {
                let message = match (&mut pod.task).await {
                    Ok(Ok(())) => "the agent stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(down(message));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(down(e.to_string())),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Fleet for LocalFleet {
    async fn pods(&self) -> Result<Vec<String>, FleetError> {
        Ok(self.names())
    }

    async fn apply(
        &self,
        pod: &str,
        bundle: &Bundle,
        commit: &str,
    ) -> Result<ApplyResult, FleetError> {
        let target = self.pod(pod)?;
        super::apply_via(&target.client, pod, bundle, commit, &self.entry).await
    }

    async fn observe(&self, pod: &str, reading: Reading) -> Result<PodObservation, FleetError> {
        super::observe_via(&self.pod(pod)?.client, pod, reading).await
    }
}
