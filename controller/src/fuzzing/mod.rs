//! The bodies of the fuzz targets (`fuzz/`, run by `make fuzz`): one function per parser of
//! outside input, taking the fuzzer's bytes and checking what must hold for any input (no panic,
//! and cheap invariants: a round trip, a signature check that never accepts a wrong MAC).
//!
//! They live in the library, behind the `fuzzing` cargo feature, rather than in `fuzz/` itself,
//! so that one copy serves two callers: the libFuzzer targets (which enable the feature) and the
//! smoke test below, which runs every body over the committed seeds under plain `cargo test`, so
//! `make test` keeps the harness compiling and its invariants true without libFuzzer or a nightly
//! toolchain. Without the feature (and outside tests) none of this is compiled into the crate.
//!
//! Multi-file inputs use one plain-text framing, so a seed is a readable file and the examples
//! become seeds by concatenation: a line `=== <path>` starts a file; bytes before the first such
//! line belong to the default file the target names.

pub mod agent;
pub mod nginx;
pub mod render;
pub mod webhook;

use std::collections::BTreeMap;

/// A fuzz target: its name (the file under `fuzz/fuzz_targets/`, and the seed directory
/// `fuzz/seeds/<name>/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, for the smoke test and for `fuzz/`'s list.
pub const TARGETS: &[Target] = &[
    ("nginx_parse", nginx::parse),
    ("render", render::render),
    ("webhook", webhook::webhook),
    ("agent_apply", agent::apply),
    ("agent_ingest", agent::ingest),
    ("agent_report", agent::report),
];

/// Marks the start of a file in a multi-file input.
pub const FILE_MARKER: &[u8] = b"=== ";

/// Runs `f` with the panic hook silenced, then re-raises a panic that escaped `f` once the hook
/// is back, so it is reported as usual. Needed where the library catches a dependency's panic
/// (`render::template`): libFuzzer's panic hook aborts at any panic, caught or not. Only with
/// the `fuzzing` feature: the hook is global, and tests run in parallel threads.
pub fn with_caught_panics_quiet<T>(f: impl FnOnce() -> T) -> T {
    if !cfg!(feature = "fuzzing") {
        return f();
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match result {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!("{message}")
        }
    }
}

/// Splits a multi-file input (see the module notes) into paths and contents. Bytes before the
/// first marker go to `default` (dropped when there are none); a later file of the same path
/// replaces an earlier one. Paths are taken lossily as UTF-8 and trimmed.
pub fn split_files(data: &[u8], default: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut name = default.to_string();
    let mut body: Vec<u8> = Vec::new();
    let mut started = false;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(FILE_MARKER) {
            if started || !body.is_empty() {
                files.insert(name, std::mem::take(&mut body));
            }
            name = String::from_utf8_lossy(rest).trim().to_string();
            started = true;
        } else {
            body.extend_from_slice(line);
        }
    }
    if started || !body.is_empty() {
        files.insert(name, body);
    }
    files
}

/// The inverse of [`split_files`], for building seeds from a directory.
pub fn join_files(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, body) in files {
        out.extend_from_slice(FILE_MARKER);
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_at_markers_and_join_back() {
        let files = split_files(b"lead\n=== a.conf\nx;\n=== d/b.conf\ny;\n", "nginx.conf");
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["a.conf", "d/b.conf", "nginx.conf"]);
        assert_eq!(files["a.conf"], b"x;\n");
        assert_eq!(split_files(&join_files(&files), "nginx.conf"), files);
        assert!(split_files(b"", "nginx.conf").is_empty());
    }

    /// Every target's body over every committed seed (`fuzz/seeds/<target>/`): the harness
    /// builds, each seed runs without a panic and with its invariants holding. Each target must
    /// have seeds, so a target added without any fails here.
    #[test]
    fn every_fuzz_target_runs_over_its_committed_seeds() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        for (name, body) in TARGETS {
            let dir = seeds.join(name);
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("dir entry").path())
                .collect();
            entries.sort();
            assert!(!entries.is_empty(), "{name} has no seeds");
            for path in entries {
                let data = std::fs::read(&path).expect("seed");
                body(&data);
            }
        }
    }
}
