//! `switchback render`: a config directory or git revision to a bundle and its digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::source::{
    Loaded, SourceArgs, load, print_diagnostic, render_loaded, revision_json, source_label,
};
use crate::{EXIT_FINDINGS, Format, first_line, print_json};
use switchback::render::{Bundle, RenderError};

#[derive(Args)]
pub(crate) struct RenderArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Write the rendered bundle into this directory.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

pub(crate) fn cmd_render(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.source)?;
    let bundle = match render_loaded(&loaded, &args.source)? {
        Ok(bundle) => bundle,
        Err(e) => return Ok(report_render_error(&loaded, &e, args.format)),
    };
    if let Some(out) = &args.out {
        write_bundle(&bundle, out)?;
    }
    match args.format {
        Format::Json => {
            let files: BTreeMap<&str, usize> = bundle
                .files()
                .iter()
                .map(|(p, b)| (p.as_str(), b.len()))
                .collect();
            print_json(&json!({
                "source": source_label(&args.source),
                "digest": bundle.digest().to_string(),
                "revision": revision_json(&loaded.revision),
                "files": files,
                "bytes": bundle.size(),
            }))?;
        }
        Format::Text => {
            println!("{}", bundle.digest());
            if let Some(r) = &loaded.revision {
                println!("commit {} {}", r.commit, first_line(&r.message));
            }
            for (path, bytes) in bundle.files() {
                println!("  {path} ({} bytes)", bytes.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn report_render_error(loaded: &Loaded, e: &RenderError, format: Format) -> ExitCode {
    let d = e.to_diagnostic();
    match format {
        Format::Json => {
            let _ = print_json(&json!({
                "passed": false,
                "revision": revision_json(&loaded.revision),
                "diagnostics": [d],
            }));
        }
        Format::Text => print_diagnostic(loaded, &d),
    }
    ExitCode::from(EXIT_FINDINGS)
}

pub(crate) fn write_bundle(bundle: &Bundle, out: &Path) -> anyhow::Result<()> {
    for (path, bytes) in bundle.files() {
        let target = out.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}
