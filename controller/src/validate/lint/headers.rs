//! Security rules about paths and headers, the checks gixy made familiar: SB110 alias path
//! traversal, SB111 `add_header` dropped by a nested level, SB112 a client-chosen Host, SB115
//! `valid_referers none`, SB116 an origin or referer regex that matches other sites.

use std::collections::BTreeSet;

use super::index::{Ctx, Index, Item};
use super::vars;
use crate::validate::diagnostic::Diagnostic;

/// Response headers whose loss weakens a site (gixy's default set plus the newer policy headers).
const SECURITY_HEADERS: &[&str] = &[
    "cache-control",
    "content-security-policy",
    "permissions-policy",
    "referrer-policy",
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "x-xss-protection",
];

/// Runs SB110, SB111, SB112, SB115 and SB116.
pub fn check(index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    for (i, item) in index.items().iter().enumerate() {
        match (item.ctx, item.dir.name.as_str()) {
            (Ctx::Location, "alias") => alias_traversal(index, i, item, out),
            (Ctx::Http, "server") | (Ctx::Server | Ctx::Location, "location") => {
                dropped_headers(index, i, item, out)
            }
            (Ctx::Location, "if") => {
                dropped_headers(index, i, item, out);
                origin_regex(item, out);
            }
            (Ctx::Server, "if") => origin_regex(item, out),
            (_, "proxy_set_header") => host_from_client(item, out),
            (_, "return" | "rewrite") => redirect_to_http_host(item, out),
            (_, "valid_referers") => referers_none(item, out),
            _ => {}
        }
    }
}

/// SB110: `location /img { alias /data/img/; }` serves `/img../secret` from `/data/secret`.
fn alias_traversal(index: &Index<'_>, i: usize, item: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let Some((_, location)) = index.ancestors(i).next() else {
        return;
    };
    let (modifier, path) = match location.dir.args.as_slice() {
        [path] => ("", path.value.as_str()),
        [m, path] => (m.value.as_str(), path.value.as_str()),
        _ => return,
    };
    let Some(alias) = item.dir.args.first() else {
        return;
    };
    if !matches!(modifier, "" | "^~") || path.ends_with('/') || !alias.value.ends_with('/') {
        return;
    }
    out.push(Diagnostic::error(
        "SB110",
        item.file,
        item.dir.span.line,
        item.dir.span.col,
        format!(
            "alias path traversal: location \"{path}\" has no trailing slash but alias \"{}\" \
             has one, so a request for \"{path}../x\" reads \"{}../x\", outside the alias; \
             write location \"{path}/\" (or drop the alias's trailing slash)",
            alias.value, alias.value
        ),
    ));
}

/// The header names a block sets with `add_header` directly (includes inlined), lowercased.
fn own_headers<'a>(index: &'a Index<'a>, i: usize) -> Vec<(String, &'a Item<'a>)> {
    index
        .child_ids(i)
        .iter()
        .filter_map(|&c| index.get(c))
        .filter(|c| c.dir.name == "add_header")
        .filter_map(|c| {
            c.dir
                .args
                .first()
                .map(|a| (a.value.to_ascii_lowercase(), c))
        })
        .collect()
}

/// SB111: a level with its own `add_header` inherits none of the enclosing level's.
fn dropped_headers(index: &Index<'_>, i: usize, block: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let mine = own_headers(index, i);
    let Some((_, first)) = mine.first() else {
        return;
    };
    let Some((parent, parent_headers)) = index
        .ancestors(i)
        .map(|(p, _)| (p, own_headers(index, p)))
        .find(|(_, h)| !h.is_empty())
    else {
        return;
    };
    let mine: BTreeSet<&str> = mine.iter().map(|(h, _)| h.as_str()).collect();
    let dropped: BTreeSet<&str> = parent_headers
        .iter()
        .map(|(h, _)| h.as_str())
        .filter(|h| !mine.contains(h) && SECURITY_HEADERS.contains(h))
        .collect();
    if dropped.is_empty() {
        return;
    }
    let (pfile, pline) = index
        .get(parent)
        .map(|p| (p.file, p.dir.span.line))
        .unwrap_or((block.file, 0));
    out.push(Diagnostic::warning(
        "SB111",
        first.file,
        first.dir.span.line,
        first.dir.span.col,
        format!(
            "this {} sets its own add_header, so it drops every add_header of the enclosing level \
             ({pfile}:{pline}), including {}; repeat them here (an included snippet keeps both \
             levels in step)",
            block.dir.name,
            dropped.into_iter().collect::<Vec<_>>().join(", ")
        ),
    ));
}

/// SB112: the Host sent upstream comes straight from the client.
fn host_from_client(item: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let [name, value, ..] = item.dir.args.as_slice() else {
        return;
    };
    if !name.value.eq_ignore_ascii_case("host") {
        return;
    }
    let Some(var) =
        vars::names(&value.value).find(|v| v.starts_with("http_") || v.starts_with("arg_"))
    else {
        return;
    };
    out.push(Diagnostic::warning(
        "SB112",
        item.file,
        value.span.line,
        value.span.col,
        format!(
            "proxy_set_header Host ${var}: the client chooses this value unchecked (any name, \
             any port, no server_name match); use $host, which nginx validates and falls back to \
             server_name for"
        ),
    ));
}

/// SB112 in redirects: `return 301 https://$http_host...` lets the client pick the target.
fn redirect_to_http_host(item: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let target = match item.dir.name.as_str() {
        "return" => match item.dir.args.as_slice() {
            [code, url] if matches!(code.value.as_str(), "301" | "302" | "303" | "307" | "308") => {
                url
            }
            [url] => url,
            _ => return,
        },
        _ => match item.dir.args.get(1) {
            Some(url) => url,
            None => return,
        },
    };
    if !vars::names(&target.value).any(|n| n == "http_host") {
        return;
    }
    out.push(Diagnostic::warning(
        "SB112",
        item.file,
        target.span.line,
        target.span.col,
        format!(
            "{} redirects to $http_host, the Host header exactly as the client sent it; use \
             $host (validated by nginx) or a fixed name",
            item.dir.name
        ),
    ));
}

/// SB115: `valid_referers none` accepts a request with no Referer, which is any request a
/// script or a privacy setting strips it from.
fn referers_none(item: &Item<'_>, out: &mut Vec<Diagnostic>) {
    if let Some(none) = item.dir.args.iter().find(|a| a.value == "none") {
        out.push(Diagnostic::warning(
            "SB115",
            item.file,
            none.span.line,
            none.span.col,
            "valid_referers none: a request without a Referer header counts as valid, and \
             anyone can send one without it; drop `none` if the check protects anything",
        ));
    }
}

/// SB116: `if ($http_origin ~ "example.com")` also matches `https://example.com.evil.net`.
fn origin_regex(item: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let [var, op, regex] = item.dir.args.as_slice() else {
        return;
    };
    if !matches!(var.value.as_str(), "$http_origin" | "$http_referer")
        || !matches!(op.value.as_str(), "~" | "~*" | "!~" | "!~*")
    {
        return;
    }
    if let Some(problem) = origin_problem(&regex.value) {
        out.push(Diagnostic::warning(
            "SB116",
            item.file,
            regex.span.line,
            regex.span.col,
            format!(
                "{} regex \"{}\" {problem}; anchor it like \"^https://(www\\.)?example\\.com$\"",
                var.value, regex.value
            ),
        ));
    }
}

/// What makes an origin/referer regex match hosts it was not meant to, if anything.
pub fn origin_problem(regex: &str) -> Option<&'static str> {
    let Some(body) = regex.strip_prefix('^') else {
        return Some("is not anchored with ^, so it matches anywhere in another site's URL");
    };
    let host_start = body.find("://").map(|p| p + 3).unwrap_or(0);
    let host = &body[host_start..];
    // The host part ends at the first unescaped `/`, at `$`, or at the end of the regex.
    let mut terminated = false;
    let mut escaped = false;
    let mut in_class = false;
    for c in host.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            '.' if !in_class => {
                return Some(
                    "has an unescaped `.` in the host, which matches any character (and `.*` \
                     any host)",
                );
            }
            '/' | '$' if !in_class => {
                terminated = true;
                break;
            }
            _ => {}
        }
    }
    if !terminated {
        return Some(
            "does not end the host with `$` or `/`, so a longer host such as \
             example.com.evil.net also matches",
        );
    }
    None
}
