//! `switchback controller`: the operator, optionally one of several replicas electing a leader on
//! a Lease, with `/healthz`, `/readyz` and `/metrics`. This only wires the library's parts
//! together; see docs/operations.md for the timing and the endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use switchback::operator::agent_reports::AgentReports;
use switchback::operator::controller::{self, ControllerOptions};
use switchback::operator::health::{self, HealthState, Readiness};
use switchback::operator::leader::{self, LeaseSettings};
use switchback::operator::metrics::Metrics;
use switchback::operator::shard::Shards;
use switchback::operator::shard::election::ShardElection;

#[derive(Args)]
pub(crate) struct ControllerArgs {
    /// Only this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Where git caches live.
    #[arg(long, default_value = "/var/cache/switchback")]
    cache_dir: PathBuf,
    /// Run as one of several replicas: drive rollouts only while holding the Lease.
    #[arg(long)]
    leader_elect: bool,
    /// Split the ProxyRollouts into this many shards, each held through its own Lease
    /// (`<lease-name>-shard-<k>`) by one replica: needs --leader-elect when above 1. A rollout's
    /// shard is FNV-1a of namespace/name mod N, or its `switchback.dev/shard` label.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: u32,
    /// The Lease's namespace (default: $POD_NAMESPACE, then --namespace, then `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// The Lease's name, the same for every replica.
    #[arg(long, default_value = "switchback-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: $POD_NAME, then hostname-pid).
    #[arg(long)]
    lease_identity: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address (off when not given).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// The master of the agents' bearer tokens (a mounted Secret); else $SWITCHBACK_AGENT_TOKEN.
    /// The agents of namespace N hold sha256(master ":" N) in hex (docs/agent-kubernetes.md).
    /// Without either, every agent refuses the controller (agents always want a token).
    #[arg(long)]
    agent_token_file: Option<PathBuf>,
    /// Also follow http://, git://, file:// and local-path sources (tests, experiments). Off:
    /// only https:// and ssh sources, since whoever may create a ProxyRollout picks the URL.
    /// Credentials are never sent over plain http either way.
    #[arg(long)]
    allow_insecure_sources: bool,
    /// Serve push webhooks on this address (`/hooks/<provider>/<namespace>.<secret>`); off when
    /// not given. Only the leader acts on a push; the poll is the fallback.
    #[arg(long)]
    webhook_addr: Option<SocketAddr>,
    /// A directory holding the files the proxy image provides below the config root
    /// (`mime.types`, `fastcgi_params`, snippets…), read once at start; default: the packaged
    /// files beside the nginx.conf of the nginx that runs `nginx -t`.
    #[arg(long, value_name = "DIR")]
    image_files: Option<PathBuf>,
    /// How often an agent no decision waits on is read, e.g. `10s`. Canary pods, a baseline
    /// sample and pods changing config are read four times a second; a Pod that changes, or an
    /// agent that reports a change (`--report-to` on the agent), is read at once.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_heartbeat)]
    agent_heartbeat: std::time::Duration,
}

/// With webhooks, this replica's own Pod (for the leader label), its label cleared first: a
/// restarted container clears what its predecessor in this Pod may have left.
async fn own_pod_unmarked(
    args: &ControllerArgs,
    client: &kube::Client,
) -> Option<switchback::operator::leader_label::OwnPod> {
    let pod = args
        .webhook_addr
        .and_then(|_| switchback::operator::leader_label::OwnPod::from_env())?;
    pod.mark(client, false).await;
    Some(pod)
}

fn parse_heartbeat(text: &str) -> Result<std::time::Duration, String> {
    let d = switchback::operator::spec::go_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!(
            "{text}: at least 1s (idle agents need not be read more often)"
        ));
    }
    Ok(d)
}

/// The agents' token from the file or the environment; none at all is allowed (agents in local
/// mode), a file that cannot be read is an error.
fn agent_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<switchback::agent::Token>> {
    match switchback::agent::Token::load(file) {
        Ok(token) => Ok(Some(token)),
        Err(switchback::agent::TokenError::Missing) if file.is_none() => {
            tracing::warn!(
                "no agent token (--agent-token-file or SWITCHBACK_AGENT_TOKEN): agents in Kubernetes mode will refuse this controller"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn cmd_controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        switchback::signals::terminated().await;
        stop_tx.send_replace(true);
    });
    if args.allow_insecure_sources {
        tracing::warn!(
            "--allow-insecure-sources: following http://, git://, file:// and local-path sources too; for tests only"
        );
    }
    if args.shards > 1 && !args.leader_elect {
        anyhow::bail!(
            "--shards {} needs --leader-elect: each shard is held through a Lease (or drop --shards to run one replica for every rollout)",
            args.shards
        );
    }
    let metrics = Metrics::new();
    let readiness = Readiness::not_ready("connecting to the Kubernetes API");
    let agent_token = agent_token(args.agent_token_file.as_deref())?;
    // Agents report changes on the health port, so there is nowhere to take them without it.
    let agent_reports = args
        .metrics_addr
        .and(agent_token.clone())
        .map(AgentReports::new);
    if let Some(addr) = args.metrics_addr {
        let state = HealthState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            reports: agent_reports.clone(),
        };
        let server = health::serve(addr, state, stopped(stop.clone()));
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the health and metrics server stopped");
            }
        });
    }
    let client = kube::Client::try_default().await?;
    client
        .apiserver_version()
        .await
        .context("asking the Kubernetes API for its version")?;
    let options = ControllerOptions {
        namespace: args.namespace.clone(),
        agent_token,
        agent_reports,
        heartbeat: args.agent_heartbeat,
        instance: std::env::var("POD_NAME").ok(),
        metrics: metrics.clone(),
        webhook_addr: args.webhook_addr,
        allow_insecure_sources: args.allow_insecure_sources,
        image_files: args
            .image_files
            .as_deref()
            .map(switchback::validate::sandbox::image_files::named)
            .transpose()?,
        // One replica: ready once its watch caches are filled. Electing: every replica, the
        // standby too, is ready once the API answers (a standby has no caches to fill, and a
        // Service in front of the replicas serves only metrics).
        readiness: (!args.leader_elect).then(|| readiness.clone()),
        ..ControllerOptions::new(args.cache_dir.clone())
    };
    if !args.leader_elect {
        metrics.set_leader(true);
        controller::run(client, options, stopped(stop)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    readiness.set_ready();
    if args.shards > 1 {
        return sharded(args, client, options, metrics, stop).await;
    }
    // With webhooks, the leader's Pod is labelled so the webhook Service reaches only it.
    let own_pod = own_pod_unmarked(&args, &client).await;
    let settings = lease_settings(&args);
    tracing::info!(lease = %format!("{}/{}", settings.namespace, settings.name), identity = %settings.identity, "electing a leader");
    let election = leader::spawn(client.clone(), settings)?;
    let mut leading = election.subscribe();
    // Every write of the rollouts is fenced by the tenure (a replica paused past its Lease must
    // not write when it wakes); the Lease and the leader label use `client` itself.
    let options = ControllerOptions {
        tenure: Some(election.tenure()),
        ..options
    };
    let gauge = {
        let (metrics, mut leading) = (metrics.clone(), election.subscribe());
        tokio::spawn(async move {
            while leading.changed().await.is_ok() {
                metrics.set_leader(*leading.borrow_and_update());
            }
            metrics.set_leader(false);
        })
    };
    let result = async {
        loop {
            tokio::select! {
                () = stopped(stop.clone()) => return Ok(()),
                acquired = leader::acquired(&mut leading) => if !acquired { return Ok(()) },
            }
            // Drive rollouts until the Lease is lost or the process is asked to stop; run()
            // aborts every rollout task before it returns.
            let (lease, halt) = (leading.clone(), stop.clone());
            let until = async move {
                tokio::select! {
                    () = leader::lost(lease) => {}
                    () = stopped(halt) => {}
                }
            };
            if let Some(pod) = &own_pod {
                pod.mark(&client, true).await;
            }
            let ran = controller::run(client.clone(), options.clone(), until).await;
            if let Some(pod) = &own_pod {
                pod.mark(&client, false).await;
            }
            ran?;
            if *stop.borrow() {
                return Ok::<(), anyhow::Error>(());
            }
            tracing::warn!("lost the lease; rollouts stopped until it is acquired again");
        }
    }
    .await;
    tracing::debug!("stepping down");
    if let Err(e) = election.step_down().await {
        // Not releasing only makes a standby wait out the lease duration.
        tracing::warn!(error = %e, "could not release the lease; a standby takes over when it expires");
    }
    gauge.abort();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `--shards N`: elect on every shard's Lease and run one controller for the whole life of the
/// process, driving only the rollouts of the shards held (docs/operations.md, "Sharding").
async fn sharded(
    args: ControllerArgs,
    client: kube::Client,
    mut options: ControllerOptions,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ExitCode> {
    // With webhooks, every replica holding a shard is labelled (the webhook Service reaches
    // those); each acts on a push for its own rollouts only, the others poll.
    let own_pod = own_pod_unmarked(&args, &client).await;
    let settings = lease_settings(&args);
    tracing::info!(lease = %format!("{}/{}-shard-*", settings.namespace, settings.name), shards = args.shards, identity = %settings.identity, "electing shard holders");
    let election = ShardElection::spawn(client.clone(), &settings, args.shards)?;
    options.shards = Some(Shards {
        count: args.shards,
        held: election.subscribe(),
    });
    options.shard_tenures = election.tenures();
    let follower = {
        let (metrics, mut held, pod, client) = (
            metrics.clone(),
            election.subscribe(),
            own_pod.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            let mut labelled = false;
            loop {
                let now = held.borrow_and_update().clone();
                let holding = !now.is_empty();
                tracing::info!(held = ?now, "shards held");
                metrics.set_shards_held(now.len());
                metrics.set_leader(holding);
                if let Some(pod) = &pod
                    && labelled != holding
                {
                    labelled = holding;
                    pod.mark(&client, labelled).await;
                }
                if held.changed().await.is_err() {
                    break;
                }
            }
            metrics.set_shards_held(0);
            metrics.set_leader(false);
        })
    };
    let ran = controller::run(client.clone(), options, stopped(stop)).await;
    tracing::debug!("stepping down from every shard");
    if let Err(e) = election.step_down().await {
        tracing::warn!(error = %e, "could not release every shard's lease; others take them over when they expire");
    }
    follower.abort();
    if let Some(pod) = &own_pod {
        pod.mark(&client, false).await;
    }
    ran?;
    Ok(ExitCode::SUCCESS)
}

fn lease_settings(args: &ControllerArgs) -> LeaseSettings {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| env("POD_NAMESPACE"))
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let identity = args
        .lease_identity
        .clone()
        .or_else(|| env("POD_NAME"))
        .unwrap_or_else(|| {
            let host = env("HOSTNAME")
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|| "switchback".to_string());
            format!("{host}-{}", std::process::id())
        });
    LeaseSettings::new(namespace, args.lease_name.clone(), identity)
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
