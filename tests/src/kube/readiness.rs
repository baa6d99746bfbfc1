//! Pod readiness as a real kubelet computes it: with readiness gates (`spec.readinessGates`),
//! `Ready` is `ContainersReady` and every gate's condition `True`. The proxy example gates on
//! `switchback.dev/ConfigApplied`, so a pod joins its Service only once its agent serves the
//! config the controller told it; the process kubelet models that so tests see it happen.

use serde_json::{Value, json};

/// Whether `pod` should be Ready given its conditions, when it has readiness gates and its
/// containers are ready; `None` when the gates do not decide (no gates, or not running yet).
pub fn ready_by_gates(pod: &Value) -> Option<bool> {
    let gates = pod["spec"]["readinessGates"].as_array()?;
    if gates.is_empty() {
        return None;
    }
    let conditions = pod["status"]["conditions"].as_array()?;
    let status_of = |kind: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == kind)
            .and_then(|c| c["status"].as_str())
    };
    if status_of("ContainersReady") != Some("True") {
        return None;
    }
    Some(gates.iter().all(|g| {
        g["conditionType"]
            .as_str()
            .is_some_and(|kind| status_of(kind) == Some("True"))
    }))
}

/// Whether `pod`'s `Ready` condition says `ready` already.
pub fn says_ready(pod: &Value, ready: bool) -> bool {
    let want = if ready { "True" } else { "False" };
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == want)
}

/// The strategic merge patch of the Pod's status that sets `Ready` (conditions merge by type,
/// so a gate's condition written meanwhile by a controller is kept).
pub fn ready_patch(ready: bool, now: &str) -> Value {
    let (status, reason) = if ready {
        ("True", "ReadinessGatesReady")
    } else {
        ("False", "ReadinessGatesNotReady")
    };
    json!({"status": {"conditions": [{
        "type": "Ready", "status": status, "reason": reason, "lastTransitionTime": now,
    }]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(gates: &[&str], conditions: &[(&str, &str)]) -> Value {
        json!({
            "spec": {"readinessGates": gates.iter().map(|g| json!({"conditionType": g})).collect::<Vec<_>>()},
            "status": {"conditions": conditions.iter().map(|(t, s)| json!({"type": t, "status": s})).collect::<Vec<_>>()},
        })
    }

    #[test]
    fn a_gated_pod_is_ready_only_when_every_gate_is_true() {
        let gate = "switchback.dev/ConfigApplied";
        assert_eq!(
            ready_by_gates(&pod(&[gate], &[("ContainersReady", "True")])),
            Some(false)
        );
        assert_eq!(
            ready_by_gates(&pod(
                &[gate],
                &[("ContainersReady", "True"), (gate, "False")]
            )),
            Some(false)
        );
        assert_eq!(
            ready_by_gates(&pod(
                &[gate],
                &[("ContainersReady", "True"), (gate, "True")]
            )),
            Some(true)
        );
        assert_eq!(
            ready_by_gates(&pod(&[gate], &[(gate, "True")])),
            None,
            "containers not ready: the gates do not decide"
        );
        assert_eq!(
            ready_by_gates(&pod(&[], &[("ContainersReady", "True")])),
            None
        );
    }
}
