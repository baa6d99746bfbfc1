//! Guards the promise that analysis is pure: no I/O, no clock, no process or environment access,
//! no OS randomness. It reads every source file under `src/analysis/` at test time and fails on
//! any forbidden name in code (comments are skipped, so the docs can say what is not used).
//!
//! This file is the one exception: it must read files to do its job, so it skips itself by name.
//! It is compiled only for tests.

use std::path::{Path, PathBuf};

/// Names that mean I/O, a clock read, a process, the environment or OS randomness. Assembled from
/// pieces so this file's own code does not contain them.
fn forbidden() -> Vec<String> {
    let s = |a: &str, b: &str| format!("{a}{b}");
    vec![
        s("std::", "fs"),
        s("std::", "net"),
        s("std::", "process"),
        s("std::", "env"),
        s("tok", "io"),
        s("System", "Time"),
        s("Instant::", "now"),
        s("Timestamp::", "now"),
        s("Zoned::", "now"),
        s("thread_", "rng"),
        s("get", "random"),
        // HashMap/HashSet seed their hasher from the OS: iteration order would differ per run.
        s("Hash", "Map"),
        s("Hash", "Set"),
        s("Random", "State"),
    ]
}

/// Every `.rs` file under `dir`, recursively, sorted for a stable report.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The code of a line: everything before a `//` comment.
fn code_of(line: &str) -> &str {
    line.split_once("//").map_or(line, |(code, _)| code)
}

#[test]
fn analysis_sources_do_no_io_and_read_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/analysis");
    let files = rust_files(&dir);
    assert!(
        files.len() >= 10,
        "expected the analysis sources in {}",
        dir.display()
    );
    let banned = forbidden();
    let mut found = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "purity_test.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (i, line) in text.lines().enumerate() {
            let code = code_of(line);
            for word in &banned {
                if code.contains(word.as_str()) {
                    found.push(format!("{}:{}: {word}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "impure code in analysis:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_catches_what_it_is_for() {
    let banned = forbidden();
    let catches = |line: &str| banned.iter().any(|w| code_of(line).contains(w.as_str()));
    assert!(catches(&format!("let t = jiff::{}::now();", "Timestamp")));
    assert!(catches(&format!("use {}::fs::read;", "std")));
    assert!(!catches(&format!("// no {} here", "tokio")));
}
