//! RBAC in the Kubernetes API test server, over real HTTP: ServiceAccount tokens the server
//! issues are denied with the apiserver's 403 until a binding grants them, kube-rs sees that as
//! the Forbidden error it would get from a cluster, a server-side apply that creates also needs
//! `create`, and every ServiceAccount request lands in the audit. (kubectl sends no token over
//! plain HTTP, so it stays the admin; these tests use reqwest and kube-rs.)

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use reqwest::Method;
use serde_json::{Value, json};
use switchback_tests::kube::KubeServer;
use switchback_tests::kube::authz::RbacMode;

/// One request to `server` with `token`; returns the status code and the JSON body.
async fn call(
    server: &KubeServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<(&str, Value)>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url()))
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        req = req
            .header("Content-Type", content_type)
            .body(body.to_string());
    }
    let resp = req.send().await.expect("request to the test server");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates `object` at `path` as the admin; insists on 201.
async fn admin_create(server: &KubeServer, path: &str, object: Value) {
    let (code, body) = call(
        server,
        server.token(),
        Method::POST,
        path,
        Some(("application/json", object)),
    )
    .await;
    assert_eq!(code, 201, "{path}: {body}");
}

/// A Role in `ns` with `rules` and a RoleBinding of it to ServiceAccount `ns/sa`.
async fn grant(server: &KubeServer, ns: &str, name: &str, sa: &str, rules: Value) {
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces";
    admin_create(
        server,
        &format!("{rbac}/{ns}/roles"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": ns}, "rules": rules}),
    )
    .await;
    admin_create(
        server,
        &format!("{rbac}/{ns}/rolebindings"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]}),
    )
    .await;
}

async fn server_with_namespace(ns: &str) -> KubeServer {
    let server = KubeServer::start()
        .await
        .expect("start the test API server");
    admin_create(
        &server,
        "/api/v1/namespaces",
        json!({"metadata": {"name": ns}}),
    )
    .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_is_denied_until_a_binding_grants_it_and_every_request_is_audited() {
    let server = server_with_namespace("shop").await;
    let token = server.issue_token("shop", "reader");
    let list = "/api/v1/namespaces/shop/configmaps";

    let (code, body) = call(&server, &token, Method::GET, list, None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "configmaps is forbidden: User \"system:serviceaccount:shop:reader\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"shop\""
    );
    // Discovery and the version are every authenticated user's.
    for path in ["/version", "/api", "/apis", "/api/v1"] {
        let (code, _) = call(&server, &token, Method::GET, path, None).await;
        assert_eq!(code, 200, "{path}");
    }
    // A token the server never issued is not anyone.
    let (code, _) = call(&server, "made-up", Method::GET, list, None).await;
    assert_eq!(code, 401);

    grant(
        &server,
        "shop",
        "read-cm",
        "reader",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]),
    )
    .await;
    let (code, body) = call(&server, &token, Method::GET, list, None).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = call(
        &server,
        &token,
        Method::GET,
        &format!("{list}?watch=true"),
        None,
    )
    .await;
    assert_eq!(code, 403, "list does not grant watch");
    let (code, _) = call(
        &server,
        &token,
        Method::GET,
        "/api/v1/namespaces/default/configmaps",
        None,
    )
    .await;
    assert_eq!(code, 403, "the Role binds in shop only");

    // Audit-only mode serves what it would deny and marks it.
    server.set_rbac_mode(RbacMode::AuditOnly);
    let (code, _) = call(
        &server,
        &token,
        Method::GET,
        "/api/v1/namespaces/shop/pods",
        None,
    )
    .await;
    assert_eq!(code, 200);

    let audit = server.audit();
    let summary: Vec<(String, String, String, bool)> = audit
        .iter()
        .map(|r| {
            let what = if r.resource.is_empty() {
                r.path.clone()
            } else {
                r.combined_resource()
            };
            (r.verb.clone(), what, r.namespace.clone(), r.allowed)
        })
        .collect();
    let row = |v: &str, w: &str, ns: &str, ok: bool| (v.into(), w.into(), ns.into(), ok);
    assert_eq!(
        summary,
        vec![
            row("list", "configmaps", "shop", false),
            row("get", "/version", "", true),
            row("get", "/api", "", true),
            row("get", "/apis", "", true),
            row("get", "/api/v1", "", true),
            row("list", "configmaps", "shop", true),
            row("watch", "configmaps", "shop", false),
            row("list", "configmaps", "default", false),
            row("list", "pods", "shop", false),
        ],
        "admin requests and the unknown token are not audited"
    );
    assert!(
        audit
            .iter()
            .all(|r| r.user == "system:serviceaccount:shop:reader")
    );
    assert_eq!(
        audit[5].reason,
        "RBAC: allowed by RoleBinding \"read-cm\" of Role \"read-cm\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_with_a_service_account_kubeconfig_gets_forbidden_errors() {
    let server = server_with_namespace("shop").await;
    let path = server
        .service_account_kubeconfig("shop", "ctl")
        .expect("a kubeconfig for the account");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(config).expect("kube client");
    let maps: Api<ConfigMap> = Api::namespaced(client, "shop");
    match maps.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e:?}");
            assert!(e.message.contains("cannot list resource"), "{e:?}");
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    grant(
        &server,
        "shop",
        "list-cm",
        "ctl",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
    )
    .await;
    let listed = maps
        .list(&ListParams::default())
        .await
        .expect("allowed now");
    assert!(listed.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_apply_that_creates_also_needs_create() {
    let server = server_with_namespace("shop").await;
    grant(
        &server,
        "shop",
        "patch-cm",
        "writer",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]),
    )
    .await;
    let path = server
        .service_account_kubeconfig("shop", "writer")
        .expect("a kubeconfig for the account");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    let maps: Api<ConfigMap> =
        Api::namespaced(kube::Client::try_from(config).expect("client"), "shop");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "report"}, "data": {"a": "1"}});
    let apply = PatchParams::apply("switchback").force();
    match maps.patch("report", &apply, &Patch::Apply(&cm)).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert_eq!(e.message, "configmaps \"report\" is forbidden: ");
        }
        other => panic!("expected a 403 for create-by-apply, got {other:?}"),
    }
    // Once it exists, patch alone is enough.
    admin_create(
        &server,
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "report"}, "data": {"a": "0"}}),
    )
    .await;
    let applied = maps
        .patch("report", &apply, &Patch::Apply(&cm))
        .await
        .expect("apply to an existing object");
    assert_eq!(
        applied
            .data
            .unwrap_or_default()
            .get("a")
            .map(String::as_str),
        Some("1")
    );
    let verbs: Vec<(String, bool)> = server
        .audit()
        .iter()
        .map(|r| (r.verb.clone(), r.allowed))
        .collect();
    assert_eq!(
        verbs,
        [
            ("patch".to_string(), true),
            ("create".to_string(), false),
            ("patch".to_string(), true),
        ]
    );
}
