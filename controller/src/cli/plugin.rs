//! The kubectl plugin: `kubectl switchback status|history|promote|abort|rollback|retry|pause|resume`,
//! what the `switchback` binary does when started as `kubectl-switchback` (kubectl finds plugins
//! by that file name on PATH) or as `switchback plugin ...`. It reads `ProxyRollout`s with the
//! user's kubeconfig and asks for manual verbs by writing the request annotation the controller
//! acts on (`switchback::operator::request`), then waits for the controller's acknowledgement in
//! `status.handledRequest`, so a person knows the request was seen, not only written.

mod resolve;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use switchback::operator::crd::ProxyRollout;
use switchback::operator::request::{self, ANNOTATION, Request, RequestVerb};

/// The file name kubectl looks for on PATH to run `kubectl switchback`.
pub(crate) const PLUGIN_NAME: &str = "kubectl-switchback";

/// How often `--wait` reads the rollout again.
const POLL: Duration = Duration::from_millis(500);

/// `kubectl switchback ...`.
#[derive(Parser, Debug)]
#[command(version)]
pub(crate) struct PluginArgs {
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: PluginCommand,
}

/// Where to connect, as kubectl's own flags spell it.
#[derive(Args, Debug)]
struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Phase, stable and target commits, pods, conditions, last incident, quarantine and any
    /// pending request; without NAME, one line per rollout in the namespace.
    Status {
        /// The ProxyRollout (all in the namespace when left out).
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// What became of the last revisions, newest first.
    History {
        /// The ProxyRollout.
        name: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Skip the remaining canary steps: the target becomes stable now.
    Promote(VerbArgs),
    /// Roll the canary back and quarantine its commit.
    Abort(VerbArgs),
    /// Put every pod back on an earlier known-good commit (short SHAs are fine).
    Rollback {
        #[command(flatten)]
        verb: VerbArgs,
        /// A commit that was stable (see `history`).
        commit: String,
    },
    /// Take a quarantined commit out of quarantine and roll it out again.
    Retry {
        #[command(flatten)]
        verb: VerbArgs,
        /// The quarantined commit (default: the only one).
        commit: Option<String>,
    },
    /// Stop moving pods to new config; automatic rollback stays armed.
    Pause(VerbArgs),
    /// Continue after a pause.
    Resume(VerbArgs),
}

#[derive(Args, Debug)]
struct VerbArgs {
    /// The ProxyRollout.
    name: String,
    /// Wait until the controller has acted on the request (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Only write the request.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// How long to wait (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    switchback::operator::spec::go_duration(text).map_err(|e| e.to_string())
}

/// What went wrong, named for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    /// No usable kubeconfig. The kube errors are shown, not chained as sources: their own
    /// messages already include their sources, and the chain would print them twice.
    #[error("kubeconfig: {0} (set KUBECONFIG, pass --kubeconfig, or check ~/.kube/config)")]
    Kubeconfig(KubeconfigError),
    /// The client could not be built (TLS, proxy settings).
    #[error("connecting to the cluster: {0}")]
    Client(kube::Error),
    /// No such rollout.
    #[error(
        "no ProxyRollout {name:?} in namespace {namespace:?} (`kubectl switchback status -n {namespace}` lists them)"
    )]
    NotFound {
        /// The name asked for.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// The API server refused or failed.
    #[error("{action}: {error}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        error: kube::Error,
    },
    /// The commit typed did not resolve.
    #[error(transparent)]
    Commit(#[from] resolve::ResolveError),
    /// The controller did not acknowledge in time.
    #[error(
        "timed out after {waited:?}: the controller has not acted on request {id} ({verb} {rollout}) yet. The request stays in the {ANNOTATION} annotation and is acted on when a controller reads it. Check that the controller is running and leading: `kubectl get pods -A -l app.kubernetes.io/name=switchback`, `kubectl get lease -A | grep switchback`, and its logs; `kubectl switchback status {name} -n {namespace}` shows whether it is still pending"
    )]
    Timeout {
        /// How long was waited.
        waited: Duration,
        /// The request id.
        id: String,
        /// The verb.
        verb: RequestVerb,
        /// namespace/name.
        rollout: String,
        /// The rollout name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// Writing JSON to stdout failed.
    #[error("printing JSON")]
    Print(#[from] serde_json::Error),
}

/// The connection and the defaults taken from the kubeconfig.
struct Session {
    api: Api<ProxyRollout>,
    namespace: String,
    user: String,
    /// The API server, named in errors so "connection refused" says where to.
    server: String,
}

/// The arguments when this process was started as `kubectl-switchback` (kubectl runs plugins by
/// that file name), parsed as kubectl users type them; `None` for any other name. Exits with
/// clap's usage message on bad arguments, as `Cli::parse` does.
pub(crate) fn parse_if_plugin() -> Option<PluginArgs> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.file_stem()? != PLUGIN_NAME {
        return None;
    }
    let matches = PluginArgs::command()
        .name("kubectl switchback")
        .bin_name("kubectl switchback")
        .about(ABOUT)
        .get_matches();
    Some(PluginArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// What `kubectl switchback --help` says first.
const ABOUT: &str = "Look at and steer Switchback ProxyRollouts: status, history, promote, abort, rollback, retry, pause, resume.";

/// Runs one plugin command.
pub(crate) async fn run(args: PluginArgs) -> Result<ExitCode, PluginError> {
    let session = connect(&args.kube).await?;
    let now = Timestamp::now();
    match args.command {
        PluginCommand::Status { name: None, output } => {
            let list = session
                .api
                .list(&ListParams::default())
                .await
                .map_err(|error| PluginError::Api {
                    action: format!(
                        "listing ProxyRollouts in {} at {}",
                        session.namespace, session.server
                    ),
                    error,
                })?;
            match output {
                Output::Json => print_json(&serde_json::json!({
                    "items": list.items.iter().map(show::status_json).collect::<Vec<_>>()
                }))?,
                Output::Text if list.items.is_empty() => {
                    println!("no ProxyRollouts in namespace {}", session.namespace);
                }
                Output::Text => print!("{}", show::list(&list.items, now)),
            }
        }
        PluginCommand::Status {
            name: Some(name),
            output,
        } => {
            let rollout = get(&session, &name).await?;
            match output {
                Output::Json => print_json(&show::status_json(&rollout))?,
                Output::Text => print!("{}", show::status(&rollout, now)),
            }
        }
        PluginCommand::History { name, output } => {
            let rollout = get(&session, &name).await?;
            match output {
                Output::Json => print_json(&serde_json::to_value(
                    rollout.status.map(|s| s.history).unwrap_or_default(),
                )?)?,
                Output::Text => print!("{}", show::history(&rollout, now)),
            }
        }
        PluginCommand::Promote(v) => ask(&session, RequestVerb::Promote, None, v).await?,
        PluginCommand::Abort(v) => ask(&session, RequestVerb::Abort, None, v).await?,
        PluginCommand::Pause(v) => ask(&session, RequestVerb::Pause, None, v).await?,
        PluginCommand::Resume(v) => ask(&session, RequestVerb::Resume, None, v).await?,
        PluginCommand::Rollback { verb, commit } => {
            ask(&session, RequestVerb::Rollback, Some(commit), verb).await?;
        }
        PluginCommand::Retry { verb, commit } => {
            ask(&session, RequestVerb::Retry, commit, verb).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the kubeconfig as kubectl would and builds a client for the chosen context.
async fn connect(args: &KubeArgs) -> Result<Session, PluginError> {
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(PluginError::Kubeconfig)?;
    let context = args
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone());
    let user = context
        .as_deref()
        .and_then(|name| kubeconfig.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: None,
        user: None,
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(PluginError::Kubeconfig)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(PluginError::Client)?;
    Ok(Session {
        api: Api::namespaced(client, &namespace),
        namespace,
        user,
        server,
    })
}

async fn get(session: &Session, name: &str) -> Result<ProxyRollout, PluginError> {
    session
        .api
        .get_opt(name)
        .await
        .map_err(|error| PluginError::Api {
            action: format!(
                "reading ProxyRollout {}/{name} at {}",
                session.namespace, session.server
            ),
            error,
        })?
        .ok_or_else(|| PluginError::NotFound {
            name: name.to_string(),
            namespace: session.namespace.clone(),
        })
}

/// Writes a request for `verb` and, unless `--no-wait`, waits for the controller's
/// acknowledgement.
async fn ask(
    session: &Session,
    verb: RequestVerb,
    commit: Option<String>,
    args: VerbArgs,
) -> Result<(), PluginError> {
    let rollout = get(session, &args.name).await?;
    let key = show::key(&rollout);
    let status = rollout.status.clone().unwrap_or_default();
    let commit = match verb {
        RequestVerb::Rollback => Some(resolve::rollback(
            &status,
            &key,
            &args.name,
            commit.as_deref().unwrap_or_default(),
        )?),
        RequestVerb::Retry => Some(resolve::retry(&status, &key, commit.as_deref())?),
        _ => None,
    };
    if let Some(Ok(old)) = request::pending(&rollout) {
        eprintln!(
            "warning: replacing the pending request {} ({} by {}), which the controller has not acted on",
            old.id, old.verb, old.by
        );
    }
    let request = Request::new(verb, commit, session.user.clone());
    session
        .api
        .patch(
            &args.name,
            &PatchParams::default(),
            &Patch::Merge(request.merge_patch()),
        )
        .await
        .map_err(|error| PluginError::Api {
            action: format!(
                "writing the {ANNOTATION} annotation on {key} at {}",
                session.server
            ),
            error,
        })?;
    let what = match (&request.commit, verb) {
        (Some(c), RequestVerb::Retry) => format!("retry of {}", show::short(c)),
        (Some(c), _) => format!("{verb} to {}", show::short(c)),
        (None, _) => verb.to_string(),
    };
    println!("{key}: requested {what} (request {})", request.id);
    if args.no_wait && !args.wait {
        println!(
            "not waiting: `kubectl switchback status {} -n {}` shows when the controller has acted on it",
            args.name, session.namespace
        );
        return Ok(());
    }
    let before = status
        .phase
        .clone()
        .unwrap_or_else(|| "unknown".to_string());
    let acked = wait_for(session, &args.name, &request.id, args.timeout)
        .await?
        .ok_or_else(|| PluginError::Timeout {
            waited: args.timeout,
            id: request.id.clone(),
            verb,
            rollout: key.clone(),
            name: args.name.clone(),
            namespace: session.namespace.clone(),
        })?;
    let after = acked
        .status
        .and_then(|s| s.phase)
        .unwrap_or_else(|| "unknown".to_string());
    println!(
        "{key}: the controller acted on it; phase {before} -> {after}. If it refused, `kubectl get events -n {} --field-selector involvedObject.name={}` says why",
        session.namespace, args.name
    );
    Ok(())
}

/// Reads the rollout every [`POLL`] until its `status.handledRequest` is `id` (the rollout then)
/// or `timeout` passes (`None`).
async fn wait_for(
    session: &Session,
    name: &str,
    id: &str,
    timeout: Duration,
) -> Result<Option<ProxyRollout>, PluginError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rollout = get(session, name).await?;
        if rollout
            .status
            .as_ref()
            .and_then(|s| s.handled_request.as_deref())
            == Some(id)
        {
            return Ok(Some(rollout));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

fn print_json(value: &serde_json::Value) -> Result<(), PluginError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
