//! Unit tests for the pure parts: selectors, patches, schema validation and JSONPath.

use serde_json::json;

use super::patch;
use super::schema;
use super::select::Selector;
use super::table::json_path;

#[test]
fn label_selectors_cover_equality_sets_and_existence() {
    let obj = json!({"metadata": {"labels": {"a": "b", "e": "x"}}});
    let yes = [
        "a=b",
        "a==b,c!=d",
        "e in (x,y)",
        "e notin (z)",
        "a",
        "!c",
        "a=b, e in (y, x)",
    ];
    for s in yes {
        assert!(
            Selector::parse(s).unwrap().matches_labels(&obj),
            "{s} should match"
        );
    }
    let no = ["a=c", "a!=b", "e in (y,z)", "e notin (x)", "c", "!a"];
    for s in no {
        assert!(
            !Selector::parse(s).unwrap().matches_labels(&obj),
            "{s} should not match"
        );
    }
    assert!(Selector::parse("").unwrap().matches_labels(&obj));
    assert!(Selector::parse("e in x").is_err());
}

#[test]
fn field_selectors_follow_dotted_paths() {
    let obj = json!({"metadata": {"name": "n"}, "involvedObject": {"kind": "Pod"}});
    assert!(
        Selector::parse("metadata.name=n,involvedObject.kind=Pod")
            .unwrap()
            .matches_fields(&obj)
    );
    assert!(
        !Selector::parse("metadata.name=m")
            .unwrap()
            .matches_fields(&obj)
    );
}

#[test]
fn merge_patch_deletes_with_null_and_replaces_lists() {
    let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
    patch::merge(&mut doc, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
    assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
}

#[test]
fn strategic_merge_merges_named_lists_and_drops_directives() {
    let mut doc = json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]});
    let p = json!({"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b", "image": "2"}]});
    patch::strategic(&mut doc, &p);
    assert_eq!(
        doc,
        json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]})
    );
}

#[test]
fn json_patch_ops_and_null_test_on_missing_path() {
    let mut doc = json!({"metadata": {"name": "x"}});
    let ops = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "g"},
        {"op": "replace", "path": "/metadata/name", "value": "y"},
        {"op": "copy", "from": "/metadata/name", "path": "/metadata/alias"},
        {"op": "move", "from": "/metadata/alias", "path": "/alias"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]);
    patch::json_patch(&mut doc, &ops).unwrap();
    assert_eq!(
        doc,
        json!({"metadata": {"name": "y", "finalizers": ["g"]}, "alias": "y"})
    );
    let failing = json!([{"op": "test", "path": "/metadata/name", "value": "z"}]);
    assert!(patch::json_patch(&mut doc, &failing).is_err());
    let missing = json!([{"op": "replace", "path": "/nope", "value": 1}]);
    assert!(patch::json_patch(&mut doc, &missing).is_err());
}

#[test]
fn schema_reports_the_first_violation_with_its_path() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["replicas"],
        "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                       "mode": {"type": "string", "enum": ["canary", "full"]},
                       "pods": {"type": "array", "items": {"type": "string", "maxLength": 3}}}}}});
    let check = |spec| schema::validate(&s, &json!({"spec": spec}));
    assert_eq!(
        check(json!({"replicas": 3, "mode": "full", "pods": ["abc"]})),
        None
    );
    assert_eq!(
        check(json!({})).unwrap(),
        ("spec.replicas".into(), "Required value".into())
    );
    assert!(
        check(json!({"replicas": 0}))
            .unwrap()
            .1
            .contains("greater than or equal to 1")
    );
    assert!(
        check(json!({"replicas": "3"}))
            .unwrap()
            .1
            .contains("must be of type integer")
    );
    assert!(
        check(json!({"replicas": 1, "mode": "x"}))
            .unwrap()
            .1
            .contains("Unsupported value")
    );
    assert_eq!(
        check(json!({"replicas": 1, "pods": ["abcd"]})).unwrap().0,
        "spec.pods[0]"
    );
}

#[test]
fn json_path_handles_printer_column_forms() {
    let obj = json!({"spec": {"r": 2}, "status": {"conditions": [
        {"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
    assert_eq!(json_path(&obj, ".spec.r"), json!(2));
    assert_eq!(
        json_path(&obj, ".status.conditions[0].type"),
        json!("Other")
    );
    assert_eq!(
        json_path(&obj, r#".status.conditions[?(@.type=="Ready")].status"#),
        json!("True")
    );
    assert_eq!(json_path(&obj, ".missing.x"), serde_json::Value::Null);
}

#[test]
fn removing_an_owner_collects_its_dependents() {
    use super::store::{Key, Store};
    let key = |name: &str| Key {
        group: String::new(),
        plural: "configmaps".into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let owned = |name: &str, owner: &str| {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}"),
            "ownerReferences": [{"uid": format!("uid-{owner}"), "name": owner}]}})
    };
    let mut store = Store::default();
    store.put(
        key("owner"),
        json!({"metadata": {"name": "owner", "uid": "uid-owner"}}),
    );
    store.put(key("child"), owned("child", "owner"));
    store.put(key("grandchild"), owned("grandchild", "child"));
    let mut held = owned("held", "owner");
    held["metadata"]["finalizers"] = json!(["example.com/keep"]);
    store.put(key("held"), held);
    store.put(
        key("stranger"),
        json!({"metadata": {"name": "stranger", "uid": "uid-s"}}),
    );

    store.remove_cascading(&key("owner"), "2026-01-01T00:00:00Z");
    assert!(store.get(&key("child")).is_none());
    assert!(store.get(&key("grandchild")).is_none());
    assert!(store.get(&key("stranger")).is_some());
    let held = store
        .get(&key("held"))
        .expect("a dependent with finalizers stays");
    assert_eq!(
        held["metadata"]["deletionTimestamp"],
        "2026-01-01T00:00:00Z"
    );
}

#[test]
fn a_status_apply_removes_the_fields_its_manager_stopped_applying() {
    use super::resources::builtins;
    use super::store::Store;
    use super::write::{Mode, patch};
    let pods = builtins()
        .into_iter()
        .find(|r| r.plural == "pods")
        .expect("pods are built in");
    assert!(pods.has_status);
    let mut store = Store::default();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}});
    let key = super::write::key(&pods, Some("default"), "p");
    store.put(key.clone(), pod);
    let apply = |store: &mut Store, status: serde_json::Value| {
        let body = json!({"apiVersion": "v1", "kind": "Pod", "status": status});
        patch(
            store,
            &pods,
            Some("default"),
            "p",
            "application/apply-patch+yaml",
            &body,
            Some("switchback"),
            true,
            true,
            Mode::COMMIT,
        )
        .expect("status apply")
        .0
    };
    let first = json!({"last": {"id": 1, "restoredAt": "t1", "revert": {"result": "Pushed"}}});
    apply(&mut store, first);
    let second = apply(&mut store, json!({"last": {"id": 2}}));
    assert_eq!(second["status"], json!({"last": {"id": 2}}), "{second:#}");
}

/// The bench samples the request rate through `request_count`: it must count what `requests`
/// records, one per answered request (errors included), not only successes.
#[tokio::test]
async fn request_count_counts_every_answered_request() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let server = super::KubeServer::start()
        .await
        .expect("the API test server");
    let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(server.client().await, "default");
    let before = server.request_count();
    configmaps
        .list(&Default::default())
        .await
        .expect("list configmaps");
    let missing = configmaps.get("no-such-configmap").await;
    assert!(missing.is_err(), "a missing ConfigMap is a 404");
    assert_eq!(server.request_count(), before + 2);
    assert_eq!(server.request_count(), server.requests().len());
}
