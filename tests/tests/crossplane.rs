//! Switchback's nginx parser checked against an independent implementation: for every case under
//! `tests/corpus/` (each directory with an `nginx.conf`), the real `crossplane parse` (crossplane
//! 0.5.8, installed by `make tools`) and Switchback must print the same JSON.
//!
//! First with crossplane's defaults, comparing `switchback::validate::crossplane::to_crossplane`:
//! - no `--strict`, so directives crossplane does not know (Lua, third-party modules) are accepted
//!   as nginx with those modules would accept them;
//! - includes followed and reported per file (file list + `includes` indexes);
//! - errors caught, so every error crossplane sees is compared.
//!
//! Then every `parse` flag (`--single-file`, `--include-comments`, `--ignore`, `--strict`,
//! `--combine`, `--no-catch` and some pairs) over every case, comparing what the `switchback parse`
//! binary prints with what `crossplane parse` prints for the same flags (the values, and the bytes
//! where the values agree), except the pairs listed in
//! [`DIFFERENCES`] (documented in docs/validation.md). Absolute includes are compared on a copy of
//! `tests/corpus/abs-include/nginx.conf.in` pointing into a temporary directory the test fills.
//!
//! crossplane's command line cannot turn off its analyzer (directive contexts and argument
//! counts), which Switchback leaves to its lint rules. An analyzer error also drops statements from
//! crossplane's tree, so the corpus is kept analyzer-clean and this test fails with a clear message
//! when a case is not: the comparison is about syntax, includes and the tree.
//!
//! What is compared: statuses, file lists and `parsed` trees exactly; errors by file, line and
//! message, except that when crossplane reports no line (it loses it when a file ends inside a
//! directive and prints an empty message) only the file is compared.

#[path = "crossplane/compare.rs"]
mod compare;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use switchback::validate::crossplane::to_crossplane;
use switchback::validate::parser::parse_bundle;

use compare::{
    compare, crossplane, read_bundle, run_crossplane, run_crossplane_text, workspace_root,
};

/// The flag sets compared on every case, through the `switchback parse` binary.
const FLAG_SETS: &[&[&str]] = &[
    &[],
    &["--single-file"],
    &["--include-comments"],
    &["--ignore", "server,include"],
    &["--strict"],
    &["--combine"],
    &["--no-catch"],
    &["--combine", "--include-comments"],
    &["--combine", "--ignore", "location"],
    &["--strict", "--no-catch"],
    &["--single-file", "--include-comments"],
    &["--single-file", "-i", "4"],
];

/// (case, flag, why): where Switchback keeps nginx's reading or its own bound and crossplane's
/// output differs on purpose; each is listed in docs/validation.md.
const DIFFERENCES: &[(&str, &str, &str)] = &[(
    "include-cycle",
    "--combine",
    "crossplane inlines the cycle until Python's recursion limit and crashes; Switchback stops \
     at the cycle",
)];

#[test]
fn the_parser_agrees_with_crossplane_on_the_corpus() -> Result<()> {
    let bin = crossplane()?;
    let corpus = workspace_root().join("tests/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .with_context(|| format!("reading {}", corpus.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    // A directory without an `nginx.conf` is not a case of its own (`abs-include` is a template).
    cases.retain(|p| p.join("nginx.conf").is_file());
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
        let theirs = run_crossplane(&bin, &dir.join("nginx.conf"), &[])?;
        for p in compare(&case, &[], &ours, &theirs) {
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

/// The cases: every directory of the corpus with an `nginx.conf`.
fn cases() -> Result<Vec<PathBuf>> {
    let corpus = workspace_root().join("tests/corpus");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .with_context(|| format!("reading {}", corpus.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    cases.retain(|p| p.join("nginx.conf").is_file());
    cases.sort();
    Ok(cases)
}

/// What `switchback parse <flags> <entry>` prints, as JSON.
fn switchback_parse(entry: &Path, flags: &[&str]) -> Result<Value> {
    Ok(switchback_parse_text(entry, flags)?.0)
}

/// What `switchback parse <flags> <entry>` prints, as JSON and as bytes.
fn switchback_parse_text(entry: &Path, flags: &[&str]) -> Result<(Value, Vec<u8>)> {
    let out = Command::new(switchback_tests::bin::switchback_bin())
        .arg("parse")
        .args(flags)
        .arg(entry)
        .output()?;
    let value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "switchback parse {flags:?} {}: not JSON ({})",
            entry.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((value, out.stdout))
}

/// Compares `switchback parse` with `crossplane parse` on `entry` for every flag set.
fn compare_flags(bin: &Path, case: &str, entry: &Path, failures: &mut Vec<String>) -> Result<()> {
    for flags in FLAG_SETS {
        let known = DIFFERENCES
            .iter()
            .any(|(c, f, _)| *c == case && flags.contains(f));
        if known {
            continue;
        }
        let (theirs, their_text) = match run_crossplane_text(bin, entry, flags) {
            Ok(theirs) => theirs,
            Err(e) => {
                failures.push(format!("{case} {}: {e:#}", flags.join(" ")));
                continue;
            }
        };
        let (ours, our_text) = switchback_parse_text(entry, flags)?;
        let problems = compare(case, flags, &ours, &theirs);
        // Where the values agree (and crossplane lost no line), the printed text is the same too.
        let lost_line = theirs["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["line"].is_null()));
        if problems.is_empty() && !lost_line && our_text != their_text {
            failures.push(format!(
                "{case} {}: same JSON, printed differently:\n{}\ncrossplane:\n{}",
                flags.join(" "),
                String::from_utf8_lossy(&our_text),
                String::from_utf8_lossy(&their_text)
            ));
        }
        for p in problems {
            failures.push(format!("{case} {}: {p}", flags.join(" ")));
        }
    }
    Ok(())
}

#[test]
fn every_parse_flag_agrees_with_crossplane_on_the_corpus() -> Result<()> {
    let bin = crossplane()?;
    let mut failures = Vec::new();
    for dir in cases()? {
        let case = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        compare_flags(&bin, &case, &dir.join("nginx.conf"), &mut failures)?;
    }
    ensure!(
        failures.is_empty(),
        "{} differences from crossplane:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Absolute includes are read from the file system as crossplane reads them: present files and
/// globs are parsed under their absolute names, a missing file or a directory is an error entry
/// with crossplane's `[Errno N]` message. Every path points into a temporary directory.
#[test]
fn absolute_includes_read_from_disk_agree_with_crossplane() -> Result<()> {
    let bin = crossplane()?;
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let template = workspace_root().join("tests/corpus/abs-include/nginx.conf.in");
    let text = std::fs::read_to_string(&template)?.replace("@DIR@", &root.to_string_lossy());
    std::fs::create_dir_all(root.join("etc/conf.d"))?;
    std::fs::create_dir_all(root.join("site"))?;
    std::fs::write(root.join("site/nginx.conf"), text)?;
    std::fs::write(root.join("site/local.conf"), "server_tokens off;\n")?;
    std::fs::write(
        root.join("etc/mime.types"),
        "types {\n    text/html html;\n}\n",
    )?;
    std::fs::write(root.join("etc/conf.d/b.conf"), "server { listen 8082; }\n")?;
    std::fs::write(
        root.join("etc/conf.d/a.conf"),
        "server { listen 8081; } # a\n",
    )?;
    std::fs::write(root.join("etc/conf.d/.hidden.conf"), "not read;\n")?;
    let entry = root.join("site/nginx.conf");

    let theirs = run_crossplane(&bin, &entry, &[])?;
    let ours = switchback_parse(&entry, &[])?;
    let mut failures: Vec<String> = compare("abs-include", &["(defaults)"], &ours, &theirs);
    // The comparison proves something only if crossplane read the files and reported the misses.
    let files: Vec<&str> = theirs["config"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["file"].as_str())
        .collect();
    ensure!(files.len() == 5, "crossplane read {files:?}");
    let errors = theirs["errors"].to_string();
    ensure!(
        errors.contains("[Errno 2]") && errors.contains("[Errno 21]"),
        "crossplane's errors: {errors}"
    );
    // Named `err-` for the comparison: the missing file and the directory make it fail.
    compare_flags(&bin, "err-abs-include", &entry, &mut failures)?;
    ensure!(
        failures.is_empty(),
        "{} differences from crossplane:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// `--single-file` reads only the file it is given: the sibling files (even unreadable ones) are
/// not touched, so any file of a directory of unrelated configs parses on its own.
#[test]
fn single_file_reads_only_the_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    std::fs::write(
        tmp.path().join("one.conf"),
        "include two.conf;\nworker_processes 1;\n",
    )?;
    std::fs::create_dir(tmp.path().join("sub"))?;
    // A symlink loop next to the file would stop a reader of the whole directory.
    std::os::unix::fs::symlink("loop", tmp.path().join("loop"))?;
    let out = switchback_parse(&tmp.path().join("one.conf"), &["--single-file"])?;
    let expected = serde_json::json!({"status": "ok", "errors": [], "config": [{
        "file": tmp.path().join("one.conf").to_string_lossy(), "status": "ok", "errors": [],
        "parsed": [
            {"directive": "include", "line": 1, "args": ["two.conf"]},
            {"directive": "worker_processes", "line": 2, "args": ["1"]},
        ],
    }]});
    ensure!(out == expected, "{out:#}");
    Ok(())
}
