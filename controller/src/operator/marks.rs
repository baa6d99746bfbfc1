//! The applied digest written on each pod (DESIGN §3.7): the annotation
//! `switchback.dev/applied-digest` and the pod condition `switchback.dev/ConfigApplied`, True when
//! the pod serves what it was told. A readiness gate on that condition keeps a pod out of its
//! Service until its agent has applied a config. The controller writes these from what the agent
//! reports; the agent itself never writes to the API server.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use crate::render::Digest;
use crate::rollout::Fleet;

/// The annotation with the digest the pod's agent reports serving.
pub const APPLIED_ANNOTATION: &str = "switchback.dev/applied-digest";
/// The pod condition type, usable in `spec.readinessGates`.
pub const CONFIG_APPLIED: &str = "switchback.dev/ConfigApplied";

/// What was last written on each pod, so an unchanged pod is not written again.
pub struct PodMarks {
    pods: Api<Pod>,
    written: HashMap<String, (Option<Digest>, bool)>,
}

impl PodMarks {
    /// Marks for the pods of one namespace.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        PodMarks {
            pods: Api::namespaced(client, namespace),
            written: HashMap::new(),
        }
    }

    /// Writes the marks of every pod whose applied digest or settledness changed since the last
    /// call. A failed write is tried again next time.
    pub async fn sync(&mut self, fleet: &Fleet) {
        let mut changed = Vec::new();
        for (name, pod) in fleet.iter() {
            let Some(applied) = pod.applied else { continue };
            let settled = pod.desired == Some(applied);
            if self.written.get(name) != Some(&(Some(applied), settled)) {
                changed.push((name.to_string(), applied, settled));
            }
        }
        self.written.retain(|name, _| fleet.get(name).is_some());
        let mut writes = tokio::task::JoinSet::new();
        for chunk in changed.chunks(32) {
            for (name, applied, settled) in chunk.iter().cloned() {
                let pods = self.pods.clone();
                writes.spawn(async move {
                    let ok = mark(&pods, &name, applied, settled).await;
                    (name, applied, settled, ok)
                });
            }
            while let Some(done) = writes.join_next().await {
                match done {
                    Ok((name, applied, settled, Ok(()))) => {
                        self.written.insert(name, (Some(applied), settled));
                    }
                    Ok((name, _, _, Err(e))) => {
                        tracing::debug!(pod = %name, error = %e, "marking the pod failed");
                    }
                    Err(e) => tracing::debug!(error = %e, "pod mark task failed"),
                }
            }
        }
    }
}

async fn mark(
    pods: &Api<Pod>,
    name: &str,
    applied: Digest,
    settled: bool,
) -> Result<(), kube::Error> {
    let _permit = crate::fleet::kube::api_write_permit().await;
    let annotation = serde_json::json!({
        "metadata": {"annotations": {APPLIED_ANNOTATION: applied.to_string()}}
    });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&annotation))
        .await?;
    let (status, reason, message) = if settled {
        ("True", "Applied", format!("serving {applied}"))
    } else {
        (
            "False",
            "Changing",
            format!("serving {applied}, told another digest"),
        )
    };
    let condition = serde_json::json!({
        "status": {"conditions": [{
            "type": CONFIG_APPLIED,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}
    });
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(&condition))
        .await?;
    Ok(())
}
