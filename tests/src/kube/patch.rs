//! Patch formats kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic
//! merge (treated as merge, with lists of named objects merged by name) and server-side apply.

use serde_json::Value;

use super::error::ApiError;

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Strategic merge for the fields this server's clients use: like [`merge`], but `$`-directives
/// are dropped and lists of objects that all carry a merge key (`name`, `type`) merge by it.
pub fn strategic(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    strategic(existing, v);
                } else {
                    let mut fresh = Value::Null;
                    strategic(&mut fresh, v);
                    t.insert(k.clone(), fresh);
                }
            }
        }
        (t @ Value::Array(_), Value::Array(p)) => merge_list(t, p),
        (t, Value::Object(p)) => {
            *t = Value::Object(Default::default());
            strategic(t, &Value::Object(p.clone()));
        }
        (t, p) => *t = p.clone(),
    }
}

fn list_key(items: &[Value]) -> Option<&'static str> {
    ["name", "type", "containerPort"].into_iter().find(|key| {
        !items.is_empty()
            && items
                .iter()
                .all(|i| i.get(*key).is_some_and(|v| !v.is_null()))
    })
}

fn merge_list(target: &mut Value, patch: &[Value]) {
    let Value::Array(t) = target else { return };
    match list_key(t).filter(|k| patch.iter().all(|i| i.get(*k).is_some())) {
        Some(key) => {
            for item in patch {
                match t.iter_mut().find(|e| e.get(key) == item.get(key)) {
                    Some(existing) => strategic(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        None => *t = patch.to_vec(),
    }
}

/// Server-side apply as a recursive merge of the applied configuration into the live object
/// (lists of keyed objects merge by key). Field ownership is not tracked.
pub fn apply(target: &mut Value, applied: &Value) {
    strategic(target, applied);
}

fn pointer_parts(path: &str) -> Result<Vec<String>, ApiError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| ApiError::BadRequest(format!("invalid JSON pointer {path:?}")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, ApiError> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| ApiError::BadRequest(format!("path segment {p:?} does not exist")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), ApiError> {
    let parts = pointer_parts(path)?;
    let Some((last, init)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(ApiError::BadRequest(format!(
                    "replace operation does not apply: doc is missing key: {path}"
                )));
            }
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("bad array index in {path}")))?;
                if replace && i < a.len() {
                    a[i] = value;
                } else if !replace && i <= a.len() {
                    a.insert(i, value);
                } else {
                    return Err(ApiError::BadRequest(format!(
                        "index out of range in {path}"
                    )));
                }
            }
        }
        _ => return Err(ApiError::BadRequest(format!("cannot add at {path}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let parts = pointer_parts(path)?;
    let Some((last, init)) = parts.split_last() else {
        return Err(ApiError::BadRequest("cannot remove the root".to_string()));
    };
    let missing = || {
        ApiError::BadRequest(format!(
            "remove operation does not apply: doc is missing path: {path}"
        ))
    };
    match parent(doc, init)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// RFC 6902: add, remove, replace, move, copy and test (a `test` of `null` passes on a missing path).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("a JSON patch must be an array".to_string()))?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op["op"].as_str().unwrap_or_default() {
            "add" => add(doc, path, value, false)?,
            "replace" => add(doc, path, value, true)?,
            "remove" => {
                remove(doc, path)?;
            }
            "move" => {
                let from = op["from"].as_str().unwrap_or_default();
                let v = remove(doc, from)?;
                add(doc, path, v, false)?;
            }
            "copy" => {
                let from = op["from"].as_str().unwrap_or_default();
                let v = doc.pointer(from).cloned().ok_or_else(|| {
                    ApiError::BadRequest(format!("copy from a missing path {from}"))
                })?;
                add(doc, path, v, false)?;
            }
            "test" => {
                let actual = doc.pointer(path).cloned().unwrap_or(Value::Null);
                if actual != value {
                    return Err(ApiError::BadRequest(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown JSON patch op {other:?}"
                )));
            }
        }
    }
    Ok(())
}
