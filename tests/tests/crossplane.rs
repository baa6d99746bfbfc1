//! Switchback's nginx parser checked against an independent implementation: for every case under
//! `tests/corpus/`, the real `crossplane parse` (crossplane 0.5.8, installed by `make tools`) and
//! `switchback::validate::crossplane::to_crossplane` must print the same JSON.
//!
//! How crossplane is run: `crossplane parse <case>/nginx.conf` with its defaults, on purpose:
//! - no `--strict`, so directives crossplane does not know (Lua, third-party modules) are accepted
//!   as nginx with those modules would accept them;
//! - no `--include-comments`, since the parse tree has no comments;
//! - no `--single-file` and no `--combine`: includes are followed and reported per file, which is
//!   the shape `to_crossplane` prints (file list + `includes` indexes);
//! - errors are caught (no `--no-catch`), so every error crossplane sees is compared.
//!
//! crossplane's command line cannot turn off its analyzer (directive contexts and argument
//! counts), which Switchback leaves to its lint rules. An analyzer error also drops statements from
//! crossplane's tree, so the corpus is kept analyzer-clean and this test fails with a clear message
//! when a case is not: the comparison is about syntax, includes and the tree.
//!
//! What is compared: statuses, file lists and `parsed` trees exactly; errors by file, line and
//! message, except that when crossplane reports no line (it loses it when a file ends inside a
//! directive and prints an empty message) only the file is compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use switchback::validate::crossplane::to_crossplane;
use switchback::validate::parser::parse_bundle;

/// crossplane's analyzer messages: a corpus case that triggers one is not comparable.
const ANALYZER_ERRORS: &[&str] = &[
    "directive is not allowed here",
    "invalid number of arguments",
    "has no opening \"{\"",
    "is not terminated by \";\"",
    "must be \"on\" or \"off\"",
    "unknown directive",
];

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn crossplane() -> Result<PathBuf> {
    let path = match std::env::var_os("SWITCHBACK_CROSSPLANE") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".tools/venv/bin/crossplane"),
    };
    if !path.is_file() {
        bail!(
            "crossplane not found at {} (set SWITCHBACK_CROSSPLANE or run `make tools`, which \
             installs crossplane 0.5.8 into .tools/venv)",
            path.display()
        );
    }
    Ok(path)
}

/// Every file under `dir`, keyed by its `/`-separated path relative to `dir`.
fn read_bundle(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir)?;
            let key: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.insert(key.join("/"), std::fs::read(&path)?);
        }
    }
    Ok(files)
}

fn run_crossplane(bin: &Path, entry: &Path) -> Result<Value> {
    let out = Command::new(bin)
        .arg("parse")
        .arg(entry)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    ensure!(
        out.status.success(),
        "crossplane parse {} failed: {}",
        entry.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("crossplane printed JSON")
}

/// The first place where two JSON values differ, as a path and both values.
fn first_diff(ours: &Value, theirs: &Value, at: &str) -> Option<String> {
    match (ours, theirs) {
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if let Some(d) = first_diff(x, y, &format!("{at}[{i}]")) {
                    return Some(d);
                }
            }
            (a.len() != b.len())
                .then(|| format!("{at}: {} items, crossplane has {}", a.len(), b.len()))
        }
        (Value::Object(a), Value::Object(b)) => {
            let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
            if ka != kb {
                return Some(format!("{at}: keys {ka:?}, crossplane has {kb:?}"));
            }
            a.iter()
                .find_map(|(k, v)| first_diff(v, &b[k], &format!("{at}.{k}")))
        }
        _ => (ours != theirs).then(|| format!("{at}: {ours}, crossplane has {theirs}")),
    }
}

fn compare_errors(ours: &Value, theirs: &Value, at: &str, problems: &mut Vec<String>) {
    let (Some(ours), Some(theirs)) = (ours.as_array(), theirs.as_array()) else {
        problems.push(format!("{at}: not arrays"));
        return;
    };
    if ours.len() != theirs.len() {
        problems.push(format!(
            "{at}: {} errors {ours:?}, crossplane has {} {theirs:?}",
            ours.len(),
            theirs.len()
        ));
        return;
    }
    for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
        let keys: &[&str] = if t["line"].is_null() {
            &["file"]
        } else {
            &["file", "line", "error"]
        };
        for k in keys {
            if o.get(*k) != t.get(*k) {
                problems.push(format!(
                    "{at}[{i}].{k}: {:?}, crossplane has {:?}",
                    o.get(*k),
                    t.get(*k)
                ));
            }
        }
    }
}

/// Differences between our JSON and crossplane's for one case.
fn compare(case: &str, ours: &Value, theirs: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for e in theirs["errors"].as_array().into_iter().flatten() {
        let msg = e["error"].as_str().unwrap_or_default();
        if ANALYZER_ERRORS.iter().any(|a| msg.contains(a)) {
            problems.push(format!(
                "crossplane's analyzer rejected the case ({msg}); keep the corpus analyzer-clean"
            ));
        }
    }
    if ours["status"] != theirs["status"] {
        problems.push(format!(
            "status {}, crossplane has {}",
            ours["status"], theirs["status"]
        ));
    }
    let expect_failed = case.starts_with("err-");
    if (theirs["status"] == "failed") != expect_failed {
        problems.push(format!(
            "crossplane status is {}, but the case name says {}",
            theirs["status"],
            if expect_failed { "failed" } else { "ok" }
        ));
    }
    compare_errors(&ours["errors"], &theirs["errors"], "errors", &mut problems);
    let (ours_c, theirs_c) = (
        ours["config"].as_array().cloned().unwrap_or_default(),
        theirs["config"].as_array().cloned().unwrap_or_default(),
    );
    if ours_c.len() != theirs_c.len() {
        let names =
            |c: &[Value]| -> Vec<String> { c.iter().map(|f| f["file"].to_string()).collect() };
        problems.push(format!(
            "files {:?}, crossplane has {:?}",
            names(&ours_c),
            names(&theirs_c)
        ));
    }
    for (i, (o, t)) in ours_c.iter().zip(&theirs_c).enumerate() {
        for k in ["file", "status"] {
            if o[k] != t[k] {
                problems.push(format!(
                    "config[{i}].{k}: {}, crossplane has {}",
                    o[k], t[k]
                ));
            }
        }
        let at = format!("config[{i}].errors");
        compare_errors(&o["errors"], &t["errors"], &at, &mut problems);
        if let Some(d) = first_diff(&o["parsed"], &t["parsed"], &format!("config[{i}].parsed")) {
            problems.push(d);
        }
    }
    problems
}

#[test]
fn the_parser_agrees_with_crossplane_on_the_corpus() -> Result<()> {
    let bin = crossplane()?;
    let corpus = workspace_root().join("tests/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .with_context(|| format!("reading {}", corpus.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    cases.retain(|p| p.is_dir());
    cases.sort();
    ensure!(
        cases.len() >= 10,
        "the corpus has only {} cases",
        cases.len()
    );

    let mut failures = Vec::new();
    for dir in &cases {
        let case = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files = read_bundle(dir)?;
        let (config, diags) = parse_bundle(&files, "nginx.conf");
        let base = dir.to_string_lossy();
        let ours = to_crossplane(&config, &diags, &base);
        let theirs = run_crossplane(&bin, &dir.join("nginx.conf"))?;
        for p in compare(&case, &ours, &theirs) {
            failures.push(format!("{case}: {p}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} differences from crossplane:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// The command a user runs prints what the comparison above checked, for a file and for its
/// directory alike.
#[test]
fn switchback_parse_prints_the_compared_json() -> Result<()> {
    let corpus = workspace_root().join("tests/corpus");
    for case in ["reverse-proxy", "multi-file", "err-extra-brace"] {
        let dir = corpus.join(case);
        let files = read_bundle(&dir)?;
        let (config, diags) = parse_bundle(&files, "nginx.conf");
        let expected = to_crossplane(&config, &diags, &dir.to_string_lossy());
        for arg in [dir.join("nginx.conf"), dir.clone()] {
            let out = std::process::Command::new(switchback_tests::bin::switchback_bin())
                .args(["parse", "--format", "json"])
                .arg(&arg)
                .output()?;
            let printed: Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("parse {}: not JSON", arg.display()))?;
            ensure!(printed == expected, "{}: {printed:#}", arg.display());
            let want_code = if case.starts_with("err-") { 1 } else { 0 };
            ensure!(
                out.status.code() == Some(want_code),
                "{}: {:?}",
                arg.display(),
                out.status
            );
        }
    }
    Ok(())
}
