//! Reading a rollout's source: fetch the ref, check the head's signature when the spec asks,
//! render. A failure says which kind it is (for the metric) and why (for status and the Event).

use std::path::PathBuf;
use std::sync::Arc;

use super::crd::ProxyRollout;
use super::metrics::ErrorCategory;
use crate::render::{self, Bundle};
use crate::rollout::Release;
use crate::source::git::{Credentials, GitSource};
use crate::source::verify::TrustedKeys;

/// Fetches the ref and renders its tree. A commit that does not render never reaches the engine;
/// it is reported (Event, log) with the template, line and variable the renderer named.
pub(super) async fn read(
    source: &GitSource,
    object: &ProxyRollout,
    keys: Option<Arc<TrustedKeys>>,
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
    let bundle = render_commit(source, object, &revision.commit)
        .await
        .map_err(|e| {
            let message = format!(
                "{} does not render: {e}",
                crate::rollout::revision::short(&revision.commit)
            );
            (ErrorCategory::Render, "SourceFailed", message)
        })?;
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

/// The bundle `commit` renders to under the rollout's values.
pub(super) async fn render_commit(
    source: &GitSource,
    object: &ProxyRollout,
    commit: &str,
) -> Result<Bundle, String> {
    let tree = source
        .read_tree(commit, &object.spec.source.path)
        .await
        .map_err(|e| e.to_string())?;
    let values = object
        .spec
        .render
        .values
        .clone()
        .unwrap_or(serde_json::Value::Null);
    render::render(&tree, &values).map_err(|e| e.to_diagnostic().to_string())
}
