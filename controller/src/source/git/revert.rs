//! Writing a rollback back to git (issue 8, "git tells the truth again"): after the engine put
//! every pod back on the stable commit, the followed branch still names the bad one. A revert
//! commit makes git say again what is running.
//!
//! The commit's parent is the followed ref's head as fetched just now, and its tree is that head's
//! tree with only the config directory replaced by the stable commit's, so files outside the
//! directory changed meanwhile stay as they are. It is pushed without force, either to a new
//! branch (for a person to merge) or to the followed branch as a fast-forward; nothing is ever
//! overwritten. When the head already has the stable config there is nothing to do; when it has
//! yet another config (someone moved on), the revert is refused rather than undo their change.
//!
//! Building and pushing are two steps ([`prepare`], then [`super::push::push`]) so the tests can
//! move the remote in between and see the fast-forward check refuse.

use std::path::Path;

use git2::{ObjectType, Oid, Repository, Signature, Tree};

use super::{GitError, GitSource, Inner, fetch, tree};

/// Git's file mode for a directory.
const MODE_TREE: i32 = 0o040000;
/// Commits between stable and bad looked at for the message; a config directory changed more
/// often than this between two rollouts is named by count.
const MAX_WALK: usize = 200;
/// Commits named one by one in the message.
const MAX_NAMED: usize = 20;

/// Where the revert commit goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertTarget {
    /// A new branch of this name (`switchback/revert-…`), for a person to review and merge.
    Branch(String),
    /// The followed branch itself, as a fast-forward.
    Followed,
}

/// What to revert, where to, and in whose name.
#[derive(Debug, Clone)]
pub struct RevertRequest {
    /// The followed ref (`spec.source.ref`).
    pub git_ref: String,
    /// The config directory (`spec.source.path`).
    pub path: String,
    /// The commit rolled back.
    pub bad: String,
    /// The commit every pod went back to.
    pub stable: String,
    /// Where the commit goes.
    pub target: RevertTarget,
    /// The commit's author and committer name.
    pub author_name: String,
    /// The commit's author and committer email.
    pub author_email: String,
    /// The paragraph saying why (incident reason, evidence, report), appended to the message.
    pub why: String,
}

/// What the write-back did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertOutcome {
    /// A revert commit was pushed to `branch`.
    Pushed {
        /// The branch pushed to (short name).
        branch: String,
        /// The revert commit.
        commit: String,
        /// The commits it reverts (those that changed the directory), newest first.
        reverted: Vec<String>,
    },
    /// The followed ref's head already has the stable config: git tells the truth already.
    AlreadyReverted {
        /// The head that has it.
        head: String,
    },
    /// The revert branch exists and already has the stable config (an earlier write-back).
    BranchUpToDate {
        /// The branch.
        branch: String,
        /// Its head.
        commit: String,
    },
}

/// Why a write-back did not happen. The rollback itself is never affected; these are reported.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    /// Fetching or reading the repository failed.
    #[error(transparent)]
    Source(#[from] GitError),
    /// Push mode needs the followed ref to be a branch.
    #[error(
        "{git_ref:?} is not a branch of {url}: mode Push can only push to a branch; use mode Branch"
    )]
    NotABranch {
        /// The redacted URL.
        url: String,
        /// The followed ref.
        git_ref: String,
    },
    /// The head changed the config directory again after the bad commit.
    #[error(
        "{git_ref} moved on to {head}, which changes {path:?} again; not reverting over it (the controller rolls it out as a new revision, or revert by hand)"
    )]
    MovedOn {
        /// The followed ref.
        git_ref: String,
        /// Its head.
        head: String,
        /// The config directory.
        path: String,
    },
    /// The revert branch exists with other content.
    #[error(
        "branch {branch} of {url} already exists at {commit} with another config; not overwriting it (delete it, or set writeBack.branch)"
    )]
    BranchExists {
        /// The redacted URL.
        url: String,
        /// The branch.
        branch: String,
        /// Its head.
        commit: String,
    },
    /// The revert commit could not be built.
    #[error("building the revert of {bad} on {head}: {message}")]
    Build {
        /// The commit being reverted.
        bad: String,
        /// The head it was built on.
        head: String,
        /// What failed.
        message: String,
    },
    /// The remote refused the update: not a fast-forward (someone pushed meanwhile), or a
    /// protected branch.
    #[error("{url} refused the push to {branch}: {message}; nothing was forced")]
    Rejected {
        /// The redacted URL.
        url: String,
        /// The branch.
        branch: String,
        /// Why, as the remote or libgit2 said it, scrubbed.
        message: String,
    },
    /// The remote wanted credentials that were missing or lacked write access.
    #[error(
        "authenticating to {url} to push {branch}: {message} (write-back needs write access in the secretRef's credentials)"
    )]
    Auth {
        /// The redacted URL.
        url: String,
        /// The branch.
        branch: String,
        /// What went wrong, scrubbed.
        message: String,
    },
    /// The push failed otherwise (unreachable, protocol error).
    #[error("pushing {branch} to {url}: {message}")]
    Push {
        /// The redacted URL.
        url: String,
        /// The branch.
        branch: String,
        /// libgit2's message, scrubbed.
        message: String,
    },
    /// The blocking task running libgit2 panicked or was cancelled.
    #[error("the git write-back task did not finish: {0}")]
    Task(String),
}

/// A revert commit written to the cache, not pushed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prepared {
    /// The revert commit.
    pub(super) commit: Oid,
    /// The branch it goes to (short name).
    pub(super) branch: String,
    /// The commits it reverts, newest first.
    pub(super) reverted: Vec<String>,
}

/// Either nothing to do (and why) or a commit to push.
#[derive(Debug)]
pub(super) enum Plan {
    /// Nothing to push.
    Nothing(RevertOutcome),
    /// Push this.
    Push(Prepared),
}

impl GitSource {
    /// Fetches the followed ref and pushes a revert of `request.bad` (see the module docs). Runs
    /// libgit2 on the blocking pool; the caller bounds it with a timeout.
    pub async fn write_back(&self, request: RevertRequest) -> Result<RevertOutcome, RevertError> {
        let this = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| this.write_back_blocking(&request)))
            .await
            .map_err(|e| RevertError::Task(self.inner.scrubber.scrub(&e.to_string())))?
    }

    /// The blocking form of [`GitSource::write_back`].
    #[tracing::instrument(name = "git_write_back", skip_all, fields(url = %self.inner.redacted, bad = %request.bad, stable = %request.stable))]
    pub fn write_back_blocking(
        &self,
        request: &RevertRequest,
    ) -> Result<RevertOutcome, RevertError> {
        let head = fetch::fetch(&self.inner, request.git_ref.trim())?;
        // Not under the fetch lock: building only adds objects, and pushing only reads them, so
        // the rollout's own fetches are never held up by a slow push.
        let repo = fetch::open_existing(&self.inner)?;
        match prepare(&repo, &self.inner, request, &head.commit)? {
            Plan::Nothing(outcome) => Ok(outcome),
            Plan::Push(prepared) => {
                super::push::push(&repo, &self.inner, &prepared)?;
                tracing::info!(branch = %prepared.branch, commit = %prepared.commit, "pushed the revert");
                Ok(RevertOutcome::Pushed {
                    branch: prepared.branch,
                    commit: prepared.commit.to_string(),
                    reverted: prepared.reverted,
                })
            }
        }
    }
}

/// Decides what to do on `head` and, when a revert is due, writes its commit into the cache.
pub(super) fn prepare(
    repo: &Repository,
    source: &Inner,
    request: &RevertRequest,
    head: &str,
) -> Result<Plan, RevertError> {
    let dir = tree::normalize(&request.path)?;
    let head_commit = fetch::find_commit(repo, source, head)?;
    let bad = fetch::find_commit(repo, source, &request.bad)?;
    let stable = fetch::find_commit(repo, source, &request.stable)?;
    let build = |message: String| RevertError::Build {
        bad: request.bad.clone(),
        head: head.to_string(),
        message: source.scrubber.scrub(&message),
    };
    let at = |commit: &git2::Commit<'_>| {
        entry_at(&commit.tree().map_err(|e| build(e.to_string()))?, &dir)
            .map_err(|e| build(e.to_string()))
    };
    let (on_head, on_bad, on_stable) = (at(&head_commit)?, at(&bad)?, at(&stable)?);
    if on_head == on_stable {
        return Ok(Plan::Nothing(RevertOutcome::AlreadyReverted {
            head: head.to_string(),
        }));
    }
    if on_head != on_bad {
        return Err(RevertError::MovedOn {
            git_ref: request.git_ref.clone(),
            head: head.to_string(),
            path: request.path.clone(),
        });
    }
    let Some(on_stable) = on_stable else {
        return Err(build(format!(
            "{:?} does not exist at the stable commit",
            request.path
        )));
    };
    let branch = destination(repo, source, request)?;
    if let RevertTarget::Branch(_) = request.target
        && let Some(existing) = remote_branch(repo, &branch).map_err(|e| build(e.to_string()))?
    {
        let commit = repo
            .find_commit(existing)
            .map_err(|e| build(e.to_string()))?;
        if at(&commit)? == Some(on_stable) {
            return Ok(Plan::Nothing(RevertOutcome::BranchUpToDate {
                branch,
                commit: existing.to_string(),
            }));
        }
        return Err(RevertError::BranchExists {
            url: source.redacted.clone(),
            branch,
            commit: existing.to_string(),
        });
    }
    let root = head_commit.tree().map_err(|e| build(e.to_string()))?;
    let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    let new_tree = replace_at(repo, &root, &parts, on_stable).map_err(|e| build(e.to_string()))?;
    let new_tree = repo.find_tree(new_tree).map_err(|e| build(e.to_string()))?;
    let reverted = changed_between(repo, &dir, bad.id(), stable.id());
    let subjects: Vec<(String, String)> = reverted
        .iter()
        .filter_map(|oid| repo.find_commit(*oid).ok())
        .map(|c| (c.id().to_string(), subject(&c)))
        .collect();
    let message = message(&subjects, &request.path, stable.id(), &request.why);
    let who = Signature::now(&request.author_name, &request.author_email)
        .map_err(|e| build(e.to_string()))?;
    let commit = repo
        .commit(None, &who, &who, &message, &new_tree, &[&head_commit])
        .map_err(|e| build(e.to_string()))?;
    Ok(Plan::Push(Prepared {
        commit,
        branch,
        reverted: subjects.into_iter().map(|(id, _)| id).collect(),
    }))
}

/// Whether `name` can be a branch (`refs/heads/<name>` is a valid reference name), so a bad
/// `writeBack.branch` is refused when the spec is read, not when a push fails mid-incident.
pub fn is_valid_branch_name(name: &str) -> bool {
    !name.is_empty() && git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

/// The branch the commit goes to: the named one, or the followed ref when it is a branch.
fn destination(
    repo: &Repository,
    source: &Inner,
    request: &RevertRequest,
) -> Result<String, RevertError> {
    let followed = request.git_ref.trim();
    match &request.target {
        RevertTarget::Branch(name) => Ok(name.clone()),
        RevertTarget::Followed => {
            let name = followed.strip_prefix("refs/heads/").unwrap_or(followed);
            let branch = !name.is_empty()
                && name != "HEAD"
                && !name.starts_with("refs/")
                && matches!(remote_branch(repo, name), Ok(Some(_)));
            if branch {
                Ok(name.to_string())
            } else {
                Err(RevertError::NotABranch {
                    url: source.redacted.clone(),
                    git_ref: followed.to_string(),
                })
            }
        }
    }
}

/// The remote's branch `name` as last fetched, if it exists.
fn remote_branch(repo: &Repository, name: &str) -> Result<Option<Oid>, git2::Error> {
    match repo.refname_to_id(&format!("refs/remotes/origin/{name}")) {
        Ok(id) => Ok(Some(id)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The object at `dir` (`""` for the root) of `root`, if any.
fn entry_at(root: &Tree<'_>, dir: &str) -> Result<Option<Oid>, git2::Error> {
    if dir.is_empty() {
        return Ok(Some(root.id()));
    }
    match root.get_path(Path::new(dir)) {
        Ok(entry) => Ok(Some(entry.id())),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `root` with the tree at `parts` replaced by `new` (a tree), directories created as needed.
fn replace_at(
    repo: &Repository,
    root: &Tree<'_>,
    parts: &[&str],
    new: Oid,
) -> Result<Oid, git2::Error> {
    let Some((first, rest)) = parts.split_first() else {
        return Ok(new);
    };
    let mut builder = repo.treebuilder(Some(root))?;
    let child = if rest.is_empty() {
        new
    } else {
        let existing = root
            .get_name(first)
            .filter(|e| e.kind() == Some(ObjectType::Tree))
            .map(|e| repo.find_tree(e.id()))
            .transpose()?;
        let existing = match existing {
            Some(tree) => tree,
            None => repo.find_tree(repo.treebuilder(None)?.write()?)?,
        };
        replace_at(repo, &existing, rest, new)?
    };
    builder.insert(first, child, MODE_TREE)?;
    builder.write()
}

/// The commits reachable from `bad` but not from `stable` that changed `dir`, newest first;
/// `bad` alone when the walk finds none (e.g. a rollback to an unrelated commit).
fn changed_between(repo: &Repository, dir: &str, bad: Oid, stable: Oid) -> Vec<Oid> {
    let walked = (|| -> Result<Vec<Oid>, git2::Error> {
        let mut walk = repo.revwalk()?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)?;
        walk.push(bad)?;
        walk.hide(stable)?;
        let mut changed = Vec::new();
        for oid in walk.take(MAX_WALK) {
            let commit = repo.find_commit(oid?)?;
            let mine = entry_at(&commit.tree()?, dir)?;
            let parent = match commit.parent(0) {
                Ok(p) => entry_at(&p.tree()?, dir)?,
                Err(_) => None,
            };
            if mine != parent {
                changed.push(commit.id());
            }
        }
        Ok(changed)
    })();
    match walked {
        Ok(changed) if !changed.is_empty() => changed,
        _ => vec![bad],
    }
}

/// A commit's first line.
fn subject(commit: &git2::Commit<'_>) -> String {
    String::from_utf8_lossy(commit.message_bytes())
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The revert's message, in `git revert` style: `Revert "<subject>"`, `This reverts commit
/// <sha>.`, then why. Several commits are listed one per line.
pub(super) fn message(reverted: &[(String, String)], path: &str, stable: Oid, why: &str) -> String {
    let mut text = match reverted {
        [(id, subject)] => format!("Revert \"{subject}\"\n\nThis reverts commit {id}.\n"),
        many => {
            let mut text = format!(
                "Revert {} commits to {path}\n\nThis reverts commits:\n",
                many.len()
            );
            for (id, subject) in many.iter().take(MAX_NAMED) {
                text.push_str(&format!("  {id} {subject}\n"));
            }
            if many.len() > MAX_NAMED {
                text.push_str(&format!("  ... and {} more\n", many.len() - MAX_NAMED));
            }
            text
        }
    };
    text.push_str(&format!(
        "\n{path} is back to what commit {stable} has, which is what every proxy pod runs.\n"
    ));
    if !why.trim().is_empty() {
        text.push('\n');
        text.push_str(why.trim());
        text.push('\n');
    }
    text
}

#[cfg(test)]
#[path = "revert_tests.rs"]
mod tests;
