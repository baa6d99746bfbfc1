//! The `switchback` command: parses arguments and calls the library. Nothing here decides anything
//! about config; it only reads input, prints results and picks the exit code.
//!
//! Exit codes: 0 when the input is fine, 1 when the input has findings (render, parse, lint or
//! `nginx -t` errors, or warnings with `--warnings-as-errors`), 2 for usage or environment errors
//! (bad flags, unreadable directory, git unreachable, nginx required but missing).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use switchback::render::{self, Bundle, ConfigTree, RenderError, TreeEntry};
use switchback::source::git::{Credentials, GitSource, Revision, redact_url};
use switchback::source::local;
use switchback::validate::lint::{RULES, docs};
use switchback::validate::sandbox::Nginx;
use switchback::validate::{self, DEFAULT_ENTRY, Diagnostic, NginxGate, Report, crossplane};

/// Exit code for findings in the input.
const EXIT_FINDINGS: u8 = 1;
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
    /// Print the version (and the nginx found for validation).
    Version {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Where the config comes from: a directory, or a path inside a git repository at a revision.
/// Credentials come from the environment only, never from flags, so they stay out of `ps` and
/// shell history.
#[derive(Args)]
struct SourceArgs {
    /// A config directory on disk.
    #[arg(conflicts_with = "repo")]
    dir: Option<PathBuf>,
    /// A git repository URL or path (token: $SWITCHBACK_GIT_TOKEN; user/password:
    /// $SWITCHBACK_GIT_USERNAME and $SWITCHBACK_GIT_PASSWORD).
    #[arg(long)]
    repo: Option<String>,
    /// Branch, tag or commit to read.
    #[arg(long, default_value = "HEAD", requires = "repo")]
    rev: String,
    /// The config directory inside the repository.
    #[arg(long, default_value = ".", requires = "repo")]
    path: String,
    /// An ssh private key for ssh URLs (passphrase: $SWITCHBACK_GIT_SSH_PASSPHRASE).
    #[arg(long, requires = "repo")]
    ssh_key: Option<PathBuf>,
    /// Keep the fetched repository here between runs (default: a temporary directory).
    #[arg(long, requires = "repo")]
    cache_dir: Option<PathBuf>,
    /// Override a value: `--set site.listen=8081` (repeatable; read as YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A YAML file of values merged over values.yaml (repeatable, in order, before --set).
    #[arg(long = "values", value_name = "FILE")]
    values: Vec<PathBuf>,
    /// The entry file of the bundle.
    #[arg(long, default_value = DEFAULT_ENTRY)]
    entry: String,
}

#[derive(Args)]
struct RenderArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Write the rendered bundle into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The nginx binary for the `nginx -t` gate (default: $SWITCHBACK_NGINX, PATH, /usr/sbin/nginx).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Fail (exit 2) when no nginx binary is found instead of skipping the `nginx -t` gate.
    #[arg(long, conflicts_with = "no_nginx")]
    require_nginx: bool,
    /// Skip the `nginx -t` gate.
    #[arg(long)]
    no_nginx: bool,
    /// Treat warnings as errors.
    #[arg(long)]
    warnings_as_errors: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args)]
struct ParseArgs {
    /// An nginx config file, or a directory holding the entry file.
    path: PathBuf,
    /// The entry file when PATH is a directory.
    #[arg(long, default_value = DEFAULT_ENTRY)]
    entry: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Rules { id } => cmd_rules(id.as_deref()),
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

/// What was read: the files, where they came from, and the commit when from git.
struct Loaded {
    tree: ConfigTree,
    /// Prefix for printed paths so they point at the files on disk (`examples/basic/`).
    display_root: String,
    revision: Option<Revision>,
    /// Keeps a temporary git cache alive until the command ends.
    _cache: Option<tempfile::TempDir>,
}

fn load(args: &SourceArgs) -> anyhow::Result<Loaded> {
    if let Some(repo) = &args.repo {
        let (cache, cache_dir) = match &args.cache_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir().context("creating a temporary git cache")?;
                let dir = tmp.path().to_path_buf();
                (Some(tmp), dir)
            }
        };
        let source = GitSource::new(repo, credentials(args)?, &cache_dir)?;
        let revision = source.fetch_blocking(&args.rev)?;
        let tree = source.read_tree_blocking(&revision.commit, &args.path)?;
        return Ok(Loaded {
            tree,
            display_root: String::new(),
            revision: Some(revision),
            _cache: cache,
        });
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let tree = local::read_dir(&dir)?;
    let mut display_root = dir.display().to_string();
    if display_root == "." {
        display_root.clear();
    } else if !display_root.ends_with('/') {
        display_root.push('/');
    }
    Ok(Loaded {
        tree,
        display_root,
        revision: None,
        _cache: None,
    })
}

fn credentials(args: &SourceArgs) -> anyhow::Result<Credentials> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(key) = &args.ssh_key {
        return Ok(Credentials::SshKey {
            username: env("SWITCHBACK_GIT_USERNAME").unwrap_or_else(|| "git".to_string()),
            private_key: key.clone(),
            passphrase: env("SWITCHBACK_GIT_SSH_PASSPHRASE"),
        });
    }
    if let Some(token) = env("SWITCHBACK_GIT_TOKEN") {
        return Ok(Credentials::Token(token));
    }
    match (
        env("SWITCHBACK_GIT_USERNAME"),
        env("SWITCHBACK_GIT_PASSWORD"),
    ) {
        (Some(username), Some(password)) => Ok(Credentials::Basic { username, password }),
        (None, None) => Ok(Credentials::None),
        _ => bail!("set both SWITCHBACK_GIT_USERNAME and SWITCHBACK_GIT_PASSWORD, or neither"),
    }
}

fn overrides(args: &SourceArgs) -> anyhow::Result<Result<serde_json::Value, RenderError>> {
    let mut values = serde_json::Value::Object(serde_json::Map::new());
    for file in &args.values {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading values file {}", file.display()))?;
        match render::values::parse_values(&file.display().to_string(), &text) {
            Ok(v) => render::values::merge(&mut values, &v),
            Err(e) => return Ok(Err(e)),
        }
    }
    match render::values::from_assignments(args.set.iter().map(String::as_str)) {
        Ok(v) => render::values::merge(&mut values, &v),
        Err(e) => return Ok(Err(e)),
    }
    Ok(Ok(values))
}

/// Renders; a render failure is a finding in the input (exit 1), not an environment error.
fn render_loaded(
    loaded: &Loaded,
    args: &SourceArgs,
) -> anyhow::Result<Result<Bundle, RenderError>> {
    let overrides = match overrides(args)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    Ok(render::render(&loaded.tree, &overrides)
        .and_then(|bundle| render::require_entry(&bundle, &args.entry).map(|()| bundle)))
}

/// The path to print for a bundle file: prefixed with the directory, and naming the template a
/// rendered file came from (its line numbers are those of the rendered output).
fn shown_path(loaded: &Loaded, path: &str) -> String {
    let template = format!("{path}.j2");
    if loaded.tree.get(path).is_none() && loaded.tree.get(&template).is_some() {
        return format!("{}{path} (rendered from {template})", loaded.display_root);
    }
    format!("{}{path}", loaded.display_root)
}

fn print_diagnostic(loaded: &Loaded, d: &Diagnostic) {
    let path = shown_path(loaded, &d.path);
    println!(
        "{path}:{}:{}: {}[{}]: {}",
        d.line, d.col, d.severity, d.rule, d.message
    );
}

fn revision_json(revision: &Option<Revision>) -> serde_json::Value {
    revision
        .as_ref()
        .map_or(serde_json::Value::Null, |r| json!(r))
}

fn cmd_render(args: RenderArgs) -> anyhow::Result<ExitCode> {
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

fn report_render_error(loaded: &Loaded, e: &RenderError, format: Format) -> ExitCode {
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

fn write_bundle(bundle: &Bundle, out: &Path) -> anyhow::Result<()> {
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

fn cmd_validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
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
    let report = validate::validate(&bundle, &args.source.entry, nginx.as_ref())?;
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

fn print_report(loaded: &Loaded, report: &Report, passed: bool, nginx_skipped_by_flag: bool) {
    for d in &report.diagnostics {
        print_diagnostic(loaded, d);
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

fn cmd_parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let meta = std::fs::metadata(&args.path)
        .with_context(|| format!("reading {}", args.path.display()))?;
    let (dir, entry) = if meta.is_dir() {
        (args.path.clone(), args.entry.clone())
    } else {
        let name = args
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .context("the file name is not valid UTF-8")?
            .to_string();
        let dir = args
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        (dir, name)
    };
    let tree = local::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    })?;
    let files: BTreeMap<String, Vec<u8>> = tree
        .iter()
        .filter_map(|(path, entry)| match entry {
            TreeEntry::File(bytes) => Some((path.to_string(), bytes.clone())),
            TreeEntry::Symlink(_) => None,
        })
        .collect();
    let (config, diagnostics) = validate::parser::parse_bundle(&files, &entry);
    let base = dir.display().to_string();
    match args.format {
        Format::Json => print_json(&crossplane::to_crossplane(&config, &diagnostics, &base))?,
        Format::Text => {
            for file in &config.files {
                println!("# {}", Path::new(&base).join(&file.path).display());
                print_directives(&file.directives, 0);
            }
            for d in &diagnostics {
                println!("{}", Path::new(&base).join(d.to_string()).display());
            }
        }
    }
    Ok(if diagnostics.iter().any(Diagnostic::is_error) {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_directives(directives: &[validate::ast::Directive], depth: usize) {
    for d in directives {
        let args: Vec<&str> = d.arg_values().collect();
        let line = format!(
            "{:indent$}{} {}",
            "",
            d.name,
            args.join(" "),
            indent = depth * 4
        );
        match &d.block {
            Some(children) => {
                println!("{} {{  # line {}", line.trim_end(), d.span.line);
                print_directives(children, depth + 1);
                println!("{:indent$}}}", "", indent = depth * 4);
            }
            None => println!("{};  # line {}", line.trim_end(), d.span.line),
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

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// How the source is named in output: the directory, or the repository URL without credentials.
fn source_label(args: &SourceArgs) -> String {
    match (&args.repo, &args.dir) {
        (Some(repo), _) => format!("{} @ {} : {}", redact_url(repo), args.rev, args.path),
        (None, Some(dir)) => dir.display().to_string(),
        (None, None) => ".".to_string(),
    }
}
