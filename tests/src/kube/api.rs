//! Request routing: `/version`, discovery, OpenAPI and the REST paths of every resource type,
//! dispatched to reads here and writes in [`super::write`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::error::ApiError;
use super::identity::User;
use super::protobuf;
use super::rbac::Policy;
use super::request_info::RequestInfo;
use super::resources::{self, ResourceType};
use super::select::Selector;
use super::store::Key;
use super::table;
use super::watch;
use super::write::{self, Mode};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Entry point for every request.
pub async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(injected) = shared.faults.answer(&method) {
        record(&shared, &method, &uri, &headers, &injected);
        return injected;
    }
    // No token (kubectl over plain HTTP) and the admin token are the admin; an issued
    // ServiceAccount token is checked against RBAC; any other token is 401, unrecorded, so
    // tests notice a mix-up of servers.
    let q: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?"));
    let admitted = shared
        .gate()
        .admit(authorization, method.as_str(), uri.path(), &q, || {
            Policy::from_store(&shared.lock())
        });
    let response = match admitted.and_then(|sa| create_on_apply(&shared, sa, &method, &headers)) {
        Err(ApiError::Unauthorized) => return ApiError::Unauthorized.into_response(),
        Err(forbidden) => forbidden.into_response(),
        Ok(()) => route(&shared, &method, &uri, &headers, &body)
            .unwrap_or_else(IntoResponse::into_response),
    };
    shared
        .faults
        .tap(&method, uri.path(), response.status(), &body);
    record(&shared, &method, &uri, &headers, &response);
    response
}

fn record(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, response: &Response) {
    let recorded = super::RecordedRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        content_type: header_str(headers, header::CONTENT_TYPE).to_string(),
        status: response.status().as_u16(),
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(recorded);
}

/// A ServiceAccount's server-side apply of an object that does not exist yet also needs `create`
/// (the apiserver checks it when the apply turns into a create). The test server's PUT never
/// creates, so only apply patches get here.
fn create_on_apply(
    shared: &Arc<Shared>,
    sa: Option<(User, RequestInfo)>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some((user, RequestInfo::Resource(attrs))) = sa else {
        return Ok(());
    };
    let applying = *method == Method::PATCH
        && header_str(headers, header::CONTENT_TYPE).starts_with("application/apply-patch");
    if !applying || attrs.name.is_empty() || !attrs.subresource.is_empty() {
        return Ok(());
    }
    let key = Key {
        group: attrs.group.clone(),
        plural: attrs.resource.clone(),
        namespace: if attrs.resource == "namespaces" {
            String::new()
        } else {
            attrs.namespace.clone()
        },
        name: attrs.name.clone(),
    };
    if shared.lock().get(&key).is_some() {
        return Ok(());
    }
    shared
        .gate()
        .admit_create(&user, &attrs, || Policy::from_store(&shared.lock()))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let q: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let types = shared.types();
    let accept = header_str(headers, header::ACCEPT);
    match segs.as_slice() {
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": "32", "gitVersion": "v1.32.0",
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.4", "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            ));
        }
        ["healthz" | "readyz" | "livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["api"] | ["apis"] => {
            let body = resources::aggregated(&types, segs[0] == "api");
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, AGGREGATED)],
                body.to_string(),
            )
                .into_response());
        }
        ["openapi", "v3"] => {
            return Ok(json_response(
                StatusCode::OK,
                &resources::openapi_root(&types),
            ));
        }
        ["openapi", "v3", rest @ ..] => {
            let doc = resources::openapi_doc(&types, &rest.join("/")).ok_or_else(|| {
                ApiError::NotFound {
                    resource: "openapi".into(),
                    name: rest.join("/"),
                }
            })?;
            return Ok(json_response(StatusCode::OK, &doc));
        }
        ["api", version] => return gv_list(&types, "", version),
        ["apis", group, version] => return gv_list(&types, group, version),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Err(ApiError::NotFound {
                resource: "path".into(),
                name: path.into(),
            });
        }
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => (
            Some(*ns),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => {
            return Err(ApiError::NotFound {
                resource: "path".into(),
                name: path.into(),
            });
        }
    };
    let rt = types
        .iter()
        .find(|t| t.group == group && t.version == version && t.plural == plural)
        .filter(|t| t.namespaced || namespace.is_none())
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            resource: "resource".into(),
            name: plural.into(),
        })?;
    let status_only = match sub {
        None => false,
        Some("status") if rt.has_status => true,
        Some(other) => {
            return Err(ApiError::NotFound {
                resource: "subresource".into(),
                name: other.into(),
            });
        }
    };
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let strict = q.get("fieldValidation").is_some_and(|v| v == "Strict");
    let mode = |body_dry: bool| Mode {
        dry_run: dry_run || body_dry,
        strict,
    };
    let parse_body = || -> Result<Value, ApiError> {
        if header_str(headers, header::CONTENT_TYPE)
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            return protobuf::decode(body);
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    };
    match (method.clone(), name) {
        (Method::GET, Some(name)) => {
            let store = shared.lock();
            let obj = store
                .get(&write::key(&rt, namespace, name))
                .cloned()
                .ok_or_else(|| ApiError::NotFound {
                    resource: rt.qualified_plural(),
                    name: name.into(),
                })?;
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(if table::wants_table(accept) {
                json_response(StatusCode::OK, &table::table(&rt, &[obj], &rv, true))
            } else {
                json_response(StatusCode::OK, &obj)
            })
        }
        (Method::GET, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch::watch(shared, rt, namespace.map(str::to_string), &q, accept);
            }
            list(shared, &rt, namespace, &q, accept)
        }
        (Method::POST, None) if rt.kind == "SelfSubjectAccessReview" => {
            // kubectl sends this one in protobuf; only the answer matters.
            let mut review: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                       "metadata": {}, "spec": {}})
            });
            review["status"] =
                json!({"allowed": true, "reason": "the test server authorises everything"});
            Ok(json_response(StatusCode::CREATED, &review))
        }
        (Method::POST, None) => {
            let obj = parse_body()?;
            let created = write::create(&mut shared.lock(), &rt, namespace, obj, mode(false))?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_body()?;
            let key = write::key(&rt, namespace, name);
            let updated =
                write::update(&mut shared.lock(), &rt, &key, obj, status_only, mode(false))?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        (Method::PATCH, Some(name)) => {
            let patch = parse_body()?;
            let (obj, created) = write::patch(
                &mut shared.lock(),
                &rt,
                namespace,
                name,
                header_str(headers, header::CONTENT_TYPE),
                &patch,
                q.get("fieldManager").map(String::as_str),
                q.get("force").is_some_and(|f| f == "true"),
                status_only,
                mode(false),
            )?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &obj))
        }
        (Method::DELETE, Some(name)) => {
            // The body may be JSON DeleteOptions, protobuf (helm) or empty; only dryRun matters.
            let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let body_dry = opts["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"));
            let key = write::key(&rt, namespace, name);
            let deleted = write::delete(&mut shared.lock(), &rt, &key, mode(body_dry))?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn gv_list(types: &[ResourceType], group: &str, version: &str) -> Result<Response, ApiError> {
    resources::resource_list(types, group, version)
        .map(|l| json_response(StatusCode::OK, &l))
        .ok_or_else(|| ApiError::NotFound {
            resource: "groupversion".into(),
            name: format!("{group}/{version}"),
        })
}

fn list(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    namespace: Option<&str>,
    q: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let labels = Selector::parse(q.get("labelSelector").map_or("", String::as_str))?;
    let fields = Selector::parse(q.get("fieldSelector").map_or("", String::as_str))?;
    let store = shared.lock();
    let mut items = store.list(&rt.group, &rt.plural, namespace);
    if rt.group.is_empty() && rt.plural == "events" {
        items.extend(
            store
                .list("events.k8s.io", "events", namespace)
                .iter()
                .map(super::events::as_core_v1),
        );
    }
    let items: Vec<Value> = items
        .into_iter()
        .filter(|o| labels.matches_labels(o) && fields.matches_fields(o))
        .collect();
    let rv = store.rv().to_string();
    Ok(if table::wants_table(accept) {
        json_response(StatusCode::OK, &table::table(rt, &items, &rv, true))
    } else {
        json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": rv},
                "items": items,
            }),
        )
    })
}
