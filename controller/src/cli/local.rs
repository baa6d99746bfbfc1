//! `switchback local`: the engine and a local fleet on the user's own git repository. Every new
//! commit on the branch is rendered, validated and rolled out canary-style to local nginx pods;
//! one line per event, or one JSON object per line with `--events json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use jiff::SignedDuration;

use switchback::agent::ProbeSpec;
use switchback::analysis::{AnalysisConfig, ThresholdConfig};
use switchback::demo::upstreams::{self, UpstreamSpec};
use switchback::fleet::local::{LocalFleet, LocalFleetOptions};
use switchback::fleet::{ApplyResult, Fleet};
use switchback::render::Bundle;
use switchback::rollout::{InconclusivePolicy, Reason, Release, RolloutConfig};
use switchback::runner::{Note, Runner, RunnerConfig};
use switchback::source::git::{Credentials, GitSource};
use switchback::validate::sandbox::Nginx;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Events {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MethodArg {
    Sequential,
    Threshold,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnInconclusive {
    Hold,
    Promote,
    Rollback,
}

#[derive(Args)]
pub(crate) struct LocalArgs {
    /// The git repository (a path or URL).
    #[arg(long)]
    repo: String,
    /// The branch to follow.
    #[arg(long, default_value = "main")]
    branch: String,
    /// The config directory inside the repository.
    #[arg(long, default_value = ".")]
    path: String,
    /// Proxy pods.
    #[arg(long, default_value_t = 3)]
    pods: usize,
    /// Start a loopback app server for the config's upstreams: `NAME=127.0.0.1:9001` (repeatable).
    #[arg(long = "upstream", value_name = "NAME=ADDR")]
    upstreams: Vec<String>,
    /// An active health check every agent runs: `host=…,path=/,status=200,rate=5` (repeatable).
    #[arg(long = "probe")]
    probes: Vec<ProbeSpec>,
    /// How long each canary step bakes, in seconds (default: 180, the operator's default
    /// `strategy.bake`).
    #[arg(long)]
    bake: Option<f64>,
    /// The analysis that watches the canary.
    #[arg(long, value_enum, default_value_t = MethodArg::Sequential)]
    method: MethodArg,
    /// What a bake that ends without a conclusive verdict does (too little traffic to tell):
    /// hold the step (default), promote, or roll back.
    #[arg(long, value_enum, default_value_t = OnInconclusive::Hold)]
    on_inconclusive: OnInconclusive,
    /// How often to look at the branch, in seconds.
    #[arg(long, default_value_t = 1.0)]
    poll: f64,
    /// One line per event for people, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = Events::Text)]
    events: Events,
    /// Pod state goes here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The pods' addresses are 127.A.B.10 and up.
    #[arg(long, default_value = "0.1", value_parser = super::demo::parse_subnet)]
    subnet: [u8; 2],
    /// The port nginx listens on in every pod (what the config's `listen` says).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// The nginx binary.
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// What each pod's agent does when its live config is edited by hand: `report` it, or
    /// `repair` it by re-applying the digest (docs/drift.md).
    #[arg(long, value_enum, default_value_t = switchback::agent::DriftPolicy::Report)]
    drift_policy: switchback::agent::DriftPolicy,
    #[command(flatten)]
    layout: super::layout::LayoutArgs,
}

pub(crate) async fn cmd_local(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let bake = args
        .bake
        .unwrap_or(RolloutConfig::default().bake.as_secs_f64());
    if !(0.2..=3600.0).contains(&args.poll) || !(0.5..=86_400.0).contains(&bake) {
        anyhow::bail!("--poll must be 0.2-3600 s and --bake 0.5-86400 s");
    }
    let tmp = tempfile::Builder::new()
        .prefix("switchback-local-")
        .permissions(switchback::fleet::local::searchable())
        .tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut specs = Vec::new();
    for u in &args.upstreams {
        let (name, addr) = u.split_once('=').context("--upstream is NAME=ADDR")?;
        let addr: SocketAddr = addr.parse().with_context(|| format!("--upstream {u}"))?;
        specs.push(UpstreamSpec::new(name, addr));
    }
    let servers = upstreams::start(&specs).await?;
    let mut options = LocalFleetOptions::new(dir.join("pods"));
    options.pods = args.pods;
    options.subnet = args.subnet;
    options.http_port = args.http_port;
    options.nginx = args.nginx.clone();
    options.probes = args.probes.clone();
    options.drift_policy = args.drift_policy;
    options.config_root = args.layout.config_root.clone();
    let fleet = Arc::new(LocalFleet::start(options).await?);
    let outcome = tokio::select! {
        r = follow(&args, bake, &dir, Arc::clone(&fleet)) => r,
        () = switchback::signals::terminated() => Ok(()),
    };
    if let Ok(fleet) = Arc::try_unwrap(fleet) {
        for (pod, error) in fleet.shutdown().await {
            eprintln!("switchback: {pod}: {error}");
        }
    }
    servers.stop(upstreams::DEFAULT_STOP_GRACE).await;
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn follow(
    args: &LocalArgs,
    bake: f64,
    dir: &std::path::Path,
    fleet: Arc<LocalFleet>,
) -> anyhow::Result<()> {
    let source = GitSource::new(&args.repo, Credentials::None, &dir.join("cache"))?;
    let json = args.events == Events::Json;
    let say = |kind: &str, message: String| {
        if json {
            out(&serde_json::json!({"type": kind, "message": message}).to_string());
        } else {
            out(&format!("{kind}: {message}"));
        }
    };
    let (release, bundle) = read(&source, args).await?;
    for pod in fleet.names() {
        if let ApplyResult::Failed(why) | ApplyResult::Unconfirmed(why) =
            fleet.apply(&pod, &bundle, &release.revision.commit).await?
        {
            anyhow::bail!("{pod} refused the head of {}: {why}", args.branch);
        }
    }
    let adopted = format!(
        "{} pods serve {} ({})",
        args.pods,
        short(&release.revision.commit),
        release.digest.short()
    );
    let nginx = Nginx::find(args.nginx.as_deref())?;
    let mut config = RunnerConfig {
        layout: args.layout.layout(nginx.as_ref())?,
        nginx,
        analysis: match args.method {
            MethodArg::Sequential => AnalysisConfig::default(),
            MethodArg::Threshold => AnalysisConfig::Threshold(ThresholdConfig::flagger_defaults()),
        },
        ..RunnerConfig::default()
    };
    // The operator's defaults (steps, policy, analysis), the bake as given.
    config.rollout.bake = SignedDuration::try_from(Duration::from_secs_f64(bake))?;
    config.rollout.on_inconclusive = match args.on_inconclusive {
        OnInconclusive::Hold => InconclusivePolicy::Hold,
        OnInconclusive::Promote => InconclusivePolicy::Promote,
        OnInconclusive::Rollback => InconclusivePolicy::RollBack,
    };
    let mut head = release.revision.commit.clone();
    let (mut runner, mut notes) = Runner::new(config, Arc::clone(&fleet), Some((release, bundle)))?;
    // One round of pod reads first, so the engine knows every pod before the next commit.
    runner.run_for(Duration::from_secs_f64(args.poll)).await;
    say("adopted", adopted);
    loop {
        runner.run_for(Duration::from_secs_f64(args.poll)).await;
        while let Ok(note) = notes.try_recv() {
            print_note(&note, json);
        }
        match read(&source, args).await {
            Ok((release, bundle)) if release.revision.commit != head => {
                head = release.revision.commit.clone();
                say(
                    "commit",
                    format!("{} {}", short(&head), first_line(&release.revision.message)),
                );
                runner.submit(release, bundle);
            }
            Ok(_) => {}
            Err(e) => say("source", format!("{e:#}")),
        }
    }
}

/// The head of the branch, read and rendered. A render error is reported, never rolled out.
async fn read(source: &GitSource, args: &LocalArgs) -> anyhow::Result<(Release, Bundle)> {
    let revision = source.fetch(&args.branch).await?;
    let tree = source.read_tree(&revision.commit, &args.path).await?;
    // Confined, off the async threads: a template bomb on the branch stops at its limits.
    let bundle = tokio::task::spawn_blocking(move || {
        let limits = switchback::confine::Limits::RENDER;
        switchback::confine::render::render(&tree, &serde_json::Value::Null, &limits)
    })
    .await??
    .map_err(|e| anyhow::anyhow!("{}: {}", short(&revision.commit), e.to_diagnostic()))?;
    Ok((
        Release {
            digest: bundle.digest(),
            revision,
        },
        bundle,
    ))
}

fn print_note(note: &Note, json: bool) {
    if json {
        // Pod reads come every poll; `tell` commands and events already say what changed.
        if matches!(note, Note::Pods { .. }) {
            return;
        }
        if let Ok(line) = serde_json::to_string(note) {
            out(&line);
        }
        return;
    }
    match note {
        Note::Command { command, .. } => match command {
            switchback::rollout::Command::Emit(n) => {
                out(&format!("{:?}: {}", n.reason, n.message));
                if n.reason == Reason::StepHeld {
                    out(
                        "hint: here that means more traffic to the pods, a longer --bake, or \
                         --on-inconclusive promote",
                    );
                }
            }
            switchback::rollout::Command::Tell { pods, commit, .. } => {
                out(&format!("tell {} -> {}", pods.join(", "), short(commit)));
            }
            _ => {}
        },
        Note::Verdict { verdict, .. } => {
            if let switchback::analysis::Verdict::Failing(e) = verdict {
                out(&format!("verdict: FAILING ({}): {}", e.method, e.summary));
            }
        }
        Note::Pods { .. } => {}
    }
}

/// One line to stdout; a closed pipe is not worth a panic (the pods keep their config either way).
fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
