//! What `tests/tests/crossplane.rs` needs to run crossplane and compare its JSON with ours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use switchback_tests::json_diff::first_diff;

/// crossplane's analyzer messages: a corpus case that triggers one is not comparable.
const ANALYZER_ERRORS: &[&str] = &[
    "directive is not allowed here",
    "invalid number of arguments",
    "has no opening \"{\"",
    "is not terminated by \";\"",
    "must be \"on\" or \"off\"",
    "unknown directive",
];

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn crossplane() -> Result<PathBuf> {
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
pub fn read_bundle(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
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

/// crossplane's JSON for `crossplane parse <flags> <entry>`.
pub fn run_crossplane(bin: &Path, entry: &Path, flags: &[&str]) -> Result<Value> {
    Ok(run_crossplane_text(bin, entry, flags)?.0)
}

/// crossplane's JSON for `crossplane parse <flags> <entry>` and the bytes it printed.
pub fn run_crossplane_text(bin: &Path, entry: &Path, flags: &[&str]) -> Result<(Value, Vec<u8>)> {
    let out = Command::new(bin)
        .arg("parse")
        .args(flags)
        .arg(entry)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    ensure!(
        out.status.success(),
        "crossplane parse {} failed: {}",
        entry.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let value = serde_json::from_slice(&out.stdout).context("crossplane printed JSON")?;
    Ok((value, out.stdout))
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

/// Differences between our JSON and crossplane's for one case run with `flags`.
pub fn compare(case: &str, flags: &[&str], ours: &Value, theirs: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let strict = flags.contains(&"--strict");
    for e in theirs["errors"].as_array().into_iter().flatten() {
        let msg = e["error"].as_str().unwrap_or_default();
        let analyzer = ANALYZER_ERRORS
            .iter()
            .any(|a| msg.contains(a) && !(strict && *a == "unknown directive"));
        if analyzer {
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
    if flags.is_empty() && (theirs["status"] == "failed") != expect_failed {
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
