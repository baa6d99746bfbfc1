//! What a live config directory holds, as a [`Manifest`] that can be compared: drift detection
//! (`docs/drift.md`) records the manifest of a version directory right after an apply wrote it,
//! and later compares a fresh [`scan`] with it.
//!
//! The agent's copy of a bundle is edited (its directives are inserted), so the bundle digest
//! cannot be recomputed from the directory; recording what was written, file by file, also lets a
//! drift name the paths that differ instead of saying only "something changed". Nothing is
//! skipped: regular files by content, directories, symlinks by target, and anything else (a fifo,
//! a socket) as such. Permissions and owners are not compared: they do not change what nginx
//! reads, and a file nginx can no longer read fails the next reload's `nginx -t`.
//!
//! [`scan`] is the only I/O here; [`Manifest::digest`] and [`diff`] are pure.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::layout::FsError;

/// Domain separation for the tree hash, so it never equals a bundle digest by construction.
const TREE_DOMAIN: &[u8] = b"switchback tree v1\0";

/// Relative `/`-separated path -> what is there: `f:<sha256 hex>` for a regular file, `d` for a
/// directory, `l:<target>` for a symlink, `o` for anything else. Plain strings so the record on
/// disk and in `/v1/state` is readable.
pub type Manifest = BTreeMap<String, String>;

/// The hash of a whole manifest (`sha256:<hex>`), shown as `expected`/`found` in a drift report.
pub fn digest(manifest: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(TREE_DOMAIN);
    h.update((manifest.len() as u64).to_be_bytes());
    for (path, entry) in manifest {
        h.update((path.len() as u64).to_be_bytes());
        h.update(path.as_bytes());
        h.update((entry.len() as u64).to_be_bytes());
        h.update(entry.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The entry of a regular file with these contents.
pub fn file_entry(bytes: &[u8]) -> String {
    format!("f:{}", hex::encode(Sha256::digest(bytes)))
}

/// [`file_entry`] of the file at `path`, hashed as it is read (a large file is never held whole).
fn file_entry_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(format!("f:{}", hex::encode(hasher.finalize())))
}

/// The manifest a directory holding exactly `files` (relative `/`-separated paths) has: each
/// file by content, and each directory on the way to one. Pure.
pub fn of_files(files: &BTreeMap<String, Vec<u8>>) -> Manifest {
    let mut out = Manifest::new();
    for (path, bytes) in files {
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            out.insert(dir.to_string(), "d".to_string());
            parent = dir;
        }
        out.insert(path.clone(), file_entry(bytes));
    }
    out
}

/// How two manifests differ, each list sorted, each bounded by the `limit` given to [`diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Paths found that were not written.
    pub added: Vec<String>,
    /// Paths written that are gone.
    pub removed: Vec<String>,
    /// Paths whose content or kind changed.
    pub changed: Vec<String>,
    /// Paths that differ but were left out of the lists above to keep them bounded.
    pub omitted: usize,
}

impl TreeDiff {
    /// Whether the manifests were equal.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.omitted == 0
    }
}

/// Compares what was written (`expected`) with what is there (`found`). At most `limit` paths
/// are listed in all; the rest are counted in `omitted`.
pub fn diff(expected: &Manifest, found: &Manifest, limit: usize) -> TreeDiff {
    let mut out = TreeDiff::default();
    let mut listed = 0;
    let mut note = |list: &mut Vec<String>, path: &str, omitted: &mut usize| {
        if listed < limit {
            list.push(path.to_string());
            listed += 1;
        } else {
            *omitted += 1;
        }
    };
    for (path, entry) in expected {
        match found.get(path) {
            None => note(&mut out.removed, path, &mut out.omitted),
            Some(e) if e != entry => note(&mut out.changed, path, &mut out.omitted),
            Some(_) => {}
        }
    }
    for path in found.keys().filter(|p| !expected.contains_key(*p)) {
        note(&mut out.added, path, &mut out.omitted);
    }
    out
}

/// Most entries one scan reads, so a directory someone filled with junk cannot make the agent
/// hash without end; past it the scan reports the extra entries as one `o` entry.
const MAX_ENTRIES: usize = 100_000;

/// Reads the tree under `root`. A missing root is an empty manifest (every written path then
/// shows as removed); a root that is not a directory is the single entry `.`.
pub fn scan(root: &Path) -> Result<Manifest, FsError> {
    let err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| FsError { what, path, source }
    };
    let mut out = Manifest::new();
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(err("stat", root)(e)),
        Ok(m) if !m.is_dir() => {
            out.insert(".".to_string(), "o".to_string());
            return Ok(out);
        }
        Ok(_) => {}
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(err("list", &dir))? {
            let entry = entry.map_err(err("list", &dir))?;
            let p = entry.path();
            let key = relative_key(root, &p);
            if out.len() >= MAX_ENTRIES {
                out.insert(format!("{key} (and more)"), "o".to_string());
                return Ok(out);
            }
            let kind = entry.file_type().map_err(err("stat", &p))?;
            let value = if kind.is_dir() {
                pending.push(p);
                "d".to_string()
            } else if kind.is_file() {
                file_entry_of(&p).map_err(err("read", &p))?
            } else if kind.is_symlink() {
                let target = fs::read_link(&p).map_err(err("read link", &p))?;
                format!("l:{}", target.display())
            } else {
                "o".to_string()
            };
            out.insert(key, value);
        }
    }
    Ok(out)
}

/// `path` below `root` as the bundle names it: components joined by `/`, whatever the platform.
pub fn relative_key(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(pairs: &[(&str, &str)]) -> Manifest {
        pairs
            .iter()
            .map(|(p, e)| (p.to_string(), e.to_string()))
            .collect()
    }

    #[test]
    fn the_digest_depends_on_every_path_and_entry_and_nothing_else() {
        let a = manifest(&[("nginx.conf", "f:aa"), ("conf.d", "d")]);
        assert_eq!(digest(&a), digest(&a.clone()));
        assert!(digest(&a).starts_with("sha256:"));
        let renamed = manifest(&[("nginx.conf2", "f:aa"), ("conf.d", "d")]);
        let changed = manifest(&[("nginx.conf", "f:ab"), ("conf.d", "d")]);
        let fewer = manifest(&[("nginx.conf", "f:aa")]);
        // Framing: moving bytes between a path and its entry gives another hash.
        let shifted = manifest(&[("nginx.conff", ":aa"), ("conf.d", "d")]);
        let all = [&a, &renamed, &changed, &fewer, &shifted];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(digest(x), digest(y), "{x:?} vs {y:?}");
            }
        }
        assert_ne!(digest(&Manifest::new()), digest(&fewer));
    }

    #[test]
    fn the_diff_names_added_removed_and_changed_paths() {
        let expected = manifest(&[("a", "f:1"), ("b", "f:2"), ("c", "d"), ("c/d", "f:3")]);
        let found = manifest(&[
            ("a", "f:1"),
            ("b", "l:/etc/passwd"),
            ("c", "d"),
            ("e", "f:4"),
        ]);
        let d = diff(&expected, &found, 10);
        assert_eq!(d.added, ["e"]);
        assert_eq!(d.removed, ["c/d"]);
        assert_eq!(d.changed, ["b"]);
        assert_eq!(d.omitted, 0);
        assert!(!d.is_empty());
        assert!(diff(&expected, &expected, 10).is_empty());
    }

    #[test]
    fn the_diff_is_bounded_and_counts_what_it_left_out() {
        let expected: Manifest = (0..50)
            .map(|i| (format!("f{i:02}"), "f:0".into()))
            .collect();
        let found = Manifest::new();
        let d = diff(&expected, &found, 5);
        assert_eq!(d.removed, ["f00", "f01", "f02", "f03", "f04"]);
        assert_eq!(d.omitted, 45);
        let none = diff(&expected, &found, 0);
        assert!(none.removed.is_empty() && none.omitted == 50 && !none.is_empty());
    }

    #[test]
    fn a_scan_sees_files_directories_symlinks_and_nothing_for_a_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        assert_eq!(scan(&root).unwrap(), Manifest::new());
        fs::create_dir_all(root.join("conf.d")).unwrap();
        fs::write(root.join("nginx.conf"), b"events {}\n").unwrap();
        fs::write(root.join("conf.d/a.conf"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("conf.d/link")).unwrap();
        let m = scan(&root).unwrap();
        assert_eq!(
            m,
            manifest(&[
                ("conf.d", "d"),
                ("conf.d/a.conf", &file_entry(b"")),
                ("conf.d/link", "l:/etc/hostname"),
                ("nginx.conf", &file_entry(b"events {}\n")),
            ])
        );
        let files = BTreeMap::from([
            ("nginx.conf".to_string(), b"events {}\n".to_vec()),
            ("conf.d/a.conf".to_string(), Vec::new()),
        ]);
        let mut expected = of_files(&files);
        expected.insert("conf.d/link".into(), "l:/etc/hostname".into());
        assert_eq!(m, expected, "a scan and the manifest of the files agree");
        fs::write(root.join("nginx.conf"), b"events { }\n").unwrap();
        let d = diff(&m, &scan(&root).unwrap(), 10);
        assert_eq!(d.changed, ["nginx.conf"]);
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        assert_eq!(scan(&file).unwrap(), manifest(&[(".", "o")]));
    }
}
