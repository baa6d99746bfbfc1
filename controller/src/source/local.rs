//! A config directory on the local filesystem (for `switchback validate DIR`, `render DIR`, the
//! demo and tests), read into the same [`ConfigTree`] a git commit gives, with the same rules: links
//! are recorded, never followed here, and the read is bounded.

use std::fs;
use std::path::{Path, PathBuf};

use crate::render::{ConfigTree, TreeEntry};

/// Most files a config directory may hold; a directory with more is almost certainly the wrong one.
pub const MAX_FILES: usize = 10_000;
/// Most bytes all files together may hold.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Why a local directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The path could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A file name is not valid UTF-8, so it cannot be a bundle path.
    #[error("{0}: file name is not valid UTF-8")]
    BadName(PathBuf),
    /// The directory is larger than a config directory should be.
    #[error("{path}: more than {limit} {what}; is this the config directory?")]
    TooLarge {
        /// The directory.
        path: PathBuf,
        /// What overflowed.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// Reads every file under `root` (skipping `.git`) into a tree keyed by relative path.
pub fn read_dir(root: &Path) -> Result<ConfigTree, LocalError> {
    let meta = fs::metadata(root).map_err(|source| LocalError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(LocalError::NotADirectory(root.to_path_buf()));
    }
    let mut tree = ConfigTree::new();
    let mut bytes = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let io = |source| LocalError::Io {
            path: dir.clone(),
            source,
        };
        let mut entries = fs::read_dir(&dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            let kind = entry.file_type().map_err(|source| LocalError::Io {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let rel = relative(root, &path)?;
            let item = if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| LocalError::Io {
                    path: path.clone(),
                    source,
                })?;
                let target = target
                    .to_str()
                    .ok_or_else(|| LocalError::BadName(path.clone()))?;
                TreeEntry::Symlink(target.to_string())
            } else {
                let data = fs::read(&path).map_err(|source| LocalError::Io {
                    path: path.clone(),
                    source,
                })?;
                bytes += data.len() as u64;
                if bytes > MAX_BYTES {
                    return Err(too_large(root, "bytes", MAX_BYTES));
                }
                TreeEntry::File(data)
            };
            tree.insert(rel, item);
            if tree.len() > MAX_FILES {
                return Err(too_large(root, "files", MAX_FILES as u64));
            }
        }
    }
    Ok(tree)
}

fn relative(root: &Path, path: &Path) -> Result<String, LocalError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| LocalError::BadName(path.to_path_buf()))?;
    let parts = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| LocalError::BadName(path.to_path_buf()))?;
    Ok(parts.join("/"))
}

fn too_large(root: &Path, what: &'static str, limit: u64) -> LocalError {
    LocalError::TooLarge {
        path: root.to_path_buf(),
        what,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_keeps_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        fs::create_dir_all(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        fs::write(dir.path().join("nginx.conf"), "events {}").unwrap();
        fs::write(dir.path().join("conf.d/a.conf"), "a;").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("conf.d/p.conf")).unwrap();
        let tree = read_dir(dir.path()).unwrap();
        let paths: Vec<_> = tree.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths, vec!["conf.d/a.conf", "conf.d/p.conf", "nginx.conf"]);
        assert_eq!(
            tree.get("conf.d/p.conf"),
            Some(&TreeEntry::Symlink("/etc/passwd".into()))
        );
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        fs::write(&file, "").unwrap();
        assert!(matches!(read_dir(&file), Err(LocalError::NotADirectory(_))));
        assert!(matches!(
            read_dir(&dir.path().join("missing")),
            Err(LocalError::Io { .. })
        ));
    }
}
