//! Starting one Pod's agent for the process kubelet (`super::kubelet`): its arguments as the
//! chart's container would give them, its namespace's token file, its own ServiceAccount client
//! when the options ask for one, and the task that reports it Ready.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use switchback::agent::{self, AgentArgs, AgentConfig, AgentError, Clock};
use tokio::sync::{oneshot, watch};

use super::kubelet::{AGENT_PORT, Ctx, NGINX_PORT, PodAgent, PodKey};
use super::mounts::secret_token;
use super::pod_status::report;

/// Starts one Pod's agent on `127.<subnet>.<octet>` (as ServiceAccount `account` when the
/// options ask for it) and a task that reports it Ready once its `/healthz` answers (or Failed
/// if the agent ends first).
pub(super) fn launch(
    ctx: &Arc<Ctx>,
    key: &PodKey,
    account: &str,
    octet: u8,
    pod: &Value,
    clock: Clock,
) -> PodAgent {
    let gated = pod["spec"]["readinessGates"]
        .as_array()
        .is_some_and(|g| !g.is_empty());
    let [a, b] = ctx.options.subnet;
    let ip = IpAddr::V4(Ipv4Addr::new(127, a, b, octet));
    let api = SocketAddr::new(ip, AGENT_PORT);
    let args = AgentArgs {
        state_dir: ctx.dir.join(format!("{}.{}.{octet}", key.0, key.1)),
        listen: api,
        nginx_listen: Some(SocketAddr::new(ip, NGINX_PORT)),
        nginx: ctx.options.nginx.clone(),
        keep_versions: agent::config::DEFAULT_KEEP_VERSIONS,
        probes: ctx.options.probes.clone(),
        initial_bundle: ctx.options.initial_bundle.clone(),
        entry: switchback::validate::DEFAULT_ENTRY.to_string(),
        external_nginx: false,
        pin_listen: Some(ip),
        kubernetes: ctx.options.kubernetes,
        pod_name: Some(key.1.clone()),
        pod_namespace: Some(key.0.clone()),
        token_file: namespace_token_file(ctx, &key.0),
        allow_remote_api: false,
        worker_user: agent::config::DEFAULT_WORKER_USER.to_string(),
        header_read_timeout: agent::config::DEFAULT_HEADER_READ_TIMEOUT_SECS,
        max_connections: switchback::http_server::DEFAULT_MAX_CONNECTIONS,
        drift_interval: agent::config::DEFAULT_DRIFT_INTERVAL_SECS,
        drift_policy: agent::DriftPolicy::Report,
        report_to: ctx.options.report_to.clone(),
        config_root: switchback::validate::paths::DEFAULT_CONFIG_ROOT.to_string(),
        // Process pods share this machine: its accounts, not the image's.
        replace_bundle_user: true,
    };
    let shared_client = ctx.kube.clone();
    // The Pod's own token, as its projected ServiceAccount token would be mounted.
    let own_account = (ctx.options.kubernetes && ctx.options.service_account_tokens).then(|| {
        let path = ctx
            .dir
            .join(format!("{}.{}.{octet}.kubeconfig", key.0, key.1));
        (path, ctx.issuer.kubeconfig(&key.0, account))
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let (ended_tx, ended) = watch::channel(false);
    let mounted = secret_token(ctx, key, pod);
    let mut args = args;
    let agent = tokio::spawn(async move {
        // A token Secret the pod mounts is what its agent reads, as a real kubelet mounts it.
        if let Some(mounted) = mounted {
            match mounted.await {
                Ok(file) => args.token_file = Some(file),
                Err(e) => {
                    let _ = ended_tx.send(true);
                    return Err(AgentError::Kube(e));
                }
            }
        }
        let client = match own_account {
            None => Ok(shared_client),
            Some((path, text)) => match std::fs::write(&path, text) {
                Ok(()) => kube_client(&path).await.map(Some),
                Err(e) => Err(e.to_string()),
            },
        };
        let result = match (AgentConfig::from_args(args), client) {
            (_, Err(e)) => Err(AgentError::Kube(format!(
                "the pod's ServiceAccount client: {e}"
            ))),
            (cfg, Ok(client)) => match cfg {
                // Never fall back to the environment's cluster from a test.
                Ok(cfg) if cfg.kubernetes.is_some() && client.is_none() => Err(AgentError::Kube(
                    "the kubelet has no client to the test server".to_string(),
                )),
                Ok(cfg) => {
                    agent::run_with_clock(cfg, client, clock, async move {
                        let _ = stopped.await;
                    })
                    .await
                }
                Err(e) => Err(AgentError::Config(e)),
            },
        };
        let _ = ended_tx.send(true);
        result
    });
    let ready = tokio::spawn(report(Arc::clone(ctx), key.clone(), ip, gated, ended));
    PodAgent {
        octet,
        account: account.to_string(),
        pod: pod.clone(),
        clock,
        stop: Some(stop),
        agent,
        ready,
    }
}

/// The file holding the token of `namespace`'s agents (written on first use), as the chart's
/// Secret in that namespace would be mounted; `None` when it cannot be written (the agent then
/// refuses to start, saying so).
fn namespace_token_file(ctx: &Ctx, namespace: &str) -> Option<PathBuf> {
    let file = ctx.dir.join(format!("{namespace}.agent-token"));
    let token = ctx.master.for_namespace(namespace);
    std::fs::write(&file, format!("{}\n", token.expose()))
        .ok()
        .map(|()| file)
}

/// A kube-rs client for the server, from its kubeconfig, as a Pod's service account would give.
pub(super) async fn kube_client(kubeconfig: &Path) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}
