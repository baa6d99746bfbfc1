//! The invariant checks find what they are for: a witness beside a bare test API server, fed
//! writes a misbehaving controller would send.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::invariants::{
    never_told_twice, quarantined_never_told_again, told_only_validated, validated_digests,
};
use super::witness::Witness;
use crate::kube::KubeServer;

#[test]
fn only_targets_named_while_canarying_or_rolling_back_count_as_validated() {
    let statuses = [
        json!({"phase": "Idle", "stable": {"digest": "s"}}),
        json!({"phase": "Validating", "stable": {"digest": "s"}, "target": {"digest": "v"}}),
        json!({"phase": "Canary", "stable": {"digest": "s"}, "target": {"digest": "c"}}),
        json!({"phase": "RollingBack", "stable": {"digest": "s"}, "target": {"digest": "r"}}),
    ];
    let allowed = validated_digests(&statuses);
    assert_eq!(
        allowed.into_iter().collect::<Vec<_>>(),
        ["c", "r", "s"],
        "a target only being validated is not yet allowed"
    );
}

async fn tell(pods: &Api<Pod>, digest: &str) {
    let patch = json!({"metadata": {"annotations": {"switchback.dev/desired-digest": digest}}});
    pods.patch("edge-0", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the pod");
}

#[tokio::test]
async fn a_repeated_tell_and_an_unvalidated_digest_are_each_named() {
    let server = KubeServer::start().await.expect("the API test server");
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "edge"}})).expect("a namespace"),
        )
        .await
        .expect("create the namespace");
    let pods: Api<Pod> = Api::namespaced(client, "edge");
    let pod = json!({"metadata": {"name": "edge-0", "namespace": "edge"},
                     "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).expect("a pod"),
    )
    .await
    .expect("create the pod");
    let witness = Witness::start(&server);
    tell(&pods, "sha256:a").await;
    tell(&pods, "sha256:a").await;
    assert!(
        told_only_validated(&witness).is_err(),
        "no status named sha256:a"
    );
    let twice = never_told_twice(&witness).expect_err("told twice");
    assert_eq!(twice, ["edge-0 told sha256:a twice in a row"]);
    tell(&pods, "sha256:b").await;
    assert_eq!(
        never_told_twice(&witness).expect_err("still told twice once"),
        twice,
        "a new digest is a new decision"
    );
    assert!(
        quarantined_never_told_again(&witness).is_ok(),
        "nothing was quarantined"
    );
    // The witness's record follows the change stream, a moment behind the writes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let told = witness
            .seen()
            .pods
            .get("edge-0")
            .map(|p| p.told.clone())
            .unwrap_or_default();
        if told == ["sha256:a", "sha256:b"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{told:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
