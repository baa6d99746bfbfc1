//! One render of a commit per process, whichever rollout asks: rollouts that follow one
//! repository with the same path and values render the same bundle, and at 100 rollouts a push
//! started 100 confined render children at once (over a second of both cores before the first
//! canary was told). The first asker reads the tree and renders; the others with the same key
//! wait for it and take a copy. A render that failed for a reason that would repeat is shared
//! too; one that failed for a passing reason (a git read, a wall-time limit) is not, and the
//! next asker tries again.
//!
//! The key holds the namespace and the repository URL besides the commit, the path and the
//! values: a commit id names the same tree only within one repository, and rollouts of
//! different namespaces never share what one of them rendered.

use tokio::sync::OnceCell;

use super::crd::ProxyRollout;
use super::fetch::{RenderFailed, render_commit};
use crate::render::Bundle;
use crate::slots::Slots;
use crate::source::git::GitSource;

/// Renders kept: a few commits of a few repositories.
const KEPT: usize = 16;

static RENDERS: Slots<String, OnceCell<Result<Bundle, RenderFailed>>> = Slots::new(KEPT);

/// What a render depends on: namespace, repository, commit, path and values.
pub(super) fn render_key(object: &ProxyRollout, commit: &str) -> String {
    let values = object
        .spec
        .render
        .values
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    format!(
        "{}\0{}\0{commit}\0{}\0{values}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.spec.source.url,
        object.spec.source.path
    )
}

/// [`render_commit`], shared by every worker of the process with the same [`render_key`].
pub(super) async fn render_shared(
    source: &GitSource,
    object: &ProxyRollout,
    commit: &str,
) -> Result<Bundle, RenderFailed> {
    let key = render_key(object, commit);
    let slot = RENDERS.slot(key);
    let shared = slot
        .get_or_try_init(|| async {
            match render_commit(source, object, commit).await {
                Ok(bundle) => Ok(Ok(bundle)),
                Err(e) if e.deterministic => Ok(Err(e)),
                Err(e) => Err(e),
            }
        })
        .await?;
    shared.clone()
}

/// How many kept renders have `key` (tests: one per key, however many asked).
#[cfg(test)]
pub(super) fn kept(key: &str) -> usize {
    RENDERS.count(|k| k == key)
}
