//! Where `switchback parse` and crossplane disagree: the crossplane and real-corpus tests both
//! report the first differing path rather than two pages of JSON.

use serde_json::Value;

/// The first place where two JSON values differ, as a path and both values.
pub fn first_diff(ours: &Value, theirs: &Value, at: &str) -> Option<String> {
    match (ours, theirs) {
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if let Some(d) = first_diff(x, y, &format!("{at}[{i}]")) {
                    return Some(d);
                }
            }
            (a.len() != b.len())
                .then(|| format!("{at}: {} items, crossplane has {}", a.len(), b.len()))
        }
        (Value::Object(a), Value::Object(b)) => {
            let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
            if ka != kb {
                return Some(format!("{at}: keys {ka:?}, crossplane has {kb:?}"));
            }
            a.iter()
                .find_map(|(k, v)| first_diff(v, &b[k], &format!("{at}.{k}")))
        }
        _ => (ours != theirs).then(|| format!("{at}: {ours}, crossplane has {theirs}")),
    }
}
