//! The write-back against real repositories: a bare "remote" in a temp dir, commits written into
//! it with git2, a [`GitSource`] following it by path.

use std::collections::BTreeMap;

use git2::{Oid, Repository, Signature};

use super::*;
use crate::source::git::Credentials;

const GOOD: &str = "upstream app { server 127.0.0.1:9001; }\n";
const BAD: &str = "upstream app { server 127.0.0.1:9; }\n";

/// A bare remote with `main`: stable (good config), bad (config broken), and `later` commits.
struct Remote {
    _dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    repo: Repository,
    stable: String,
    bad: String,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        repo.set_head("refs/heads/main").expect("head");
        let mut remote = Remote {
            cache: tempfile::tempdir().expect("tempdir"),
            _dir: dir,
            repo,
            stable: String::new(),
            bad: String::new(),
        };
        remote.stable = remote.commit(
            &[("README.md", "one\n"), ("nginx/nginx.conf", GOOD)],
            "Good config",
        );
        remote.bad = remote.commit(
            &[("README.md", "one\n"), ("nginx/nginx.conf", BAD)],
            "Move app to port 9",
        );
        remote
    }

    /// Commits exactly `files` on top of `main` and returns the commit id.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        let tree = self.tree(files);
        let tree = self.repo.find_tree(tree).expect("tree");
        let who = Signature::now("Dev", "dev@example.invalid").expect("signature");
        let parent = self
            .repo
            .refname_to_id("refs/heads/main")
            .ok()
            .and_then(|id| self.repo.find_commit(id).ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(
                Some("refs/heads/main"),
                &who,
                &who,
                message,
                &tree,
                &parents,
            )
            .expect("commit")
            .to_string()
    }

    fn tree(&self, files: &[(&str, &str)]) -> Oid {
        let mut dirs: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        let mut builder = self.repo.treebuilder(None).expect("builder");
        for (path, text) in files {
            match path.split_once('/') {
                Some((dir, rest)) => dirs.entry(dir).or_default().push((rest, text)),
                None => {
                    let blob = self.repo.blob(text.as_bytes()).expect("blob");
                    builder.insert(path, blob, 0o100644).expect("insert");
                }
            }
        }
        for (dir, files) in dirs {
            let sub = self.tree(&files);
            builder.insert(dir, sub, 0o040000).expect("insert");
        }
        builder.write().expect("write")
    }

    fn source(&self) -> GitSource {
        let url = self.repo.path().to_str().expect("utf-8 path");
        GitSource::new(url, Credentials::None, self.cache.path()).expect("source")
    }

    fn request(&self, target: RevertTarget) -> RevertRequest {
        RevertRequest {
            git_ref: "main".to_string(),
            path: "nginx".to_string(),
            bad: self.bad.clone(),
            stable: self.stable.clone(),
            target,
            author_name: "Switchback".to_string(),
            author_email: "switchback@localhost".to_string(),
            why: "Rolled back: canary 502 rate 100%.\nIncident report: edge-incident-1".to_string(),
        }
    }

    fn head(&self, branch: &str) -> Option<String> {
        self.repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
            .map(|id| id.to_string())
    }

    fn file(&self, commit: &str, path: &str) -> String {
        let commit = self
            .repo
            .find_commit(Oid::from_str(commit).expect("oid"))
            .expect("commit");
        let entry = commit
            .tree()
            .expect("tree")
            .get_path(std::path::Path::new(path))
            .expect("path");
        let blob = self.repo.find_blob(entry.id()).expect("blob");
        String::from_utf8_lossy(blob.content()).into_owned()
    }

    fn message(&self, commit: &str) -> String {
        let commit = self
            .repo
            .find_commit(Oid::from_str(commit).expect("oid"))
            .expect("commit");
        String::from_utf8_lossy(commit.message_bytes()).into_owned()
    }
}

#[test]
fn a_branch_gets_the_stable_config_on_top_of_the_head_and_main_is_untouched() {
    let remote = Remote::new();
    // Someone changed a file outside the config directory after the bad commit.
    let later = remote.commit(&[("README.md", "two\n"), ("nginx/nginx.conf", BAD)], "Docs");
    let source = remote.source();
    let branch = "switchback/revert-x".to_string();
    let outcome = source
        .write_back_blocking(&remote.request(RevertTarget::Branch(branch.clone())))
        .expect("write-back");
    let RevertOutcome::Pushed {
        branch: pushed,
        commit,
        reverted,
    } = outcome
    else {
        panic!("expected a push, got {outcome:?}");
    };
    assert_eq!(pushed, branch);
    assert_eq!(reverted, vec![remote.bad.clone()]);
    assert_eq!(remote.head(&branch).as_deref(), Some(commit.as_str()));
    assert_eq!(remote.head("main"), Some(later.clone()), "main untouched");
    assert_eq!(remote.file(&commit, "nginx/nginx.conf"), GOOD);
    assert_eq!(
        remote.file(&commit, "README.md"),
        "two\n",
        "files outside the path stay"
    );
    let parent = remote
        .repo
        .find_commit(Oid::from_str(&commit).expect("oid"))
        .expect("commit")
        .parent_id(0)
        .expect("parent");
    assert_eq!(parent.to_string(), later);
    let message = remote.message(&commit);
    assert!(
        message.starts_with("Revert \"Move app to port 9\"\n\nThis reverts commit ")
            && message.contains(&remote.bad)
            && message.contains(&remote.stable)
            && message.contains("edge-incident-1"),
        "{message}"
    );

    // Again (a restarted controller): the branch already says it.
    let again = source
        .write_back_blocking(&remote.request(RevertTarget::Branch(branch.clone())))
        .expect("write-back");
    assert_eq!(
        again,
        RevertOutcome::BranchUpToDate {
            branch: branch.clone(),
            commit
        }
    );
}

#[test]
fn push_mode_fast_forwards_the_followed_branch() {
    let remote = Remote::new();
    let source = remote.source();
    let outcome = source
        .write_back_blocking(&remote.request(RevertTarget::Followed))
        .expect("write-back");
    let RevertOutcome::Pushed { branch, commit, .. } = outcome else {
        panic!("expected a push, got {outcome:?}");
    };
    assert_eq!(branch, "main");
    assert_eq!(remote.head("main"), Some(commit.clone()));
    assert_eq!(remote.file(&commit, "nginx/nginx.conf"), GOOD);
    // The head now has the stable config: nothing more to do.
    let again = source
        .write_back_blocking(&remote.request(RevertTarget::Followed))
        .expect("write-back");
    assert_eq!(again, RevertOutcome::AlreadyReverted { head: commit });
}

#[test]
fn a_head_that_already_fixed_the_path_is_left_alone() {
    let remote = Remote::new();
    let fixed = remote.commit(
        &[("README.md", "one\n"), ("nginx/nginx.conf", GOOD)],
        "Fix it by hand",
    );
    let outcome = remote
        .source()
        .write_back_blocking(&remote.request(RevertTarget::Followed))
        .expect("write-back");
    assert_eq!(
        outcome,
        RevertOutcome::AlreadyReverted {
            head: fixed.clone()
        }
    );
    assert_eq!(remote.head("main"), Some(fixed));
}

#[test]
fn a_head_that_changed_the_path_again_is_not_reverted_over() {
    let remote = Remote::new();
    let newer = remote.commit(
        &[("README.md", "one\n"), ("nginx/nginx.conf", "events {}\n")],
        "Another attempt",
    );
    for target in [RevertTarget::Followed, RevertTarget::Branch("b".into())] {
        let err = remote
            .source()
            .write_back_blocking(&remote.request(target))
            .expect_err("moved on");
        assert!(matches!(err, RevertError::MovedOn { .. }), "{err}");
    }
    assert_eq!(remote.head("main"), Some(newer));
    assert_eq!(remote.head("b"), None);
}

#[test]
fn a_branch_that_moved_between_fetch_and_push_is_refused_not_forced() {
    let remote = Remote::new();
    let source = remote.source();
    let request = remote.request(RevertTarget::Followed);
    let head = fetch::fetch(&source.inner, "main").expect("fetch");
    let repo = fetch::open_existing(&source.inner).expect("cache");
    let Plan::Push(prepared) = prepare(&repo, &source.inner, &request, &head.commit).expect("plan")
    else {
        panic!("a revert is due");
    };
    // Someone pushes meanwhile.
    let theirs = remote.commit(
        &[("README.md", "theirs\n"), ("nginx/nginx.conf", BAD)],
        "Concurrent push",
    );
    let err = crate::source::git::push::push(&repo, &source.inner, &prepared)
        .expect_err("not a fast-forward");
    assert!(matches!(err, RevertError::Rejected { .. }), "{err}");
    assert_eq!(remote.head("main"), Some(theirs), "nothing forced");
}

#[test]
fn an_existing_branch_with_other_content_is_not_overwritten() {
    let remote = Remote::new();
    let source = remote.source();
    let branch = "switchback/revert-x";
    remote
        .repo
        .reference(
            &format!("refs/heads/{branch}"),
            Oid::from_str(&remote.bad).expect("oid"),
            false,
            "test",
        )
        .expect("branch");
    let err = source
        .write_back_blocking(&remote.request(RevertTarget::Branch(branch.into())))
        .expect_err("exists");
    assert!(matches!(err, RevertError::BranchExists { .. }), "{err}");
    assert_eq!(remote.head(branch), Some(remote.bad.clone()));
}

#[test]
fn push_mode_needs_a_branch() {
    let remote = Remote::new();
    let mut request = remote.request(RevertTarget::Followed);
    request.git_ref = remote.bad.clone();
    let err = remote
        .source()
        .write_back_blocking(&request)
        .expect_err("a commit id is not a branch");
    assert!(matches!(err, RevertError::NotABranch { .. }), "{err}");
}

#[test]
fn several_reverted_commits_are_listed() {
    let stable = Oid::from_str(&"1".repeat(40)).expect("oid");
    let text = message(
        &[
            ("b".repeat(40), "second".to_string()),
            ("a".repeat(40), "first".to_string()),
        ],
        "nginx",
        stable,
        "why",
    );
    assert!(text.starts_with("Revert 2 commits to nginx\n\nThis reverts commits:\n"));
    assert!(text.contains(&format!("  {} second\n", "b".repeat(40))));
    assert!(text.trim_end().ends_with("why"));
    let one = message(
        &[("a".repeat(40), "first".to_string())],
        "nginx",
        stable,
        "",
    );
    assert_eq!(
        one,
        format!(
            "Revert \"first\"\n\nThis reverts commit {}.\n\nnginx is back to what commit {stable} has, which is what every proxy pod runs.\n",
            "a".repeat(40)
        )
    );
}

#[test]
fn the_path_at_the_root_replaces_the_whole_tree() {
    let remote = Remote::new();
    let mut request = remote.request(RevertTarget::Branch("r".into()));
    request.path = ".".to_string();
    let outcome = remote
        .source()
        .write_back_blocking(&request)
        .expect("write-back");
    let RevertOutcome::Pushed { commit, .. } = outcome else {
        panic!("expected a push, got {outcome:?}");
    };
    assert_eq!(remote.file(&commit, "nginx/nginx.conf"), GOOD);
}
