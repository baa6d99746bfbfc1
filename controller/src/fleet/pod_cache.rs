//! Pods as the controller's one watch sees them. Every rollout's fleet reads pod names and
//! addresses from this cache instead of asking the API server: with 100 rollouts polling their
//! pods four times a second, per-poll lists and gets would be thousands of requests a second.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

/// A shared, watch-fed store of pods.
#[derive(Clone)]
pub struct PodCache {
    store: Store<Pod>,
}

impl PodCache {
    /// Wraps a reflector's store.
    pub fn new(store: Store<Pod>) -> Self {
        PodCache { store }
    }

    /// Waits until the first full list has arrived, so an empty cache never reads as "no pods".
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// Pods in `namespace` whose labels include every `selector` pair, not being deleted.
    pub fn select(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<Arc<Pod>> {
        self.store
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.deletion_timestamp.is_none()
                    && matches(p, selector)
            })
            .collect()
    }

    /// One pod by name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.store
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }
}

/// Whether the pod's labels include every pair of `selector`.
pub fn matches(pod: &Pod, selector: &BTreeMap<String, String>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}
