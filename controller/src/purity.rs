//! The one guard behind STYLE rule 1 for every pure module (analysis, rollout, report): their
//! sources must not mention I/O, a clock, a process, the environment, an async runtime or anything
//! seeded by the OS. Lives outside the modules it reads, so it needs no exception for itself.

use std::path::{Path, PathBuf};

/// Names that break purity. `HashMap`/`HashSet` seed their hasher from the OS, so iteration order
/// (and anything derived from it) would differ between runs.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "tokio",
    "SystemTime",
    "Instant::now",
    "Timestamp::now",
    "Zoned::now",
    "thread_rng",
    "getrandom",
    "HashMap",
    "HashSet",
    "RandomState",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Fails naming file, line and word when any source under `src/<module>` uses a forbidden name in
/// code (text after `//` is a comment and may say what is not used).
pub(crate) fn assert_pure(module: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    files.sort();
    assert!(files.len() >= 3, "found no sources under {}", dir.display());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (i, line) in text.lines().enumerate() {
            let code = line.split_once("//").map_or(line, |(code, _)| code);
            for word in FORBIDDEN.iter().filter(|w| code.contains(*w)) {
                found.push(format!("{}:{}: {word}", file.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{module} must stay pure:\n{}",
        found.join("\n")
    );
}
