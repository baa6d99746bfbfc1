//! The `switchback` binary under test. Cargo builds it for the `switchback` crate's own integration
//! tests (`controller/tests/`), next to this crate's test executables, so tests here find it beside
//! themselves instead of rebuilding it.

use std::path::PathBuf;

/// Path of the built `switchback` binary: `$SWITCHBACK_BIN` when set, else `target/<profile>/switchback`
/// next to the running test executable.
pub fn switchback_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBACK_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/switchback
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable under target/<profile>/deps");
    let bin = profile_dir.join(format!("switchback{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` (it builds the binary) or set SWITCHBACK_BIN",
        bin.display()
    );
    bin
}
