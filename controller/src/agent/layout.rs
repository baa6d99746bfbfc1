//! The state directory and the filesystem steps of an apply. Every change a crash could catch
//! half-done is made by `rename`, which POSIX makes atomic, after `fsync`ing what it publishes:
//!
//! ```text
//! STATE/
//!   versions/<digest hex>/   one complete, agent-edited copy per bundle (written as .stage-*)
//!   current -> versions/<hex> what nginx reads (-c current/<entry>); swapped by rename
//!   bundles/<digest hex>.json the bundle as sent (an apply request), for drift repair
//!   applied                  JSON: the last digest applied and confirmed, with the manifest of
//!                            its directory as written; written by rename
//!   nginx.pid  logs/error.log  tmp/  log.sock
//! ```
//!
//! So after a crash at any instant, `current` names a complete directory and `applied` a digest
//! that was confirmed; the agent's start-up puts `current` back on `applied` (see `docs/agent.md`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::render::{Bundle, Digest};

/// Longest unix socket path nginx and the kernel accept (`sun_path` is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// A filesystem step failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct FsError {
    /// What was being done.
    pub what: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

fn fs_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> FsError + 'p {
    move |source| FsError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The persisted record of what nginx serves, read back by a restarted agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// The applied digest.
    pub digest: Digest,
    /// Its commit.
    pub commit: String,
    /// Its entry file.
    pub entry: String,
    /// When it was confirmed.
    pub applied_at: Timestamp,
    /// The version directory as written (drift detection compares the live files with it).
    /// Empty in records from agents that predate drift detection.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tree: super::tree::Manifest,
}

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`, which must be absolute and made of plain characters, because its
    /// paths are written into nginx directives unquoted (syslog targets cannot be quoted).
    pub fn new(root: PathBuf) -> Result<Layout, String> {
        let text = root
            .to_str()
            .ok_or("the state directory is not UTF-8")?
            .to_string();
        if !root.is_absolute() {
            return Err(format!("the state directory {text:?} is not absolute"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        {
            return Err(format!(
                "the state directory {text:?} has characters other than letters, digits and \
                 `/._-`; nginx's syslog target cannot quote them"
            ));
        }
        let layout = Layout { root };
        if layout.log_socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the state directory {text:?} is too long for a unix socket path"
            ));
        }
        Ok(layout)
    }

    /// The state directory (nginx's `-p` prefix).
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Where version directories live.
    pub fn versions(&self) -> PathBuf {
        self.root.join("versions")
    }
    /// One version's directory.
    pub fn version(&self, d: &Digest) -> PathBuf {
        self.versions().join(d.to_hex())
    }
    /// Where the bundles as sent are kept, one per version directory.
    pub fn bundles(&self) -> PathBuf {
        self.root.join("bundles")
    }
    /// One version's bundle as sent.
    pub fn bundle_file(&self, d: &Digest) -> PathBuf {
        self.bundles().join(format!("{}.json", d.to_hex()))
    }
    /// The symlink nginx reads through.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    /// The applied record.
    pub fn applied(&self) -> PathBuf {
        self.root.join("applied")
    }
    /// The agent's syslog socket.
    pub fn log_socket(&self) -> PathBuf {
        self.root.join("log.sock")
    }
    /// nginx's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("nginx.pid")
    }
    /// nginx's own error log (master messages: reloads, `[emerg]`).
    pub fn error_log(&self) -> PathBuf {
        self.root.join("logs").join("error.log")
    }
    /// Directory for nginx temp paths.
    pub fn temp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Creates the directories and removes half-written stages a crash left behind.
    pub fn prepare(&self) -> Result<(), FsError> {
        for d in [
            self.root.clone(),
            self.versions(),
            self.bundles(),
            self.root.join("logs"),
            self.temp_dir(),
        ] {
            fs::create_dir_all(&d).map_err(fs_err("create directory", &d))?;
        }
        let versions = self.versions();
        for entry in fs::read_dir(&versions).map_err(fs_err("list", &versions))? {
            let entry = entry.map_err(fs_err("list", &versions))?;
            if entry.file_name().to_string_lossy().starts_with(".stage-") {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(fs_err("remove stale stage", &p))?;
            }
        }
        let stale = self.root.join("current.new");
        if stale.symlink_metadata().is_ok() {
            fs::remove_file(&stale).map_err(fs_err("remove", &stale))?;
        }
        Ok(())
    }

    /// Writes `bundle` as version `digest`: the original files go to a stage directory, are
    /// read back and checked against the digest, then replaced by `edited` (the agent's copy),
    /// fsynced, and the stage is renamed into place. `hook` runs after the first file and after
    /// the whole stage is written (crash tests stop the process there).
    pub fn write_version(
        &self,
        bundle: &Bundle,
        edited: &BTreeMap<String, Vec<u8>>,
        hook: &dyn Fn(&str),
    ) -> Result<PathBuf, WriteError> {
        let digest = bundle.digest();
        let stage =
            self.versions()
                .join(format!(".stage-{}-{}", digest.short(), std::process::id()));
        if stage.exists() {
            fs::remove_dir_all(&stage).map_err(fs_err("remove old stage", &stage))?;
        }
        check_paths(bundle.files().keys().map(String::as_str))?;
        fs::create_dir(&stage).map_err(fs_err("create stage", &stage))?;
        // A write that fails (the disk full, say) takes its stage with it: a partial copy left
        // behind would hold the space the next apply needs until the agent restarts.
        self.fill_stage(&stage, bundle, edited, hook)
            .inspect_err(|_| {
                if let Err(e) = fs::remove_dir_all(&stage)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(stage = %stage.display(), error = %e, "cannot remove a failed stage");
                }
            })
    }

    /// [`Layout::write_version`]'s steps once `stage` exists: write, read back, edit, sync,
    /// rename into place.
    fn fill_stage(
        &self,
        stage: &Path,
        bundle: &Bundle,
        edited: &BTreeMap<String, Vec<u8>>,
        hook: &dyn Fn(&str),
    ) -> Result<PathBuf, WriteError> {
        let digest = bundle.digest();
        let real_stage = stage.canonicalize().map_err(fs_err("resolve", stage))?;
        for (i, (path, bytes)) in bundle.files().iter().enumerate() {
            let dest = stage.join(checked_rel(path)?);
            if let Some(parent) = dest.parent().filter(|p| !p.exists()) {
                fs::create_dir_all(parent).map_err(fs_err("create directory", parent))?;
            }
            // The stage is fresh and only this writer makes entries in it, so nothing in it can
            // be a symlink; checked anyway, so that no file is ever written outside it.
            let parent = dest.parent().unwrap_or(stage);
            let real = parent.canonicalize().map_err(fs_err("resolve", parent))?;
            if !real.starts_with(&real_stage) {
                return Err(WriteError::BadPath(path.clone()));
            }
            write_new(&dest, bytes)?;
            if i == 0 {
                hook("mid_write");
            }
        }
        let (written, mut dirs) = read_tree(stage)?;
        let got = Bundle::new(written).digest();
        if got != digest {
            return Err(WriteError::Verify { got, want: digest });
        }
        for (path, bytes) in edited {
            if bundle.get(path) != Some(bytes.as_slice()) {
                write_synced(&stage.join(checked_rel(path)?), bytes)?;
            }
        }
        // Deepest first, so each directory is synced after the entries it holds.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            sync_dir(d)?;
        }
        hook("written");
        let dest = self.version(&digest);
        if dest.symlink_metadata().is_ok() {
            // A copy is there (a drifted one being repaired, or one a crash left): exchange the
            // two atomically, so `current` never points at nothing, then drop the old copy.
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                stage,
                nix::fcntl::AT_FDCWD,
                &dest,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|e| fs_err("exchange stage with", &dest)(e.into()))?;
            sync_dir(&self.versions())?;
            fs::remove_dir_all(stage).map_err(fs_err("remove old copy", stage))?;
        } else {
            fs::rename(stage, &dest).map_err(fs_err("rename stage to", &dest))?;
            sync_dir(&self.versions())?;
        }
        Ok(dest)
    }

    /// Whether version `digest` exists with exactly these files.
    pub fn has_version(&self, digest: &Digest, files: &BTreeMap<String, Vec<u8>>) -> bool {
        let dir = self.version(digest);
        dir.is_dir() && read_tree(&dir).is_ok_and(|(found, _)| found == *files)
    }

    /// Points `current` at `digest`'s version: a new symlink renamed over the old one.
    pub fn swap_current(&self, digest: &Digest) -> Result<(), FsError> {
        let tmp = self.root.join("current.new");
        if tmp.symlink_metadata().is_ok() {
            fs::remove_file(&tmp).map_err(fs_err("remove", &tmp))?;
        }
        let target = Path::new("versions").join(digest.to_hex());
        std::os::unix::fs::symlink(&target, &tmp).map_err(fs_err("symlink", &tmp))?;
        let cur = self.current();
        fs::rename(&tmp, &cur).map_err(fs_err("rename symlink to", &cur))?;
        sync_dir(&self.root)
    }

    /// The digest `current` points at, if it points at a version directory that exists.
    pub fn read_current(&self) -> Option<Digest> {
        let target = fs::read_link(self.current()).ok()?;
        let name = target.file_name()?.to_str()?;
        let d: Digest = name.parse().ok()?;
        self.version(&d).is_dir().then_some(d)
    }

    /// Persists the applied record (temp file, fsync, rename, fsync the directory).
    pub fn write_applied(&self, rec: &AppliedRecord) -> Result<(), FsError> {
        let path = self.applied();
        let tmp = self.root.join("applied.new");
        let json = serde_json::to_vec_pretty(rec).map_err(|e| FsError {
            what: "serialise",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_synced(&tmp, &json)?;
        fs::rename(&tmp, &path).map_err(fs_err("rename to", &path))?;
        sync_dir(&self.root)
    }

    /// The applied record, if one was written and its version directory still exists.
    pub fn read_applied(&self) -> Option<AppliedRecord> {
        let bytes = fs::read(self.applied()).ok()?;
        let rec: AppliedRecord = serde_json::from_slice(&bytes).ok()?;
        self.version(&rec.digest).is_dir().then_some(rec)
    }

    /// Keeps the bundle of version `d` as sent (`bytes`, an apply request's JSON), by rename.
    pub fn write_bundle(&self, d: &Digest, bytes: &[u8]) -> Result<(), FsError> {
        self.write_bundle_with(d, &mut |w| w.write_all(bytes))
    }

    /// [`Layout::write_bundle`] with the JSON written by `write` straight to the file (buffered),
    /// so a large bundle is not serialised in memory first.
    pub fn write_bundle_with(
        &self,
        d: &Digest,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), FsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.bundle_file(d);
        let tmp = self.bundles().join(format!(".{}.new", d.to_hex()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(fs_err("create", &tmp))?;
        let written = (|| {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
            write(&mut out).map_err(fs_err("write", &tmp))?;
            let file = out
                .into_inner()
                .map_err(|e| fs_err("write", &tmp)(e.into_error()))?;
            file.sync_all().map_err(fs_err("fsync", &tmp))?;
            fs::rename(&tmp, &path).map_err(fs_err("rename to", &path))
        })();
        if written.is_err() {
            // Not left holding the space a full disk lacks.
            let _ = fs::remove_file(&tmp);
        }
        written?;
        sync_dir(&self.bundles())
    }

    /// The bundle of version `d` as kept, if it is.
    pub fn read_bundle(&self, d: &Digest) -> Option<Vec<u8>> {
        fs::read(self.bundle_file(d)).ok()
    }

    /// Removes a version directory (a refused apply's) and its kept bundle.
    pub fn remove_version(&self, d: &Digest) -> Result<(), FsError> {
        let kept = self.bundle_file(d);
        if let Err(e) = fs::remove_file(&kept)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(fs_err("remove bundle", &kept)(e));
        }
        let p = self.version(d);
        match fs::remove_dir_all(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(fs_err("remove version", &p)(e))
            }
            _ => Ok(()),
        }
    }

    /// Keeps the `keep` most recently written versions plus every digest in `protect`; removes
    /// the rest. Returns what was removed.
    pub fn prune(&self, keep: usize, protect: &[Digest]) -> Result<Vec<Digest>, FsError> {
        let dir = self.versions();
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(fs_err("list", &dir))? {
            let entry = entry.map_err(fs_err("list", &dir))?;
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Digest>().ok())
            else {
                continue;
            };
            let mtime = entry.metadata().and_then(|m| m.modified()).ok();
            found.push((mtime, d));
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut removed = Vec::new();
        for (i, (_, d)) in found.into_iter().enumerate() {
            if i >= keep && !protect.contains(&d) {
                self.remove_version(&d)?;
                removed.push(d);
            }
        }
        Ok(removed)
    }
}

/// Why a version could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The filesystem refused.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A bundle path that is not a plain relative path.
    #[error("bundle path {0:?} is not a plain relative path")]
    BadPath(String),
    /// A bundle path that is a file and also the directory of another path.
    #[error("bundle path {file:?} is a file, and {inside:?} would need it to be a directory")]
    FileAndDirectory {
        /// The path that is a file.
        file: String,
        /// The path below it.
        inside: String,
    },
    /// What was read back is not what was meant to be written.
    #[error("the written files have digest {got}, not {want}")]
    Verify {
        /// Digest of what is on disk.
        got: Digest,
        /// Digest of the bundle.
        want: Digest,
    },
}

/// Checks every path of a bundle before anything is written: each is a plain relative path
/// ([`checked_rel`]), and none is a file and a directory at once (`a` and `a/b`), which would
/// otherwise fail half-way through writing the stage.
pub fn check_paths<'a>(paths: impl Iterator<Item = &'a str>) -> Result<(), WriteError> {
    let mut files = std::collections::BTreeSet::new();
    for path in paths {
        checked_rel(path)?;
        files.insert(path);
    }
    for path in &files {
        let mut dir = *path;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if files.contains(parent) {
                return Err(WriteError::FileAndDirectory {
                    file: parent.to_string(),
                    inside: (*path).to_string(),
                });
            }
            dir = parent;
        }
    }
    Ok(())
}

/// `path` as a relative path of normal components only.
pub fn checked_rel(path: &str) -> Result<&Path, WriteError> {
    // Checked segment by segment: `Path::components` would quietly normalise `a//b` and `a/./b`,
    // and the file read back would then not be the file named.
    let plain = path
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', '\0']));
    if plain {
        Ok(Path::new(path))
    } else {
        Err(WriteError::BadPath(path.to_string()))
    }
}

/// Writes and fsyncs `path`, never through a symlink at `path` (`O_NOFOLLOW`).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(fs_err("create", path))?;
    fill(f, path, bytes)
}

/// Writes and fsyncs a file that must not exist yet (so nothing there, file or link, is
/// followed or overwritten).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(fs_err("create", path))?;
    fill(f, path, bytes)
}

fn fill(mut f: File, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    f.write_all(bytes).map_err(fs_err("write", path))?;
    f.sync_all().map_err(fs_err("fsync", path))
}

fn sync_dir(path: &Path) -> Result<(), FsError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(fs_err("fsync directory", path))
}

/// Every regular file under `root`, keyed by `/`-separated relative path, and every directory.
type Tree = (BTreeMap<String, Vec<u8>>, Vec<PathBuf>);

fn read_tree(root: &Path) -> Result<Tree, FsError> {
    let mut out = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        dirs.push(dir.clone());
        for entry in fs::read_dir(&dir).map_err(fs_err("list", &dir))? {
            let entry = entry.map_err(fs_err("list", &dir))?;
            let p = entry.path();
            let kind = entry.file_type().map_err(fs_err("stat", &p))?;
            if kind.is_dir() {
                pending.push(p);
            } else if kind.is_file() {
                let key = super::tree::relative_key(root, &p);
                out.insert(key, fs::read(&p).map_err(fs_err("read back", &p))?);
            }
        }
    }
    Ok((out, dirs))
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
