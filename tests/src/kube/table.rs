//! `meta.k8s.io/v1` Table responses for `kubectl get` (Accept `as=Table`): NAME and AGE, plus a
//! CRD's additionalPrinterColumns, so custom resources print the columns their authors chose.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// Human age like kubectl prints it: `45s`, `12m`, `3h`, `2d`.
pub fn age(created: &str) -> String {
    let Ok(ts) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".to_string();
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Evaluates the simple JSONPath forms printer columns use: `.a.b`, `.a[0].b` and
/// `.status.conditions[?(@.type=="Ready")].status`.
pub fn json_path(object: &Value, path: &str) -> Value {
    let mut cur = object.clone();
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (field, tail) = rest.split_at(end);
        if !field.is_empty() {
            cur = cur.get(field).cloned().unwrap_or(Value::Null);
        }
        rest = tail;
        if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else {
                return Value::Null;
            };
            let inner = &r[..close];
            rest = &r[close + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((k, want)) = filter.split_once("==") else {
                    return Value::Null;
                };
                let want = want.trim_matches(['"', '\'']);
                cur = cur
                    .as_array()
                    .and_then(|a| a.iter().find(|e| e[k].as_str() == Some(want)).cloned())
                    .unwrap_or(Value::Null);
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = cur.get(i).cloned().unwrap_or(Value::Null);
            }
        }
        rest = rest.trim_start_matches('.');
    }
    cur
}

fn columns(t: &ResourceType) -> Vec<Value> {
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    let mut has_age = false;
    for c in &t.printer_columns {
        if c["jsonPath"].as_str() == Some(".metadata.creationTimestamp") {
            has_age = true;
        }
        cols.push(json!({
            "name": c["name"], "type": c["type"].as_str().unwrap_or("string"),
            "format": c["format"].as_str().unwrap_or(""),
            "description": c["description"].as_str().unwrap_or(""),
            "priority": c["priority"].as_i64().unwrap_or(0),
        }));
    }
    if !has_age {
        cols.push(json!({"name": "Age", "type": "string", "format": "",
            "description": "Time since creation", "priority": 0}));
    }
    cols
}

fn row(t: &ResourceType, object: &Value) -> Value {
    let mut cells = vec![object["metadata"]["name"].clone()];
    let mut has_age = false;
    for c in &t.printer_columns {
        let path = c["jsonPath"].as_str().unwrap_or_default();
        if path == ".metadata.creationTimestamp" {
            has_age = true;
            cells.push(json!(age(object["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default())));
        } else {
            cells.push(json_path(object, path));
        }
    }
    if !has_age {
        cells.push(json!(age(object["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default())));
    }
    json!({
        "cells": cells,
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": object["metadata"]},
    })
}

/// A Table of `objects`; `with_columns` is false for watch events, whose rows reuse the
/// list's column definitions.
pub fn table(t: &ResourceType, objects: &[Value], rv: &str, with_columns: bool) -> Value {
    let mut out = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "rows": objects.iter().map(|o| row(t, o)).collect::<Vec<_>>(),
    });
    if with_columns {
        out["columnDefinitions"] = json!(columns(t));
    }
    out
}
