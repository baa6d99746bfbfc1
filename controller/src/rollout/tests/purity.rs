//! The machine must stay pure (STYLE rule 1): no I/O, no clock, no tokio, no process or
//! environment. This reads its own sources and fails on the first sign of any of them, so a
//! convenient `Timestamp::now()` cannot slip in unnoticed.

use std::path::{Path, PathBuf};

/// Spelled in pieces so this file does not trip its own check.
const FORBIDDEN: &[&[&str]] = &[
    &["std::", "fs"],
    &["std::", "net"],
    &["to", "kio"],
    &["System", "Time"],
    &["Instant::", "now"],
    &["Timestamp::", "now"],
    &["std::", "process"],
    &["std::", "env"],
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn rollout_sources_do_no_io_and_read_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rollout");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    assert!(files.len() >= 10, "found the rollout sources: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        // The guard itself reads files; it is the one exception and holds no machine code.
        if file.ends_with("tests/purity.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for parts in FORBIDDEN {
            let needle = parts.concat();
            for (i, line) in text.lines().enumerate() {
                if line.contains(&needle) {
                    found.push(format!("{}:{}: {needle}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the rollout machine must stay pure:\n{}",
        found.join("\n")
    );
}
