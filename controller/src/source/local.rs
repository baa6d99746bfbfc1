//! A config directory on the local filesystem (for `switchback validate DIR`, `render DIR`, the
//! demo and tests), read into the same [`ConfigTree`] a git commit gives, with the same rules: links
//! are recorded, never followed here, and the read is bounded.
//!
//! Bounded means bounded before the bytes are read: a file's size is checked from its metadata
//! before it is opened and again from the open file, and it is read through a reader that stops
//! one byte past what is left of the budget (a file can grow between the check and the read). Only
//! regular files are opened, and only without following a link and without blocking, so a FIFO,
//! a socket or a device in the directory is named in an error instead of hanging the reader or
//! being read.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

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
    /// A file name that cannot be a bundle path (see [`crate::render::tree::unsafe_name`]).
    #[error("{path}: the file name {why}; rename it (bundle paths are plain names joined by `/`)")]
    UnsafeName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        why: &'static str,
    },
    /// Something that is not a regular file, a directory or a symbolic link. It is not opened:
    /// opening a FIFO blocks until someone writes, and reading a device never ends.
    #[error(
        "{path}: is a {kind}; a config directory holds only regular files, directories and \
         symbolic links. Remove it (it was not opened)"
    )]
    NotAFile {
        /// The entry.
        path: PathBuf,
        /// What it is: `FIFO`, `socket`, `block device`, `character device`.
        kind: &'static str,
    },
    /// One file alone would take the directory past [`MAX_BYTES`]; it was not read.
    #[error(
        "{path}: {size} bytes, more than the {limit} bytes a whole config directory may hold \
         ({left} left after the files read before it); it was not read. Is this the config directory?"
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least this many bytes).
        size: u64,
        /// [`MAX_BYTES`].
        limit: u64,
        /// What was left of the budget when it was reached.
        left: u64,
    },
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
            if let Some(why) = entry
                .file_name()
                .to_str()
                .and_then(crate::render::tree::unsafe_name)
            {
                return Err(LocalError::UnsafeName { path, why });
            }
            let kind = entry.file_type().map_err(|source| LocalError::Io {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            if let Some(kind) = special_kind(&kind) {
                return Err(LocalError::NotAFile { path, kind });
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
                let data = read_file(&path, MAX_BYTES.saturating_sub(bytes))?;
                bytes += data.len() as u64;
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

/// What a non-regular, non-directory, non-link entry is, or `None` for those three.
fn special_kind(kind: &fs::FileType) -> Option<&'static str> {
    if kind.is_file() || kind.is_dir() || kind.is_symlink() {
        None
    } else if kind.is_fifo() {
        Some("FIFO")
    } else if kind.is_socket() {
        Some("socket")
    } else if kind.is_block_device() {
        Some("block device")
    } else if kind.is_char_device() {
        Some("character device")
    } else {
        Some("special file")
    }
}

/// Reads one regular file of at most `left` bytes without ever holding more than `left + 1`.
///
/// The size is checked from `lstat` before opening, the file is opened without following a link
/// and without blocking (a FIFO swapped in after the directory was listed opens at once instead of
/// waiting for a writer), checked again from `fstat` on the open file, and read through a reader
/// that stops one byte past the budget, so a file that grows after the check is still caught.
fn read_file(path: &Path, left: u64) -> Result<Vec<u8>, LocalError> {
    let io = |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |size: u64| LocalError::FileTooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_BYTES,
        left,
    };
    let before = fs::symlink_metadata(path).map_err(io)?;
    if before.len() > left {
        return Err(too_large(before.len()));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = special_kind(&meta.file_type()) {
        return Err(LocalError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > left {
        return Err(too_large(meta.len()));
    }
    // Capacity from the checked size (at most `left`, so at most MAX_BYTES).
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    Read::take(&file, left.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > left {
        return Err(too_large(data.len() as u64));
    }
    Ok(data)
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
    fn a_fifo_is_named_and_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nginx.conf"), "events {}").unwrap();
        let fifo = dir.path().join("pipe.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Nobody ever writes to the FIFO: opening it for reading would block forever.
        match read_dir(dir.path()) {
            Err(LocalError::NotAFile { path, kind }) => {
                assert_eq!((path, kind), (fifo, "FIFO"));
            }
            other => panic!("expected NotAFile, got {other:?}"),
        }
    }

    #[test]
    fn a_file_past_the_budget_is_refused_from_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.conf");
        let f = fs::File::create(&big).unwrap();
        // Sparse: takes no disk, and reading it would still produce MAX_BYTES + 1 bytes.
        f.set_len(MAX_BYTES + 1).unwrap();
        let err = read_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, LocalError::FileTooLarge { path, size, .. } if *path == big && *size == MAX_BYTES + 1),
            "{err:?}"
        );
        assert!(err.to_string().contains("it was not read"), "{err}");
    }

    #[test]
    fn a_file_is_read_only_up_to_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.conf");
        fs::write(&file, "0123456789").unwrap();
        assert_eq!(read_file(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_file(&file, 9),
            Err(LocalError::FileTooLarge {
                size: 10,
                left: 9,
                ..
            })
        ));
    }

    #[test]
    fn a_backslash_in_a_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a\\b.conf"), "x").unwrap();
        assert!(matches!(
            read_dir(dir.path()),
            Err(LocalError::UnsafeName { .. })
        ));
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
