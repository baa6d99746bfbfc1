//! crossplane's `--combine`: one config whose includes are replaced by the statements of the files
//! they name, a port of `_combine_parsed_configs` working on the per-file JSON.

use serde_json::{Value, json};

/// Includes nested deeper than this are not inlined further. crossplane has no guard and dies of
/// Python's recursion limit on an include cycle; Switchback stops at the cycle instead.
const MAX_INLINE_DEPTH: usize = 64;

/// Turns crossplane's per-file payload into its combined payload: the first file's statements with
/// every `include` that has `includes` replaced by those files' statements (recursively, a file
/// as often as it is included), every file's errors in file order, and the top-level status and
/// errors unchanged.
pub(super) fn combine(payload: Value) -> Value {
    let configs = payload["config"].as_array().cloned().unwrap_or_default();
    let mut errors = Vec::new();
    let mut status = "ok";
    for c in &configs {
        errors.extend(c["errors"].as_array().cloned().unwrap_or_default());
        if c["status"] == "failed" {
            status = "failed";
        }
    }
    let first = configs.first().cloned().unwrap_or(Value::Null);
    let mut on_path = vec![0];
    let parsed = inline(
        &configs,
        first["parsed"].as_array().map_or(&[][..], Vec::as_slice),
        &mut on_path,
    );
    json!({
        "status": payload["status"],
        "errors": payload["errors"],
        "config": [{
            "file": first["file"],
            "status": status,
            "errors": errors,
            "parsed": parsed,
        }],
    })
}

/// `_perform_includes`: statements with blocks inlined, includes replaced by the included files.
/// `on_path` holds the files being inlined, so a cycle ends instead of recursing forever.
fn inline(configs: &[Value], stmts: &[Value], on_path: &mut Vec<usize>) -> Vec<Value> {
    let mut out = Vec::with_capacity(stmts.len());
    for stmt in stmts {
        let mut stmt = stmt.clone();
        if let Some(block) = stmt.get("block").and_then(Value::as_array) {
            let inner = inline(configs, &block.clone(), on_path);
            stmt["block"] = Value::Array(inner);
        }
        let Some(includes) = stmt.get("includes").and_then(Value::as_array) else {
            out.push(stmt);
            continue;
        };
        for index in includes.iter().filter_map(Value::as_u64) {
            let Ok(index) = usize::try_from(index) else {
                continue;
            };
            if on_path.contains(&index) || on_path.len() >= MAX_INLINE_DEPTH {
                continue;
            }
            let Some(parsed) = configs.get(index).and_then(|c| c["parsed"].as_array()) else {
                continue;
            };
            on_path.push(index);
            out.extend(inline(configs, parsed, on_path));
            on_path.pop();
        }
    }
    out
}
