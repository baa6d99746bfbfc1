//! The writing verbs: create, update (PUT), patch (all four kinds) and delete, with the
//! semantics kubectl and controllers rely on (generation, status subresource, finalizers,
//! optimistic concurrency, dry run).

use serde_json::{Value, json};

use super::error::ApiError;
use super::patch;
use super::resources::ResourceType;
use super::schema;
use super::ssa;
use super::store::{Key, Store};

/// How a write is carried out: rehearsed (`dryRun=All`) or stored, and whether undeclared
/// fields of a custom resource are an error (`fieldValidation=Strict`) or silently pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Compute and validate the result, store nothing, emit no event.
    pub dry_run: bool,
    /// Reject fields a CRD schema does not declare instead of pruning them.
    pub strict: bool,
}

impl Mode {
    /// Store the result, prune unknown fields.
    pub const COMMIT: Mode = Mode {
        dry_run: false,
        strict: false,
    };
}

/// Now, to the second, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// splitmix64: spreads a counter and the clock over all bits so uids look like uuids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn uid(store: &Store) -> String {
    let t = jiff::Timestamp::now().as_nanosecond() as u64;
    let n =
        (u128::from(mix(t ^ store.rv())) << 64) | u128::from(mix(store.rv() ^ t.rotate_left(17)));
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn suffix(store: &Store) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n =
        jiff::Timestamp::now().as_nanosecond() as u64 ^ store.rv().wrapping_mul(2_654_435_761);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The key an object of `rt` named `name` is stored under.
pub fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
    Key {
        group: rt.group.clone(),
        plural: rt.plural.clone(),
        namespace: namespace.unwrap_or_default().to_string(),
        name: name.to_string(),
    }
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: rt.qualified_plural(),
        name: name.to_string(),
    }
}

/// Kind-specific normalisation and validation shared by every write.
fn normalise(rt: &ResourceType, obj: &mut Value, strict: bool) -> Result<(), ApiError> {
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => {
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64(s.as_bytes()));
                }
            }
            if obj["type"].as_str().is_none_or(str::is_empty) {
                obj["type"] = json!("Opaque");
            }
        }
        ("", "Namespace") if obj["status"]["phase"].is_null() => {
            obj["status"] = json!({"phase": "Active"});
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let spec = &obj["spec"];
            if spec["group"].as_str().is_none_or(str::is_empty)
                || spec["names"]["plural"].as_str().is_none_or(str::is_empty)
                || spec["names"]["kind"].as_str().is_none_or(str::is_empty)
            {
                return Err(invalid(
                    rt,
                    obj,
                    "spec.names",
                    "Required value: group, names.plural and names.kind",
                ));
            }
            let stored: Vec<Value> = spec["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect();
            let t = now();
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"],
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": t},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": t},
                ],
            });
        }
        _ => {}
    }
    if let Some(schema) = &rt.schema {
        let unknown = schema::prune(schema, obj);
        if strict && let Some(first) = unknown.first() {
            return Err(ApiError::BadRequest(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: unknown field \"{first}\"",
                kind = rt.kind,
                version = rt.version,
            )));
        }
        if let Some((field, detail)) = schema::validate(schema, obj) {
            return Err(invalid(rt, obj, &field, &detail));
        }
    }
    Ok(())
}

fn invalid(rt: &ResourceType, obj: &Value, field: &str, detail: &str) -> ApiError {
    ApiError::Invalid {
        kind: rt.qualified_kind(),
        name: obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        field: field.to_string(),
        detail: detail.to_string(),
    }
}

/// POST: names (generateName), uid, creationTimestamp, generation, then stores.
pub fn create(
    store: &mut Store,
    rt: &ResourceType,
    namespace: Option<&str>,
    mut obj: Value,
    mode: Mode,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    if rt.namespaced && namespace.is_none() {
        return Err(ApiError::BadRequest(format!(
            "{} are namespaced: POST to .../namespaces/<ns>/{}",
            rt.plural, rt.plural
        )));
    }
    if !rt.namespaced
        && let Some(meta) = obj["metadata"].as_object_mut()
    {
        // Cluster-scoped objects have no namespace, whatever the body says.
        meta.remove("namespace");
    }
    if let Some(ns) = namespace {
        match obj["metadata"]["namespace"].as_str() {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
        let ns_key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        if store.get(&ns_key).is_none() {
            return Err(ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns.into(),
            });
        }
    }
    let name = match obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match obj["metadata"]["generateName"].as_str() {
            Some(prefix) => format!("{prefix}{}", suffix(store)),
            None => {
                return Err(invalid(
                    rt,
                    &obj,
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        },
    };
    obj["metadata"]["name"] = json!(name);
    let key = key(rt, namespace, &name);
    if store.get(&key).is_some() {
        return Err(ApiError::AlreadyExists {
            resource: rt.qualified_plural(),
            name,
        });
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
    meta.remove("deletionTimestamp");
    meta.remove("resourceVersion");
    meta.insert("uid".into(), json!(uid(store)));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    normalise(rt, &mut obj, mode.strict)?;
    Ok(if mode.dry_run {
        obj
    } else {
        store.put(key, obj)
    })
}

fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// PUT (and the tail of every PATCH): optimistic concurrency on `resourceVersion`, immutable
/// metadata kept, status kept on main writes (only status taken on `/status` writes),
/// generation bumped on spec changes, and removal once a deleting object has no finalizers.
pub fn update(
    store: &mut Store,
    rt: &ResourceType,
    key: &Key,
    new: Value,
    status_only: bool,
    mode: Mode,
) -> Result<Value, ApiError> {
    let existing = store
        .get(key)
        .cloned()
        .ok_or_else(|| not_found(rt, &key.name))?;
    if !new.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let sent_rv = new["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if !sent_rv.is_empty()
        && sent_rv
            != existing["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
    {
        return Err(ApiError::Conflict {
            resource: rt.qualified_plural(),
            name: key.name.clone(),
        });
    }
    if let Some(name) = new["metadata"]["name"].as_str()
        && name != key.name
    {
        return Err(invalid(
            rt,
            &new,
            "metadata.name",
            "Invalid value: the name of the object does not match the name on the URL",
        ));
    }
    let mut result = if status_only {
        let mut r = existing.clone();
        r["status"] = new["status"].clone();
        // A `/status` apply records what its manager now owns; without it the next apply
        // cannot tell which fields the manager dropped, and those would linger (an old
        // incident's `restoredAt` beside a new incident's commit).
        if let Some(fields) = new["metadata"].get("managedFields") {
            r["metadata"]["managedFields"] = fields.clone();
        }
        r
    } else {
        let mut r = new;
        if rt.has_status {
            r["status"] = existing["status"].clone();
        }
        for k in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
            "deletionTimestamp",
        ] {
            match existing["metadata"].get(k) {
                Some(v) => r["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = r["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        r
    };
    if let Some(m) = result.as_object_mut()
        && m.get("status").is_some_and(Value::is_null)
    {
        m.remove("status");
    }
    if spec_part(&result) != spec_part(&existing) {
        let g = existing["metadata"]["generation"].as_i64().unwrap_or(0);
        result["metadata"]["generation"] = json!(g + 1);
    }
    if rt.kind == "CustomResourceDefinition" {
        result["status"] = Value::Null;
    }
    normalise(rt, &mut result, mode.strict)?;
    if rt.kind == "CustomResourceDefinition" && status_only {
        result["status"] = existing["status"].clone();
    }
    result["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
    let finished = !result["metadata"]["deletionTimestamp"].is_null()
        && result["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
    if mode.dry_run {
        return Ok(result);
    }
    if finished {
        return Ok(store
            .remove_cascading(key, &now())
            .map(|_| result.clone())
            .unwrap_or(result));
    }
    if result == existing {
        return Ok(existing);
    }
    Ok(store.put(key.clone(), result))
}

/// PATCH in any of the four content types; returns the result and whether it created the
/// object (server-side apply of a missing object answers 201).
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &mut Store,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    content_type: &str,
    body: &Value,
    field_manager: Option<&str>,
    force: bool,
    status_only: bool,
    mode: Mode,
) -> Result<(Value, bool), ApiError> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    let key = key(rt, namespace, name);
    let existing = store.get(&key).cloned();
    if ct == "application/apply-patch+yaml" {
        let manager = field_manager.filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::BadRequest(
                "PATCH, application/apply-patch+yaml requires a non-empty fieldManager".into(),
            )
        })?;
        let merged = ssa::apply(
            existing.as_ref(),
            body,
            manager,
            &rt.api_version(),
            force,
            status_only,
            rt.has_status,
        )?;
        let Some(_) = existing else {
            let mut obj = merged;
            obj["metadata"]["name"] = json!(name);
            return create(store, rt, namespace, obj, mode).map(|o| (o, true));
        };
        return update(store, rt, &key, merged, status_only, mode).map(|o| (o, false));
    }
    let existing = existing.ok_or_else(|| not_found(rt, name))?;
    let mut patched = existing.clone();
    match ct {
        "application/merge-patch+json" => patch::merge(&mut patched, body),
        "application/json-patch+json" => patch::json_patch(&mut patched, body)?,
        "application/strategic-merge-patch+json" if !rt.custom => {
            patch::strategic(&mut patched, body)
        }
        _ => {
            let accepted = if rt.custom {
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            } else {
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
            };
            return Err(ApiError::UnsupportedMediaType(accepted.into()));
        }
    }
    update(store, rt, &key, patched, status_only, mode).map(|o| (o, false))
}

/// DELETE: with finalizers, marks the object (deletionTimestamp) and keeps it; otherwise
/// removes it. Either way the reply carries the object.
pub fn delete(
    store: &mut Store,
    rt: &ResourceType,
    key: &Key,
    mode: Mode,
) -> Result<Value, ApiError> {
    let existing = store
        .get(key)
        .cloned()
        .ok_or_else(|| not_found(rt, &key.name))?;
    if mode.dry_run {
        return Ok(existing);
    }
    let has_finalizers = existing["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if existing["metadata"]["deletionTimestamp"].is_null() {
            let mut marked = existing;
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return Ok(store.put(key.clone(), marked));
        }
        return Ok(existing);
    }
    let doomed: Vec<Key> = match rt.kind.as_str() {
        "Namespace" => store.keys_in_namespace(&key.name),
        "CustomResourceDefinition" => {
            let spec = &existing["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            let plural = spec["names"]["plural"].as_str().unwrap_or_default();
            store.keys_of(group, plural)
        }
        _ => Vec::new(),
    };
    for k in doomed {
        store.remove(&k);
    }
    Ok(store.remove_cascading(key, &now()).unwrap_or(existing))
}
