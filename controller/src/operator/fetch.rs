//! Reading a rollout's source: fetch the ref, check the head's signature when the spec asks,
//! render. A failure says which kind it is (for the metric) and why (for status and the Event).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use super::crd::ProxyRollout;
use super::metrics::ErrorCategory;
use crate::confine;
use crate::render::{Bundle, RenderError};
use crate::rollout::Release;
use crate::source::git::{Credentials, GitSource};
use crate::source::verify::TrustedKeys;

/// Why a read failed: its kind (for the metric), the reason (for the condition and the Event)
/// and the message.
pub(super) type ReadFailure = (ErrorCategory, &'static str, String);

/// Fetches the ref and renders its tree. A commit that does not render never reaches the engine;
/// it is reported (Event, log) with the template, line and variable the renderer named. `None`:
/// the head is the one last rendered and handed on, with the same path and values, so there is
/// nothing new (rendering runs in a confined child process: once per fetch per rollout was most
/// of an idle controller's CPU).
pub(super) async fn read(
    source: &GitSource,
    object: &ProxyRollout,
    keys: Option<Arc<TrustedKeys>>,
    memo: &mut RenderMemo,
) -> Result<Option<(Release, Bundle)>, ReadFailure> {
    let revision = source
        .fetch(&object.spec.source.git_ref)
        .await
        .map_err(|e| (ErrorCategory::Source, "SourceFailed", e.to_string()))?;
    if let Some(keys) = keys {
        // Before rendering: an unverified commit's templates are not even read.
        source
            .verify(&revision.commit, keys)
            .await
            .map_err(|e| (ErrorCategory::Source, "UnverifiedCommit", e.to_string()))?;
    }
    let fail = |e: &str| {
        let message = format!(
            "{} does not render: {e}",
            crate::rollout::revision::short(&revision.commit)
        );
        (ErrorCategory::Render, "SourceFailed", message)
    };
    let key = super::shared_render::render_key(object, &revision.commit);
    if memo.rendered.as_ref() == Some(&key) {
        return Ok(None);
    }
    if let Some(known) = memo.known_failure(&key) {
        tracing::debug!(commit = %revision.commit, "not rendering a commit known not to render");
        return Err(fail(known));
    }
    let bundle = match super::shared_render::render_shared(source, object, &revision.commit).await {
        Ok(bundle) => bundle,
        Err(e) => {
            if e.deterministic {
                memo.remember(key, e.message.clone());
            }
            return Err(fail(&e.message));
        }
    };
    memo.rendered = Some(key);
    Ok(Some((
        Release {
            digest: bundle.digest(),
            revision,
        },
        bundle,
    )))
}

/// What a read of the source gave, the render memo it carried, and how long the fetch and render
/// took.
pub(super) type ReadOutcome = (
    Result<Option<(Release, Bundle)>, ReadFailure>,
    RenderMemo,
    Duration,
);

/// The read in flight, aborted when dropped: a worker stopped or aborted (its shard lost) leaves
/// no fetch of its own running behind it.
pub(super) struct ReadTask(tokio::task::JoinHandle<ReadOutcome>);

impl std::future::Future for ReadTask {
    type Output = Result<ReadOutcome, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl Drop for ReadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches and renders the source on its own task, carrying the render memo there and back.
pub(super) fn spawn_read(
    source: GitSource,
    object: Arc<ProxyRollout>,
    keys: Option<Arc<TrustedKeys>>,
    mut memo: RenderMemo,
) -> ReadTask {
    ReadTask(tokio::spawn(
        async move {
            let fetching = std::time::Instant::now();
            let read = read(&source, &object, keys, &mut memo).await;
            (read, memo, fetching.elapsed())
        }
        .in_current_span(),
    ))
}

/// The rollout's own cache directory (git cache, ssh key).
pub fn cache_dir(root: &std::path::Path, object: &ProxyRollout) -> PathBuf {
    root.join(format!(
        "{}.{}",
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    ))
}

/// Builds the git source for a rollout.
pub fn git_source(
    object: &ProxyRollout,
    credentials: Credentials,
    cache: &std::path::Path,
) -> Result<GitSource, crate::source::git::GitError> {
    GitSource::new(&object.spec.source.url, credentials, cache)
}

/// Why a commit did not render.
#[derive(Debug, Clone)]
pub(super) struct RenderFailed {
    /// For status and Events: the SB010 diagnostic naming the template (and the limit it hit).
    pub message: String,
    /// Whether rendering it again would fail the same way (a template error, a CPU or memory
    /// limit), as opposed to a git read or a wall-time limit on a busy machine.
    pub deterministic: bool,
}

impl std::fmt::Display for RenderFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The bundle `commit` renders to under the rollout's values. The templates run in a confined
/// child process (`crate::confine::render`) on a blocking thread: a template bomb costs one
/// child its CPU, memory or time limit and never blocks or bloats the controller.
pub(super) async fn render_commit(
    source: &GitSource,
    object: &ProxyRollout,
    commit: &str,
) -> Result<Bundle, RenderFailed> {
    let transient = |message: String| RenderFailed {
        message,
        deterministic: false,
    };
    let tree = source
        .read_tree(commit, &object.spec.source.path)
        .await
        .map_err(|e| transient(e.to_string()))?;
    let values = object
        .spec
        .render
        .values
        .clone()
        .unwrap_or(serde_json::Value::Null);
    render_tree(tree, values).await
}

/// Renders a tree confined, on a blocking thread, so the async threads keep serving while a
/// child grinds through a template.
async fn render_tree(
    tree: crate::render::ConfigTree,
    values: serde_json::Value,
) -> Result<Bundle, RenderFailed> {
    let transient = |message: String| RenderFailed {
        message,
        deterministic: false,
    };
    let rendered = tokio::task::spawn_blocking(move || {
        confine::render::render(&tree, &values, &confine::Limits::RENDER)
    })
    .await
    .map_err(|e| transient(format!("the render task failed: {e}")))?;
    match rendered {
        Ok(Ok(bundle)) => Ok(bundle),
        Ok(Err(e)) => Err(RenderFailed {
            message: e.to_diagnostic().to_string(),
            deterministic: !matches!(e, RenderError::Limit { retry: true, .. }),
        }),
        Err(e) => Err(transient(e.to_string())),
    }
}

/// The last commit (with the rollout's path and values) rendered and handed on, and the last one
/// that failed to render for a reason that would repeat, so the worker renders neither again at
/// every poll or push. A new commit, path or values renders again; a restarted worker renders
/// it once more.
#[derive(Debug, Default)]
pub(super) struct RenderMemo {
    failed: Option<(String, String)>,
    /// The key of the last commit rendered and handed to the engine.
    rendered: Option<String>,
}

impl RenderMemo {
    /// The failure recorded for `key`, if it is the last one.
    pub fn known_failure(&self, key: &str) -> Option<&str> {
        self.failed
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, m)| m.as_str())
    }

    /// Records the failure of `key`, replacing the previous one.
    pub fn remember(&mut self, key: String, message: String) {
        self.failed = Some((key, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[tokio::test(flavor = "current_thread")]
    async fn rendering_leaves_the_async_thread_free() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (ticks, stop) = (Arc::clone(&ticks), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::task::yield_now().await;
        let mut tree = crate::render::ConfigTree::new();
        tree.insert_file("nginx.conf.j2", b"events {}\n".to_vec());
        let before = ticks.load(Ordering::Relaxed);
        let bundle = render_tree(tree, serde_json::Value::Null).await;
        let during = ticks.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        let _ = ticker.await;
        assert!(bundle.is_ok(), "{:?}", bundle.err());
        // On this one-thread runtime another task only runs if rendering awaited.
        assert!(during > 0, "the render held the async thread");
    }

    /// The rollout `namespace/name` following `main` of the repository at `url`.
    fn following(url: &str, namespace: &str, name: &str) -> ProxyRollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchback.dev/v1alpha1",
            "kind": "ProxyRollout",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "source": {"url": url, "path": ""},
                "target": {"selector": {"app": name}},
            }
        }))
        .expect("a ProxyRollout")
    }

    /// The read runs on its own task and hands its render memo back, so the next read knows the
    /// head it handed on (else every fetch would hand the engine the same head again).
    #[tokio::test]
    async fn a_read_on_its_own_task_hands_its_memo_back() {
        let remote = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init_bare(remote.path()).expect("init");
        repo.set_head("refs/heads/main").expect("head");
        commit(&repo, "events {}\n");
        let cache = tempfile::tempdir().expect("tempdir");
        let url = remote.path().to_str().expect("utf-8");
        let source = GitSource::new(url, Credentials::None, cache.path()).expect("source");
        let object = Arc::new(following(url, "prod", "edge"));
        let (first, memo, _) = spawn_read(
            source.clone(),
            Arc::clone(&object),
            None,
            RenderMemo::default(),
        )
        .await
        .expect("the read task");
        assert!(first.expect("read").is_some(), "a new head is handed on");
        let (again, _, _) = spawn_read(source, object, None, memo)
            .await
            .expect("the read task");
        assert!(
            again.expect("read").is_none(),
            "the same head is nothing new"
        );
    }

    /// Commits `nginx.conf` with `text` on `main` of the bare `repo`.
    fn commit(repo: &git2::Repository, text: &str) {
        let blob = repo.blob(text.as_bytes()).expect("blob");
        let mut tree = repo.treebuilder(None).expect("tree");
        tree.insert("nginx.conf", blob, 0o100644).expect("insert");
        let tree = repo.find_tree(tree.write().expect("write")).expect("tree");
        let who = git2::Signature::now("Dev", "dev@example.invalid").expect("signature");
        let parent = repo
            .refname_to_id("refs/heads/main")
            .ok()
            .and_then(|id| repo.find_commit(id).ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("refs/heads/main"), &who, &who, "c", &tree, &parents)
            .expect("commit");
    }

    #[tokio::test]
    async fn an_unchanged_head_is_not_rendered_or_handed_on_again() {
        let remote = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init_bare(remote.path()).expect("init");
        repo.set_head("refs/heads/main").expect("head");
        commit(&repo, "events {}\n");
        let url = remote.path().to_str().expect("utf-8");
        let object = following(url, "prod", "edge");
        let source = GitSource::new(url, Credentials::None, cache.path()).expect("source");
        let mut memo = RenderMemo::default();
        let first = read(&source, &object, None, &mut memo).await.expect("read");
        assert!(first.is_some(), "a new head is rendered");
        let again = read(&source, &object, None, &mut memo).await.expect("read");
        assert!(again.is_none(), "the same head is nothing new");
        commit(&repo, "events {}\nhttp {}\n");
        let next = read(&source, &object, None, &mut memo).await.expect("read");
        assert!(next.is_some(), "a new commit is rendered");
    }

    /// Rollouts following one repository at once (each its own cache, as workers have) get one
    /// render and the same bundle; a rollout of another namespace renders its own.
    #[tokio::test]
    async fn rollouts_of_one_repository_share_one_render_per_namespace() {
        use super::super::shared_render::{kept, render_key};
        let remote = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init_bare(remote.path()).expect("init");
        repo.set_head("refs/heads/main").expect("head");
        commit(&repo, "events {}\nhttp {}\n");
        let url = remote.path().to_str().expect("utf-8");
        let mut workers = tokio::task::JoinSet::new();
        for (namespace, name) in [("prod", "a"), ("prod", "b"), ("prod", "c"), ("dev", "a")] {
            let object = following(url, namespace, name);
            let url = url.to_string();
            workers.spawn(async move {
                let cache = tempfile::tempdir().expect("tempdir");
                let source = GitSource::new(&url, Credentials::None, cache.path()).expect("source");
                let read = read(&source, &object, None, &mut RenderMemo::default()).await;
                let (release, bundle) = read.expect("read").expect("a new head");
                (
                    render_key(&object, &release.revision.commit),
                    bundle.digest(),
                )
            });
        }
        let mut got = Vec::new();
        while let Some(done) = workers.join_next().await {
            got.push(done.expect("a worker"));
        }
        let digests: std::collections::BTreeSet<_> = got.iter().map(|(_, d)| *d).collect();
        assert_eq!(digests.len(), 1, "one bundle for one commit");
        let keys: std::collections::BTreeSet<_> = got.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 2, "prod and dev each have their own key");
        for key in &keys {
            assert_eq!(kept(key), 1, "one render kept per key");
        }
    }

    #[test]
    fn only_the_same_commit_path_and_values_reuse_a_failure() {
        let mut memo = RenderMemo::default();
        assert_eq!(memo.known_failure("a"), None);
        memo.remember("a".into(), "a.j2:1: boom".into());
        assert_eq!(memo.known_failure("a"), Some("a.j2:1: boom"));
        assert_eq!(memo.known_failure("b"), None);
        memo.remember("b".into(), "other".into());
        assert_eq!(
            memo.known_failure("a"),
            None,
            "only the last failure is kept"
        );
    }
}
