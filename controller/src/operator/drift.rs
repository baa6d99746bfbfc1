//! Config drift on the controller's side (`docs/drift.md`): the agents detect and (by policy)
//! repair a live config that no longer matches what they applied; the controller, which alone may
//! write the API server, makes it visible and delivers the policy:
//!
//! - `spec.drift.policy` (`Report` | `Repair`) goes to every pod as the annotation
//!   `switchback.dev/drift-policy`, which the pod's agent follows;
//! - each pod gets the condition `switchback.dev/ConfigDrifted` (True while drifted, with the
//!   files; False with how the last episode ended; Unknown when its agent does not detect drift);
//! - each episode gets one Warning Event `ConfigDrifted` on the ProxyRollout, and a repair one
//!   Normal Event `DriftRepaired`;
//! - `status.drift` lists the drifted pods, bounded.
//!
//! None of it reaches the rollout engine: a drifted pod is never a failed canary and never causes
//! a rollback.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::events::publish;
use crate::agent::kube::DRIFT_POLICY_ANNOTATION;
use crate::agent::{DriftPolicy, DriftReport, DriftResolution, DriftStatus};

/// The pod condition type.
pub const CONFIG_DRIFTED: &str = "switchback.dev/ConfigDrifted";
/// Most pods listed in `status.drift` (the pod conditions carry every pod).
pub const MAX_STATUS_PODS: usize = 20;
/// Most files named per pod in `status.drift` and in messages.
pub const MAX_FILES: usize = 5;
/// Pods written at once.
const WRITE_CHUNK: usize = 32;

/// `spec.drift`: what the pods' agents do when the live config differs from what they applied.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// `Report` (default): report the drift and leave the pod as it is, since a hand edit may be
    /// someone's mitigation; `Repair`: report it and re-apply the applied digest.
    #[serde(default)]
    pub policy: DriftPolicy,
}

/// One drifted pod, as `status.drift` lists it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDriftStatus {
    /// The pod.
    pub pod: String,
    /// When its agent first saw the difference (RFC 3339).
    pub since: String,
    /// The differing paths, relative to the config directory (at most five).
    pub files: Vec<String>,
    /// How many more paths differ.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_files: u64,
    /// Why the last repair failed, under policy `Repair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `status.drift`: the pods whose live config differs now, by name, at most
/// [`MAX_STATUS_PODS`]. Pure.
pub fn status_lines(drift: &BTreeMap<String, DriftStatus>) -> Vec<PodDriftStatus> {
    drift
        .iter()
        .filter_map(|(pod, d)| d.open().map(|r| (pod, r)))
        .take(MAX_STATUS_PODS)
        .map(|(pod, r)| {
            let all: Vec<&str> = r.paths().collect();
            let more = all.len().saturating_sub(MAX_FILES) + r.omitted;
            PodDriftStatus {
                pod: pod.clone(),
                since: r.detected_at.to_string(),
                files: all.iter().take(MAX_FILES).map(|p| p.to_string()).collect(),
                more_files: u64::try_from(more).unwrap_or(u64::MAX),
                repair_error: r.repair_error.clone(),
            }
        })
        .collect()
}

/// The paths of a report for a message: the first few, then how many more.
fn files(r: &DriftReport) -> String {
    let all: Vec<&str> = r.paths().collect();
    let more = all.len().saturating_sub(MAX_FILES) + r.omitted;
    let mut text = all
        .iter()
        .take(MAX_FILES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// The `ConfigDrifted` condition a pod should carry: (status, reason, message). Pure.
pub fn condition(d: &DriftStatus) -> (&'static str, &'static str, String) {
    if !d.enabled {
        return (
            "Unknown",
            "DetectionOff",
            "the pod's agent does not detect drift (--drift-interval 0, or an older agent)".into(),
        );
    }
    match &d.report {
        Some(r) if r.resolved_at.is_none() => {
            let action = match (d.policy, &r.repair_error) {
                (DriftPolicy::Report, _) => "policy Report: left as is".to_string(),
                (DriftPolicy::Repair, None) => "policy Repair: repairing".to_string(),
                (DriftPolicy::Repair, Some(e)) => format!("policy Repair: repair failed: {e}"),
            };
            (
                "True",
                "Drifted",
                format!(
                    "the live config differs from the applied {}: {} ({action})",
                    r.digest.short(),
                    files(r)
                ),
            )
        }
        Some(r) => {
            let (reason, how) = match r.resolution {
                Some(DriftResolution::Repaired) => ("Repaired", "repaired by the agent"),
                Some(DriftResolution::Superseded) => ("Superseded", "replaced by a new apply"),
                Some(DriftResolution::Reverted) | None => ("Reverted", "undone by hand"),
            };
            (
                "False",
                reason,
                format!(
                    "the live config matches what was applied; the drift of {} was {how}",
                    files(r)
                ),
            )
        }
        None => (
            "False",
            "NoDrift",
            "the live config matches what was applied".into(),
        ),
    }
}

/// What was last written on a pod.
#[derive(Clone, PartialEq)]
struct Mark {
    policy: Option<DriftPolicy>,
    condition: Option<(&'static str, &'static str, String)>,
}

/// What was last announced for a pod's episode (its start), and whether its repair was.
#[derive(Clone, PartialEq)]
struct Announced {
    detected_at: jiff::Timestamp,
    repaired: bool,
}

/// Writes the policy annotation and the condition on pods, and the Events, when they change.
pub struct DriftMarks {
    pods: Api<Pod>,
    written: HashMap<String, Mark>,
    announced: HashMap<String, Announced>,
}

impl DriftMarks {
    /// Marks for the pods of one namespace.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        DriftMarks {
            pods: Api::namespaced(client, namespace),
            written: HashMap::new(),
            announced: HashMap::new(),
        }
    }

    /// Brings every read pod's annotation and condition up to date with `policy` and what its
    /// agent reports, and publishes an Event for each new episode and each repair. A failed
    /// write is tried again next time.
    pub async fn sync(
        &mut self,
        drift: &BTreeMap<String, DriftStatus>,
        policy: DriftPolicy,
        recorder: &Recorder,
        reference: &ObjectReference,
    ) {
        // A runner that has not read its pods yet (a worker just restarted for a spec change)
        // knows no pod: forgetting what was announced then would announce every open episode
        // again once the pods are read.
        if !drift.is_empty() {
            self.written.retain(|pod, _| drift.contains_key(pod));
            self.announced.retain(|pod, _| drift.contains_key(pod));
        }
        for (pod, d) in drift {
            self.announce(pod, d, recorder, reference).await;
        }
        let mut changed = Vec::new();
        for (pod, d) in drift {
            let want = Mark {
                policy: Some(policy),
                condition: Some(condition(d)),
            };
            let had = self.written.get(pod).cloned().unwrap_or(Mark {
                policy: None,
                condition: None,
            });
            if had != want {
                changed.push((pod.clone(), had, want));
            }
        }
        for chunk in changed.chunks(WRITE_CHUNK) {
            let mut writes = tokio::task::JoinSet::new();
            for (pod, had, want) in chunk.iter().cloned() {
                let pods = self.pods.clone();
                writes.spawn(async move {
                    let result = write(&pods, &pod, &had, &want).await;
                    (pod, want, result)
                });
            }
            while let Some(done) = writes.join_next().await {
                match done {
                    Ok((pod, want, Ok(()))) => {
                        self.written.insert(pod, want);
                    }
                    Ok((pod, _, Err(e))) => {
                        tracing::debug!(pod = %pod, error = %e, "writing the drift mark failed");
                    }
                    Err(e) => tracing::debug!(error = %e, "drift mark task failed"),
                }
            }
        }
    }

    /// One Warning per episode, one Normal per repair.
    async fn announce(
        &mut self,
        pod: &str,
        d: &DriftStatus,
        recorder: &Recorder,
        reference: &ObjectReference,
    ) {
        let Some(r) = &d.report else { return };
        let seen = self.announced.get(pod).cloned();
        let new_episode = seen.as_ref().is_none_or(|a| a.detected_at != r.detected_at);
        if new_episode && r.resolved_at.is_none() {
            let message = format!(
                "pod {pod}: the live config differs from the applied {}: {} (policy {})",
                r.digest.short(),
                files(r),
                d.policy.as_str()
            );
            publish(
                recorder,
                reference,
                EventType::Warning,
                "ConfigDrifted",
                &message,
            )
            .await;
            self.announced.insert(
                pod.to_string(),
                Announced {
                    detected_at: r.detected_at,
                    repaired: false,
                },
            );
        }
        let repaired = r.resolution == Some(DriftResolution::Repaired);
        // Announced only for an episode this controller announced (not one it first saw repaired
        // after a restart).
        if repaired
            && let Some(a) = self.announced.get_mut(pod)
            && a.detected_at == r.detected_at
            && !a.repaired
        {
            a.repaired = true;
            let message = format!(
                "pod {pod}: the agent re-applied {} over the drift of {}",
                r.digest.short(),
                files(r)
            );
            publish(
                recorder,
                reference,
                EventType::Normal,
                "DriftRepaired",
                &message,
            )
            .await;
        }
    }
}

/// Writes what changed between `had` and `want` on one pod.
async fn write(pods: &Api<Pod>, pod: &str, had: &Mark, want: &Mark) -> Result<(), kube::Error> {
    let _permit = crate::fleet::kube::api_write_permit().await;
    if had.policy != want.policy
        && let Some(policy) = want.policy
    {
        let patch = serde_json::json!({
            "metadata": {"annotations": {DRIFT_POLICY_ANNOTATION: policy.as_str()}}
        });
        pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if had.condition != want.condition
        && let Some((status, reason, message)) = &want.condition
    {
        let condition = serde_json::json!({
            "status": {"conditions": [{
                "type": CONFIG_DRIFTED,
                "status": status,
                "reason": reason,
                "message": message.chars().take(1000).collect::<String>(),
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]}
        });
        pods.patch_status(pod, &PatchParams::default(), &Patch::Strategic(&condition))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Bundle;

    fn report(paths: usize, resolved: Option<DriftResolution>) -> DriftReport {
        let digest = Bundle::new(BTreeMap::from([("nginx.conf".into(), b"x".to_vec())])).digest();
        DriftReport {
            digest,
            detected_at: jiff::Timestamp::UNIX_EPOCH,
            expected: "sha256:a".into(),
            found: "sha256:b".into(),
            added: Vec::new(),
            removed: Vec::new(),
            changed: (0..paths).map(|i| format!("conf.d/{i}.conf")).collect(),
            omitted: 3,
            repair_error: None,
            resolved_at: resolved.map(|_| jiff::Timestamp::UNIX_EPOCH),
            resolution: resolved,
        }
    }

    fn status(report: Option<DriftReport>) -> DriftStatus {
        DriftStatus {
            enabled: true,
            report,
            ..DriftStatus::default()
        }
    }

    #[test]
    fn status_lists_only_drifted_pods_bounded_in_pods_and_files() {
        let mut drift = BTreeMap::new();
        for i in 0..30 {
            drift.insert(format!("edge-{i:02}"), status(Some(report(7, None))));
        }
        drift.insert("a-clean".into(), status(None));
        drift.insert(
            "a-repaired".into(),
            status(Some(report(1, Some(DriftResolution::Repaired)))),
        );
        let lines = status_lines(&drift);
        assert_eq!(lines.len(), MAX_STATUS_PODS);
        assert_eq!(lines[0].pod, "edge-00");
        assert_eq!(lines[0].files.len(), MAX_FILES);
        assert_eq!(lines[0].more_files, 2 + 3);
        assert_eq!(lines[0].since, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_condition_says_what_drifted_and_how_it_ended() {
        let (s, reason, message) = condition(&status(Some(report(2, None))));
        assert_eq!((s, reason), ("True", "Drifted"));
        assert!(
            message.contains("conf.d/0.conf, conf.d/1.conf and 3 more"),
            "{message}"
        );
        assert!(message.contains("policy Report: left as is"), "{message}");
        let mut failing = status(Some(report(1, None)));
        failing.policy = DriftPolicy::Repair;
        if let Some(r) = failing.report.as_mut() {
            r.repair_error = Some("NginxTest: bad".into());
        }
        assert!(
            condition(&failing)
                .2
                .contains("repair failed: NginxTest: bad")
        );
        let repaired = condition(&status(Some(report(1, Some(DriftResolution::Repaired)))));
        assert_eq!((repaired.0, repaired.1), ("False", "Repaired"));
        assert_eq!(condition(&status(None)).1, "NoDrift");
        assert_eq!(condition(&DriftStatus::default()).0, "Unknown");
    }
}
