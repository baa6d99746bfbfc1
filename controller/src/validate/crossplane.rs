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
//! What is reported as a crossplane error, and how:
//! - `SB001` (syntax): `"<message> in <file>:<line>"`, nginx's message as crossplane words it; the
//!   file's `parsed` is empty, as crossplane drops a file whose lexer failed;
//! - `SB002` errors for a missing literal include: crossplane's own
//!   `"[Errno 2] No such file or directory: '<path>'"` at the include's line (a missing entry file
//!   gets the same message with a `null` line);
//! - `SB003`: `"<message> in <file>:<line>"` (crossplane would try the path on its own disk);
//! - nothing else: warnings (a glob matching nothing), include cycles (crossplane parses each file
//!   once and says nothing) and lint findings are not crossplane's business.

use serde_json::{Map, Value, json};

use super::ast::{Config, Directive};
use super::diagnostic::Diagnostic;
use super::parser::INCLUDE_CYCLE;

/// crossplane's message for a file that ends inside a block (Switchback adds which block).
const EOF_IN_BLOCK: &str = "unexpected end of file, expecting \"}\"";

/// Builds crossplane's JSON for a parsed bundle and the diagnostics of its parse.
///
/// `base` is the directory crossplane was pointed at: file names are printed as `base/path`
/// (crossplane prints them as given and joined, never normalized); pass `""` for bare bundle paths.
pub fn to_crossplane(config: &Config, diagnostics: &[Diagnostic], base: &str) -> Value {
    let entry_dir = config
        .files
        .first()
        .map(|f| dirname(&join(base, &f.path)).to_string())
        .unwrap_or_default();
    // (file index, line, col, error, line as printed)
    let mut errors: Vec<(usize, u32, u32, String, Value)> = Vec::new();
    let mut missing_entry = None;
    for d in diagnostics.iter().filter(|d| d.is_error()) {
        let Some(i) = config.files.iter().position(|f| f.path == d.path) else {
            if d.rule == "SB002" && config.files.is_empty() {
                missing_entry = Some(join(base, &d.path));
            }
            continue;
        };
        let file = join(base, &d.path);
        let located = format!("{} in {file}:{}", crossplane_message(&d.message), d.line);
        match d.rule.as_str() {
            "SB001" | "SB003" => errors.push((i, d.line, d.col, located, json!(d.line))),
            "SB002" if !d.message.starts_with(INCLUDE_CYCLE) => {
                let include = find_include(&config.files[i].directives, d.line, d.col);
                match include {
                    Some((line, arg)) => {
                        let path = py_repr(&join(&entry_dir, arg));
                        let error = format!("[Errno 2] No such file or directory: {path}");
                        errors.push((i, d.line, d.col, error, json!(line)));
                    }
                    None => errors.push((i, d.line, d.col, located, json!(d.line))),
                }
            }
            _ => {}
        }
    }
    errors.sort_by_key(|e| (e.0, e.1, e.2));

    let mut top_errors = Vec::new();
    let mut configs = Vec::new();
    if let Some(file) = missing_entry {
        let error = format!("[Errno 2] No such file or directory: {}", py_repr(&file));
        top_errors.push(json!({"file": file, "error": error, "line": null}));
        configs.push(json!({
            "file": file, "status": "failed",
            "errors": [{"error": error, "line": null}], "parsed": [],
        }));
    }
    for (i, f) in config.files.iter().enumerate() {
        let file = join(base, &f.path);
        let mine: Vec<Value> = errors
            .iter()
            .filter(|e| e.0 == i)
            .map(|e| json!({"error": e.3, "line": e.4}))
            .collect();
        for e in errors.iter().filter(|e| e.0 == i) {
            top_errors.push(json!({"file": file, "error": e.3, "line": e.4}));
        }
        let parsed = if f.ok {
            directives(&f.directives)
        } else {
            Vec::new()
        };
        configs.push(json!({
            "file": file,
            "status": if mine.is_empty() { "ok" } else { "failed" },
            "errors": mine,
            "parsed": parsed,
        }));
    }
    json!({
        "status": if top_errors.is_empty() { "ok" } else { "failed" },
        "errors": top_errors,
        "config": configs,
    })
}

fn directives(dirs: &[Directive]) -> Vec<Value> {
    let mut out = Vec::with_capacity(dirs.len());
    for d in dirs {
        out.push(directive(d));
        // crossplane 0.5.8 prints comments met inside a directive's arguments after it, on the
        // directive's line, whatever `--include-comments` says.
        for c in &d.comments {
            out.push(json!({"directive": "#", "line": d.span.line, "args": [], "comment": c}));
        }
    }
    out
}

fn directive(d: &Directive) -> Value {
    let mut m = Map::new();
    m.insert("directive".into(), json!(d.name));
    m.insert("line".into(), json!(d.span.line));
    m.insert("args".into(), json!(d.arg_values().collect::<Vec<_>>()));
    // crossplane adds `includes` to every include it resolved: one argument, no block.
    if d.name == "include" && d.args.len() == 1 && d.block.is_none() {
        m.insert("includes".into(), json!(d.includes));
    }
    if let Some(block) = &d.block {
        m.insert("block".into(), Value::Array(directives(block)));
    }
    Value::Object(m)
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

/// Python's `os.path.join` for two parts.
fn join(base: &str, path: &str) -> String {
    if base.is_empty() || path.starts_with('/') {
        path.to_string()
    } else if base.ends_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// Python's `os.path.dirname`.
fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        None => "",
        Some(i) => {
            let head = &path[..=i];
            let trimmed = head.trim_end_matches('/');
            if trimmed.is_empty() { head } else { trimmed }
        }
    }
}

/// Python's `repr` of a string, as it appears in an `OSError` message.
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::validate::parser::parse_bundle;

    fn run(files: &[(&str, &str)], base: &str) -> Value {
        let files: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        let (config, diags) = parse_bundle(&files, "nginx.conf");
        to_crossplane(&config, &diags, base)
    }

    #[test]
    fn matches_crossplane_for_a_small_bundle() {
        let out = run(
            &[
                (
                    "nginx.conf",
                    "events {}\nhttp {\n  include conf.d/*.conf;\n  include missing.conf;\n}\n",
                ),
                ("conf.d/a.conf", "server { listen 80; }\n"),
            ],
            "/b",
        );
        let expected = json!({
            "status": "failed",
            "errors": [{"file": "/b/nginx.conf", "error": "[Errno 2] No such file or directory: '/b/missing.conf'", "line": 4}],
            "config": [
                {"file": "/b/nginx.conf", "status": "failed",
                 "errors": [{"error": "[Errno 2] No such file or directory: '/b/missing.conf'", "line": 4}],
                 "parsed": [
                    {"directive": "events", "line": 1, "args": [], "block": []},
                    {"directive": "http", "line": 2, "args": [], "block": [
                        {"directive": "include", "line": 3, "args": ["conf.d/*.conf"], "includes": [1]},
                        {"directive": "include", "line": 4, "args": ["missing.conf"], "includes": []},
                    ]},
                 ]},
                {"file": "/b/conf.d/a.conf", "status": "ok", "errors": [], "parsed": [
                    {"directive": "server", "line": 1, "args": [], "block": [
                        {"directive": "listen", "line": 1, "args": ["80"]},
                    ]},
                ]},
            ],
        });
        assert_eq!(out, expected);
        // Key order is part of the shape.
        let text = serde_json::to_string(&out).expect("serializes");
        assert!(text.starts_with("{\"status\":\"failed\",\"errors\":[{\"file\":"));
    }

    #[test]
    fn a_syntax_error_empties_the_file_as_crossplane_does() {
        let out = run(&[("nginx.conf", "events {}\nhttp {\n")], "");
        assert_eq!(
            out["errors"],
            json!([{"file": "nginx.conf", "error": "unexpected end of file, expecting \"}\" in nginx.conf:2", "line": 2}])
        );
        assert_eq!(out["config"][0]["parsed"], json!([]));
        assert_eq!(out["config"][0]["status"], json!("failed"));
    }

    #[test]
    fn a_missing_entry_is_reported_like_crossplane() {
        let out = run(&[("other.conf", "")], "/x/");
        assert_eq!(
            out["errors"],
            json!([{"file": "/x/nginx.conf", "error": "[Errno 2] No such file or directory: '/x/nginx.conf'", "line": null}])
        );
    }

    #[test]
    fn warnings_and_cycles_are_not_crossplane_errors() {
        let out = run(
            &[("nginx.conf", "include nginx.conf;\ninclude none/*.conf;\n")],
            "",
        );
        assert_eq!(out["status"], json!("ok"));
        assert_eq!(out["config"][0]["parsed"][0]["includes"], json!([0]));
    }

    #[test]
    fn python_helpers() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("/a/", "b"), "/a/b");
        assert_eq!(join("/a", "/b"), "/b");
        assert_eq!(dirname("/a/b"), "/a");
        assert_eq!(dirname("/b"), "/");
        assert_eq!(dirname("b"), "");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a\tb'\""), "'a\\tb\\'\"'");
    }
}
