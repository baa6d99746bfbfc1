//! The leading replica's Pod carries the label `switchback.dev/leader=true`, so a Service that
//! selects it (the chart's webhook Service) sends pushes only to the replica that serves them:
//! the webhook receiver runs only while leading, and a push sent to a standby was refused.
//! A replica clears its own label when it starts and when it stops leading; a killed leader's
//! stale label is cleared by its restarted container, and meanwhile the push it misses is caught
//! by the poll.
//!
//! With `--shards N` the label marks every replica holding at least one shard; a push reaching
//! one of them fetches now for that replica's own rollouts, and the rollouts of other shards
//! pick the commit up at their next poll.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

/// The label on the leader's Pod.
pub const LEADER_LABEL: &str = "switchback.dev/leader";

/// This replica's own Pod, from the downward API (`POD_NAME`, `POD_NAMESPACE`).
#[derive(Debug, Clone)]
pub struct OwnPod {
    namespace: String,
    name: String,
}

impl OwnPod {
    /// The Pod this process runs in, when the downward API says (outside a Pod: `None`).
    pub fn from_env() -> Option<OwnPod> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Some(OwnPod {
            namespace: var("POD_NAMESPACE")?,
            name: var("POD_NAME")?,
        })
    }

    /// Sets (`leading`) or removes the leader label. A failure is logged, not returned: the
    /// label only steers pushes, which the poll backs up.
    #[tracing::instrument(skip(self, client), fields(pod = %format!("{}/{}", self.namespace, self.name)))]
    pub async fn mark(&self, client: &kube::Client, leading: bool) {
        let value = if leading {
            serde_json::Value::from("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        match pods
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(leading, "leader label set on the controller's pod"),
            Err(e) => tracing::warn!(error = %e, leading, "could not label the controller's pod"),
        }
    }
}
