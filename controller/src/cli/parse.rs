//! `switchback parse`: the parse tree of an nginx config, as crossplane prints it or indented.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::{EXIT_FINDINGS, Format, print_json};
use switchback::render::TreeEntry;
use switchback::source::local;
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
}

pub(crate) fn cmd_parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
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

pub(crate) fn print_directives(directives: &[validate::ast::Directive], depth: usize) {
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
