//! Git repositories read with git2, never checked out.
//!
//! A [`GitSource`] keeps one bare cache repository per remote URL under a cache directory
//! (`<cache_dir>/<sha256 of the redacted URL>`). [`GitSource::fetch`] brings the remote's branches
//! and tags into it and resolves a rev (branch, tag, full or short commit id, or empty for the
//! default branch) to a [`Revision`]; [`GitSource::read_tree`] reads a directory of a fetched commit
//! from the object database into a [`ConfigTree`], with the same bounds and link rules as
//! [`crate::source::local`]. Nothing is ever checked out, so no file of the repository is
//! interpreted by the filesystem (links stay links, modes are irrelevant).
//!
//! libgit2 blocks, so the async methods run it on tokio's blocking pool; the `_blocking` twins are
//! for the CLI and tests.
//!
//! Secrets: credentials are passed as [`Credentials`], never needed in the URL; every URL in an
//! error or a span is [`redact_url`]ed, and every message from libgit2 is scrubbed of the raw URL
//! and of the secrets before it is wrapped into a [`GitError`]. The URL is never written into the
//! cache (anonymous remote, no `FETCH_HEAD`, fixed reflog message). Credentials are only offered
//! to the server the source URL names ([`Remote`]), a token or password only over https, and a
//! redirect to another host is not followed. What a remote answered (an HTTP status, a content
//! type) is reduced to a fixed sentence before it reaches an error (`failure`).

mod auth;
mod failure;
mod fetch;
mod push;
mod redact;
mod remote;
mod revert;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use auth::Credentials;
pub(crate) use redact::percent_decode;
pub use redact::redact_url;
pub use remote::{Remote, RemoteError, Transport};
pub use revert::{RevertError, RevertOutcome, RevertRequest, RevertTarget, is_valid_branch_name};

use crate::render::ConfigTree;
use crate::source::verify::{Signer, TrustedKeys, VerifyError};
use redact::Scrubber;

/// One commit of the config repository, as the rest of Switchback records it (deploy history,
/// status, logs): which commit, when, by whom, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The full commit id, 40 lowercase hex digits: the only name that never moves.
    pub commit: String,
    /// The committer time (when the commit was made, not when it was authored).
    pub committed_at: jiff::Timestamp,
    /// The author as `Name <email>`.
    pub author: String,
    /// The full commit message (summary and body), without trailing whitespace.
    pub message: String,
}

/// Why a git source could not be fetched or read. Every URL in here is redacted and every message
/// that came from libgit2 is scrubbed of secrets, so errors can be logged and shown as they are.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The source URL is empty.
    #[error("git source URL is empty")]
    EmptyUrl,
    /// The source URL cannot be used (e.g. a relative path that cannot be made absolute).
    #[error("git source URL {url}: {message}")]
    InvalidUrl {
        /// The redacted URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The cache directory could not be created.
    #[error("git cache directory {}: {source}", path.display())]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cache repository could not be opened or created (or nothing was fetched into it yet).
    #[error("opening the git cache {} of {url}: {message}", path.display())]
    Open {
        /// The redacted URL.
        url: String,
        /// The cache repository.
        path: PathBuf,
        /// libgit2's message, scrubbed.
        message: String,
    },
    /// Fetching from the remote failed (unreachable, not a repository, protocol error...).
    #[error("fetching {rev:?} from {url}: {message}")]
    Fetch {
        /// The redacted URL.
        url: String,
        /// The rev that was being fetched.
        rev: String,
        /// libgit2's message, scrubbed.
        message: String,
    },
    /// The remote wanted credentials that were missing, of the wrong kind, or rejected.
    #[error("authenticating to {url} to fetch {rev:?}: {message}")]
    Auth {
        /// The redacted URL.
        url: String,
        /// The rev that was being fetched.
        rev: String,
        /// What went wrong, scrubbed.
        message: String,
    },
    /// The rev is no branch, tag or commit of the remote.
    #[error("{rev:?} is not a branch, tag or commit of {url}")]
    UnknownRev {
        /// The redacted URL.
        url: String,
        /// The rev.
        rev: String,
    },
    /// The rev names more than one thing.
    #[error("{rev:?} is ambiguous in {url}: {detail}")]
    AmbiguousRev {
        /// The redacted URL.
        url: String,
        /// The rev.
        rev: String,
        /// What it could mean and how to say which.
        detail: String,
    },
    /// The rev names something that is not a commit (or is not a commit id at all).
    #[error("{rev:?} in {url} is not a commit")]
    NotACommit {
        /// The redacted URL.
        url: String,
        /// The rev.
        rev: String,
    },
    /// The commit given to `read_tree` has not been fetched into the cache.
    #[error("commit {commit} is not in the cache of {url}; fetch it first")]
    CommitNotFetched {
        /// The redacted URL.
        url: String,
        /// The commit id as given.
        commit: String,
    },
    /// The sub-directory path is absolute or leaves the repository.
    #[error("{path:?} is not a path inside the repository (absolute, or with `..`)")]
    InvalidPath {
        /// The path as given.
        path: String,
    },
    /// The sub-directory does not exist at that commit.
    #[error("path {path:?} does not exist at commit {commit}")]
    PathNotFound {
        /// The commit id.
        commit: String,
        /// The path, relative to the repository root.
        path: String,
    },
    /// The sub-directory path names a file or a link.
    #[error("path {path:?} at commit {commit} is a {kind}, not a directory")]
    NotADirectory {
        /// The commit id.
        commit: String,
        /// The path, relative to the repository root.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A submodule inside the directory: its files are in another repository, which we do not
    /// fetch, so reading on would silently give an incomplete config.
    #[error(
        "{path:?} at commit {commit} is a git submodule; submodules are not supported, commit the files instead"
    )]
    Submodule {
        /// The commit id.
        commit: String,
        /// The submodule's path, relative to the repository root.
        path: String,
    },
    /// A file name or link target is not valid UTF-8, so it cannot be a bundle path.
    #[error("{path:?} at commit {commit}: name or link target is not valid UTF-8")]
    BadName {
        /// The commit id.
        commit: String,
        /// The path (lossily decoded), relative to the repository root.
        path: String,
    },
    /// A tree entry whose name is not one plain path component (`..`, `.`, a `/` in it...). git
    /// itself never writes such a tree; one made by hand would make `render --out` (or anything
    /// joining bundle paths onto a directory) write outside it, so the whole commit is refused.
    #[error(
        "commit {commit}: the tree {dir:?} has an entry named {name:?}, which {why}; a file name \
         must be one plain path component (git never writes such a tree: it was made by hand). \
         Remove the entry in a new commit"
    )]
    UnsafeName {
        /// The commit id.
        commit: String,
        /// The directory holding the entry, relative to the repository root (`.` for the root).
        dir: String,
        /// The entry's name, as stored.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The directory is larger than a config directory should be.
    #[error(
        "{path:?} at commit {commit} holds more than {limit} {what}; is this the config directory?"
    )]
    TooLarge {
        /// The commit id.
        commit: String,
        /// The directory, relative to the repository root.
        path: String,
        /// What overflowed.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// An object could not be read from the cache.
    #[error("reading {what} at {commit}: {message}")]
    Read {
        /// The commit id (or rev).
        commit: String,
        /// What was being read.
        what: String,
        /// libgit2's message, scrubbed.
        message: String,
    },
    /// The blocking task running libgit2 panicked or was cancelled.
    #[error("the git task did not finish: {0}")]
    Task(String),
}

/// A git repository that config is read from: a remote URL, how to authenticate, and where its
/// cache lives. Cheap to clone (shared inside), `Send + Sync`, so one per source can be handed to
/// every task that needs it.
#[derive(Clone)]
pub struct GitSource {
    inner: Arc<Inner>,
}

/// The shared state of a [`GitSource`].
struct Inner {
    /// The URL as libgit2 gets it (local paths made absolute); may hold secrets, never shown.
    raw_url: String,
    /// The URL as shown in errors and spans.
    redacted: String,
    credentials: Credentials,
    /// The server the credentials are for: the source URL's, read before any connection.
    pin: Option<Remote>,
    cache_path: PathBuf,
    scrubber: Scrubber,
}

impl Inner {
    /// Answers libgit2's credential requests with this source's credentials, offered only to
    /// the pinned server: fetch and push install the same answer.
    fn offer_credentials<'a>(
        &'a self,
        callbacks: &mut git2::RemoteCallbacks<'a>,
        attempts: &'a std::cell::RefCell<auth::Attempts>,
    ) {
        callbacks.credentials(move |url, username_from_url, allowed| {
            auth::credential(
                &self.credentials,
                attempts,
                self.pin.as_ref(),
                url,
                username_from_url,
                allowed,
            )
        });
    }
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.inner.redacted)
            .field("credentials", &self.inner.credentials)
            .field("cache_path", &self.inner.cache_path)
            .finish()
    }
}

impl GitSource {
    /// A source for `url` (a local path, `file://`, `https://`, `http://`, `ssh://` or scp-like
    /// `user@host:path`) whose cache lives under `cache_dir`. Touches neither the network nor the
    /// disk: the cache is created by the first fetch.
    pub fn new(
        url: &str,
        credentials: Credentials,
        cache_dir: &Path,
    ) -> Result<GitSource, GitError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(GitError::EmptyUrl);
        }
        let url = absolute_if_local(url)?;
        let redacted = redact_url(&url);
        let key = hex::encode(Sha256::digest(redacted.as_bytes()));
        let scrubber = Scrubber::new(&url, &credentials);
        Ok(GitSource {
            inner: Arc::new(Inner {
                pin: Remote::parse(&url).ok(),
                cache_path: cache_dir.join(key),
                raw_url: url,
                redacted,
                credentials,
                scrubber,
            }),
        })
    }

    /// The URL with secrets redacted: what to show and log for this source.
    pub fn url(&self) -> &str {
        &self.inner.redacted
    }

    /// The bare cache repository of this source, so operators can find (and delete) it.
    pub fn cache_path(&self) -> &Path {
        &self.inner.cache_path
    }

    /// Fetches `rev` (branch, tag, `refs/heads/…`, `refs/tags/…`, full or short commit id; empty or
    /// `HEAD` for the default branch) and returns the commit it names. Runs libgit2 on the blocking
    /// pool; see [`GitSource::fetch_blocking`].
    pub async fn fetch(&self, rev: &str) -> Result<Revision, GitError> {
        let this = self.clone();
        let rev = rev.to_string();
        self.blocking(move || this.fetch_blocking(&rev)).await
    }

    /// Reads directory `path` (`""` or `"."` for the root) of the fetched commit `commit` into a
    /// [`ConfigTree`] keyed relative to that directory. Never fetches: pin the commit with
    /// [`GitSource::fetch`] first. See [`GitSource::read_tree_blocking`].
    pub async fn read_tree(&self, commit: &str, path: &str) -> Result<ConfigTree, GitError> {
        let this = self.clone();
        let (commit, path) = (commit.to_string(), path.to_string());
        self.blocking(move || this.read_tree_blocking(&commit, &path))
            .await
    }

    /// The blocking form of [`GitSource::fetch`], for the CLI and tests. A full commit id that is
    /// already cached is answered without the network; anything else fetches all branches and tags
    /// (pruning deleted ones) so a moved branch is always seen. Fetches of the same cache are
    /// serialised within the process.
    #[tracing::instrument(name = "git_fetch", skip_all, fields(url = %self.inner.redacted, rev = %rev))]
    pub fn fetch_blocking(&self, rev: &str) -> Result<Revision, GitError> {
        fetch::fetch(&self.inner, rev.trim())
    }

    /// The blocking form of [`GitSource::read_tree`], for the CLI and tests.
    #[tracing::instrument(name = "git_read_tree", skip_all, fields(url = %self.inner.redacted, commit = %commit, path = %path))]
    pub fn read_tree_blocking(&self, commit: &str, path: &str) -> Result<ConfigTree, GitError> {
        let dir = tree::normalize(path)?;
        if !self.inner.cache_path.exists() {
            return Err(GitError::CommitNotFetched {
                url: self.inner.redacted.clone(),
                commit: commit.to_string(),
            });
        }
        let repo = fetch::open_existing(&self.inner)?;
        let commit = fetch::find_commit(&repo, &self.inner, commit.trim())?;
        let scrub = |m: &str| self.inner.scrubber.scrub(m);
        let tree = tree::read(&repo, &commit, &dir, &scrub)?;
        tracing::debug!(files = tree.len(), "read tree");
        Ok(tree)
    }

    /// Verifies the signature of the fetched commit `commit` against `keys` (see
    /// [`crate::source::verify`]): who signed it, or why it must not be rolled out. Runs libgit2 on
    /// the blocking pool; never fetches.
    pub async fn verify(
        &self,
        commit: &str,
        keys: Arc<TrustedKeys>,
    ) -> Result<Signer, VerifyError> {
        let this = self.clone();
        let commit = commit.to_string();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            span.in_scope(|| this.verify_blocking(&commit, &keys))
        });
        task.await.map_err(|e| VerifyError::Repository {
            commit: String::new(),
            message: self.inner.scrubber.scrub(&e.to_string()),
        })?
    }

    /// The blocking form of [`GitSource::verify`], for the CLI and tests.
    #[tracing::instrument(name = "git_verify", skip_all, fields(url = %self.inner.redacted, commit = %commit))]
    pub fn verify_blocking(&self, commit: &str, keys: &TrustedKeys) -> Result<Signer, VerifyError> {
        let repo = fetch::open_existing(&self.inner).map_err(|e| VerifyError::Repository {
            commit: commit.to_string(),
            message: e.to_string(),
        })?;
        crate::source::verify::verify_commit(&repo, commit, keys)
    }

    /// Runs `work` on tokio's blocking pool inside the caller's span.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|e| GitError::Task(self.inner.scrubber.scrub(&e.to_string())))?
    }
}

/// Local paths (no scheme, not scp-like) made absolute, so the cache key does not depend on the
/// working directory; URLs are returned as given.
fn absolute_if_local(url: &str) -> Result<String, GitError> {
    let scp_like = url
        .find(':')
        .is_some_and(|colon| !url[..colon].contains('/'));
    if url.contains("://") || scp_like {
        return Ok(url.to_string());
    }
    let invalid = |message: String| GitError::InvalidUrl {
        url: redact_url(url),
        message,
    };
    let path = std::path::absolute(url).map_err(|e| invalid(e.to_string()))?;
    path.into_os_string()
        .into_string()
        .map_err(|_| invalid("the absolute path is not valid UTF-8".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<GitSource>();
        check::<Revision>();
        fn send_sync<T: Send + Sync + std::error::Error + 'static>() {}
        send_sync::<GitError>();
    }

    #[test]
    fn cache_key_is_the_redacted_url() {
        let dir = Path::new("/cache");
        let a = GitSource::new("https://a:tok1@host/x", Credentials::None, dir);
        let b = GitSource::new("https://a:tok2@host/x", Credentials::None, dir);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("valid URLs");
        };
        assert_eq!(a.cache_path(), b.cache_path());
        assert_eq!(a.url(), "https://a:***@host/x");
        assert!(!format!("{a:?}").contains("tok1"));
        let key = a.cache_path().file_name().and_then(|n| n.to_str());
        assert_eq!(key.map(str::len), Some(64));
    }

    /// Everything the fmt subscriber writes, to search it for secrets.
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn spans_and_logs_carry_the_redacted_url_only() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let cache = tempfile::tempdir();
        let Ok(cache) = cache else {
            panic!("temp dir");
        };
        let result = tracing::subscriber::with_default(subscriber, || {
            let source = GitSource::new(
                "https://user:url-s3cret@127.0.0.1:9/repo.git",
                Credentials::Token("cred-s3cret".into()),
                cache.path(),
            )?;
            source.fetch_blocking("main")
        });
        assert!(matches!(result, Err(GitError::Fetch { .. })), "{result:?}");
        let logged = capture
            .0
            .lock()
            .map(|out| String::from_utf8_lossy(&out).into_owned())
            .unwrap_or_default();
        assert!(
            logged.contains("git_fetch")
                && logged.contains("https://user:***@127.0.0.1:9/repo.git"),
            "{logged}"
        );
        assert!(!logged.contains("s3cret"), "{logged}");
    }

    #[test]
    fn local_paths_become_absolute_urls_stay() {
        assert_eq!(
            absolute_if_local("/srv/r.git").ok().as_deref(),
            Some("/srv/r.git")
        );
        assert!(absolute_if_local("rel/r.git").is_ok_and(|p| p.starts_with('/')));
        for url in ["file:///srv/r", "https://h/r", "git@h:r.git"] {
            assert_eq!(absolute_if_local(url).ok().as_deref(), Some(url));
        }
        assert!(matches!(
            GitSource::new("  ", Credentials::None, Path::new("/c")),
            Err(GitError::EmptyUrl)
        ));
    }
}
