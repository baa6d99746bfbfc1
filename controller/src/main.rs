//! The `switchback` command: parses arguments and calls the library. Nothing here decides anything
//! about config; it only reads input, prints results and picks the exit code.
//!
//! Exit codes: 0 when the input is fine, 1 when the input has findings (render, parse, lint or
//! `nginx -t` errors, or warnings with `--warnings-as-errors`), 2 for usage or environment errors
//! (bad flags, unreadable directory, git unreachable, nginx required but missing).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use switchback::validate::lint::{RULES, docs};
use switchback::validate::sandbox::Nginx;

mod cli;

use cli::controller::{ControllerArgs, cmd_controller};
use cli::demo::{DemoArgs, cmd_demo};
use cli::local::{LocalArgs, cmd_local};
use cli::parse::{ParseArgs, cmd_parse};
use cli::plugin::PluginArgs;
use cli::render::{RenderArgs, cmd_render};
use cli::validate::{ValidateArgs, cmd_validate};

/// Exit code for findings in the input.
pub(crate) const EXIT_FINDINGS: u8 = 1;
/// Exit code for usage and environment errors.
const EXIT_ENV: u8 = 2;

#[derive(Parser)]
#[command(
    name = "switchback",
    version,
    about = "GitOps for nginx: render, validate, canary, roll back."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a config directory (local or at a git revision) into a bundle and print its digest.
    Render(RenderArgs),
    /// Render and validate: parse, lint, then the real `nginx -t` in a sandbox.
    Validate(ValidateArgs),
    /// Print the parse tree of an nginx config (JSON in the shape `crossplane parse` prints).
    Parse(ParseArgs),
    /// List the rules, or print one rule's page.
    Rules {
        /// A rule id such as SB103.
        id: Option<String>,
    },
    /// Replay the outage on this machine: real nginx pods, real git, real traffic; a bad
    /// `upstream` commit is rolled back on every pod by itself.
    Demo(DemoArgs),
    /// Follow a git branch with the engine and a local fleet of nginx pods: every new commit is
    /// validated and rolled out canary-style, and rolled back when it gets worse.
    Local(LocalArgs),
    /// Run the agent next to one nginx (applies bundles, ingests logs, serves counters).
    Agent(switchback::agent::AgentArgs),
    /// Run the operator: follow every ProxyRollout (in one namespace or all) with the engine, using
    /// the kubeconfig from $KUBECONFIG or ~/.kube/config.
    Controller(ControllerArgs),
    /// The kubectl plugin without the symlink: `switchback plugin status NAME` is
    /// `kubectl switchback status NAME` (status, history, promote, abort, rollback, retry, pause,
    /// resume).
    Plugin(PluginArgs),
    /// Print the ProxyRollout CustomResourceDefinition (what `crds/proxyrollout.yaml` holds).
    Crd {
        /// Print the field reference tables instead (what `docs/proxyrollout.md` holds between
        /// its markers).
        #[arg(long)]
        reference: bool,
    },
    /// Benchmarks that print their figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the version (and the nginx found for validation).
    Version {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Replay synthetic canary traffic through both analysis methods and print the comparison
    /// (detection time, requests failed before the decision, false rollbacks).
    Analysis {
        /// The seed of the synthetic traces (the figures in docs/analysis.md use the default).
        #[arg(long, default_value_t = 20_240_404)]
        seed: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    // The hidden subcommands that run untrusted work under resource limits (`__confine`,
    // `__render`) come first: no logging, no argument parsing, nothing else runs in them.
    if let Some(code) = switchback::confine::dispatch() {
        return code;
    }
    switchback::confine::register_self();
    // Started as `kubectl-switchback` (a symlink on PATH), the plugin's arguments are the whole
    // command line.
    let cli = match cli::plugin::parse_if_plugin() {
        Some(args) => Cli {
            command: Command::Plugin(args),
        },
        None => Cli::parse(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBACK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Render(args) => cmd_render(args),
        Command::Validate(args) => cmd_validate(args),
        Command::Parse(args) => cmd_parse(args),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(cmd_demo(args))),
        Command::Local(args) => runtime().and_then(|rt| rt.block_on(cmd_local(args))),
        Command::Agent(args) => runtime().and_then(|rt| {
            rt.block_on(async {
                switchback::agent::run(args, switchback::signals::terminated()).await?;
                Ok(ExitCode::SUCCESS)
            })
        }),
        Command::Rules { id } => cmd_rules(id.as_deref()),
        Command::Controller(args) => runtime().and_then(|rt| rt.block_on(cmd_controller(args))),
        Command::Plugin(args) => runtime().and_then(|rt| {
            rt.block_on(cli::plugin::run(args))
                .map_err(anyhow::Error::from)
        }),
        Command::Crd { reference: true } => {
            print!("{}", switchback::operator::reference::reference_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { reference: false } => switchback::operator::crd::crd_yaml()
            .map_err(anyhow::Error::from)
            .map(|yaml| {
                print!("{yaml}");
                ExitCode::SUCCESS
            }),
        Command::Bench(BenchCommand::Analysis { seed }) => {
            print!("{}", switchback::analysis::replay_table(seed));
            Ok(ExitCode::SUCCESS)
        }
        Command::Version { format } => cmd_version(format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchback: error: {e:#}");
            ExitCode::from(EXIT_ENV)
        }
    }
}

fn cmd_rules(id: Option<&str>) -> anyhow::Result<ExitCode> {
    match id {
        Some(id) => {
            let id = id.to_ascii_uppercase();
            let Some(page) = docs::page(&id) else {
                bail!("no rule {id}; `switchback rules` lists them");
            };
            print!("{page}");
        }
        None => {
            for rule in RULES {
                println!(
                    "{}  {:<28} {:<7} {:<6} {}",
                    rule.id,
                    rule.name,
                    rule.severity.to_string(),
                    format!("{:?}", rule.gate),
                    rule.summary
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_version(format: Format) -> anyhow::Result<ExitCode> {
    let nginx = Nginx::find(None).ok().flatten();
    match format {
        Format::Json => print_json(&json!({
            "version": env!("CARGO_PKG_VERSION"),
            "nginx": nginx.as_ref().map(|n| json!({"path": n.path(), "version": n.version()})),
        }))?,
        Format::Text => {
            println!("switchback {}", env!("CARGO_PKG_VERSION"));
            match &nginx {
                Some(n) => println!("nginx: {} ({})", n.version(), n.path().display()),
                None => println!("nginx: not found (the `nginx -t` gate will be skipped)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The async runtime for the commands that run services (demo, agent).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
