//! Server-side apply with field ownership good enough for kubectl, helm and one-manager
//! controllers: each Apply manager owns the leaf paths it last applied (recorded as
//! `fieldsV1`); a field it stops applying is removed unless someone else owns it; applying a
//! different value to a field another Apply manager owns is a 409 conflict unless `force`.
//! Lists are owned atomically (no per-item ownership) and Update managers own nothing.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::patch;

type Path = Vec<String>;

fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The paths an applied configuration sets, without identity and bookkeeping fields; only
/// `status` for a `/status` apply, everything but `status` otherwise when status is separate.
fn applied_paths(applied: &Value, status_only: bool, separate_status: bool) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(m) = applied.as_object() else {
        return out;
    };
    for (k, v) in m {
        let keep = match k.as_str() {
            "apiVersion" | "kind" => false,
            "status" => status_only || !separate_status,
            _ => !status_only,
        };
        if !keep {
            continue;
        }
        if k == "metadata" {
            for sub in ["labels", "annotations", "finalizers"] {
                if let Some(x) = v.get(sub) {
                    leaves(x, &mut vec![k.clone(), sub.to_string()], &mut out);
                }
            }
        } else {
            leaves(v, &mut vec![k.clone()], &mut out);
        }
    }
    out
}

fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .as_object_mut()
                .map(|m| m.entry(format!("f:{seg}")).or_insert_with(|| json!({})))
                .unwrap_or_else(|| unreachable!("fieldsV1 nodes are objects"));
        }
    }
    root
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in m {
        if let Some(seg) = k.strip_prefix("f:") {
            prefix.push(seg.to_string());
            from_fields_v1(child, prefix, out);
            prefix.pop();
        }
    }
}

fn get<'a>(v: &'a Value, p: &Path) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, seg| cur.get(seg))
}

/// Removes the field at `p` and the maps that held only it, as the API server does: nobody
/// owns a map left empty by a dropped field (an applied `{}` is put back by the merge after).
fn remove(v: &mut Value, p: &[String]) {
    let Some((first, rest)) = p.split_first() else {
        return;
    };
    let Some(m) = v.as_object_mut() else {
        return;
    };
    if !rest.is_empty() {
        match m.get_mut(first) {
            Some(child) => remove(child, rest),
            None => return,
        }
        if !m
            .get(first)
            .is_some_and(|c| c.as_object().is_some_and(Map::is_empty))
        {
            return;
        }
    }
    m.remove(first);
}

fn owned(entry: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    from_fields_v1(&entry["fieldsV1"], &mut Vec::new(), &mut out);
    out
}

/// Applies `applied` for `manager` onto `live` (or a new object) and returns the result with
/// updated `managedFields`, or a 409 listing the conflicting fields when `force` is false.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    status_only: bool,
    separate_status: bool,
) -> Result<Value, ApiError> {
    let subresource = if status_only { "status" } else { "" };
    let mine = |e: &Value| {
        e["manager"] == json!(manager)
            && e["operation"] == json!("Apply")
            && e["subresource"].as_str().unwrap_or_default() == subresource
    };
    let new_paths = applied_paths(applied, status_only, separate_status);
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Value> = result["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let old_paths = entries
        .iter()
        .find(|e| mine(e))
        .map(owned)
        .unwrap_or_default();

    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in entries
        .iter_mut()
        .filter(|e| !mine(e) && e["operation"] == json!("Apply"))
    {
        let theirs = owned(e);
        let clashing: Vec<&Path> = theirs
            .iter()
            .filter(|p| new_paths.contains(*p) && get(&result, p) != get(applied, p))
            .collect();
        if clashing.is_empty() {
            continue;
        }
        if force {
            let kept: BTreeSet<Path> = theirs
                .iter()
                .filter(|p| !clashing.contains(p))
                .cloned()
                .collect();
            e["fieldsV1"] = to_fields_v1(&kept);
        } else {
            let who = e["manager"].as_str().unwrap_or_default().to_string();
            conflicts.extend(
                clashing
                    .iter()
                    .map(|p| (who.clone(), format!(".{}", p.join(".")))),
            );
        }
    }
    if !conflicts.is_empty() {
        let list: Vec<String> = conflicts
            .iter()
            .map(|(who, path)| format!("conflict with \"{who}\": {path}"))
            .collect();
        let n = conflicts.len();
        let s = if n == 1 { "" } else { "s" };
        return Err(ApiError::ApplyConflict(format!(
            "Apply failed with {n} conflict{s}: {}",
            list.join("\n")
        )));
    }

    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| !mine(e))
        .flat_map(owned)
        .collect();
    for dropped in old_paths.difference(&new_paths) {
        if !others.contains(dropped) {
            remove(&mut result, dropped);
        }
    }
    let mut body = applied.clone();
    if let Some(m) = body["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    patch::apply(&mut result, &body);
    entries.retain(|e| !mine(e));
    let mut entry = Map::new();
    entry.insert("manager".into(), json!(manager));
    entry.insert("operation".into(), json!("Apply"));
    entry.insert("apiVersion".into(), json!(api_version));
    entry.insert("time".into(), json!(super::write::now()));
    entry.insert("fieldsType".into(), json!("FieldsV1"));
    entry.insert("fieldsV1".into(), to_fields_v1(&new_paths));
    if status_only {
        entry.insert("subresource".into(), json!("status"));
    }
    entries.push(Value::Object(entry));
    result["metadata"]["managedFields"] = json!(entries);
    Ok(result)
}
