//! The parse tree in the JSON shape `crossplane parse` prints, so Switchback's parser can be checked
//! against that independent implementation (`tests/tests/crossplane.rs`) and tools built for
//! crossplane's output can read ours.
//!
//! The shape, keys in crossplane's order:
//! `{"status", "errors": [{"file", "error", "line"}], "config": [{"file", "status", "errors":
//! [{"error", "line"}], "parsed": [{"directive", "line", "args", "includes"?, "block"?}]}]}`.
//! Like crossplane 0.5.8 without `--include-comments`, a comment written inside a directive (between
//! its name and its `;` or `{`) still comes out, as `{"directive": "#", "line", "args": [],
//! "comment"}` right after that directive, on the directive's line.
//!
//! crossplane's `parse` flags, [`Options`]: `--ignore` drops directives (and does not follow the
//! includes inside them), `--strict` reports and drops directives crossplane does not know,
//! `--no-catch` keeps each file's first error only, empties that file and follows no include
//! after it, `--combine` inlines includes into one config ([`combine`]), `--single-file` prints
//! `include` without `includes`. Comments between directives (`--include-comments`) come from
//! the parser ([`crate::validate::parser::ParseOptions::comments`]).
//!
//! What is reported as a crossplane error, and how:
//! - `SB001` (syntax): `"<message> in <file>:<line>"`, nginx's message as crossplane words it; the
//!   file's `parsed` is empty, as crossplane drops a file whose lexer failed;
//! - `SB002` errors for a missing or unreadable literal include: crossplane's own
//!   `"[Errno 2] No such file or directory: '<path>'"` at the include's line (a missing entry file
//!   gets the same message with a `null` line);
//! - `SB003`: `"<message> in <file>:<line>"` (crossplane would try the path on its own disk);
//! - with `--strict`, `"unknown directive \"<name>\" in <file>:<line>"`, where `<file>` is the file
//!   crossplane's own variable holds at that point: after an `include` in the same block, the
//!   last file that include named (a crossplane quirk, copied so the output matches);
//! - nothing else: warnings (a glob matching nothing), include cycles (crossplane parses each file
//!   once and says nothing) and lint findings are not crossplane's business.

mod combine;
pub mod known;
mod python;

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ast::{Config, Directive};
use super::diagnostic::Diagnostic;
use super::parser::{COMMENT, INCLUDE_CYCLE};
pub use python::json_text;
use python::{dirname, join, os_error};

/// crossplane's message for a file that ends inside a block (Switchback adds which block).
const EOF_IN_BLOCK: &str = "unexpected end of file, expecting \"}\"";

/// The `parse` flags of crossplane that shape its output after parsing.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--ignore`: directive names left out, with their blocks.
    pub ignore: Vec<String>,
    /// `--strict`: a directive crossplane does not know ([`known::is_known`]) is an error.
    pub strict: bool,
    /// `--no-catch`: stop each file at its first error.
    pub no_catch: bool,
    /// `--combine`: one config, includes inlined, each statement naming its file.
    pub combine: bool,
    /// `--single-file`: includes were not followed; `include` has no `includes` key.
    pub single_file: bool,
}

/// An error of one file: where it sits (to order errors as crossplane meets them) and its text.
#[derive(Debug, Clone)]
struct FileError {
    at: (u32, u32),
    error: String,
    line: Value,
}

/// Builds crossplane's JSON for a parsed bundle and the diagnostics of its parse.
///
/// `base` is the directory crossplane was pointed at: file names are printed as `base/path`
/// (crossplane prints them as given and joined, never normalized); pass `""` for bare bundle paths.
pub fn to_crossplane(config: &Config, diagnostics: &[Diagnostic], base: &str) -> Value {
    to_crossplane_with(config, diagnostics, base, &Options::default())
}

/// [`to_crossplane`] with crossplane's `parse` flags.
pub fn to_crossplane_with(
    config: &Config,
    diagnostics: &[Diagnostic],
    base: &str,
    options: &Options,
) -> Value {
    let entry_dir = config
        .files
        .first()
        .map(|f| dirname(&join(base, &f.path)).to_string())
        .unwrap_or_default();
    let mut walker = Walker {
        config,
        base,
        options,
        fixed: vec![Vec::new(); config.files.len()],
        include_errors: HashMap::new(),
        order: Vec::new(),
        new_index: HashMap::new(),
    };
    let mut missing_entry = None;
    for d in diagnostics.iter().filter(|d| d.is_error()) {
        let Some(i) = config.files.iter().position(|f| f.path == d.path) else {
            if d.rule == "SB002" && config.files.is_empty() {
                missing_entry = Some(join(base, &d.path));
            }
            continue;
        };
        let file = join(base, &d.path);
        let located = FileError {
            at: (d.line, d.col),
            error: format!("{} in {file}:{}", crossplane_message(&d.message), d.line),
            line: json!(d.line),
        };
        match d.rule.as_str() {
            "SB001" | "SB003" => walker.fixed[i].push(located),
            "SB002" if !d.message.starts_with(INCLUDE_CYCLE) => {
                match find_include(&config.files[i].directives, d.line, d.col) {
                    Some((line, arg)) => {
                        let why = d.message.split_once(" cannot be read: ").map(|(_, w)| w);
                        let error = FileError {
                            at: (d.line, d.col),
                            error: os_error(why, &join(&entry_dir, arg)),
                            line: json!(line),
                        };
                        walker.include_errors.insert((i, d.line, d.col), error);
                    }
                    None => walker.fixed[i].push(located),
                }
            }
            _ => {}
        }
    }

    let mut top_errors = Vec::new();
    let mut configs = Vec::new();
    if let Some(file) = missing_entry {
        let error = os_error(None, &file);
        top_errors.push(json!({"file": file, "error": error, "line": null}));
        configs.push(json!({
            "file": file, "status": "failed",
            "errors": [{"error": error, "line": null}], "parsed": [],
        }));
    }
    if !config.files.is_empty() {
        walker.index_of(0);
    }
    let mut k = 0;
    while let Some(&i) = walker.order.get(k) {
        k += 1;
        let (parsed, errors) = walker.file(i);
        let file = join(base, &config.files[i].path);
        for e in &errors {
            top_errors.push(json!({"file": file, "error": e.error, "line": e.line}));
        }
        let emptied = !config.files[i].ok || (options.no_catch && !errors.is_empty());
        configs.push(json!({
            "file": file,
            "status": if errors.is_empty() { "ok" } else { "failed" },
            "errors": errors.iter().map(|e| json!({"error": e.error, "line": e.line})).collect::<Vec<_>>(),
            "parsed": if emptied { Vec::new() } else { parsed },
        }));
    }
    let payload = json!({
        "status": if top_errors.is_empty() { "ok" } else { "failed" },
        "errors": top_errors,
        "config": configs,
    });
    if options.combine {
        combine::combine(payload)
    } else {
        payload
    }
}

/// Walks the files in crossplane's order (the entry, then each file when an `include` first names
/// it), applying the flags; files only reached through ignored or unread includes drop out.
struct Walker<'a> {
    config: &'a Config,
    base: &'a str,
    options: &'a Options,
    /// Errors known before the walk (syntax, paths leaving the bundle), per file.
    fixed: Vec<Vec<FileError>>,
    /// Errors of includes that name no readable file, by (file, line, col) of the argument.
    include_errors: HashMap<(usize, u32, u32), FileError>,
    /// Files (indexes into `config.files`) in the order crossplane lists them.
    order: Vec<usize>,
    new_index: HashMap<usize, usize>,
}

impl Walker<'_> {
    /// The index crossplane gives file `i`, queuing it when first named.
    fn index_of(&mut self, i: usize) -> usize {
        let next = self.order.len();
        let n = *self.new_index.entry(i).or_insert(next);
        if n == next {
            self.order.push(i);
        }
        n
    }

    /// One file's statements and errors (sorted as crossplane meets them; only the first with
    /// `--no-catch`).
    fn file(&mut self, i: usize) -> (Vec<Value>, Vec<FileError>) {
        let mut errors = self.fixed[i].clone();
        let cutoff = if self.options.no_catch {
            errors.iter().map(|e| e.at).min()
        } else {
            None
        };
        let mut walk = FileWalk {
            file: i,
            name: join(self.base, &self.config.files[i].path),
            cutoff,
            stopped: false,
            errors: Vec::new(),
        };
        let parsed = self.block(&mut walk, &self.config.files[i].directives);
        errors.extend(walk.errors);
        errors.sort_by_key(|e| e.at);
        if self.options.no_catch {
            errors.truncate(1);
        }
        (parsed, errors)
    }

    fn block(&mut self, walk: &mut FileWalk, dirs: &[Directive]) -> Vec<Value> {
        let options = self.options;
        // crossplane's `fname`, which its include loop reassigns (see the module notes).
        let mut fname = walk.name.clone();
        let mut out = Vec::with_capacity(dirs.len());
        for d in dirs {
            if walk.stopped || walk.cutoff.is_some_and(|c| (d.span.line, d.span.col) > c) {
                walk.stopped = true;
                break;
            }
            let mut stmt = Map::new();
            if options.combine {
                stmt.insert("file".into(), json!(fname));
            }
            if d.name == COMMENT {
                stmt.insert("directive".into(), json!(COMMENT));
                stmt.insert("line".into(), json!(d.span.line));
                stmt.insert("args".into(), json!([]));
                stmt.insert("comment".into(), json!(d.comments.first()));
                out.push(Value::Object(stmt));
                continue;
            }
            if options.ignore.contains(&d.name) {
                continue;
            }
            if options.strict && !known::is_known(&d.name) {
                let line = d.span.line;
                walk.errors.push(FileError {
                    at: (line, d.span.col),
                    error: format!("unknown directive \"{}\" in {fname}:{line}", d.name),
                    line: json!(line),
                });
                walk.stopped = options.no_catch;
                continue;
            }
            stmt.insert("directive".into(), json!(d.name));
            stmt.insert("line".into(), json!(d.span.line));
            stmt.insert("args".into(), json!(d.arg_values().collect::<Vec<_>>()));
            // crossplane adds `includes` to every include it resolved: one argument, no block.
            if d.name == "include" && d.args.len() == 1 && d.block.is_none() && !options.single_file
            {
                let arg = d.args[0].span;
                if let Some(e) = self.include_errors.get(&(walk.file, arg.line, arg.col)) {
                    walk.errors.push(e.clone());
                    if options.no_catch {
                        walk.stopped = true;
                        break;
                    }
                }
                let includes: Vec<usize> = d.includes.iter().map(|&to| self.index_of(to)).collect();
                if let Some(&last) = d.includes.last() {
                    fname = join(self.base, &self.config.files[last].path);
                }
                stmt.insert("includes".into(), json!(includes));
            }
            if let Some(block) = &d.block {
                let inner = self.block(walk, block);
                stmt.insert("block".into(), Value::Array(inner));
            }
            out.push(Value::Object(stmt));
            // crossplane 0.5.8 prints comments met inside a directive's arguments after it, on
            // the directive's line, whatever `--include-comments` says (and without `file`).
            for c in &d.comments {
                out.push(json!({"directive": "#", "line": d.span.line, "args": [], "comment": c}));
            }
        }
        out
    }
}

/// The state of the walk through one file.
struct FileWalk {
    file: usize,
    name: String,
    /// With `--no-catch`: where the file's first known error is; nothing after it is read.
    cutoff: Option<(u32, u32)>,
    stopped: bool,
    errors: Vec<FileError>,
}

/// crossplane's wording of a Switchback syntax message.
fn crossplane_message(message: &str) -> &str {
    if message.starts_with(EOF_IN_BLOCK) {
        EOF_IN_BLOCK
    } else {
        message
    }
}

/// The include directive (its line and argument) whose argument is at `line`:`col`.
fn find_include(dirs: &[Directive], line: u32, col: u32) -> Option<(u32, &str)> {
    for d in dirs {
        if d.name == "include" {
            if let Some(a) = d.args.first() {
                if a.span.line == line && a.span.col == col {
                    return Some((d.span.line, &a.value));
                }
            }
        }
        if let Some(found) = d.block.as_deref().and_then(|b| find_include(b, line, col)) {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests;
