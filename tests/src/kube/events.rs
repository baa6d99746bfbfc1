//! One storage, two APIs: a real API server serves every Event through both `events.k8s.io/v1`
//! and core `v1`, so `kubectl get events` and `kubectl describe` show the Events a controller
//! wrote with kube-runtime's `Recorder` (events.k8s.io). This converts the one into the other.

use serde_json::{Value, json};

/// An `events.k8s.io/v1` Event as core `v1` shows it (`regarding` → `involvedObject`, `note` →
/// `message`, reporting fields → `source`).
pub fn as_core_v1(event: &Value) -> Value {
    let series_count = event["series"]["count"].as_i64();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": event["metadata"],
        "involvedObject": event["regarding"],
        "related": event["related"],
        "reason": event["reason"],
        "message": event["note"],
        "type": event["type"],
        "action": event["action"],
        "eventTime": event["eventTime"],
        "firstTimestamp": event["deprecatedFirstTimestamp"],
        "lastTimestamp": event["series"]["lastObservedTime"].as_str()
            .map(Value::from)
            .unwrap_or_else(|| event["eventTime"].clone()),
        "count": series_count.unwrap_or(1),
        "reportingComponent": event["reportingController"],
        "reportingInstance": event["reportingInstance"],
        "source": {"component": event["reportingController"], "host": event["reportingInstance"]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_event_reads_as_a_core_event() {
        let e = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "edge.1", "namespace": "proxies"},
            "regarding": {"kind": "ProxyRollout", "name": "edge", "namespace": "proxies"},
            "reason": "RolledBack", "note": "abc rolled back", "type": "Warning",
            "reportingController": "switchback", "reportingInstance": "pod-0",
            "eventTime": "2026-01-01T00:00:00.000000Z",
        });
        let core = as_core_v1(&e);
        assert_eq!(core["involvedObject"]["name"], "edge");
        assert_eq!(core["message"], "abc rolled back");
        assert_eq!(core["count"], 1);
        assert_eq!(core["source"]["component"], "switchback");
    }
}
