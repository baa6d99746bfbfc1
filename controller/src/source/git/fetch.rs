//! Bringing the cache repository up to date with the remote and turning a rev into a commit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use git2::{
    AutotagOption, Commit, ErrorCode, FetchOptions, FetchPrune, Oid, RemoteCallbacks,
    RemoteRedirect, Repository,
};

use super::auth::Attempts;
use super::failure;
use super::{GitError, Inner, Revision};

/// What every fetch brings in: the remote's HEAD (for an empty rev), all branches under
/// `refs/remotes/origin/`, all tags as they are on the remote (forced, so moved tags follow).
const REFSPECS: [&str; 3] = [
    "+HEAD:refs/remotes/origin/HEAD",
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

/// Fixed reflog message: libgit2's default is "fetch <url>", which would write a URL-embedded token
/// into the cache.
const REFLOG: &str = "switchback fetch";

/// One lock per cache directory in this process, so two fetches of the same repository (from clones
/// of a `GitSource` or from two sources with the same URL) do not race on its refs.
static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = LazyLock::new(Default::default);

fn cache_lock(path: &Path) -> Arc<Mutex<()>> {
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    locks.entry(path.to_path_buf()).or_default().clone()
}

fn hold(lock: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The guarded data is `()`: a panic in another fetch leaves nothing inconsistent behind.
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fetches from the remote as needed and returns the commit `rev` names.
pub(super) fn fetch(source: &Inner, rev: &str) -> Result<Revision, GitError> {
    let lock = cache_lock(&source.cache_path);
    let _guard = hold(&lock);
    let repo = open_or_init(source)?;

    // A full commit id names the same content forever: if we have it, there is nothing to fetch.
    if let Some(oid) = full_sha(rev) {
        if let Ok(commit) = repo.find_commit(oid) {
            tracing::debug!(commit = %oid, "commit already in cache");
            return revision(&commit, source);
        }
    }
    fetch_refs(&repo, source, rev)?;
    let commit = resolve(&repo, source, rev)?;
    tracing::debug!(commit = %commit.id(), "resolved");
    revision(&commit, source)
}

/// The bare cache repository, created on first use.
pub(super) fn open_or_init(source: &Inner) -> Result<Repository, GitError> {
    let path = &source.cache_path;
    match Repository::open_bare(path) {
        Ok(repo) => return Ok(repo),
        Err(e) if e.code() == ErrorCode::NotFound && !path.exists() => {}
        Err(e) => return Err(open_error(source, &e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GitError::Cache {
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    tracing::info!(cache = %path.display(), "creating git cache");
    Repository::init_bare(path).map_err(|e| open_error(source, &e))
}

/// The existing cache repository, for reads that must not touch the network.
pub(super) fn open_existing(source: &Inner) -> Result<Repository, GitError> {
    Repository::open_bare(&source.cache_path).map_err(|e| open_error(source, &e))
}

fn open_error(source: &Inner, e: &git2::Error) -> GitError {
    GitError::Open {
        url: source.redacted.clone(),
        path: source.cache_path.clone(),
        message: source.scrubber.scrub(e.message()),
    }
}

fn fetch_refs(repo: &Repository, source: &Inner, rev: &str) -> Result<(), GitError> {
    let attempts = RefCell::new(Attempts::default());
    let mut callbacks = RemoteCallbacks::new();
    source.offer_credentials(&mut callbacks, &attempts);
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        // A redirect to another host is not followed: the URL a user wrote is the server that
        // is reached (and the only one the credentials would ever be offered to, see auth.rs).
        .follow_redirects(RemoteRedirect::None)
        .prune(FetchPrune::On)
        .download_tags(AutotagOption::None)
        // FETCH_HEAD would record the raw URL (and any token in it) on disk.
        .update_fetchhead(false);

    // Anonymous: the URL is never written into the cache's config.
    let result = repo
        .remote_anonymous(&source.raw_url)
        .and_then(|mut remote| remote.fetch(&REFSPECS, Some(&mut options), Some(REFLOG)));
    drop(options);
    let Err(e) = result else {
        return Ok(());
    };
    let attempts = attempts.borrow();
    let message = if source.raw_url.starts_with('/') && !Path::new(&source.raw_url).exists() {
        // libgit2 says "unsupported URL protocol" for a local path that does not exist.
        "no such directory".to_string()
    } else {
        failure::describe(&e, &source.scrubber)
    };
    let url = source.redacted.clone();
    let rev = rev.to_string();
    if e.code() == ErrorCode::Auth || attempts.rejected || attempts.refused {
        Err(GitError::Auth { url, rev, message })
    } else {
        Err(GitError::Fetch { url, rev, message })
    }
}

/// The commit `rev` names in the (freshly fetched) cache.
///
/// Order: empty or `HEAD` is the remote's default branch; `refs/heads/X` and `refs/tags/X` are
/// exactly that; a bare name is a branch or a tag and an error if it is both (git would silently
/// pick the tag; for deploys an ambiguity is a mistake); last, 4 to 40 hex digits are a commit id.
fn resolve<'r>(repo: &'r Repository, source: &Inner, rev: &str) -> Result<Commit<'r>, GitError> {
    let unknown = || GitError::UnknownRev {
        url: source.redacted.clone(),
        rev: rev.to_string(),
    };
    let names: Vec<String> = if rev.is_empty() || rev == "HEAD" {
        vec!["refs/remotes/origin/HEAD".into()]
    } else if let Some(branch) = rev.strip_prefix("refs/heads/") {
        vec![format!("refs/remotes/origin/{branch}")]
    } else if rev.starts_with("refs/tags/") {
        vec![rev.to_string()]
    } else {
        vec![
            format!("refs/remotes/origin/{rev}"),
            format!("refs/tags/{rev}"),
        ]
    };
    let mut found = Vec::new();
    for name in &names {
        match repo.find_reference(name) {
            Ok(reference) => found.push(reference),
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => {}
            Err(e) => return Err(read_error(source, rev, &e)),
        }
    }
    if found.len() > 1 {
        return Err(GitError::AmbiguousRev {
            url: source.redacted.clone(),
            rev: rev.to_string(),
            detail: format!(
                "it is both a branch and a tag; say refs/heads/{rev} or refs/tags/{rev}"
            ),
        });
    }
    if let Some(reference) = found.pop() {
        return reference
            .peel_to_commit()
            .map_err(|_| GitError::NotACommit {
                url: source.redacted.clone(),
                rev: rev.to_string(),
            });
    }
    if !is_commit_prefix(rev) {
        return Err(unknown());
    }
    match repo.find_commit_by_prefix(rev) {
        Ok(commit) => Ok(commit),
        Err(e) if e.code() == ErrorCode::Ambiguous => Err(GitError::AmbiguousRev {
            url: source.redacted.clone(),
            rev: rev.to_string(),
            detail: "several objects start with it; use more digits".to_string(),
        }),
        Err(e) if e.code() == ErrorCode::NotFound => Err(unknown()),
        Err(_) => Err(GitError::NotACommit {
            url: source.redacted.clone(),
            rev: rev.to_string(),
        }),
    }
}

/// The cached commit `commit` (a full or abbreviated id), without fetching.
pub(super) fn find_commit<'r>(
    repo: &'r Repository,
    source: &Inner,
    commit: &str,
) -> Result<Commit<'r>, GitError> {
    if !is_commit_prefix(commit) {
        return Err(GitError::NotACommit {
            url: source.redacted.clone(),
            rev: commit.to_string(),
        });
    }
    repo.find_commit_by_prefix(commit)
        .map_err(|e| match e.code() {
            ErrorCode::NotFound => GitError::CommitNotFetched {
                url: source.redacted.clone(),
                commit: commit.to_string(),
            },
            ErrorCode::Ambiguous => GitError::AmbiguousRev {
                url: source.redacted.clone(),
                rev: commit.to_string(),
                detail: "several objects start with it; use more digits".to_string(),
            },
            _ => GitError::NotACommit {
                url: source.redacted.clone(),
                rev: commit.to_string(),
            },
        })
}

fn read_error(source: &Inner, rev: &str, e: &git2::Error) -> GitError {
    GitError::Read {
        commit: rev.to_string(),
        what: "references".to_string(),
        message: source.scrubber.scrub(e.message()),
    }
}

/// The facts about a commit that identify and describe a deploy.
pub(super) fn revision(commit: &Commit<'_>, source: &Inner) -> Result<Revision, GitError> {
    let seconds = commit.time().seconds();
    let committed_at = jiff::Timestamp::from_second(seconds).map_err(|e| GitError::Read {
        commit: commit.id().to_string(),
        what: "the commit time".to_string(),
        message: source.scrubber.scrub(&e.to_string()),
    })?;
    let author = commit.author();
    Ok(Revision {
        commit: commit.id().to_string(),
        committed_at,
        author: format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ),
        message: String::from_utf8_lossy(commit.message_bytes())
            .trim_end()
            .to_string(),
    })
}

fn full_sha(rev: &str) -> Option<Oid> {
    (rev.len() == 40 && is_commit_prefix(rev))
        .then(|| Oid::from_str(rev).ok())
        .flatten()
}

/// 4 to 40 hex digits: what git accepts as a (possibly abbreviated) SHA-1 commit id.
fn is_commit_prefix(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_prefixes() {
        assert!(is_commit_prefix("abcd"));
        assert!(is_commit_prefix(&"a".repeat(40)));
        assert!(!is_commit_prefix("abc"));
        assert!(!is_commit_prefix(&"a".repeat(41)));
        assert!(!is_commit_prefix("main"));
        assert!(full_sha(&"0123456789".repeat(4)).is_some());
        assert!(full_sha("0123456").is_none());
    }
}
