//! The resource types the server knows: built-in kinds plus one per served version of every
//! stored CustomResourceDefinition, derived on each request so a new CRD is served at once.

use serde_json::{Value, json};

/// One kind served at one group/version; everything routing, discovery, OpenAPI and tables
/// need to know about it.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// URL plural, e.g. `configmaps`.
    pub plural: String,
    /// Lower-case singular, e.g. `configmap`.
    pub singular: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl resolves (`cm`).
    pub short_names: Vec<String>,
    /// Whether `/status` is a separate subresource (main writes then keep the stored status).
    pub has_status: bool,
    /// The CRD's `openAPIV3Schema`, for custom resources.
    pub schema: Option<Value>,
    /// The CRD's `additionalPrinterColumns`, for custom resources.
    pub printer_columns: Vec<Value>,
    /// Whether this is a custom resource (strategic merge is refused with 415).
    pub custom: bool,
}

impl ResourceType {
    fn builtin(group: &str, kind: &str, plural: &str, namespaced: bool, short: &[&str]) -> Self {
        ResourceType {
            group: group.to_string(),
            version: "v1".to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            has_status: matches!(
                kind,
                "Pod"
                    | "Namespace"
                    | "CustomResourceDefinition"
                    | "Service"
                    | "Deployment"
                    | "ReplicaSet"
                    | "StatefulSet"
                    | "DaemonSet"
                    | "PodDisruptionBudget"
            ),
            schema: None,
            printer_columns: Vec::new(),
            custom: false,
        }
    }

    /// With these printer columns (name, JSON path), as the real server's table printers give
    /// built-in kinds, so `kubectl get` shows what a reader of the docs expects.
    pub fn with_columns(mut self, columns: &[(&str, &str)]) -> Self {
        self.printer_columns = columns
            .iter()
            .map(|(name, path)| serde_json::json!({"name": name, "type": "string", "jsonPath": path}))
            .collect();
        self
    }

    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified plural used in error messages (`widgets.example.com`).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The group-qualified kind used in Invalid messages (`Widget.example.com`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The URL prefix of this group/version: `/api/v1` or `/apis/<group>/<version>`.
    pub fn gv_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

/// The kinds every server serves, before any CRD.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        ResourceType::builtin("", "Namespace", "namespaces", false, &["ns"]),
        ResourceType::builtin("", "Pod", "pods", true, &["po"])
            .with_columns(&[("Status", ".status.phase")]),
        ResourceType::builtin("", "ConfigMap", "configmaps", true, &["cm"]),
        ResourceType::builtin("", "Secret", "secrets", true, &[]),
        // Core events also list the events.k8s.io ones, as one storage serves both (api.rs).
        ResourceType::builtin("", "Event", "events", true, &["ev"]).with_columns(&[
            ("Type", ".type"),
            ("Reason", ".reason"),
            ("Object", ".involvedObject.name"),
            ("Message", ".message"),
        ]),
        ResourceType::builtin("coordination.k8s.io", "Lease", "leases", true, &[]),
        // Stored without controllers, so that charts (the operator's own) install with helm.
        ResourceType::builtin("", "Service", "services", true, &["svc"]),
        ResourceType::builtin("", "ServiceAccount", "serviceaccounts", true, &["sa"]),
        ResourceType::builtin("apps", "Deployment", "deployments", true, &["deploy"]),
        ResourceType::builtin("apps", "ReplicaSet", "replicasets", true, &["rs"]),
        ResourceType::builtin("apps", "StatefulSet", "statefulsets", true, &["sts"]),
        ResourceType::builtin("apps", "DaemonSet", "daemonsets", true, &["ds"]),
        ResourceType::builtin(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
        ),
        ResourceType::builtin("rbac.authorization.k8s.io", "Role", "roles", true, &[]),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
        ),
        // `kubectl auth can-i` posts these; the answer is always "allowed".
        ResourceType::builtin(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
            &[],
        ),
        // kube-rs's event recorder writes events.k8s.io/v1 Events, not core ones.
        ResourceType::builtin("events.k8s.io", "Event", "events", true, &[]),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
        ),
    ]
}

/// The resource types a stored CRD defines, one per served version.
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let group = spec["group"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let plural = names["plural"].as_str().unwrap_or_default();
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            Some(ResourceType {
                group: group.to_string(),
                version: v["name"].as_str()?.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| kind.to_lowercase()),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: names["shortNames"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                has_status: v["subresources"]["status"].is_object(),
                schema: v["schema"].get("openAPIV3Schema").cloned(),
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                custom: true,
            })
        })
        .collect()
}

/// `all` for the kinds `kubectl get all` lists.
fn categories(t: &ResourceType) -> Value {
    let all = [
        "Pod",
        "Service",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
    ];
    if !t.custom && all.contains(&t.kind.as_str()) {
        json!(["all"])
    } else {
        json!([])
    }
}

fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ])
}

/// A version and its discovery entries.
type Versioned = (String, Vec<Value>);

/// Aggregated discovery (`APIGroupDiscoveryList`) for `/api` (`core == true`) or `/apis`.
pub fn aggregated(types: &[ResourceType], core: bool) -> Value {
    let mut groups: Vec<(String, Vec<Versioned>)> = Vec::new();
    for t in types.iter().filter(|t| t.group.is_empty() == core) {
        let entry = json!({
            "resource": t.plural,
            "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
            "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": t.singular,
            "shortNames": t.short_names,
            "categories": categories(t),
            "verbs": verbs(),
            "subresources": if t.has_status {
                json!([{"subresource": "status",
                        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
                        "verbs": ["get", "patch", "update"]}])
            } else {
                json!([])
            },
        });
        let gi = match groups.iter().position(|(g, _)| *g == t.group) {
            Some(i) => i,
            None => {
                groups.push((t.group.clone(), Vec::new()));
                groups.len() - 1
            }
        };
        let versions = &mut groups[gi].1;
        match versions.iter_mut().find(|(v, _)| *v == t.version) {
            Some((_, rs)) => rs.push(entry),
            None => versions.push((t.version.clone(), vec![entry])),
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            json!({
                "metadata": {"name": g},
                "versions": versions.into_iter().map(|(v, rs)| json!({
                    "version": v, "resources": rs, "freshness": "Current"
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// Legacy `APIResourceList` for one group/version (`/api/v1`, `/apis/<g>/<v>`).
pub fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        resources.push(json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": verbs(), "shortNames": t.short_names,
            "categories": categories(t),
        }));
        if t.has_status {
            resources.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The `/openapi/v3` root: one entry per group/version, so kubectl's default strict validation
/// finds the server-side `fieldValidation` parameter and needs nothing else.
pub fn openapi_root(types: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for t in types {
        let key = t.gv_path().trim_start_matches('/').to_string();
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=0")}),
        );
    }
    json!({ "paths": paths })
}

/// The OpenAPI v3 document of one group/version (`gv_key` like `api/v1` or `apis/g/v`): a
/// `patch` operation per kind carrying its GVK and the `fieldValidation` parameter, and a
/// schema per kind for `kubectl explain`.
pub fn openapi_doc(types: &[ResourceType], gv_key: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for t in types
        .iter()
        .filter(|t| t.gv_path().trim_start_matches('/') == gv_key)
    {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let path = if t.namespaced {
            format!(
                "{}/namespaces/{{namespace}}/{}/{{name}}",
                t.gv_path(),
                t.plural
            )
        } else {
            format!("{}/{}/{{name}}", t.gv_path(), t.plural)
        };
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
        let mut schema = t
            .schema
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        if schema.get("description").is_none() {
            schema["description"] =
                json!(format!("{} served by the Switchback test server", t.kind));
        }
        schemas.insert(
            format!("{}.{}.{}", t.group.replace('.', "_"), t.version, t.kind),
            schema,
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Switchback test server", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
