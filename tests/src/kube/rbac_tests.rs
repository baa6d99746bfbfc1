//! Unit tests for the RBAC authoriser: each case is one Kubernetes RBAC rule of matching.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::*;
use crate::kube::request_info::request_info;

fn sa(ns: &str, name: &str) -> User {
    User::service_account(ns, name)
}

fn req(method: &str, uri: &str) -> RequestInfo {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let q: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    request_info(method, path, &q)
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn binding(kind: &str, ns: Option<&str>, role_kind: &str, role: &str, subject: Value) -> Value {
    let mut meta = json!({"name": format!("{role}-binding")});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"kind": kind, "metadata": meta,
           "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role},
           "subjects": [subject]})
}

fn sa_subject(ns: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
}

fn allowed(objects: &[Value], user: &User, method: &str, uri: &str) -> bool {
    authorize(&Policy::from_objects(objects), user, &req(method, uri)).allowed
}

#[test]
fn a_cluster_role_binding_grants_everywhere_and_only_the_listed_verbs() {
    let objects = [
        cluster_role(
            "pods",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "pods",
            sa_subject("s", "c"),
        ),
    ];
    let c = sa("s", "c");
    assert!(allowed(&objects, &c, "GET", "/api/v1/namespaces/a/pods/p"));
    assert!(allowed(&objects, &c, "GET", "/api/v1/namespaces/b/pods"));
    assert!(allowed(&objects, &c, "GET", "/api/v1/pods"));
    assert!(!allowed(&objects, &c, "GET", "/api/v1/pods?watch=true"));
    assert!(!allowed(
        &objects,
        &c,
        "DELETE",
        "/api/v1/namespaces/a/pods/p"
    ));
    assert!(!allowed(
        &objects,
        &c,
        "GET",
        "/api/v1/namespaces/a/configmaps"
    ));
    assert!(!allowed(
        &objects,
        &c,
        "GET",
        "/apis/x.dev/v1/namespaces/a/pods"
    ));
    // Another account, even of the same name elsewhere, gets nothing.
    assert!(!allowed(&objects, &sa("t", "c"), "GET", "/api/v1/pods"));
}

#[test]
fn a_role_binding_grants_only_in_its_namespace_even_for_a_cluster_role() {
    let rules = json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]);
    let objects = [
        cluster_role("cm", rules.clone()),
        binding(
            "RoleBinding",
            Some("a"),
            "ClusterRole",
            "cm",
            sa_subject("s", "c"),
        ),
        role("b", "cm-b", rules),
        binding(
            "RoleBinding",
            Some("b"),
            "Role",
            "cm-b",
            sa_subject("s", "c"),
        ),
    ];
    let c = sa("s", "c");
    for ns in ["a", "b"] {
        assert!(allowed(
            &objects,
            &c,
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps")
        ));
        assert!(allowed(
            &objects,
            &c,
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/configmaps")
        ));
    }
    assert!(!allowed(
        &objects,
        &c,
        "POST",
        "/api/v1/namespaces/x/configmaps"
    ));
    // A cluster-wide list is not a list in a or b.
    assert!(!allowed(&objects, &c, "GET", "/api/v1/configmaps"));
}

#[test]
fn a_role_binding_cannot_reach_a_role_of_another_namespace() {
    let objects = [
        role(
            "b",
            "r",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        ),
        binding("RoleBinding", Some("a"), "Role", "r", sa_subject("s", "c")),
    ];
    let d = authorize(
        &Policy::from_objects(&objects),
        &sa("s", "c"),
        &req("GET", "/api/v1/namespaces/a/pods/p"),
    );
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "RBAC: [role.rbac.authorization.k8s.io \"r\" not found]"
    );
}

#[test]
fn wildcards_cover_groups_resources_subresources_and_verbs() {
    let objects = [
        cluster_role(
            "all",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "all",
            sa_subject("s", "root"),
        ),
        cluster_role(
            "statuses",
            json!([{"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "statuses",
            sa_subject("s", "st"),
        ),
    ];
    let root = sa("s", "root");
    assert!(allowed(
        &objects,
        &root,
        "DELETE",
        "/apis/apps/v1/namespaces/a/deployments"
    ));
    assert!(allowed(
        &objects,
        &root,
        "PATCH",
        "/api/v1/namespaces/a/pods/p/status"
    ));
    let st = sa("s", "st");
    assert!(allowed(
        &objects,
        &st,
        "PATCH",
        "/api/v1/namespaces/a/pods/p/status"
    ));
    assert!(!allowed(
        &objects,
        &st,
        "PATCH",
        "/api/v1/namespaces/a/pods/p"
    ));
    assert!(!allowed(
        &objects,
        &st,
        "PATCH",
        "/apis/apps/v1/namespaces/a/deployments/d/status"
    ));
}

#[test]
fn a_subresource_needs_its_own_rule() {
    let objects = [
        cluster_role(
            "pods",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "pods",
            sa_subject("s", "c"),
        ),
    ];
    let c = sa("s", "c");
    assert!(allowed(
        &objects,
        &c,
        "PATCH",
        "/api/v1/namespaces/a/pods/p"
    ));
    assert!(!allowed(
        &objects,
        &c,
        "PATCH",
        "/api/v1/namespaces/a/pods/p/status"
    ));
}

#[test]
fn resource_names_limit_named_requests_and_never_allow_collections() {
    let objects = [
        role(
            "a",
            "lease",
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "resourceNames": ["mine"], "verbs": ["get", "update", "list", "watch", "create"]}]),
        ),
        binding(
            "RoleBinding",
            Some("a"),
            "Role",
            "lease",
            sa_subject("s", "c"),
        ),
    ];
    let c = sa("s", "c");
    let leases = "/apis/coordination.k8s.io/v1/namespaces/a/leases";
    assert!(allowed(&objects, &c, "GET", &format!("{leases}/mine")));
    assert!(allowed(&objects, &c, "PUT", &format!("{leases}/mine")));
    assert!(!allowed(&objects, &c, "GET", &format!("{leases}/other")));
    assert!(!allowed(&objects, &c, "GET", leases));
    assert!(!allowed(&objects, &c, "POST", leases));
    // A watch selecting the one name is authorised as that name.
    assert!(allowed(
        &objects,
        &c,
        "GET",
        &format!("{leases}?fieldSelector=metadata.name=mine&watch=true")
    ));
}

#[test]
fn subjects_match_by_user_group_and_account_with_the_binding_namespace_as_default() {
    let rules = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    let c = sa("a", "c");
    for subject in [
        json!({"kind": "User", "name": "system:serviceaccount:a:c"}),
        json!({"kind": "Group", "name": "system:serviceaccounts:a"}),
        json!({"kind": "ServiceAccount", "name": "c"}),
    ] {
        let objects = [
            role("a", "r", rules.clone()),
            binding("RoleBinding", Some("a"), "Role", "r", subject.clone()),
        ];
        assert!(
            allowed(&objects, &c, "GET", "/api/v1/namespaces/a/pods/p"),
            "{subject}"
        );
    }
    // A ClusterRoleBinding has no namespace to default to.
    let objects = [
        cluster_role("r", rules),
        binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "r",
            json!({"kind": "ServiceAccount", "name": "c"}),
        ),
    ];
    assert!(!allowed(&objects, &c, "GET", "/api/v1/namespaces/a/pods/p"));
}

#[test]
fn every_authenticated_user_may_discover_and_review_itself_but_nothing_else() {
    let c = sa("s", "c");
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
        "/version",
        "/openapi/v3",
        "/openapi/v3/api/v1",
        "/healthz",
    ] {
        assert!(allowed(&[], &c, "GET", path), "{path}");
    }
    assert!(!allowed(&[], &c, "POST", "/version"));
    assert!(!allowed(&[], &c, "GET", "/metrics"));
    assert!(allowed(
        &[],
        &c,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    ));
    assert!(!allowed(&[], &c, "GET", "/api/v1/namespaces"));
}

#[test]
fn the_403_is_worded_like_the_apiserver() {
    let c = sa("ns", "sa");
    let status = |method: &str, uri: &str| {
        let r = req(method, uri);
        let d = authorize(&Policy::from_objects(&[]), &c, &r);
        assert!(!d.allowed);
        forbidden(&c, &r, &d.reason).status()
    };
    let s = status("GET", "/api/v1/namespaces/x/pods");
    assert_eq!(
        s["message"],
        "pods is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"pods\" in API group \"\" in the namespace \"x\""
    );
    assert_eq!(
        (s["code"].as_u64(), s["reason"].as_str()),
        (Some(403), Some("Forbidden"))
    );
    assert_eq!(s["details"], json!({"kind": "pods"}));

    let s = status(
        "PATCH",
        "/apis/switchback.dev/v1alpha1/namespaces/x/proxyrollouts/r/status",
    );
    assert_eq!(
        s["message"],
        "proxyrollouts.switchback.dev \"r\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot patch resource \"proxyrollouts/status\" in API group \"switchback.dev\" in the namespace \"x\""
    );
    assert_eq!(
        s["details"],
        json!({"group": "switchback.dev", "kind": "proxyrollouts", "name": "r"})
    );

    let s = status(
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    );
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .ends_with("in API group \"apiextensions.k8s.io\" at the cluster scope"),
        "{s}"
    );
    let s = status("GET", "/metrics");
    assert_eq!(
        s["message"],
        "forbidden: User \"system:serviceaccount:ns:sa\" cannot get path \"/metrics\""
    );
}

#[test]
fn granted_lists_what_bindings_give_one_account_without_the_bootstrap() {
    let objects = [
        cluster_role(
            "c",
            json!([{"apiGroups": ["", "apps"], "resources": ["pods", "pods/status"], "verbs": ["get", "patch"]}]),
        ),
        binding(
            "ClusterRoleBinding",
            None,
            "ClusterRole",
            "c",
            sa_subject("s", "c"),
        ),
        role(
            "s",
            "l",
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]),
        ),
        binding("RoleBinding", Some("s"), "Role", "l", sa_subject("s", "c")),
        role(
            "s",
            "other",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        ),
        binding(
            "RoleBinding",
            Some("s"),
            "Role",
            "other",
            sa_subject("s", "d"),
        ),
    ];
    let got = granted(&Policy::from_objects(&objects), &sa("s", "c"));
    let t = |g: &str, r: &str, v: &str| (g.to_string(), r.to_string(), v.to_string());
    let mut want = BTreeSet::from([t("coordination.k8s.io", "leases", "get")]);
    for g in ["", "apps"] {
        for r in ["pods", "pods/status"] {
            for v in ["get", "patch"] {
                want.insert(t(g, r, v));
            }
        }
    }
    assert_eq!(got, want);
}
