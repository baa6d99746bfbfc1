//! Validation of custom resources against their CRD's `openAPIV3Schema`: types, required,
//! enum, minimum/maximum, minLength/maxLength, pattern, items and properties.
//! `x-kubernetes-validations` (CEL) are not checked.

use serde_json::Value;

/// The first violation: the field path (`spec.replicas`) and a message worded like the real
/// API server's, so tests can assert on what users would see.
pub fn validate(schema: &Value, object: &Value) -> Option<(String, String)> {
    let props = schema["properties"].as_object()?;
    for (name, sub) in props {
        if matches!(name.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        if let Some(v) = object.get(name)
            && let Some(err) = check(sub, v, name)
        {
            return Some(err);
        }
    }
    required(schema, object, "")
}

fn required(schema: &Value, object: &Value, path: &str) -> Option<(String, String)> {
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap_or_default();
        if object.get(r).is_none_or(Value::is_null) {
            let field = if path.is_empty() {
                r.to_string()
            } else {
                format!("{path}.{r}")
            };
            return Some((field, "Required value".to_string()));
        }
    }
    None
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, v: &Value, path: &str) -> Option<(String, String)> {
    let invalid = |msg: String| Some((path.to_string(), format!("Invalid value: {v}: {msg}")));
    if let Some(t) = schema["type"].as_str() {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer");
        let nullable = v.is_null() && schema["nullable"].as_bool() == Some(true);
        if !(ok || nullable) {
            return Some((
                path.to_string(),
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""
                ),
            ));
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        return Some((
            path.to_string(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    if let (Some(n), Some(min)) = (v.as_f64(), schema["minimum"].as_f64())
        && n < min
    {
        return invalid(format!(
            "{path} in body should be greater than or equal to {min}"
        ));
    }
    if let (Some(n), Some(max)) = (v.as_f64(), schema["maximum"].as_f64())
        && n > max
    {
        return invalid(format!(
            "{path} in body should be less than or equal to {max}"
        ));
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64().filter(|m| len < *m) {
            return invalid(format!(
                "{path} in body should be at least {min} chars long"
            ));
        }
        if let Some(max) = schema["maxLength"].as_u64().filter(|m| len > *m) {
            return invalid(format!("{path} in body should be at most {max} chars long"));
        }
        // The API server's patterns are Go RE2; the regex crate's syntax is the same for the
        // patterns CRDs use. A pattern that does not compile is not checked (the real server
        // refuses such a CRD when it is created).
        if let Some(pattern) = schema["pattern"].as_str()
            && let Ok(re) = regex::Regex::new(pattern)
            && !re.is_match(s)
        {
            return invalid(format!("{path} in body should match '{pattern}'"));
        }
    }
    match v {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, sub) in props {
                    if let Some(child) = map.get(k)
                        && let Some(err) = check(sub, child, &format!("{path}.{k}"))
                    {
                        return Some(err);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in map {
                    if let Some(err) = check(extra, child, &format!("{path}.{k}")) {
                        return Some(err);
                    }
                }
            }
            required(schema, v, path)
        }
        Value::Array(items) => {
            let sub = schema.get("items")?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| check(sub, item, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// Prunes fields the schema does not declare (as the API server does for custom resources)
/// and returns their paths, so `fieldValidation=Strict` can reject them instead.
pub fn prune(schema: &Value, object: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_at(schema, object, "", &mut unknown, true);
    unknown
}

fn prune_at(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>, root: bool) {
    if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true) {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && extra.is_none() {
                return;
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(extra);
                match sub {
                    Some(sub) => {
                        if let Some(child) = map.get_mut(&k) {
                            prune_at(sub, child, &join(&k), unknown, false);
                        }
                    }
                    None => {
                        map.remove(&k);
                        unknown.push(join(&k));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(sub, item, &format!("{path}[{i}]"), unknown, false);
                }
            }
        }
        _ => {}
    }
}
