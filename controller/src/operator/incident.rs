//! Incident reports in the cluster: on every rollback the worker writes the report (DESIGN §3.8)
//! into a ConfigMap `<rollout>-incident-<n>` next to the rollout, owned by it, and names it in
//! `status.lastIncident.report`, so the person paged reads it with one kubectl command:
//! `kubectl get cm <name> -o jsonpath='{.data.report\.md}'`.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};

use super::bundle_store::{ROLLOUT_LABEL, rollout_label};
use super::crd::ProxyRollout;
use crate::fleet::kube::FIELD_MANAGER;
use crate::report::IncidentInput;
use crate::rollout::Incident;
use crate::runner::Runner;

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
                ROLLOUT_LABEL: rollout_label(rollout),
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

/// The report of each incident recorded this turn (at the decision, and again once every pod is
/// restored), with the ConfigMap it goes to.
pub(super) fn report_inputs<F: crate::fleet::Fleet>(
    incidents: Vec<Incident>,
    runner: &Runner<F>,
    object: &ProxyRollout,
) -> Vec<(String, crate::report::IncidentInput)> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let method = format!("{:?}", object.spec.strategy.analysis.method).to_lowercase();
    let mut inputs = Vec::new();
    for incident in incidents {
        let known = runner
            .rollout()
            .ledger()
            .known_good()
            .iter()
            .find(|r| r.digest == incident.restored_to.digest);
        let input = crate::report::from_incident(
            &name,
            &incident,
            Some(&method),
            crate::report::Restored {
                revision: known.map(|r| &r.revision),
                bundle: runner.bundle(&incident.restored_to.digest),
            },
            runner.bundle(&incident.revision.digest),
            &object.spec.render.entry,
        );
        inputs.push((report_name(&name, incident.id), input));
    }
    inputs
}

/// Writes the reports; a failed write is logged (the Event and status already carry the gist).
pub(super) async fn write_reports(
    inputs: Vec<(String, crate::report::IncidentInput)>,
    object: &ProxyRollout,
    client: &kube::Client,
) {
    use kube::Resource;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for (map, input) in inputs {
        if let Err(e) = store(&maps, &map, &name, object.controller_owner_ref(&()), &input).await {
            tracing::warn!(error = %e, report = %map, "writing the incident report failed");
        }
    }
}
