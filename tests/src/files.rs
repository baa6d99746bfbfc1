//! File-tree helpers the tests share.

use std::path::Path;

/// Copies the directory `from` into `to`, recursively (a reader's checkout of the examples, a
/// config repository's starting content). Panics on any error: a test cannot go on without it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A temporary directory others may search (0711, not list): agents that run as root (as the
/// tests do here) run nginx's workers as `nobody`, who must reach each pod's log socket below it.
pub fn searchable_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sb-test-")
        .permissions(switchback::fleet::local::searchable())
        .tempdir()
        .expect("tempdir")
}

/// `examples/official-layout` copied to `repo` listens on port 80 (`conf.d/default.conf`, as the
/// official image does), which needs root: elsewhere this copy listens on 8082 instead, and says
/// so. The layout is what the tests are about, not the port.
pub fn official_layout_port_unless_root(repo: &Path) {
    if nix::unistd::geteuid().is_root() {
        return;
    }
    let default = repo.join("conf.d/default.conf");
    let text = std::fs::read_to_string(&default).expect("read");
    std::fs::write(
        &default,
        text.replace(":80;", ":8082;").replace(" 80;", " 8082;"),
    )
    .expect("write");
    eprintln!("not root: conf.d/default.conf listens on 8082 instead of 80");
}
