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
