//! Rules about the URI part of `proxy_pass` (`http://app/v1/` rather than `http://app`), which
//! makes nginx replace the matched location prefix with that URI: SB121 a URI part where nginx
//! refuses one (regex or named location, `if`, `limit_except`), SB122 a prefix and a URI that
//! disagree about the trailing slash, so the rest of the path is glued on or doubled.

use super::index::{Ctx, Index, Item};
use super::vars;
use crate::validate::diagnostic::Diagnostic;

/// Runs SB121 and SB122.
pub fn check(index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    for (i, item) in index.items().iter().enumerate() {
        if item.dir.name != "proxy_pass"
            || !matches!(
                item.ctx,
                Ctx::Location | Ctx::IfInLocation | Ctx::LimitExcept
            )
        {
            continue;
        }
        let Some(arg) = item.dir.args.first() else {
            continue;
        };
        // With a variable, nginx passes the URI as written and refuses nothing.
        if arg.value.contains('$') || !arg.value.contains("://") || arg.value.contains("://unix:") {
            continue;
        }
        let (_, uri) = vars::split_url(&arg.value);
        if uri.is_empty() {
            continue;
        }
        let Some((_, location)) = index.ancestors(i).find(|(_, b)| b.dir.name == "location") else {
            continue;
        };
        let (modifier, path) = match location.dir.args.as_slice() {
            [path] => ("", path.value.as_str()),
            [m, path] => (m.value.as_str(), path.value.as_str()),
            _ => continue,
        };
        let refused = if item.ctx == Ctx::IfInLocation {
            Some("inside \"if\"")
        } else if item.ctx == Ctx::LimitExcept {
            Some("inside \"limit_except\"")
        } else if path.starts_with('@') {
            Some("in a named location")
        } else if modifier.starts_with('~') {
            Some("in a regex location")
        } else {
            None
        };
        if let Some(place) = refused {
            out.push(Diagnostic::error(
                "SB121",
                item.file,
                arg.span.line,
                arg.span.col,
                format!(
                    "proxy_pass cannot have a URI part (\"{uri}\") {place}: nginx refuses the \
                     config; write \"{}\" and rewrite the path with `rewrite ... break` if needed",
                    &arg.value[..arg.value.len() - uri.len()]
                ),
            ));
            continue;
        }
        if modifier == "=" || path.ends_with('/') == uri.ends_with('/') {
            continue;
        }
        out.push(slash_mismatch(item, arg, path, uri));
    }
}

/// SB122: nginx swaps `path` for `uri` in the request path; show what that does.
fn slash_mismatch(
    item: &Item<'_>,
    arg: &crate::validate::ast::Arg,
    path: &str,
    uri: &str,
) -> Diagnostic {
    let example = if path.ends_with('/') {
        format!("{path}x becomes {uri}x")
    } else {
        format!("{path}/x becomes {uri}/x and {path}x becomes {uri}x")
    };
    Diagnostic::warning(
        "SB122",
        item.file,
        arg.span.line,
        arg.span.col,
        format!(
            "location \"{path}\" and proxy_pass URI \"{uri}\" disagree on the trailing slash: \
             nginx replaces the prefix with the URI, so {example}; end both with `/` or neither"
        ),
    )
}
