//! Reading a directory of a commit straight from the object database into a [`ConfigTree`]: no
//! checkout, no work tree, so nothing on disk can be confused with the commit's contents and links
//! are never followed.

use std::path::Path;

use git2::{Commit, ObjectType, Repository, Tree};

use super::GitError;
use crate::render::{ConfigTree, TreeEntry};
use crate::source::local::{MAX_BYTES, MAX_FILES};

/// Git's file mode for a symbolic link.
const MODE_SYMLINK: i32 = 0o120000;
/// Longest symlink target we read; longer is not a path any system accepts (PATH_MAX).
const MAX_LINK: usize = 4096;

/// `path` as a repository-relative path without empty or `.` components; `""` is the root.
/// Absolute paths and `..` are refused: a sub-directory is always inside the repository.
pub(super) fn normalize(path: &str) -> Result<String, GitError> {
    if path.starts_with('/') {
        return Err(GitError::InvalidPath {
            path: path.to_string(),
        });
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(GitError::InvalidPath {
                    path: path.to_string(),
                });
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Every file and link under `dir` (normalised, `""` = root) of `commit`, keyed relative to `dir`.
pub(super) fn read(
    repo: &Repository,
    commit: &Commit<'_>,
    dir: &str,
    scrub: &dyn Fn(&str) -> String,
) -> Result<ConfigTree, GitError> {
    let id = commit.id().to_string();
    let read_err = |what: &str, e: git2::Error| GitError::Read {
        commit: id.clone(),
        what: what.to_string(),
        message: scrub(e.message()),
    };
    let root = commit.tree().map_err(|e| read_err("the root tree", e))?;
    let start = if dir.is_empty() {
        root
    } else {
        subtree(repo, &root, &id, dir).map_err(|e| e.unwrap_or_else(|e| read_err(dir, e)))?
    };
    let odb = repo.odb().map_err(|e| read_err("the object database", e))?;

    let mut tree = ConfigTree::new();
    let mut bytes = 0u64;
    let mut pending: Vec<(String, Tree<'_>)> = vec![(String::new(), start)];
    while let Some((prefix, current)) = pending.pop() {
        for entry in current.iter() {
            let join = |name: &str| {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                }
            };
            let in_repo = |rel: &str| {
                if dir.is_empty() {
                    rel.to_string()
                } else {
                    format!("{dir}/{rel}")
                }
            };
            let rel = match entry.name() {
                Ok(name) => {
                    if let Some(why) = crate::render::tree::unsafe_name(name) {
                        let holder = [dir, prefix.as_str()]
                            .into_iter()
                            .filter(|part| !part.is_empty())
                            .collect::<Vec<_>>()
                            .join("/");
                        return Err(GitError::UnsafeName {
                            commit: id.clone(),
                            dir: if holder.is_empty() {
                                ".".into()
                            } else {
                                holder
                            },
                            name: name.to_string(),
                            why,
                        });
                    }
                    join(name)
                }
                Err(_) => {
                    let lossy = String::from_utf8_lossy(entry.name_bytes());
                    return Err(GitError::BadName {
                        commit: id.clone(),
                        path: in_repo(&join(&lossy)),
                    });
                }
            };
            let item = match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = repo
                        .find_tree(entry.id())
                        .map_err(|e| read_err(&in_repo(&rel), e))?;
                    pending.push((rel, sub));
                    continue;
                }
                Some(ObjectType::Commit) => {
                    return Err(GitError::Submodule {
                        commit: id,
                        path: in_repo(&rel),
                    });
                }
                Some(ObjectType::Blob) => {
                    let (size, _) = odb
                        .read_header(entry.id())
                        .map_err(|e| read_err(&in_repo(&rel), e))?;
                    if entry.filemode() == MODE_SYMLINK {
                        if size > MAX_LINK {
                            return Err(too_large(&id, dir, "bytes in one link", MAX_LINK as u64));
                        }
                    } else {
                        bytes += size as u64;
                        if bytes > MAX_BYTES {
                            return Err(too_large(&id, dir, "bytes", MAX_BYTES));
                        }
                    }
                    let blob = repo
                        .find_blob(entry.id())
                        .map_err(|e| read_err(&in_repo(&rel), e))?;
                    if entry.filemode() == MODE_SYMLINK {
                        let target =
                            std::str::from_utf8(blob.content()).map_err(|_| GitError::BadName {
                                commit: id.clone(),
                                path: in_repo(&rel),
                            })?;
                        TreeEntry::Symlink(target.to_string())
                    } else {
                        TreeEntry::File(blob.content().to_vec())
                    }
                }
                _ => {
                    return Err(GitError::Read {
                        commit: id,
                        what: in_repo(&rel),
                        message: "unexpected object type in a tree".to_string(),
                    });
                }
            };
            tree.insert(rel, item);
            if tree.len() > MAX_FILES {
                return Err(too_large(&id, dir, "files", MAX_FILES as u64));
            }
        }
    }
    Ok(tree)
}

/// The tree at `dir` in `root`; `Err(Ok(_))` for the errors this module words itself.
fn subtree<'r>(
    repo: &'r Repository,
    root: &Tree<'r>,
    commit: &str,
    dir: &str,
) -> Result<Tree<'r>, Result<GitError, git2::Error>> {
    let entry = match root.get_path(Path::new(dir)) {
        Ok(entry) => entry,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(Ok(GitError::PathNotFound {
                commit: commit.to_string(),
                path: dir.to_string(),
            }));
        }
        Err(e) => return Err(Err(e)),
    };
    let kind = match entry.kind() {
        Some(ObjectType::Tree) => return repo.find_tree(entry.id()).map_err(Err),
        Some(ObjectType::Commit) => {
            return Err(Ok(GitError::Submodule {
                commit: commit.to_string(),
                path: dir.to_string(),
            }));
        }
        Some(ObjectType::Blob) if entry.filemode() == MODE_SYMLINK => "symbolic link",
        _ => "file",
    };
    Err(Ok(GitError::NotADirectory {
        commit: commit.to_string(),
        path: dir.to_string(),
        kind,
    }))
}

fn too_large(commit: &str, dir: &str, what: &'static str, limit: u64) -> GitError {
    GitError::TooLarge {
        commit: commit.to_string(),
        path: if dir.is_empty() {
            ".".into()
        } else {
            dir.into()
        },
        what,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Oid;

    /// A raw tree object: git's own tree builders refuse the names these tests need, the object
    /// database does not look inside what it stores.
    fn raw_tree(repo: &Repository, entries: &[(&str, &str, Oid)]) -> Oid {
        let mut data = Vec::new();
        for (mode, name, id) in entries {
            data.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            data.extend_from_slice(id.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &data).unwrap()
    }

    fn commit_of(repo: &Repository, tree: Oid) -> Oid {
        let sig = git2::Signature::new("t", "t@example.invalid", &git2::Time::new(0, 0)).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap()
    }

    fn read_at(repo: &Repository, commit: Oid, dir: &str) -> Result<ConfigTree, GitError> {
        read(repo, &repo.find_commit(commit).unwrap(), dir, &|m| {
            m.to_string()
        })
    }

    #[test]
    fn hand_made_entry_names_that_leave_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let conf = repo.blob(b"events {}\n").unwrap();
        let evil = repo.blob(b"pwned\n").unwrap();
        let empty_tree = raw_tree(&repo, &[]);
        for (mode, name, id) in [
            ("100644", "../../../x", evil),
            ("100644", "..", evil),
            ("100644", ".", evil),
            ("100644", "a/b", evil),
            ("100644", "/etc/x", evil),
            ("100644", "a\\b", evil),
            ("40000", "..", empty_tree),
        ] {
            let root = raw_tree(&repo, &[("100644", "nginx.conf", conf), (mode, name, id)]);
            let commit = commit_of(&repo, root);
            match read_at(&repo, commit, "") {
                Err(GitError::UnsafeName {
                    commit: c,
                    dir,
                    name: n,
                    ..
                }) => assert_eq!((c, dir, n), (commit.to_string(), ".".into(), name.into())),
                other => panic!("{name:?}: expected UnsafeName, got {other:?}"),
            }
        }
        // One level down, and read from a sub-directory: the message names where it is.
        let inner = raw_tree(&repo, &[("100644", "../../x", evil)]);
        let conf_d = raw_tree(&repo, &[("40000", "conf.d", inner)]);
        let root = raw_tree(&repo, &[("40000", "edge", conf_d)]);
        let commit = commit_of(&repo, root);
        let err = read_at(&repo, commit, "edge").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, GitError::UnsafeName { dir, .. } if dir == "edge/conf.d"),
            "{err:?}"
        );
        assert!(
            text.contains(&commit.to_string()) && text.contains("\"../../x\""),
            "{text}"
        );
    }

    /// A loose object whose header says `size` bytes and whose body holds only a few: reading the
    /// header works, reading the blob does not (libgit2 spun for minutes on it when tried: a reader
    /// that read blobs before checking sizes would not pass here).
    fn loose_blob_claiming(repo: &Repository, size: u64) -> Oid {
        let mut raw = format!("blob {size}\0").into_bytes();
        raw.extend_from_slice(b"only a few bytes");
        let len = u16::try_from(raw.len()).unwrap();
        // zlib header, then one stored (uncompressed) final deflate block; no checksum follows.
        let mut z = vec![0x78, 0x01, 0x01];
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(&raw);
        let hex = "5b".repeat(20);
        let dir = repo.path().join("objects").join(&hex[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&hex[2..]), z).unwrap();
        Oid::from_str(&hex).unwrap()
    }

    #[test]
    fn a_blob_past_the_budget_is_refused_from_its_header_without_reading_it() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let claim = MAX_BYTES + 1;
        let huge = loose_blob_claiming(&repo, claim);
        assert_eq!(
            repo.odb().unwrap().read_header(huge).unwrap(),
            (usize::try_from(claim).unwrap(), ObjectType::Blob)
        );
        let root = raw_tree(&repo, &[("100644", "big.conf", huge)]);
        let commit = commit_of(&repo, root);
        let err = read_at(&repo, commit, "").unwrap_err();
        assert!(
            matches!(&err, GitError::TooLarge { what: "bytes", limit, .. } if *limit == MAX_BYTES),
            "{err:?}"
        );
    }

    #[test]
    fn normalize_paths() {
        for (input, want) in [
            ("", ""),
            (".", ""),
            ("./", ""),
            ("nginx", "nginx"),
            ("./nginx/", "nginx"),
            ("a//b/./c", "a/b/c"),
        ] {
            assert_eq!(normalize(input).ok().as_deref(), Some(want), "{input}");
        }
        for bad in ["/etc", "../x", "a/../../b", "a/.."] {
            assert!(
                matches!(normalize(bad), Err(GitError::InvalidPath { .. })),
                "{bad}"
            );
        }
    }
}
