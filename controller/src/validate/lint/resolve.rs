//! Outage classics about name resolution, which gixy does not check: SB120 a `*_pass` with a
//! variable and no `resolver` in scope (nginx then answers 502 "no resolver defined to resolve"
//! at request time), and SB123 a host name in a `*_pass` or an upstream `server` line, which nginx
//! resolves once when it loads the config and never again.

use std::cell::OnceCell;
use std::collections::BTreeSet;

use super::address::{self, Address};
use super::index::{Ctx, Index, Item};
use super::upstreams::Upstreams;
use super::vars::{self, Assignments};
use crate::validate::diagnostic::Diagnostic;

/// The directives that send a request somewhere by address.
const PASS: &[&str] = &[
    "proxy_pass",
    "grpc_pass",
    "uwsgi_pass",
    "fastcgi_pass",
    "scgi_pass",
    "memcached_pass",
];

/// Names a `*_pass` can use without DNS, per namespace.
struct Names<'a, 'u> {
    /// `upstream` blocks.
    blocks: &'u Upstreams<'a>,
    /// The hosts of literal `*_pass` lines: nginx keeps an implicit upstream for each, and a
    /// variable `*_pass` finds those too.
    literal: Vec<&'a str>,
    /// Blocks plus literal hosts, built the first time a variable `*_pass` without a resolver
    /// asks (most bundles have none).
    known: OnceCell<BTreeSet<&'a str>>,
}

impl<'a, 'u> Names<'a, 'u> {
    fn new(blocks: &'u Upstreams<'a>) -> Self {
        Names {
            blocks,
            literal: Vec::new(),
            known: OnceCell::new(),
        }
    }

    /// Whether a `*_pass` can name `host` without DNS: an upstream block or a literal host.
    fn known(&self) -> &BTreeSet<&'a str> {
        self.known.get_or_init(|| {
            self.blocks
                .keys()
                .copied()
                .chain(self.literal.iter().copied())
                .collect()
        })
    }
}

/// Runs SB120 and SB123. `upstreams` are the http and stream upstream blocks.
pub fn check<'a>(
    index: &Index<'a>,
    vars: &Assignments<'a>,
    upstreams: &(Upstreams<'a>, Upstreams<'a>),
    out: &mut Vec<Diagnostic>,
) {
    let mut http = Names::new(&upstreams.0);
    let mut stream = Names::new(&upstreams.1);
    // One walk gathers the `*_pass` lines (each literal one split once) and checks the upstream
    // `server` lines, which need no names.
    let mut passes = Vec::new();
    for (i, item) in index.items().iter().enumerate() {
        match (item.ctx, item.dir.name.as_str()) {
            (Ctx::Upstream | Ctx::StreamUpstream, "server") => upstream_server(item, out),
            _ if is_pass(item) => {
                let literal = item
                    .dir
                    .args
                    .first()
                    .filter(|a| !a.value.contains('$'))
                    .and_then(|a| literal_inet(&a.value));
                if let Some((host, _)) = literal {
                    if item.ctx == Ctx::StreamServer {
                        stream.literal.push(host);
                    } else {
                        http.literal.push(host);
                    }
                }
                passes.push((i, literal));
            }
            _ => {}
        }
    }
    for (i, literal) in passes {
        let Some(item) = index.get(i) else { continue };
        let names = if item.ctx == Ctx::StreamServer {
            &stream
        } else {
            &http
        };
        pass(index, vars, i, item, literal, names, out);
    }
}

fn is_pass(item: &Item<'_>) -> bool {
    match item.ctx {
        Ctx::StreamServer => item.dir.name == "proxy_pass",
        Ctx::Location | Ctx::IfInLocation | Ctx::LimitExcept => {
            PASS.contains(&item.dir.name.as_str())
        }
        _ => false,
    }
}

/// The host and port of a `*_pass` value as written: scheme and path removed.
fn authority(value: &str) -> &str {
    let (authority, _) = vars::split_url(value);
    authority
        .find("://")
        .map(|p| &authority[p + 3..])
        .unwrap_or(authority)
}

/// The host and port of a `*_pass` value with any scheme and path removed (`None` for a socket).
fn literal_inet(value: &str) -> Option<(&str, Option<&str>)> {
    match address::split(authority(value)) {
        Ok(Address::Inet { host, port, .. }) => Some((host, port)),
        _ => None,
    }
}

/// The host of a `*_pass` value with any scheme, port and path removed (`None` for a socket).
fn literal_host(value: &str) -> Option<&str> {
    literal_inet(value).map(|(host, _)| host)
}

/// Whether `text` ends with the ASCII `suffix` in any letter case (no lowercased copy).
fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether a host needs DNS: not an IP, not a socket, not `localhost`.
fn needs_dns(host: &str) -> bool {
    !(host.is_empty()
        || address::is_ip(host)
        || host.contains(':')
        || host.eq_ignore_ascii_case("localhost")
        || ends_with_ignore_case(host, ".localhost"))
}

/// Whether a host is a Kubernetes Service name (`name.ns.svc`, `name.ns.svc.cluster.local`):
/// a ClusterIP Service keeps its address for its lifetime, so resolving it once is what the
/// edge proxies Switchback deploys to want. A headless Service is the exception the page names.
fn is_service_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    ends_with_ignore_case(host, ".svc")
        || host
            .as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b".svc."))
}

/// SB120 and SB123 for one `*_pass`.
fn pass<'a>(
    index: &Index<'a>,
    vars: &Assignments<'a>,
    i: usize,
    item: &Item<'_>,
    literal: Option<(&str, Option<&str>)>,
    names: &Names<'_, '_>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(arg) = item.dir.args.first() else {
        return;
    };
    let value = arg.value.as_str();
    if value.starts_with("unix:") || value.contains("://unix:") {
        return;
    }
    if value.contains('$') {
        if !has_resolver(index, i) && !resolves_to_known(index, vars, i, value, names.known()) {
            out.push(Diagnostic::warning(
                "SB120",
                item.file,
                arg.span.line,
                arg.span.col,
                format!(
                    "{} has a variable, so nginx works out the address per request, and no \
                     `resolver` is in scope: any value that is not an IP or an upstream name \
                     fails with 502 (\"no resolver defined to resolve ...\"); add `resolver` to \
                     the http, server or location",
                    item.dir.name
                ),
            ));
        }
        return;
    }
    let Some((host, port)) = literal else {
        return;
    };
    let has_port = port.is_some();
    // An upstream block name is not looked up; a bare single-label name that is not one is
    // SB101's finding.
    if !needs_dns(host)
        || is_service_name(host)
        || names.blocks.contains_key(host)
        || (!host.contains('.') && !has_port)
    {
        return;
    }
    out.push(Diagnostic::warning(
        "SB123",
        item.file,
        arg.span.line,
        arg.span.col,
        format!(
            "{} resolves \"{host}\" once, when nginx loads the config, and keeps that address \
             until the next reload: when the name moves (a redeployed service, a cloud load \
             balancer) requests fail; use an upstream with `zone` and `server {host} resolve;`, \
             or a variable with a `resolver`",
            item.dir.name
        ),
    ));
}

/// Whether a `resolver` is set at item `i`'s level or any level around it.
fn has_resolver(index: &Index<'_>, i: usize) -> bool {
    index.ancestors(i).any(|(b, _)| {
        index
            .child_ids(b)
            .iter()
            .filter_map(|&c| index.get(c))
            .any(|c| c.dir.name == "resolver")
    })
}

/// Whether every value the host part of `value` can take is an IP or a known upstream, so nginx
/// never needs a resolver for it.
fn resolves_to_known<'a>(
    index: &Index<'a>,
    vars: &Assignments<'a>,
    i: usize,
    value: &str,
    known: &BTreeSet<&str>,
) -> bool {
    let host = authority(value);
    let ok = |h: &str| !needs_dns(h) || known.contains(h);
    if !host.contains('$') {
        return literal_host(host).is_some_and(ok);
    }
    // Only `$var` or `$var:port` as the whole host can be followed to its values.
    let name = host.split(':').next().unwrap_or(host);
    let mut names = vars::names(name);
    let (Some(only), None) = (names.next(), names.next()) else {
        return false;
    };
    if name.trim_start_matches('$').trim_matches(['{', '}']) != only {
        return false;
    }
    let values = vars.assigned(index, i, only);
    !values.is_empty()
        && values
            .iter()
            .all(|v| !v.contains('$') && literal_host(v).or(Some(v)).is_some_and(ok))
}

/// SB123 for an upstream `server` line with a host name and no `resolve`.
fn upstream_server(item: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let Some((addr, params)) = item.dir.args.split_first() else {
        return;
    };
    // A malformed address is SB103's finding.
    let Ok(Address::Inet {
        host, v6: false, ..
    }) = address::check(&addr.value)
    else {
        return;
    };
    if !needs_dns(host) || is_service_name(host) || params.iter().any(|p| p.value == "resolve") {
        return;
    }
    out.push(Diagnostic::warning(
        "SB123",
        item.file,
        addr.span.line,
        addr.span.col,
        format!(
            "upstream server \"{}\" is resolved once, when nginx loads the config, and the \
             addresses are kept until the next reload: when the name moves, requests go to the \
             old addresses; add `resolve` (with a `zone` in the upstream and a `resolver`, \
             nginx 1.27.3+) or reload when it changes",
            addr.value
        ),
    ));
}
