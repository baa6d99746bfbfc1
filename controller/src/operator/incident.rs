//! Incident reports in the cluster: on every rollback the worker writes the report (DESIGN §3.8)
//! into a ConfigMap `<rollout>-incident-<n>` next to the rollout, owned by it, and names it in
//! `status.lastIncident.report`, so the person paged reads it with one kubectl command:
//! `kubectl get cm <name> -o jsonpath='{.data.report\.md}'`.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};

use super::bundle_store::ROLLOUT_LABEL;
use crate::fleet::kube::FIELD_MANAGER;
use crate::report::IncidentInput;

/// The ConfigMap's name for incident `id` of `rollout`.
pub fn report_name(rollout: &str, id: u64) -> String {
    let base: String = rollout.chars().take(200).collect();
    format!("{base}-incident-{id}")
}

/// Writes (or rewrites, once every pod is restored) the report by server-side apply.
pub async fn store(
    maps: &Api<ConfigMap>,
    name: &str,
    rollout: &str,
    owner: Option<OwnerReference>,
    input: &IncidentInput,
) -> Result<(), kube::Error> {
    let markdown = crate::report::to_markdown(input);
    let json = crate::report::to_json(input).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {
                ROLLOUT_LABEL: rollout.chars().take(63).collect::<String>(),
                "switchback.dev/kind": "incident-report",
            },
            "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default(),
        },
        "data": {"report.md": markdown, "report.json": json},
    });
    maps.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&map),
    )
    .await
    .map(|_| ())
}
