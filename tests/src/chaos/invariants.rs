//! Issue 16's invariants, checked against a [`Cluster`] and what a [`Witness`] saw. Each check
//! returns the violations it found (naming the pod and digest) instead of panicking, so a
//! fault's row can say which held and which did not; [`check_all`] runs every one.
//!
//! Meant to run once the rollout under test has settled (Idle, every pod's agent caught up):
//! the checks about the end state read the cluster as it is then.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use switchback::agent::layout::Layout;
use switchback::agent::tree;

use super::witness::{APPLIED, DESIRED, Witness};
use crate::operator_fixture::Cluster;

/// One invariant's outcome: `Ok` or the violations.
pub type Outcome = Result<(), Vec<String>>;

fn outcome(violations: Vec<String>) -> Outcome {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// The digests the controller was allowed to tell: every stable digest status ever named, and
/// every target it named while canarying or rolling back (so after it passed validation).
pub fn validated_digests(statuses: &[Value]) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    for s in statuses {
        if let Some(d) = s["stable"]["digest"].as_str() {
            allowed.insert(d.to_string());
        }
        let validated = matches!(s["phase"].as_str(), Some("Canary" | "RollingBack"));
        if let (true, Some(d)) = (validated, s["target"]["digest"].as_str()) {
            allowed.insert(d.to_string());
        }
    }
    allowed
}

/// No pod was ever told a digest that had not passed validation.
pub fn told_only_validated(witness: &Witness) -> Outcome {
    let seen = witness.seen();
    let allowed = validated_digests(&seen.statuses);
    let mut violations = Vec::new();
    for (pod, record) in &seen.pods {
        for d in &record.told {
            if !allowed.contains(d) {
                violations.push(format!(
                    "{pod} told {d}, never a validated stable or target"
                ));
            }
        }
    }
    for tell in witness.tells() {
        if !allowed.contains(&tell.digest) {
            violations.push(format!(
                "{} told {} (a write), never a validated stable or target",
                tell.pod, tell.digest
            ));
        }
    }
    violations.dedup();
    outcome(violations)
}

/// Once the rollout is Idle, every pod is told and has applied its stable digest.
pub async fn one_digest_when_idle(c: &Cluster) -> Outcome {
    let status = c.k.json(&["get", "-n", "edge", "proxyrollout/edge"]).await["status"].clone();
    let mut violations = Vec::new();
    if status["phase"] != "Idle" {
        violations.push(format!("the rollout is {}, not Idle", status["phase"]));
    }
    let stable = status["stable"]["digest"].as_str().unwrap_or_default();
    for (pod, annotations) in pod_annotations(c).await {
        for key in [DESIRED, APPLIED] {
            let value = annotations.get(key).map_or("(none)", String::as_str);
            if value != stable {
                violations.push(format!("{pod}: {key} {value}, stable {stable}"));
            }
        }
    }
    outcome(violations)
}

/// A commit, once quarantined, is never told to a pod again.
pub fn quarantined_never_told_again(witness: &Witness) -> Outcome {
    let mut violations = Vec::new();
    // The tap's writes and the witness's first sight of each quarantine both carry times.
    for (digest, since) in witness.quarantined_since() {
        for tell in witness.tells() {
            if tell.digest == digest && tell.at > since {
                violations.push(format!(
                    "{} told quarantined {digest} after it was quarantined",
                    tell.pod
                ));
            }
        }
    }
    outcome(violations)
}

/// No agent's live directory is half written: `current` names a complete version directory,
/// the one the agent's `applied` record confirms, holding exactly the files that record lists.
pub fn live_dirs_complete(c: &Cluster, pods: &[&str]) -> Outcome {
    let mut violations = Vec::new();
    for pod in pods {
        let current = c.live_config(pod);
        let Some(root) = current.parent() else {
            violations.push(format!("{pod}: no state directory"));
            continue;
        };
        let layout = match Layout::new(root.to_path_buf()) {
            Ok(l) => l,
            Err(e) => {
                violations.push(format!("{pod}: {e}"));
                continue;
            }
        };
        let Some(live) = layout.read_current() else {
            violations.push(format!(
                "{pod}: `current` names no complete version directory"
            ));
            continue;
        };
        let Some(applied) = layout.read_applied() else {
            violations.push(format!("{pod}: no `applied` record"));
            continue;
        };
        if applied.digest != live {
            violations.push(format!(
                "{pod}: `current` is {live}, `applied` says {}",
                applied.digest
            ));
            continue;
        }
        match tree::scan(&layout.version(&live)) {
            Ok(found) if applied.tree.is_empty() || found == applied.tree => {
                if !found.contains_key(&applied.entry) {
                    violations.push(format!("{pod}: {live} has no {}", applied.entry));
                }
            }
            Ok(found) => {
                let diff = tree::diff(&applied.tree, &found, 5);
                violations.push(format!(
                    "{pod}: {live} differs from what was written: {diff:?}"
                ));
            }
            Err(e) => violations.push(format!("{pod}: {e}")),
        }
    }
    outcome(violations)
}

/// Status, Events and the incident report agree with what the pods are told: status's stable
/// digest is every pod's; every quarantined commit was reported (a `RolledBack` Event, the last
/// incident naming a quarantined commit, its report ConfigMap naming the commit).
pub async fn status_agrees(c: &Cluster) -> Outcome {
    let status = c.k.json(&["get", "-n", "edge", "proxyrollout/edge"]).await["status"].clone();
    let mut violations = Vec::new();
    let stable = status["stable"]["digest"].as_str().unwrap_or_default();
    for (pod, annotations) in pod_annotations(c).await {
        if annotations.get(DESIRED).map(String::as_str) != Some(stable) {
            violations.push(format!("{pod} is not told status's stable {stable}"));
        }
    }
    let quarantined: Vec<String> = status["quarantined"]
        .as_array()
        .map(|q| {
            q.iter()
                .filter_map(|e| e["commit"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rolled_back = status["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "RolledBack"));
    let incident = &status["lastIncident"];
    if let Some(commit) = incident["commit"].as_str() {
        if !quarantined.iter().any(|q| q == commit) && status["quarantined"].is_array() {
            violations.push(format!(
                "the last incident names {commit}, not a quarantined commit"
            ));
        }
        if c.event_count("RolledBack").await == 0 {
            violations.push(format!("an incident for {commit} but no RolledBack Event"));
        }
        if let Some(map) = incident["report"].as_str() {
            let report =
                c.k.run(&[
                    "get",
                    "-n",
                    "edge",
                    "configmap",
                    map,
                    "-o",
                    "jsonpath={.data.report\\.md}",
                ])
                .await
                .1;
            if !report.contains(commit.get(..12).unwrap_or(commit)) {
                violations.push(format!("the incident report {map} does not name {commit}"));
            }
        } else if incident["restoredAt"].is_string() {
            violations.push(format!(
                "the incident for {commit} was restored but has no report"
            ));
        }
        if !rolled_back {
            violations.push(format!(
                "an incident for {commit} but no RolledBack condition"
            ));
        }
    }
    outcome(violations)
}

/// The controller never tells a pod the same digest twice in a row (a second tell for one
/// decision, as a restarted controller that forgot it had told would send).
pub fn never_told_twice(witness: &Witness) -> Outcome {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut violations = Vec::new();
    for tell in witness.tells() {
        if last.get(&tell.pod) == Some(&tell.digest) {
            violations.push(format!("{} told {} twice in a row", tell.pod, tell.digest));
        }
        last.insert(tell.pod, tell.digest);
    }
    outcome(violations)
}

/// Every invariant, by name, for a [`super::report::Row`].
pub async fn check_all(
    c: &Cluster,
    witness: &Witness,
    pods: &[&str],
) -> Vec<(&'static str, Outcome)> {
    vec![
        ("validated-only", told_only_validated(witness)),
        ("one-digest-when-idle", one_digest_when_idle(c).await),
        ("quarantine-holds", quarantined_never_told_again(witness)),
        ("live-dir-complete", live_dirs_complete(c, pods)),
        ("status-agrees", status_agrees(c).await),
        ("told-once", never_told_twice(witness)),
    ]
}

/// Each pod of `edge` with its annotations.
async fn pod_annotations(c: &Cluster) -> BTreeMap<String, BTreeMap<String, String>> {
    let pods =
        c.k.json(&["get", "pods", "-n", "edge", "-l", "app=edge"])
            .await;
    pods["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| {
                    let name = p["metadata"]["name"].as_str()?.to_string();
                    let annotations = p["metadata"]["annotations"]
                        .as_object()
                        .map(|a| {
                            a.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((name, annotations))
                })
                .collect()
        })
        .unwrap_or_default()
}
