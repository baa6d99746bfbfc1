//! Rules about request data flowing where it can do harm: SB113 a `proxy_pass` whose scheme or host
//! the client picks (server-side request forgery), SB114 a decoded URI or a URI capture, which can
//! hold CR/LF (`%0d%0a`), written into a response or upstream header (HTTP response splitting).

use super::index::{Ctx, Index, Item};
use super::vars::{self, Assignments};
use crate::validate::diagnostic::Diagnostic;

/// Runs SB113 and SB114.
pub fn check<'a>(index: &Index<'a>, vars: &Assignments<'a>, out: &mut Vec<Diagnostic>) {
    for (i, item) in index.items().iter().enumerate() {
        if !matches!(
            item.ctx,
            Ctx::Server | Ctx::Location | Ctx::IfInServer | Ctx::IfInLocation | Ctx::LimitExcept
        ) {
            continue;
        }
        match item.dir.name.as_str() {
            "proxy_pass" => {
                ssrf(index, vars, i, item, out);
                splitting(index, vars, i, item, 0, out);
            }
            "add_header" | "proxy_set_header" => splitting(index, vars, i, item, 1, out),
            "rewrite" if is_redirect(item) => splitting(index, vars, i, item, 1, out),
            "return" => {
                let redirect = matches!(
                    item.dir.args.first().map(|a| a.value.as_str()),
                    Some("301" | "302" | "303" | "307" | "308")
                ) || item.dir.args.len() == 1;
                if redirect {
                    let at = item.dir.args.len() - 1;
                    splitting(index, vars, i, item, at, out);
                }
            }
            _ => {}
        }
    }
}

/// Whether a `rewrite` answers with a redirect (its replacement becomes a `Location` header)
/// rather than changing the URI inside nginx.
fn is_redirect(item: &Item<'_>) -> bool {
    let args = &item.dir.args;
    args.get(1).is_some_and(|r| {
        ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| r.value.starts_with(p))
    }) || args
        .get(2)
        .is_some_and(|f| matches!(f.value.as_str(), "redirect" | "permanent"))
}

/// Whether the location around item `i` is `internal` (only reachable by nginx's own redirects,
/// so the client does not pick its variables directly).
fn in_internal_location(index: &Index<'_>, i: usize) -> bool {
    index
        .ancestors(i)
        .find(|(_, b)| b.dir.name == "location")
        .is_some_and(|(l, loc)| {
            loc.dir
                .args
                .first()
                .is_some_and(|a| a.value.starts_with('@'))
                || index
                    .child_ids(l)
                    .iter()
                    .filter_map(|&c| index.get(c))
                    .any(|c| c.dir.name == "internal")
        })
}

/// SB113: a client-controlled variable in the scheme or host of `proxy_pass`.
fn ssrf<'a>(
    index: &Index<'a>,
    vars: &Assignments<'a>,
    i: usize,
    item: &Item<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(arg) = item.dir.args.first() else {
        return;
    };
    if !arg.value.contains('$') || in_internal_location(index, i) {
        return;
    }
    let (host_part, _) = vars::split_url(&arg.value);
    let bad = |name: &str| {
        if vars::client_controlled(name) {
            return true;
        }
        vars::capture_number(name).is_some_and(|n| {
            vars::capture_source(index, i, item)
                .and_then(|(pattern, _)| vars::group(pattern, n))
                .is_some_and(|g| vars::can_match(g, '.'))
        })
    };
    let Some(var) = vars.find_tainted(index, i, host_part, &bad) else {
        return;
    };
    out.push(Diagnostic::warning(
        "SB113",
        item.file,
        arg.span.line,
        arg.span.col,
        format!(
            "proxy_pass takes its scheme or host from {var}, which the client controls: anyone \
             can make this proxy request any host it can reach (internal services, cloud \
             metadata); map the input to a fixed list of upstreams instead"
        ),
    ));
}

/// Whether a variable can hold a CR or LF at item `i`.
fn can_hold_newline(index: &Index<'_>, i: usize, item: &Item<'_>, name: &str) -> bool {
    if matches!(name, "uri" | "document_uri") {
        return true;
    }
    let Some(n) = vars::capture_number(name) else {
        return false;
    };
    let Some((pattern, tested)) = vars::capture_source(index, i, item) else {
        return false;
    };
    // A location or rewrite regex, or an `if` over the URI, matches the decoded URI; the raw
    // request line and headers cannot hold a bare CR or LF.
    let over_uri = matches!(tested, None | Some("$uri" | "$document_uri"));
    over_uri
        && vars::group(pattern, n)
            .is_some_and(|g| vars::can_match(g, '\n') || vars::can_match(g, '\r'))
}

/// SB114: argument `at` of the directive writes a variable that can hold CR/LF into a header.
fn splitting<'a>(
    index: &Index<'a>,
    vars: &Assignments<'a>,
    i: usize,
    item: &Item<'_>,
    at: usize,
    out: &mut Vec<Diagnostic>,
) {
    let Some(arg) = item.dir.args.get(at) else {
        return;
    };
    if !arg.value.contains('$') {
        return;
    }
    let bad = |name: &str| can_hold_newline(index, i, item, name);
    let Some(var) = vars.find_tainted(index, i, &arg.value, &bad) else {
        return;
    };
    out.push(Diagnostic::warning(
        "SB114",
        item.file,
        arg.span.line,
        arg.span.col,
        format!(
            "{} writes {var} into a header, and {var} is decoded from the URI so it can hold \
             CR/LF (%0d%0a): a client can add headers or a body to the response; use \
             $request_uri, or a capture that cannot match newlines ([^\\r\\n]*)",
            item.dir.name
        ),
    ));
}
