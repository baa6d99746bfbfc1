//! The config directory as plain data, so rendering never touches a filesystem or a git object
//! database: the edges (`source::git`, `source::local`) read a tree into a [`ConfigTree`] and the pure
//! renderer works on that.

use std::collections::BTreeMap;

/// Why a name cannot be one component of a config path, or `None` when it can.
///
/// A git tree made by hand (`git hash-object --literally`, libgit2's odb) may hold entries that no
/// checkout would create: `..`, `.`, a name with `/` in it. Joined onto an output directory such a
/// name walks out of it, so every reader of a config directory refuses them before anything else
/// sees the tree. A backslash is refused as well: the agent refuses it in bundle paths (it is a
/// separator on some systems), and refusing it at read time says so before a rollout starts.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("is `.` or `..`")
    } else if name.contains('/') {
        Some("contains `/`")
    } else if name.contains('\\') {
        Some("contains `\\`")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    }
}

/// Whether `path` is a `/`-separated relative path whose every component passes [`unsafe_name`]:
/// a path that, joined onto a directory, names something inside it.
pub fn is_plain_path(path: &str) -> bool {
    path.split('/').all(|part| unsafe_name(part).is_none())
}

/// One entry of a config directory, as git stores it: a regular file or a symbolic link.
///
/// Links are kept as links (not followed by the reader) so that the renderer alone decides whether a
/// link stays inside the directory; a link that leaves it is an error, never a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A symbolic link and its target exactly as stored (relative or absolute).
    Symlink(String),
}

/// The files of a config directory, keyed by their path relative to that directory with `/` as the
/// separator (e.g. `conf.d/app.conf.j2`). A `BTreeMap` so iteration order, and so everything derived
/// from it, is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigTree {
    entries: BTreeMap<String, TreeEntry>,
}

impl ConfigTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an entry. Paths are normalised to `/`-separated, without a leading `./`.
    pub fn insert(&mut self, path: impl Into<String>, entry: TreeEntry) {
        let path = path.into();
        let path = path.trim_start_matches("./").to_string();
        self.entries.insert(path, entry);
    }

    /// Adds a regular file.
    pub fn insert_file(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.insert(path, TreeEntry::File(bytes.into()));
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.entries.get(path)
    }

    /// All entries in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TreeEntry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// How many entries the tree holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<(String, TreeEntry)> for ConfigTree {
    fn from_iter<I: IntoIterator<Item = (String, TreeEntry)>>(iter: I) -> Self {
        let mut tree = ConfigTree::new();
        for (path, entry) in iter {
            tree.insert(path, entry);
        }
        tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_a_directory_are_unsafe() {
        for bad in ["", ".", "..", "../x", "a/b", "/etc", "a\\b", "a\0b"] {
            assert!(unsafe_name(bad).is_some(), "{bad:?}");
        }
        for good in [
            "nginx.conf",
            ".hidden",
            "..x",
            "a..b",
            "x.j2",
            "_partial.j2",
        ] {
            assert_eq!(unsafe_name(good), None, "{good:?}");
        }
        assert!(is_plain_path("conf.d/site.conf"));
        for bad in ["../../../x", "a//b", "a/./b", "/abs", "a/", "conf.d/.."] {
            assert!(!is_plain_path(bad), "{bad:?}");
        }
    }
}
