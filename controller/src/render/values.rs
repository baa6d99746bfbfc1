//! Values for templates: `values.yaml` from the config directory, deep-merged with overrides (from
//! `spec.render.values` or `--set`). YAML is read with `serde-saphyr` into JSON values so the rest of
//! the pipeline deals with one plain data model.

use serde_json::{Map, Value};

use super::error::RenderError;

/// Deepest nesting of mappings and lists a set of values may have (a scalar is 0, `{a: 1}` is 1).
///
/// The YAML reader stops at the same depth, so this bounds what `--set` keys and library callers
/// can build: merging, cloning, dropping and handing values to templates all recurse, and a
/// `--set` key of 30,000 segments used to overflow the stack. No config needs a tenth of it.
pub const MAX_DEPTH: usize = 64;

/// How deeply `value` nests; computed without recursion, so any value can be measured.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0usize)];
    while let Some((value, level)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(list) => Box::new(list.iter()),
            _ => continue,
        };
        deepest = deepest.max(level + 1);
        pending.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

/// Refuses overrides nested deeper than [`MAX_DEPTH`], before anything recurses into them.
/// `what` names where they came from (`render.values`, a file).
pub fn check_depth(what: &str, value: &Value) -> Result<(), RenderError> {
    let found = depth(value);
    if found <= MAX_DEPTH {
        return Ok(());
    }
    Err(RenderError::Values {
        path: what.to_string(),
        line: 0,
        col: 0,
        message: format!("values nest {found} levels deep; at most {MAX_DEPTH} are allowed"),
    })
}

/// Parses a YAML values document. An empty document is an empty mapping; anything but a mapping
/// at the top is an error, since templates look values up by name.
pub fn parse_values(path: &str, text: &str) -> Result<Value, RenderError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        RenderError::Values {
            path: path.to_string(),
            line,
            col,
            message: first_line(&e.to_string()),
        }
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Err(RenderError::Values {
            path: path.to_string(),
            line: 1,
            col: 1,
            message: format!(
                "the top level must be a mapping of names to values, not {}",
                kind(&other)
            ),
        }),
    }
}

/// Merges `overrides` into `base`: mappings merge key by key, recursively; anything else in
/// `overrides` replaces what `base` had (as Helm does with `--set` and `-f`). Recurses as deep as
/// both values nest: callers bound them with [`check_depth`] (the YAML reader and
/// [`from_assignments`] already do).
pub fn merge(base: &mut Value, overrides: &Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

/// Builds an override mapping from `a.b.c=value` assignments. The value is read as YAML, so
/// `replicas=3` is a number and `name=web` a string.
pub fn from_assignments<'a>(
    assignments: impl IntoIterator<Item = &'a str>,
) -> Result<Value, RenderError> {
    let mut out = Value::Object(Map::new());
    for assignment in assignments {
        let Some((key, raw)) = assignment.split_once('=') else {
            return Err(RenderError::Values {
                path: "--set".to_string(),
                line: 0,
                col: 0,
                message: format!("{assignment:?} is not of the form key.path=value"),
            });
        };
        let value: Value = if raw.trim().is_empty() {
            Value::String(String::new())
        } else {
            serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        let segments = key.split('.').count();
        if segments + depth(&value) > MAX_DEPTH {
            return Err(RenderError::Values {
                path: "--set".to_string(),
                line: 0,
                col: 0,
                message: format!(
                    "the key {} has {segments} segments; with its value that nests deeper than \
                     the {MAX_DEPTH} levels values may have",
                    shorten(key)
                ),
            });
        }
        let mut nested = value;
        for part in key.split('.').rev() {
            if part.is_empty() {
                return Err(RenderError::Values {
                    path: "--set".to_string(),
                    line: 0,
                    col: 0,
                    message: format!("{key:?} has an empty path segment"),
                });
            }
            let mut map = Map::new();
            map.insert(part.to_string(), nested);
            nested = Value::Object(map);
        }
        merge(&mut out, &nested);
    }
    Ok(out)
}

/// A key as shown in an error: whole when short, else its start and its length.
fn shorten(key: &str) -> String {
    const SHOWN: usize = 48;
    match key.char_indices().nth(SHOWN) {
        None => format!("{key:?}"),
        Some((end, _)) => format!("{:?} ({} bytes)", format!("{}...", &key[..end]), key.len()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_deep_and_overrides_win() {
        let mut base = json!({"app": {"port": 8080, "name": "web"}, "tls": false});
        merge(&mut base, &json!({"app": {"port": 9090}, "extra": [1]}));
        assert_eq!(
            base,
            json!({"app": {"port": 9090, "name": "web"}, "tls": false, "extra": [1]})
        );
    }

    #[test]
    fn assignments_nest_and_type_values() {
        let v = from_assignments(["app.port=9000", "app.name=api", "on=true"]).unwrap();
        assert_eq!(v, json!({"app": {"port": 9000, "name": "api"}, "on": true}));
        assert!(from_assignments(["novalue"]).is_err());
        assert!(from_assignments(["a..b=1"]).is_err());
    }

    #[test]
    fn a_key_of_30000_segments_is_refused_not_a_stack_overflow() {
        let key = vec!["a"; 30_000].join(".");
        let err = from_assignments([format!("{key}=1").as_str()]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("30000 segments") && text.contains("64 levels"),
            "{text}"
        );
        assert!(text.len() < 400, "the key is shortened: {text}");
        // The deepest key allowed still works: 63 segments around a mapping of depth 1.
        let deepest = vec!["a"; 63].join(".");
        let v = from_assignments([format!("{deepest}={{b: 1}}").as_str()]).unwrap();
        assert_eq!(depth(&v), MAX_DEPTH);
        assert!(from_assignments([format!("{deepest}.c={{b: 1}}").as_str()]).is_err());
    }

    #[test]
    fn depth_counts_mappings_and_lists_without_recursion() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}], "c": 1})), 4);
        // Built by hand (not through serde_json's parser, which has its own limit) and measured on
        // a thread with the default test stack.
        let mut deep = json!(1);
        for _ in 0..10_000 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(depth(&deep), 10_000);
        assert!(check_depth("render.values", &deep).is_err());
        assert!(check_depth("render.values", &json!({"a": {"b": 1}})).is_ok());
        // Dropping it recurses: take it apart one level at a time.
        while let Value::Array(mut list) = deep {
            deep = list.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn bad_yaml_names_file_and_line() {
        let err = parse_values("values.yaml", "a: 1\nb: [unclosed\n").unwrap_err();
        match err {
            RenderError::Values { path, line, .. } => {
                assert_eq!(path, "values.yaml");
                assert!(line >= 2, "line {line}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        assert!(parse_values("values.yaml", "- 1\n- 2\n").is_err());
        assert_eq!(parse_values("values.yaml", "").unwrap(), json!({}));
    }
}
