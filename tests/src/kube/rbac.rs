//! The RBAC authoriser: from the stored ClusterRoles, Roles, ClusterRoleBindings and RoleBindings
//! (plus the bootstrap `system:discovery`, `system:public-info-viewer` and `system:basic-user`
//! grants every authenticated user has), decides a request as the apiserver's RBAC authoriser
//! does. This lets a test run a component under its ServiceAccount and see the 403 a real cluster
//! would give for a rule its chart forgot. Pure: it reads a [`Policy`] snapshot, never the store.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::error::ApiError;
use super::identity::User;
use super::request_info::{RequestInfo, ResourceAttributes};
use super::store::Store;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The label a real cluster puts on its bootstrap roles; ours carry it too.
const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";

/// One (API group, resource or `resource/subresource`, verb) a rule grants.
pub type Grant = (String, String, String);

/// The RBAC objects a decision reads, taken from the store under one lock.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// ClusterRoles, stored and bootstrap.
    pub cluster_roles: Vec<Value>,
    /// ClusterRoleBindings, stored and bootstrap.
    pub cluster_role_bindings: Vec<Value>,
    /// Roles of every namespace.
    pub roles: Vec<Value>,
    /// RoleBindings of every namespace.
    pub role_bindings: Vec<Value>,
}

impl Policy {
    /// The stored RBAC objects plus the bootstrap policy.
    pub fn from_store(store: &Store) -> Policy {
        let list = |plural: &str| store.list(RBAC_GROUP, plural, None);
        let mut policy = Policy {
            cluster_roles: list("clusterroles"),
            cluster_role_bindings: list("clusterrolebindings"),
            roles: list("roles"),
            role_bindings: list("rolebindings"),
        };
        policy.add_bootstrap();
        policy
    }

    /// The RBAC objects among `objects` (sorted by kind; others ignored) plus the bootstrap
    /// policy: for unit tests, and for tests that read a cluster's RBAC back with kubectl.
    pub fn from_objects(objects: &[Value]) -> Policy {
        let of = |kind: &str| -> Vec<Value> {
            objects
                .iter()
                .filter(|o| o["kind"] == kind)
                .cloned()
                .collect()
        };
        let mut policy = Policy {
            cluster_roles: of("ClusterRole"),
            cluster_role_bindings: of("ClusterRoleBinding"),
            roles: of("Role"),
            role_bindings: of("RoleBinding"),
        };
        policy.add_bootstrap();
        policy
    }

    /// What a real cluster grants every authenticated user out of the box: discovery, version,
    /// OpenAPI and health URLs, and self access reviews. Not stored, so `kubectl get
    /// clusterroles` shows only what tests created.
    fn add_bootstrap(&mut self) {
        let roles = [
            (
                "system:discovery",
                json!([{"verbs": ["get"], "nonResourceURLs": [
                    "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                    "/openapi/*", "/readyz", "/version", "/version/"]}]),
            ),
            (
                "system:public-info-viewer",
                json!([{"verbs": ["get"], "nonResourceURLs": [
                    "/healthz", "/livez", "/readyz", "/version", "/version/"]}]),
            ),
            (
                "system:basic-user",
                json!([{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}]),
            ),
        ];
        for (name, rules) in roles {
            let metadata = json!({"name": name, "labels": {BOOTSTRAP_LABEL: "rbac-defaults"}});
            self.cluster_roles.push(json!({
                "kind": "ClusterRole", "metadata": metadata, "rules": rules,
            }));
            self.cluster_role_bindings.push(json!({
                "kind": "ClusterRoleBinding", "metadata": metadata,
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": "system:authenticated"}],
            }));
        }
    }
}

/// The authoriser's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether some bound rule allows the request.
    pub allowed: bool,
    /// Which binding allowed it, or (when denied) roles that bindings name but that do not
    /// exist, as the apiserver's `RBAC: ...` reason; empty when there is nothing to say.
    pub reason: String,
}

/// Decides `request` from `user` against `policy`, as Kubernetes RBAC does: ClusterRoleBindings
/// grant their ClusterRole everywhere; RoleBindings grant their Role or ClusterRole in their own
/// namespace only; non-resource URLs only through ClusterRoleBindings.
pub fn authorize(policy: &Policy, user: &User, request: &RequestInfo) -> Decision {
    let namespace = match request {
        RequestInfo::Resource(a) => a.namespace.as_str(),
        RequestInfo::NonResource { .. } => "",
    };
    let mut missing = Vec::new();
    let cluster = policy.cluster_role_bindings.iter().map(|b| (b, ""));
    let local = policy
        .role_bindings
        .iter()
        .filter(|b| !namespace.is_empty() && b["metadata"]["namespace"] == namespace)
        .map(|b| (b, namespace));
    for (binding, ns) in cluster.chain(local) {
        if !subjects_include(binding, ns, user) {
            continue;
        }
        let Some(role) = role_of(policy, binding, ns) else {
            missing.push(missing_role(binding));
            continue;
        };
        let rules = role["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if rules.iter().any(|r| rule_allows(r, request)) {
            return Decision {
                allowed: true,
                reason: format!(
                    "RBAC: allowed by {} {:?} of {} {:?}",
                    binding["kind"].as_str().unwrap_or("binding"),
                    binding["metadata"]["name"].as_str().unwrap_or_default(),
                    binding["roleRef"]["kind"].as_str().unwrap_or_default(),
                    binding["roleRef"]["name"].as_str().unwrap_or_default(),
                ),
            };
        }
    }
    Decision {
        allowed: false,
        reason: if missing.is_empty() {
            String::new()
        } else {
            format!("RBAC: [{}]", missing.join(", "))
        },
    }
}

/// Every (group, resource, verb) the bindings naming `user` grant, in any namespace, leaving out
/// the bootstrap grants every user has, non-resource URLs, and `resourceNames` limits. This is
/// "what the manifests give this account", to compare with what it used.
pub fn granted(policy: &Policy, user: &User) -> BTreeSet<Grant> {
    let cluster = policy.cluster_role_bindings.iter().map(|b| (b, ""));
    let local = policy.role_bindings.iter().map(|b| {
        let ns = b["metadata"]["namespace"].as_str().unwrap_or_default();
        (b, ns)
    });
    let mut out = BTreeSet::new();
    for (binding, ns) in cluster.chain(local) {
        if !binding["metadata"]["labels"][BOOTSTRAP_LABEL].is_null()
            || !subjects_include(binding, ns, user)
        {
            continue;
        }
        let rules = role_of(policy, binding, ns)
            .and_then(|r| r["rules"].as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for rule in rules {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.insert((group.to_string(), resource.to_string(), verb.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// The 403 a real apiserver sends for a denied request, worded as its `Forbidden` responder.
pub fn forbidden(user: &User, request: &RequestInfo, reason: &str) -> ApiError {
    let mut why = match request {
        RequestInfo::NonResource { verb, path } => {
            format!("User {:?} cannot {verb} path {path:?}", user.name)
        }
        RequestInfo::Resource(a) => {
            let scope = if a.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", a.namespace)
            };
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
                user.name,
                a.verb,
                a.combined_resource(),
                a.group
            )
        }
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let (group, resource, name) = match request {
        RequestInfo::Resource(a) => (a.group.clone(), a.resource.clone(), a.name.clone()),
        RequestInfo::NonResource { .. } => Default::default(),
    };
    let qualified = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {why}"),
        (false, true) => format!("{qualified} is forbidden: {why}"),
        (false, false) => format!("{qualified} {name:?} is forbidden: {why}"),
    };
    ApiError::Forbidden {
        message,
        group,
        resource,
        name,
    }
}

/// The 403 for a write that would create an object the user may update but not create, worded
/// as the apiserver's `withAuthorization` check words it (reason only, often empty).
pub fn forbidden_create_on_update(attrs: &ResourceAttributes, reason: &str) -> ApiError {
    let qualified = if attrs.group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.group)
    };
    ApiError::Forbidden {
        message: format!("{qualified} {:?} is forbidden: {reason}", attrs.name),
        group: attrs.group.clone(),
        resource: attrs.resource.clone(),
        name: attrs.name.clone(),
    }
}

/// Whether `binding` (in namespace `ns`, `""` for a ClusterRoleBinding) names `user`.
fn subjects_include(binding: &Value, ns: &str, user: &User) -> bool {
    let subjects = binding["subjects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str().unwrap_or_default() {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                // A RoleBinding's subject may leave out its namespace: the binding's is meant.
                let sa_ns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(ns);
                !sa_ns.is_empty() && user.name == format!("system:serviceaccount:{sa_ns}:{name}")
            }
            _ => false,
        }
    })
}

/// The Role (same namespace) or ClusterRole a binding refers to, when it exists.
fn role_of<'a>(policy: &'a Policy, binding: &Value, ns: &str) -> Option<&'a Value> {
    let r = &binding["roleRef"];
    let name = r["name"].as_str()?;
    match r["kind"].as_str()? {
        "ClusterRole" => policy
            .cluster_roles
            .iter()
            .find(|c| c["metadata"]["name"] == name),
        "Role" if !ns.is_empty() => policy
            .roles
            .iter()
            .find(|c| c["metadata"]["name"] == name && c["metadata"]["namespace"] == ns),
        _ => None,
    }
}

fn missing_role(binding: &Value) -> String {
    let r = &binding["roleRef"];
    format!(
        "{}.{RBAC_GROUP} {:?} not found",
        r["kind"].as_str().unwrap_or_default().to_lowercase(),
        r["name"].as_str().unwrap_or_default()
    )
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// One PolicyRule against one request (`RuleAllows`).
fn rule_allows(rule: &Value, request: &RequestInfo) -> bool {
    let verb = match request {
        RequestInfo::Resource(a) => a.verb.as_str(),
        RequestInfo::NonResource { verb, .. } => verb.as_str(),
    };
    if !strings(&rule["verbs"]).any(|v| v == "*" || v == verb) {
        return false;
    }
    match request {
        RequestInfo::Resource(a) => resource_rule_allows(rule, a),
        RequestInfo::NonResource { path, .. } => strings(&rule["nonResourceURLs"]).any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        }),
    }
}

fn resource_rule_allows(rule: &Value, a: &ResourceAttributes) -> bool {
    let combined = a.combined_resource();
    let group_ok = strings(&rule["apiGroups"]).any(|g| g == "*" || g == a.group);
    let resource_ok = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    let mut names = strings(&rule["resourceNames"]).peekable();
    let name_ok = names.peek().is_none() || (!a.name.is_empty() && names.any(|n| n == a.name));
    group_ok && resource_ok && name_ok
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
