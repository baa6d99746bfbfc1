//! `sb-test-agent`: the agent as its own process, for tests that must kill it with `SIGKILL`
//! (crash safety). The same wiring `switchback agent` has: flags, then `agent::run` until
//! `SIGTERM` or `SIGINT`. It answers the hidden `__confine`/`__render` subcommands like
//! `switchback`, so it confines its own `nginx -t` runs without needing the `switchback` binary.

use std::process::ExitCode;

use clap::Parser;
use switchback::agent::{AgentArgs, run};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "sb-test-agent")]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() -> ExitCode {
    // Like `switchback`, this binary launches its own confined `nginx -t` runs.
    if let Some(code) = switchback::confine::dispatch() {
        return code;
    }
    switchback::confine::register_self();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(agent_main()),
        Err(e) => {
            eprintln!("sb-test-agent: no runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn agent_main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("sb-test-agent: cannot install signal handlers");
        return ExitCode::from(2);
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    match run(cli.agent, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sb-test-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
