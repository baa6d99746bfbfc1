//! What an HTTP request asks to do, in the terms RBAC decides on (verb, API group, resource,
//! subresource, namespace, name), worked out from the method and URL the way the apiserver's
//! `RequestInfoFactory` does. Kept apart from routing so the authoriser judges exactly what a real
//! cluster would judge, whether or not the test server goes on to serve the path.

use std::collections::HashMap;

/// A request in RBAC's terms: either a resource request or a non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// A request under `/api/<v>` or `/apis/<g>/<v>` naming a resource.
    Resource(ResourceAttributes),
    /// Anything else (`/api`, `/apis/<g>/<v>`, `/version`, `/openapi/...`, `/healthz`).
    NonResource {
        /// The lower-case HTTP method (`get`, `post`...), as RBAC's `nonResourceURLs` rules use.
        verb: String,
        /// The URL path.
        path: String,
    },
}

/// The attributes of a resource request that RBAC rules match against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Resource plural, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `status`; empty when none.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped requests (and for `namespaces` itself, its name).
    pub namespace: String,
    /// Object name, empty for collections (a list or watch selecting `metadata.name=x` names x).
    pub name: String,
}

impl ResourceAttributes {
    /// `resource` or `resource/subresource`, the form RBAC rules list.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Subresources of a namespace that keep `namespaces` as the resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The RBAC view of `method path?query`, as the apiserver derives it.
pub fn request_info(method: &str, path: &str, query: &HashMap<String, String>) -> RequestInfo {
    let non_resource = || RequestInfo::NonResource {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return non_resource(),
    };
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    // The deprecated `/watch/` prefix: `/api/v1/watch/namespaces/x/pods`.
    if rest.first() == Some(&"watch") {
        verb = "watch".to_string();
        rest = &rest[1..];
    }
    let mut attrs = ResourceAttributes {
        group: group.to_string(),
        version: version.to_string(),
        ..ResourceAttributes::default()
    };
    if rest.first() == Some(&"namespaces")
        && let Some(ns) = rest.get(1)
    {
        attrs.namespace = ns.to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    attrs.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
    attrs.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
    attrs.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    if attrs.name.is_empty() {
        verb = match verb.as_str() {
            "get" => "list",
            "delete" => "deletecollection",
            other => other,
        }
        .to_string();
    }
    if verb == "list" && query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        verb = "watch".to_string();
    }
    // A list or watch of one name (`fieldSelector=metadata.name=x`) is authorised as that name.
    if matches!(verb.as_str(), "list" | "watch")
        && attrs.name.is_empty()
        && let Some(name) = query.get("fieldSelector").and_then(|s| exact_name(s))
    {
        attrs.name = name;
    }
    attrs.verb = verb;
    RequestInfo::Resource(attrs)
}

/// The name a field selector requires exactly (`metadata.name=x` or `==x`, possibly among
/// other terms), as `RequiresExactMatch("metadata.name")` finds it.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        (!value.is_empty() && !value.contains('/')).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(method: &str, uri: &str) -> ResourceAttributes {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let q: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%3D", "=")))
            .collect();
        match request_info(method, path, &q) {
            RequestInfo::Resource(a) => a,
            other => panic!("{method} {uri} is not a resource request: {other:?}"),
        }
    }

    fn verb(method: &str, uri: &str) -> String {
        res(method, uri).verb
    }

    #[test]
    fn verbs_map_from_methods_like_the_apiserver() {
        let cm = "/api/v1/namespaces/x/configmaps";
        assert_eq!(verb("GET", &format!("{cm}/a")), "get");
        assert_eq!(verb("GET", cm), "list");
        assert_eq!(verb("GET", &format!("{cm}?watch=true")), "watch");
        assert_eq!(verb("GET", &format!("{cm}?watch=1")), "watch");
        assert_eq!(
            verb("GET", "/api/v1/watch/namespaces/x/configmaps"),
            "watch"
        );
        assert_eq!(verb("POST", cm), "create");
        assert_eq!(verb("PUT", &format!("{cm}/a")), "update");
        assert_eq!(verb("PATCH", &format!("{cm}/a")), "patch");
        assert_eq!(verb("DELETE", &format!("{cm}/a")), "delete");
        assert_eq!(verb("DELETE", cm), "deletecollection");
    }

    #[test]
    fn paths_split_into_group_resource_subresource_namespace_and_name() {
        let a = res(
            "PATCH",
            "/apis/switchback.dev/v1alpha1/namespaces/edge/proxyrollouts/r/status",
        );
        assert_eq!(
            (
                a.group.as_str(),
                a.resource.as_str(),
                a.subresource.as_str()
            ),
            ("switchback.dev", "proxyrollouts", "status")
        );
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("edge", "r"));
        assert_eq!(a.combined_resource(), "proxyrollouts/status");

        let all = res("GET", "/api/v1/pods");
        assert_eq!((all.namespace.as_str(), all.verb.as_str()), ("", "list"));

        let crd = res(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x",
        );
        assert_eq!((crd.namespace.as_str(), crd.name.as_str()), ("", "x"));
    }

    #[test]
    fn a_namespace_is_its_own_namespace_and_keeps_its_subresources() {
        let ns = res("GET", "/api/v1/namespaces/edge");
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "edge", "edge")
        );
        let fin = res("PUT", "/api/v1/namespaces/edge/finalize");
        assert_eq!(
            (fin.resource.as_str(), fin.subresource.as_str()),
            ("namespaces", "finalize")
        );
        assert_eq!(verb("GET", "/api/v1/namespaces"), "list");
    }

    #[test]
    fn a_list_or_watch_of_one_name_is_authorised_as_that_name() {
        let w = res(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/s/leases?fieldSelector=metadata.name%3Dl&watch=true",
        );
        assert_eq!((w.verb.as_str(), w.name.as_str()), ("watch", "l"));
        let other = res(
            "GET",
            "/api/v1/namespaces/s/pods?fieldSelector=spec.nodeName%3Dn",
        );
        assert_eq!(other.name, "");
    }

    #[test]
    fn discovery_version_and_openapi_are_non_resource_urls() {
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
            assert_eq!(
                request_info("GET", path, &HashMap::new()),
                RequestInfo::NonResource {
                    verb: "get".into(),
                    path: path.into()
                },
                "{path}"
            );
        }
    }
}
