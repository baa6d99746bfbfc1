//! Reading a rollout's source: fetch the ref, check the head's signature when the spec asks,
//! render. A failure says which kind it is (for the metric) and why (for status and the Event).

use std::path::PathBuf;
use std::sync::Arc;

use super::crd::ProxyRollout;
use super::metrics::ErrorCategory;
use crate::confine;
use crate::render::{Bundle, RenderError};
use crate::rollout::Release;
use crate::source::git::{Credentials, GitSource};
use crate::source::verify::TrustedKeys;

/// Fetches the ref and renders its tree. A commit that does not render never reaches the engine;
/// it is reported (Event, log) with the template, line and variable the renderer named.
pub(super) async fn read(
    source: &GitSource,
    object: &ProxyRollout,
    keys: Option<Arc<TrustedKeys>>,
    memo: &mut RenderMemo,
) -> Result<(Release, Bundle), (ErrorCategory, &'static str, String)> {
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
    let key = memo_key(object, &revision.commit);
    if let Some(known) = memo.known_failure(&key) {
        tracing::debug!(commit = %revision.commit, "not rendering a commit known not to render");
        return Err(fail(known));
    }
    if let Some(bundle) = memo.known_bundle(&key) {
        // Rendering is deterministic in (commit, path, values): the same head at every poll
        // gives the same bundle, without reading the tree and running a child again.
        return Ok((
            Release {
                digest: bundle.digest(),
                revision,
            },
            bundle.clone(),
        ));
    }
    let bundle = match render_commit(source, object, &revision.commit).await {
        Ok(bundle) => {
            memo.remember_bundle(key, bundle.clone());
            bundle
        }
        Err(e) => {
            if e.deterministic {
                memo.remember(key, e.message.clone());
            }
            return Err(fail(&e.message));
        }
    };
    Ok((
        Release {
            digest: bundle.digest(),
            revision,
        },
        bundle,
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

/// The last commit (with the rollout's path and values) that failed to render for a reason that
/// would repeat, so the worker does not render a known-bad head again at every poll or push, and
/// the last one that rendered, so an unchanged head (every poll but the first) is not read from
/// git and rendered in a child again: at 100 rollouts polling every second, those renders were
/// most of the controller's allocations. A new commit, path or values renders again; a
/// restarted controller renders it once more.
#[derive(Default)]
pub(super) struct RenderMemo {
    failed: Option<(String, String)>,
    rendered: Option<(String, Bundle)>,
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

    /// The bundle `key` rendered to, if it is the last one that rendered.
    pub fn known_bundle(&self, key: &str) -> Option<&Bundle> {
        self.rendered
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, b)| b)
    }

    /// Records what `key` rendered to, replacing the previous one.
    pub fn remember_bundle(&mut self, key: String, bundle: Bundle) {
        self.rendered = Some((key, bundle));
    }
}

/// What a render depends on besides the code: commit, path and values.
fn memo_key(object: &ProxyRollout, commit: &str) -> String {
    let values = object
        .spec
        .render
        .values
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    format!("{commit}\0{}\0{values}", object.spec.source.path)
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

    #[test]
    fn only_the_last_rendered_key_is_reused() {
        let mut memo = RenderMemo::default();
        let bundle = |text: &str| {
            let mut files = std::collections::BTreeMap::new();
            files.insert("nginx.conf".to_string(), text.as_bytes().to_vec());
            Bundle::new(files)
        };
        assert!(memo.known_bundle("a").is_none());
        memo.remember_bundle("a".into(), bundle("one"));
        assert_eq!(
            memo.known_bundle("a").map(Bundle::digest),
            Some(bundle("one").digest())
        );
        assert!(memo.known_bundle("b").is_none());
        memo.remember_bundle("b".into(), bundle("two"));
        assert!(
            memo.known_bundle("a").is_none(),
            "only the last render is kept"
        );
    }
}
