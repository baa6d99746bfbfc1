//! Pod Security Standard "restricted" as a checker over manifests, so the chart's tests can say
//! which pod template breaks which rule without a cluster that enforces the standard
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>). Besides the standard,
//! it requires what the project promises for every pod (STYLE rule 10): `runAsUser` set and
//! non-zero and a read-only root filesystem on every container.

use serde_json::Value;

/// Volume types the restricted profile allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The pod spec inside a workload or Pod manifest; `None` for kinds that
/// make no pods.
pub fn pod_spec(obj: &Value) -> Option<&Value> {
    let spec = match obj["kind"].as_str()? {
        "Pod" => &obj["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            &obj["spec"]["template"]["spec"]
        }
        "CronJob" => &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => return None,
    };
    Some(spec)
}

/// Every rule of the restricted profile (plus the project's two) that `spec`, a pod spec, breaks,
/// each naming the container or field; empty when it passes.
pub fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod_sc = &spec["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host].as_bool() == Some(true) {
            out.push(format!("spec.{host} is true"));
        }
    }
    if pod_sc["runAsUser"].as_i64() == Some(0) {
        out.push("spec.securityContext.runAsUser is 0".to_string());
    }
    if pod_sc["runAsNonRoot"].as_bool() == Some(false) {
        out.push("spec.securityContext.runAsNonRoot is false".to_string());
    }
    if is_unconfined(&pod_sc["seccompProfile"]) {
        out.push("spec.securityContext.seccompProfile is Unconfined".to_string());
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("?");
        let kinds: Vec<&String> = volume
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| *k != "name")
            .collect();
        for kind in kinds {
            if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
                out.push(format!("volume {name:?} is of type {kind}"));
            }
        }
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| spec[*field].as_array().into_iter().flatten());
    let mut any = false;
    for c in containers {
        any = true;
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let mut fail = |what: &str| out.push(format!("container {name:?}: {what}"));
        let non_root = sc["runAsNonRoot"]
            .as_bool()
            .or(pod_sc["runAsNonRoot"].as_bool());
        if non_root != Some(true) {
            fail("runAsNonRoot is not true (container or pod)");
        }
        match sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64()) {
            None => fail("runAsUser is not set (container or pod)"),
            Some(0) => fail("runAsUser is 0"),
            Some(_) => {}
        }
        if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
            fail("allowPrivilegeEscalation is not false");
        }
        if sc["privileged"].as_bool() == Some(true) {
            fail("privileged is true");
        }
        if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
            fail("readOnlyRootFilesystem is not true");
        }
        let drops_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL")));
        if !drops_all {
            fail("capabilities.drop does not hold ALL");
        }
        for added in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if added.as_str() != Some("NET_BIND_SERVICE") {
                fail(&format!("capabilities.add holds {added}"));
            }
        }
        let seccomp = if sc["seccompProfile"].is_object() {
            &sc["seccompProfile"]
        } else {
            &pod_sc["seccompProfile"]
        };
        if !matches!(
            seccomp["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        ) {
            fail("seccompProfile is not RuntimeDefault or Localhost (container or pod)");
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                fail(&format!("hostPort {}", port["hostPort"]));
            }
        }
    }
    if !any {
        out.push("the pod has no containers".to_string());
    }
    out
}

fn is_unconfined(profile: &Value) -> bool {
    profile["type"].as_str() == Some("Unconfined")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn restricted_pod() -> Value {
        json!({
            "kind": "Deployment",
            "spec": {"template": {"spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "containers": [{
                    "name": "c",
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]}
                    }
                }]
            }}}
        })
    }

    #[test]
    fn a_restricted_pod_passes() {
        let obj = restricted_pod();
        let spec = pod_spec(&obj).expect("a Deployment has a pod template");
        assert_eq!(restricted_violations(spec), Vec::<String>::new());
    }

    #[test]
    fn each_broken_rule_is_named() {
        let mut obj = restricted_pod();
        let spec = &mut obj["spec"]["template"]["spec"];
        spec["hostNetwork"] = json!(true);
        spec["securityContext"] = json!({"runAsUser": 0});
        spec["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}]);
        spec["initContainers"] = json!([{"name": "init", "ports": [{"hostPort": 80}],
            "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}}}]);
        let found = restricted_violations(pod_spec(&obj).expect("pod template"));
        for expected in [
            "spec.hostNetwork is true",
            "spec.securityContext.runAsUser is 0",
            "volume \"host\" is of type hostPath",
            "container \"init\": privileged is true",
            "container \"init\": capabilities.add holds \"NET_ADMIN\"",
            "container \"init\": hostPort 80",
            "container \"c\": runAsNonRoot is not true (container or pod)",
            "container \"c\": runAsUser is 0",
            "container \"c\": seccompProfile is not RuntimeDefault or Localhost (container or pod)",
            "container \"init\": allowPrivilegeEscalation is not false",
            "container \"init\": readOnlyRootFilesystem is not true",
            "container \"init\": capabilities.drop does not hold ALL",
        ] {
            assert!(
                found.iter().any(|f| f == expected),
                "{expected:?} not in {found:#?}"
            );
        }
    }

    #[test]
    fn a_container_cannot_undo_the_pod_settings() {
        let mut obj = restricted_pod();
        let sc = &mut obj["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        sc["runAsNonRoot"] = json!(false);
        sc["seccompProfile"] = json!({"type": "Unconfined"});
        let found = restricted_violations(pod_spec(&obj).expect("pod template"));
        assert_eq!(
            found,
            [
                "container \"c\": runAsNonRoot is not true (container or pod)",
                "container \"c\": seccompProfile is not RuntimeDefault or Localhost (container or pod)",
            ]
        );
    }

    #[test]
    fn kinds_without_pods_have_no_pod_spec() {
        assert!(pod_spec(&json!({"kind": "ConfigMap"})).is_none());
        let cron = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        assert_eq!(
            restricted_violations(pod_spec(&cron).expect("a CronJob makes pods")),
            ["the pod has no containers"]
        );
    }
}
