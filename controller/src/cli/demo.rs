//! `switchback demo`: the outage replayed with real nginx, real git and real traffic, and the
//! figures that compare it with the seed's 2.5 hours.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::{EXIT_FINDINGS, print_json};
use switchback::demo::figures;
use switchback::demo::scenario::{self, DemoOptions, DemoRun, Method};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MethodArg {
    Sequential,
    Threshold,
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Proxy pods (each a real nginx with its agent on its own 127.0.x.y address).
    #[arg(long, default_value_t = 5)]
    pods: usize,
    /// Total requests per second across the pods (bounded: at most 2,000).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// The analysis that watches the canary.
    #[arg(long, value_enum, default_value_t = MethodArg::Sequential)]
    method: MethodArg,
    /// Run the story with both methods, one after the other, and print them side by side.
    #[arg(long)]
    compare: bool,
    /// How long each canary step bakes, in seconds. Shorter than a real rollout's (3 minutes)
    /// so the story fits in a minute or two; at the demo's 40 requests/s per pod, 10 s is
    /// enough traffic for the healthy test's first look.
    #[arg(long, default_value_t = 10.0)]
    bake: f64,
    /// Keep the repository and pod state here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the incident report is written.
    #[arg(long, default_value = "switchback-demo-report")]
    report_dir: PathBuf,
    /// The nginx binary.
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// The addresses to use: 127.A.B.x (`--compare` uses B and B+1). Two demos at once need
    /// different ones.
    #[arg(long, default_value = "0.7", value_parser = parse_subnet)]
    subnet: [u8; 2],
    /// Print one JSON document at the end instead of the progress and tables.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn cmd_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.rate == 0 || args.rate > 2_000 {
        bail!("--rate must be between 1 and 2000 requests per second");
    }
    if !(0.5..=600.0).contains(&args.bake) {
        bail!("--bake must be between 0.5 and 600 seconds");
    }
    let methods = if args.compare {
        vec![Method::Sequential, Method::Threshold]
    } else {
        vec![match args.method {
            MethodArg::Sequential => Method::Sequential,
            MethodArg::Threshold => Method::Threshold,
        }]
    };
    let mut runs = Vec::new();
    for (i, method) in methods.into_iter().enumerate() {
        if !args.json {
            println!(
                "== switchback demo: {} pods, {} rps, analysis {}",
                args.pods,
                args.rate,
                method.name()
            );
        }
        let options = DemoOptions {
            pods: args.pods,
            rate: args.rate,
            method,
            bake: Duration::from_secs_f64(args.bake),
            dir: args.dir.as_ref().map(|d| d.join(method.name())),
            subnet: [
                args.subnet[0],
                args.subnet[1].saturating_add(u8::try_from(i).unwrap_or(0)),
            ],
            nginx: args.nginx.clone(),
            progress: !args.json,
        };
        let run = scenario::run(options)
            .await
            .context("the demo could not run")?;
        if !args.json {
            print_run(&run);
        }
        runs.push(run);
    }
    let reports = write_reports(&runs, &args.report_dir)?;
    let all_figures: Vec<_> = runs.iter().map(|r| r.figures.clone()).collect();
    let ok = runs.iter().all(|r| r.ok);
    if args.json {
        print_json(&json!({
            "ok": ok,
            "runs": runs,
            "figures": figures::report(&all_figures),
            "reports": reports,
        }))?;
    } else {
        println!("\n{}", figures::table(&all_figures));
        for path in &reports {
            println!("incident report: {}", path.display());
        }
        println!(
            "{}",
            if ok {
                "ok: commits 1 and 3 promoted, commit 2 rolled back on every pod and quarantined"
            } else {
                "FAILED: the story did not go as it should (see above)"
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

pub(crate) fn parse_subnet(s: &str) -> Result<[u8; 2], String> {
    let (a, b) = s.split_once('.').ok_or("write A.B, e.g. 0.7")?;
    let octet = |x: &str| x.parse::<u8>().map_err(|e| format!("{x:?}: {e}"));
    Ok([octet(a)?, octet(b)?])
}

fn print_run(run: &DemoRun) {
    println!();
    for c in &run.commits {
        println!(
            "  {} {:<52} expected {:<11} -> {}",
            &c.commit[..c.commit.len().min(8)],
            c.summary,
            c.expected,
            c.result
        );
    }
    if let Some(incident) = &run.incident {
        let t = &incident.timeline;
        let at = |x: Option<jiff::Timestamp>| {
            x.map(|x| x.strftime("%H:%M:%S%.3f").to_string())
                .unwrap_or_else(|| "-".to_string())
        };
        println!(
            "\n  incident timeline ({}):",
            incident.revision.revision.commit
        );
        println!("    committed      {}", at(Some(t.committed_at)));
        println!("    seen           {}", at(t.seen_at));
        println!("    validated      {}", at(t.validated_at));
        println!("    first applied  {}", at(t.first_applied));
        println!(
            "    rollback       {}  {}",
            at(t.decided_at),
            incident.reason.summary()
        );
        println!("    all restored   {}", at(t.restored_at));
    }
}

fn write_reports(runs: &[DemoRun], dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for run in runs {
        let Some(markdown) = &run.report_markdown else {
            continue;
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("incident-{}.md", run.method));
        std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
