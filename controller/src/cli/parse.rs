//! `switchback parse`: the parse tree of an nginx config, as crossplane prints it or indented,
//! with crossplane's `parse` flags. Run on a file outside any bundle, it reads as crossplane
//! reads: absolute includes come from this machine's file system (validation refuses them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::{EXIT_FINDINGS, Format};
use switchback::render::TreeEntry;
use switchback::source::local;
use switchback::validate::parser::{self, OutsideFiles, ParseOptions};
use switchback::validate::{self, DEFAULT_ENTRY, Diagnostic, crossplane};

#[derive(Args)]
pub(crate) struct ParseArgs {
    /// An nginx config file, or a directory holding the entry file.
    pub(crate) path: PathBuf,
    /// The entry file when PATH is a directory.
    #[arg(long, default_value = DEFAULT_ENTRY)]
    pub(crate) entry: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
    /// Do not follow includes (crossplane's `--single-file`).
    #[arg(long)]
    pub(crate) single_file: bool,
    /// Print comments as `#` entries (crossplane's `--include-comments`).
    #[arg(long)]
    pub(crate) include_comments: bool,
    /// Leave out these directives, comma-separated, with their blocks (crossplane's `--ignore`).
    #[arg(long, value_name = "DIRECTIVES")]
    pub(crate) ignore: Option<String>,
    /// A directive crossplane does not know is an error (crossplane's `--strict`).
    #[arg(long)]
    pub(crate) strict: bool,
    /// One config with the includes inlined (crossplane's `--combine`).
    #[arg(long)]
    pub(crate) combine: bool,
    /// Stop each file at its first error (crossplane's `--no-catch`).
    #[arg(long)]
    pub(crate) no_catch: bool,
    /// Indent the JSON by this many spaces (crossplane's `-i`); one line when not given, as
    /// crossplane prints it.
    #[arg(short = 'i', long, value_name = "NUM")]
    pub(crate) indent: Option<usize>,
}

/// The machine's file system, for absolute includes (crossplane reads them from there).
struct FileSystem;

impl OutsideFiles for FileSystem {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| e.to_string())
    }

    fn list_dir(&self, dir: &str) -> Vec<(String, bool)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // Like glob(3), follow symlinks to tell directories.
                let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
                Some((name, is_dir))
            })
            .collect()
    }
}

pub(crate) fn cmd_parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    if matches!(args.format, Format::Text) && (args.strict || args.combine || args.no_catch) {
        anyhow::bail!(
            "--strict, --combine and --no-catch shape crossplane's JSON; use them with --format json"
        );
    }
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
    let dir_or_cwd = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    };
    let files: BTreeMap<String, Vec<u8>> = if args.single_file {
        // Only the entry is read, so any file parses on its own, wherever it is.
        match std::fs::read(dir_or_cwd.join(&entry)) {
            Ok(bytes) => BTreeMap::from([(entry.clone(), bytes)]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).context(format!("reading {}", entry)),
        }
    } else {
        local::read_dir(dir_or_cwd)?
            .iter()
            .filter_map(|(path, entry)| match entry {
                TreeEntry::File(bytes) => Some((path.to_string(), bytes.clone())),
                TreeEntry::Symlink(_) => None,
            })
            .collect()
    };
    let base = dir.display().to_string();
    // An absolute include under the entry's directory (as typed) is a file of the bundle.
    let entry_dir = Path::new(&base).join(&entry);
    let prefix = entry_dir
        .parent()
        .map(|p| format!("{}/", p.display().to_string().trim_end_matches('/')))
        .filter(|p| p.starts_with('/') && p.len() > 1);
    let options = ParseOptions {
        comments: args.include_comments,
        single_file: args.single_file,
        outside: Some(&FileSystem),
        bundle_prefix: prefix.as_deref(),
        ..ParseOptions::default()
    };
    let (config, diagnostics) = parser::parse_bundle_with(&files, &entry, &options);
    let ignore: Vec<String> = args
        .ignore
        .iter()
        .flat_map(|list| list.split(','))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    match args.format {
        Format::Json => {
            let shape = crossplane::Options {
                ignore,
                strict: args.strict,
                no_catch: args.no_catch,
                combine: args.combine,
                single_file: args.single_file,
            };
            let out = crossplane::to_crossplane_with(&config, &diagnostics, &base, &shape);
            println!("{}", crossplane::json_text(&out, args.indent));
        }
        Format::Text => {
            for file in &config.files {
                println!("# {}", Path::new(&base).join(&file.path).display());
                print_directives(&file.directives, 0, &ignore);
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

pub(crate) fn print_directives(
    directives: &[validate::ast::Directive],
    depth: usize,
    ignore: &[String],
) {
    for d in directives {
        if ignore.contains(&d.name) {
            continue;
        }
        if d.name == parser::COMMENT {
            let text = d.comments.first().map_or("", String::as_str);
            println!(
                "{:indent$}#{text}  # line {}",
                "",
                d.span.line,
                indent = depth * 4
            );
            continue;
        }
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
                print_directives(children, depth + 1, ignore);
                println!("{:indent$}}}", "", indent = depth * 4);
            }
            None => println!("{};  # line {}", line.trim_end(), d.span.line),
        }
    }
}
