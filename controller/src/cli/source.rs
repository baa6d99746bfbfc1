//! Where config comes from on the command line: a directory or a git repository at a revision,
//! rendered with values from files and `--set`. Shared by `render` and `validate`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use switchback::render::{self, Bundle, ConfigTree, RenderError};
use switchback::source::git::{Credentials, GitSource, Revision, redact_url};
use switchback::source::local;
use switchback::validate::{DEFAULT_ENTRY, Diagnostic};

/// Where the config comes from: a directory, or a path inside a git repository at a revision.
/// Credentials come from the environment only, never from flags, so they stay out of `ps` and
/// shell history.
#[derive(Args)]
pub(crate) struct SourceArgs {
    /// A config directory on disk.
    #[arg(conflicts_with = "repo")]
    pub(crate) dir: Option<PathBuf>,
    /// A git repository URL or path (token: $SWITCHBACK_GIT_TOKEN; user/password:
    /// $SWITCHBACK_GIT_USERNAME and $SWITCHBACK_GIT_PASSWORD).
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// Branch, tag or commit to read.
    #[arg(long, default_value = "HEAD", requires = "repo")]
    pub(crate) rev: String,
    /// The config directory inside the repository.
    #[arg(long, default_value = ".", requires = "repo")]
    pub(crate) path: String,
    /// An ssh private key for ssh URLs (passphrase: $SWITCHBACK_GIT_SSH_PASSPHRASE).
    #[arg(long, requires = "repo")]
    pub(crate) ssh_key: Option<PathBuf>,
    /// Keep the fetched repository here between runs (default: a temporary directory).
    #[arg(long, requires = "repo")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Override a value: `--set site.listen=8081` (repeatable; read as YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// A YAML file of values merged over values.yaml (repeatable, in order, before --set).
    #[arg(long = "values", value_name = "FILE")]
    pub(crate) values: Vec<PathBuf>,
    /// The entry file of the bundle.
    #[arg(long, default_value = DEFAULT_ENTRY)]
    pub(crate) entry: String,
}

/// What was read: the files, where they came from, and the commit when from git.
pub(crate) struct Loaded {
    pub(crate) tree: ConfigTree,
    /// Prefix for printed paths so they point at the files on disk (`examples/basic/`).
    pub(crate) display_root: String,
    pub(crate) revision: Option<Revision>,
    /// Keeps a temporary git cache alive until the command ends.
    pub(crate) _cache: Option<tempfile::TempDir>,
}

pub(crate) fn load(args: &SourceArgs) -> anyhow::Result<Loaded> {
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

pub(crate) fn credentials(args: &SourceArgs) -> anyhow::Result<Credentials> {
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

pub(crate) fn overrides(
    args: &SourceArgs,
) -> anyhow::Result<Result<serde_json::Value, RenderError>> {
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
pub(crate) fn render_loaded(
    loaded: &Loaded,
    args: &SourceArgs,
) -> anyhow::Result<Result<Bundle, RenderError>> {
    let overrides = match overrides(args)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    // In a confined child: a template bomb stops at its limits, not at this machine's.
    let limits = switchback::confine::Limits::RENDER;
    Ok(
        switchback::confine::render::render(&loaded.tree, &overrides, &limits)?
            .and_then(|bundle| render::require_entry(&bundle, &args.entry).map(|()| bundle)),
    )
}

/// The path to print for a bundle file: prefixed with the directory, and naming the template a
/// rendered file came from (its line numbers are those of the rendered output). A name that is no
/// file of the directory (`--set`, `render.values`, an absolute `--values` path) is printed as is.
pub(crate) fn shown_path(loaded: &Loaded, path: &str) -> String {
    let template = format!("{path}.j2");
    if loaded.tree.get(path).is_none() && loaded.tree.get(&template).is_some() {
        return format!("{}{path} (rendered from {template})", loaded.display_root);
    }
    if path == "--set" || path == "render.values" || path.starts_with('/') {
        return path.to_string();
    }
    format!("{}{path}", loaded.display_root)
}

pub(crate) fn print_diagnostic(loaded: &Loaded, d: &Diagnostic) {
    let path = shown_path(loaded, &d.path);
    println!(
        "{path}:{}:{}: {}[{}]: {}",
        d.line, d.col, d.severity, d.rule, d.message
    );
}

pub(crate) fn revision_json(revision: &Option<Revision>) -> serde_json::Value {
    revision
        .as_ref()
        .map_or(serde_json::Value::Null, |r| serde_json::json!(r))
}

/// How the source is named in output: the directory, or the repository URL without credentials.
pub(crate) fn source_label(args: &SourceArgs) -> String {
    match (&args.repo, &args.dir) {
        (Some(repo), _) => format!("{} @ {} : {}", redact_url(repo), args.rev, args.path),
        (None, Some(dir)) => dir.display().to_string(),
        (None, None) => ".".to_string(),
    }
}
