//! Override values may fill in the config, not restructure it.
//!
//! Values from outside the config repository (`spec.render.values` of a ProxyRollout, `--set`,
//! `--values`) are spliced into templates as text, so a value holding `;`, `{` or `}` can add
//! directives or blocks: `site.listen=8080; location /leak { alias /etc/; }` adds a location. The
//! repository's templates and `values.yaml` are trusted; the overrides are not, and a template
//! that forgot `nginx_quote`/`nginx_token` should not hand their author the whole config.
//!
//! So when an override string holds a character that can change nginx's structure
//! (`; { } # " ' \`), the bundle is rendered a second time with each such string replaced by a
//! plain word, and every file that parses as nginx config in that second bundle must have the same
//! directives and blocks, in the same places, in the real one. Arguments may differ (that is what
//! values are for: a quoted `"a; b"` and a plain word are both one argument of the same
//! directive); a directive or block that only exists because of a value is refused, naming the
//! file, the line and the override keys. A template that cannot be rendered with the plain word
//! in place (it takes the value apart) cannot be checked and is refused too: fail closed.
//!
//! Pure, like the rest of rendering: values and bundles in, a verdict out.

use serde_json::Value;

use super::bundle::Bundle;
use super::error::RenderError;
use crate::validate::ast::Directive;
use crate::validate::parser::parse_file;

/// What a suspicious override string is replaced with: one bare word, no nginx syntax, no `$`.
pub(super) const PLACEHOLDER: &str = "switchback-override-value";

/// Characters that can change the structure of nginx config when spliced raw.
const STRUCTURAL: &[char] = &[';', '{', '}', '#', '"', '\'', '\\'];

/// Most override keys named in one error.
const KEYS_SHOWN: usize = 5;

/// The overrides with every string holding a structural character replaced by [`PLACEHOLDER`],
/// and the dotted keys of those strings; `None` when there is none (nothing to check).
pub(super) fn mask(overrides: &Value) -> Option<(Value, Vec<String>)> {
    let mut masked = overrides.clone();
    let mut keys = Vec::new();
    // Depth is bounded by `values::check_depth` before rendering starts.
    let mut pending: Vec<(&mut Value, String)> = vec![(&mut masked, String::new())];
    while let Some((value, key)) = pending.pop() {
        match value {
            Value::String(s) if s.contains(STRUCTURAL) => {
                *s = PLACEHOLDER.to_string();
                keys.push(key);
            }
            Value::Object(map) => {
                for (name, child) in map.iter_mut() {
                    let key = if key.is_empty() {
                        name.clone()
                    } else {
                        format!("{key}.{name}")
                    };
                    pending.push((child, key));
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter_mut().enumerate() {
                    pending.push((child, format!("{key}[{i}]")));
                }
            }
            _ => {}
        }
    }
    if keys.is_empty() {
        return None;
    }
    keys.sort();
    Some((masked, keys))
}

/// The error when the bundle cannot be rendered with the placeholders in place.
pub(super) fn uncheckable(keys: &[String], why: &RenderError) -> RenderError {
    RenderError::OverrideUncheckable {
        keys: show_keys(keys),
        why: why.to_string(),
    }
}

/// Checks that every file of `masked` that parses as nginx config has the same directives and
/// blocks in `actual`.
pub(super) fn compare(
    actual: &Bundle,
    masked: &Bundle,
    keys: &[String],
) -> Result<(), RenderError> {
    for (path, masked_bytes) in masked.files() {
        let (masked_tree, masked_error) = parse_file(path, masked_bytes);
        if masked_error.is_some() {
            continue; // not nginx config (a page, a key), or broken whatever the values
        }
        let changed = |line: u32, detail: String| RenderError::OverrideChangesStructure {
            path: path.clone(),
            line,
            keys: show_keys(keys),
            detail,
        };
        let Some(actual_bytes) = actual.get(path) else {
            return Err(changed(
                0,
                "the file is only there without the values".to_string(),
            ));
        };
        let (actual_tree, actual_error) = parse_file(path, actual_bytes);
        if let Some(e) = actual_error {
            return Err(changed(
                e.line,
                format!("it parses without the values, not with them: {}", e.message),
            ));
        }
        if let Some((line, detail)) = first_difference(&actual_tree, &masked_tree) {
            return Err(changed(line, detail));
        }
    }
    Ok(())
}

/// Where the directive trees first differ in names or blocks, as (line in `actual`, what).
/// Recursion is bounded by the parser's own nesting limit.
fn first_difference(actual: &[Directive], masked: &[Directive]) -> Option<(u32, String)> {
    for (i, a) in actual.iter().enumerate() {
        let Some(m) = masked.get(i) else {
            return Some((
                a.span.line,
                format!("`{}` is there only because of the values", a.name),
            ));
        };
        if a.name != m.name {
            return Some((
                a.span.line,
                format!("`{}` where the template alone has `{}`", a.name, m.name),
            ));
        }
        match (&a.block, &m.block) {
            (Some(ab), Some(mb)) => {
                if let Some(found) = first_difference(ab, mb) {
                    return Some(found);
                }
            }
            (None, None) => {}
            _ => {
                return Some((
                    a.span.line,
                    format!("`{}` gains or loses a block because of the values", a.name),
                ));
            }
        }
    }
    masked.get(actual.len()).map(|m| {
        let line = actual.last().map_or(1, |a| a.span.line);
        (
            line,
            format!("`{}` disappears because of the values", m.name),
        )
    })
}

fn show_keys(keys: &[String]) -> String {
    let mut shown = keys
        .iter()
        .take(KEYS_SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > KEYS_SHOWN {
        shown.push_str(&format!(" and {} more", keys.len() - KEYS_SHOWN));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_strings_with_structural_characters_are_masked() {
        assert_eq!(
            mask(&json!({"a": "plain word", "b": 8080, "c": "$host"})),
            None
        );
        let (masked, keys) = mask(&json!({
            "site": {"listen": "8080; x", "name": "ok"},
            "list": ["a", "b{"],
            "csp": "default-src 'self'"
        }))
        .unwrap();
        assert_eq!(keys, vec!["csp", "list[1]", "site.listen"]);
        assert_eq!(
            masked,
            json!({
                "site": {"listen": PLACEHOLDER, "name": "ok"},
                "list": ["a", PLACEHOLDER],
                "csp": PLACEHOLDER
            })
        );
    }

    fn one(path: &str, text: &str) -> Bundle {
        Bundle::new([(path.to_string(), text.as_bytes().to_vec())].into())
    }

    #[test]
    fn arguments_may_differ_directives_may_not() {
        let keys = vec!["v".to_string()];
        let masked = one("a.conf", "server { listen x; return 200 \"x\"; }\n");
        let same = one(
            "a.conf",
            "server { listen 80 default; return 200 \"a; b }\"; }\n",
        );
        assert_eq!(compare(&same, &masked, &keys), Ok(()));
        let added = one(
            "a.conf",
            "server { listen 80; location /leak { alias /etc/; } return 200 \"x\"; }\n",
        );
        let err = compare(&added, &masked, &keys).unwrap_err();
        assert!(err.to_string().contains("`location`"), "{err}");
        let broken = one("a.conf", "server { listen 80 { ; return 200 \"x\"; }\n");
        assert!(compare(&broken, &masked, &keys).is_err());
        // A file that is not nginx config is not compared.
        let page = one("index.html", "<p>x</p>\n");
        assert_eq!(
            compare(&one("index.html", "<p>a; b {</p>\n"), &page, &keys),
            Ok(())
        );
    }
}
