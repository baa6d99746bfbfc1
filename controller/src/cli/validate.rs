//! `switchback validate`: render, then the three gates; findings printed and the exit code set.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::render::report_render_error;
use super::source::{
    Loaded, SourceArgs, load, print_diagnostic, render_loaded, revision_json, source_label,
};
use crate::{EXIT_FINDINGS, Format, print_json};
use switchback::validate::sandbox::Nginx;
use switchback::validate::{self, NginxGate, Report};

#[derive(Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) layout: super::layout::LayoutArgs,
    /// The nginx binary for the `nginx -t` gate (default: $SWITCHBACK_NGINX, PATH, /usr/sbin/nginx).
    #[arg(long)]
    pub(crate) nginx: Option<PathBuf>,
    /// Fail (exit 2) when no nginx binary is found instead of skipping the `nginx -t` gate.
    #[arg(long, conflicts_with = "no_nginx")]
    pub(crate) require_nginx: bool,
    /// Skip the `nginx -t` gate.
    #[arg(long)]
    pub(crate) no_nginx: bool,
    /// Treat warnings as errors.
    #[arg(long)]
    pub(crate) warnings_as_errors: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

pub(crate) fn cmd_validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let nginx = if args.no_nginx {
        None
    } else {
        let found = Nginx::find(args.nginx.as_deref())?;
        if found.is_none() && args.require_nginx {
            bail!("no nginx binary found (set --nginx or $SWITCHBACK_NGINX, or install nginx)");
        }
        found
    };
    let loaded = load(&args.source)?;
    let bundle = match render_loaded(&loaded, &args.source)? {
        Ok(bundle) => bundle,
        Err(e) => return Ok(report_render_error(&loaded, &e, args.format)),
    };
    let layout = args.layout.layout(nginx.as_ref())?;
    let report = validate::validate_with(&bundle, &args.source.entry, nginx.as_ref(), &layout)?;
    let passed = report.passed(args.warnings_as_errors);
    match args.format {
        Format::Json => print_json(&json!({
            "passed": passed,
            "source": source_label(&args.source),
            "digest": report.digest.to_string(),
            "revision": revision_json(&loaded.revision),
            "entry": report.entry,
            "errors": report.errors(),
            "warnings": report.warnings(),
            "nginx": report.nginx,
            "config_root": report.config_root,
            "image_files": report.image_files,
            "diagnostics": report.diagnostics,
        }))?,
        Format::Text => print_report(&loaded, &report, passed, args.no_nginx),
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

pub(crate) fn print_report(
    loaded: &Loaded,
    report: &Report,
    passed: bool,
    nginx_skipped_by_flag: bool,
) {
    for d in &report.diagnostics {
        print_diagnostic(loaded, d);
    }
    for used in &report.image_files {
        println!(
            "note: {} is not in the config; it was taken from the image files ({})",
            used.path, used.from
        );
    }
    let gate = match &report.nginx {
        NginxGate::Ran { version } => format!("nginx -t passed ({version})"),
        NginxGate::NotRun => "nginx -t not run (static errors)".to_string(),
        NginxGate::Unavailable if nginx_skipped_by_flag => {
            "nginx -t skipped (--no-nginx)".to_string()
        }
        NginxGate::Unavailable => {
            eprintln!(
                "switchback: warning: no nginx binary found; the `nginx -t` gate was skipped \
                 (install nginx, or pass --require-nginx to make this an error)"
            );
            "nginx -t skipped (no nginx)".to_string()
        }
    };
    let gate = if report.errors() > 0 && matches!(report.nginx, NginxGate::Ran { .. }) {
        "nginx -t failed".to_string()
    } else {
        gate
    };
    let commit = loaded
        .revision
        .as_ref()
        .map(|r| format!(" at {}", &r.commit[..r.commit.len().min(12)]))
        .unwrap_or_default();
    println!(
        "{}: {} error(s), {} warning(s); {gate}; {}{commit}",
        if passed { "ok" } else { "rejected" },
        report.errors(),
        report.warnings(),
        report.digest,
    );
}
