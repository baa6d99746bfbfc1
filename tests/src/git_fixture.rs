//! Real git repositories in temp dirs for tests: a work repo with commits and a bare "remote".
//!
//! Built with git2 rather than the `git` CLI so the tests need no git binary and no global git
//! config: author, committer and their times are always set explicitly, so commit ids and
//! timestamps are whatever the test says.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use git2::{IndexAddOption, ObjectType, Oid, Repository, RepositoryInitOptions, Signature, Time};
use tempfile::TempDir;

/// The default author of fixture commits (and their committer).
pub const AUTHOR_NAME: &str = "Ada Example";
/// The default author's email.
pub const AUTHOR_EMAIL: &str = "ada@example.invalid";
/// The time zone offset (minutes east of UTC) fixture commits are made in: not zero, so a test
/// that confuses local and UTC time fails.
pub const OFFSET_MINUTES: i32 = 120;

/// A non-bare repository with a work tree, on branch `main`, where tests write files and commit.
pub struct WorkRepo {
    dir: TempDir,
    repo: Repository,
}

impl WorkRepo {
    /// An empty repository whose first commit goes on `main`.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &opts)?;
        Ok(Self { dir, repo })
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel` (relative to the work tree), creating parent directories.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    /// Creates a symbolic link `rel` pointing at `target` (stored as is, not resolved).
    pub fn symlink(&self, rel: &str, target: &str) -> Result<()> {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &path)
            .with_context(|| format!("linking {}", path.display()))
    }

    /// Removes the file or link `rel` from the work tree (the next commit records the removal).
    pub fn remove(&self, rel: &str) -> Result<()> {
        fs::remove_file(self.path().join(rel)).with_context(|| format!("removing {rel}"))
    }

    /// Commits the whole work tree on the current branch as [`AUTHOR_NAME`] at `unix_seconds`;
    /// returns the commit id.
    pub fn commit(&self, message: &str, unix_seconds: i64) -> Result<String> {
        self.commit_as(message, AUTHOR_NAME, AUTHOR_EMAIL, unix_seconds)
    }

    /// Commits the whole work tree with the given author (also the committer) and time.
    pub fn commit_as(
        &self,
        message: &str,
        name: &str,
        email: &str,
        unix_seconds: i64,
    ) -> Result<String> {
        let mut index = self.repo.index()?;
        index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"], None)?;
        index.write()?;
        let tree = self.repo.find_tree(index.write_tree()?)?;
        self.commit_tree(&tree, message, name, email, unix_seconds)
    }

    /// Commits the current HEAD tree plus a submodule entry (a "gitlink", mode 160000) at the
    /// top-level name `name` pointing at `target`, the way a real submodule is recorded.
    pub fn commit_gitlink(&self, name: &str, target: &str, unix_seconds: i64) -> Result<String> {
        let head = self.repo.head()?.peel_to_tree()?;
        let mut builder = self.repo.treebuilder(Some(&head))?;
        builder.insert(name, Oid::from_str(target)?, 0o160000)?;
        let tree = self.repo.find_tree(builder.write()?)?;
        self.commit_tree(
            &tree,
            "add a submodule",
            AUTHOR_NAME,
            AUTHOR_EMAIL,
            unix_seconds,
        )
    }

    fn commit_tree(
        &self,
        tree: &git2::Tree<'_>,
        message: &str,
        name: &str,
        email: &str,
        unix_seconds: i64,
    ) -> Result<String> {
        let sig = Signature::new(name, email, &Time::new(unix_seconds, OFFSET_MINUTES))?;
        let parent = match self.repo.head() {
            Ok(head) => Some(head.peel_to_commit()?),
            Err(e) if e.code() == git2::ErrorCode::UnbornBranch => None,
            Err(e) => return Err(e.into()),
        };
        let parents: Vec<_> = parent.iter().collect();
        let id = self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, tree, &parents)?;
        Ok(id.to_string())
    }

    /// A lightweight tag `name` at HEAD.
    pub fn tag(&self, name: &str) -> Result<()> {
        let head = self.repo.head()?.peel(ObjectType::Commit)?;
        self.repo.tag_lightweight(name, &head, false)?;
        Ok(())
    }

    /// An annotated tag `name` at HEAD, tagged by [`AUTHOR_NAME`] at `unix_seconds`.
    pub fn annotated_tag(&self, name: &str, message: &str, unix_seconds: i64) -> Result<()> {
        let head = self.repo.head()?.peel(ObjectType::Commit)?;
        let sig = Signature::new(
            AUTHOR_NAME,
            AUTHOR_EMAIL,
            &Time::new(unix_seconds, OFFSET_MINUTES),
        )?;
        self.repo.tag(name, &head, &sig, message, false)?;
        Ok(())
    }

    /// A branch `name` at HEAD (HEAD stays where it is).
    pub fn branch(&self, name: &str) -> Result<()> {
        let head = self.repo.head()?.peel_to_commit()?;
        self.repo.branch(name, &head, false)?;
        Ok(())
    }

    /// Pushes every branch and tag to `remote`, forcing, so the remote mirrors this repository.
    pub fn push(&self, remote: &BareRemote) -> Result<()> {
        let mut refspecs = Vec::new();
        for reference in self.repo.references()? {
            let reference = reference?;
            let Ok(name) = reference.name() else {
                bail!("reference name is not UTF-8");
            };
            if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
                refspecs.push(format!("+{name}:{name}"));
            }
        }
        let mut origin = self.repo.remote_anonymous(remote.path_str()?)?;
        origin.push(&refspecs, None)?;
        Ok(())
    }
}

/// A bare repository standing in for the server; its `HEAD` is `refs/heads/main`.
pub struct BareRemote {
    _dir: TempDir,
    path: PathBuf,
}

impl BareRemote {
    /// An empty bare repository.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("remote.git");
        let mut opts = RepositoryInitOptions::new();
        opts.bare(true).initial_head("main");
        Repository::init_opts(&path, &opts)?;
        Ok(Self { _dir: dir, path })
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The repository directory as a string, the form a source URL takes.
    pub fn path_str(&self) -> Result<&str> {
        self.path.to_str().context("temp path is not UTF-8")
    }

    /// The repository as a `file://` URL.
    pub fn file_url(&self) -> Result<String> {
        Ok(format!("file://{}", self.path_str()?))
    }

    /// Deletes branch `name` on the remote, as `git push --delete` would.
    pub fn delete_branch(&self, name: &str) -> Result<()> {
        let repo = Repository::open_bare(&self.path)?;
        repo.find_reference(&format!("refs/heads/{name}"))?
            .delete()?;
        Ok(())
    }
}

/// Runs the `git` command in `dir` as a user would, with a fixed identity and no global or system
/// config, so tests do not depend on the machine's git setup. Panics when git fails.
pub fn git_cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.test")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.test")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
