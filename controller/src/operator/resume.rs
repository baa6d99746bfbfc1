//! Resuming from the checkpoint a previous controller left in `status.engine`: the machine as it
//! stood, and every bundle it names, read back from their ConfigMaps (or rendered again from git
//! and checked against the digest when no pod was ever told them).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use serde::Deserialize;

use super::bundle_store;
use super::crd::ProxyRollout;
use super::fetch::render_commit;
use super::worker::Checkpoint;
use crate::render::{Bundle, Digest};
use crate::rollout::Rollout;
use crate::source::git::GitSource;

/// The checkpoint a previous controller left in status, with the bundles it names read back
/// from their ConfigMaps (or rendered again from git when no pod was ever told them).
pub(super) async fn from_status(
    object: &ProxyRollout,
    client: &kube::Client,
    source: &GitSource,
) -> Option<Checkpoint> {
    let engine = object.status.as_ref()?.engine.clone()?;
    let rollout: Rollout = match Rollout::deserialize(&*engine) {
        Ok(rollout) => rollout,
        Err(e) => {
            tracing::warn!(error = %e, "status.engine is not a checkpoint this version reads; starting afresh");
            return None;
        }
    };
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut wanted: HashMap<Digest, String> = HashMap::new();
    let state = rollout.state();
    for release in [state.stable(), state.target(), rollout.pending()]
        .into_iter()
        .flatten()
    {
        wanted.insert(release.digest, release.revision.commit.clone());
    }
    for good in rollout.ledger().known_good() {
        wanted.insert(good.digest, good.revision.commit.clone());
    }
    let mut bundles = Vec::new();
    for (digest, commit) in wanted {
        match stored_bundle(&maps, &name, &digest).await {
            Some(bundle) => bundles.push(bundle),
            None => match render_commit(source, object, &commit).await {
                Ok(bundle) if bundle.digest() == digest => bundles.push(bundle),
                Ok(bundle) => tracing::warn!(
                    %digest, got = %bundle.digest(), commit,
                    "the commit renders differently now; that revision cannot be told again"
                ),
                Err(e) => tracing::warn!(%digest, commit, error = %e, "bundle not found"),
            },
        }
    }
    Some(Checkpoint {
        rollout,
        bundles,
        drift: None,
    })
}

async fn stored_bundle(maps: &Api<ConfigMap>, rollout: &str, digest: &Digest) -> Option<Bundle> {
    let selector = bundle_store::bundle_selector(rollout, digest);
    let parts = maps
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    bundle_store::from_configmaps(digest, &parts.items).ok()
}
