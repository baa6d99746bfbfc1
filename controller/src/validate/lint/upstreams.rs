//! Rules about `upstream` blocks and the `*_pass` directives that point at them: the class of
//! mistake behind the outage Switchback exists for (an altered `upstream` that sends every request
//! to nowhere). SB101 undefined upstream, SB102 empty upstream, SB103 bad `server` line, SB104 no
//! usable server.

use std::collections::BTreeMap;

use super::address::{self, Address};
use super::index::{Ctx, Index, Item};
use crate::validate::ast::{Arg, Directive};
use crate::validate::diagnostic::Diagnostic;

/// The directives that send a request to an upstream, and the URL schemes each accepts.
const PASS_DIRECTIVES: &[(&str, &[&str])] = &[
    ("proxy_pass", &["http://", "https://"]),
    ("grpc_pass", &["grpc://", "grpcs://", ""]),
    ("uwsgi_pass", &["uwsgi://", "suwsgi://", ""]),
    ("fastcgi_pass", &[""]),
    ("scgi_pass", &[""]),
    ("memcached_pass", &[""]),
];

/// Balancing methods that forbid `backup` servers (nginx refuses the combination).
const NO_BACKUP_METHODS: &[&str] = &["hash", "ip_hash", "random"];

/// Runs SB101-SB104. `upstreams` are the http and stream upstream blocks ([`upstreams`]).
pub fn check(
    index: &Index<'_>,
    upstreams: &(Upstreams<'_>, Upstreams<'_>),
    out: &mut Vec<Diagnostic>,
) {
    let (http, stream) = upstreams;
    for (i, item) in index.items().iter().enumerate() {
        match (item.ctx, item.dir.name.as_str()) {
            (Ctx::Http, "upstream") | (Ctx::Stream, "upstream") => {
                check_upstream(index, i, item, out)
            }
            (Ctx::StreamServer, "proxy_pass") => check_pass(item, &[""], stream, true, out),
            (Ctx::Location | Ctx::IfInLocation | Ctx::LimitExcept, name) => {
                if let Some((_, schemes)) = PASS_DIRECTIVES.iter().find(|(n, _)| *n == name) {
                    check_pass(item, schemes, http, name != "proxy_pass", out);
                }
            }
            _ => {}
        }
    }
}

/// Upstream names defined at the top of http and of stream, with the block defining each (a later
/// block of the same name replaces an earlier one); one walk of the index for both, shared by the
/// upstream and resolution rules.
pub fn upstreams<'a>(index: &Index<'a>) -> (Upstreams<'a>, Upstreams<'a>) {
    let mut http = BTreeMap::new();
    let mut stream = BTreeMap::new();
    for it in index.items() {
        if it.dir.name != "upstream" {
            continue;
        }
        let map = match it.ctx {
            Ctx::Http => &mut http,
            Ctx::Stream => &mut stream,
            _ => continue,
        };
        if let Some(a) = it.dir.args.first() {
            map.insert(a.value.as_str(), it.dir);
        }
    }
    (http, stream)
}

/// Upstream names of one context and the block defining each.
pub type Upstreams<'a> = BTreeMap<&'a str, &'a Directive>;

/// SB101: the target of a `*_pass` must be a defined upstream, or clearly a host.
fn check_pass(
    item: &Item<'_>,
    schemes: &[&str],
    defined: &BTreeMap<&str, &Directive>,
    port_required_for_hosts: bool,
    out: &mut Vec<Diagnostic>,
) {
    let Some(arg) = item.dir.args.first() else {
        return; // argument count is SB108's business
    };
    let value = arg.value.as_str();
    if value.contains('$') {
        return; // resolved per request; nothing static to check
    }
    let Some(rest) = schemes.iter().find_map(|s| value.strip_prefix(s)) else {
        out.push(at(
            "SB101",
            item,
            arg,
            format!(
                "invalid URL prefix in \"{value}\": {} takes {}",
                item.dir.name,
                schemes.join(" or ")
            ),
        ));
        return;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Ok(Address::Inet { host, port, v6 }) = address::split(authority) else {
        return; // unix: sockets name no upstream
    };
    if v6 || address::is_ip(host) || host.eq_ignore_ascii_case("localhost") {
        return;
    }
    if defined.contains_key(host) {
        if let Some(port) = port {
            out.push(at(
                "SB101",
                item,
                arg,
                format!(
                    "upstream \"{host}\" may not have port {port}: the port belongs on its \
                     `server` lines; write {}{host}",
                    &value[..value.len() - rest.len()]
                ),
            ));
        }
        return;
    }
    if port.is_some() || host.contains('.') {
        return; // a host name, resolved by DNS when nginx starts
    }
    let mut message = format!(
        "{} names \"{host}\", which is not a defined upstream",
        item.dir.name
    );
    if let Some(close) = closest(host, defined.keys().copied()) {
        message.push_str(&format!(" (did you mean \"{close}\"?)"));
    } else if defined.is_empty() {
        message.push_str(" (no upstream blocks are defined)");
    }
    message.push_str(if port_required_for_hosts {
        "; define the upstream, or give a host with a port"
    } else {
        "; define the upstream, or write the host fully qualified or with a port if it is a \
         DNS name"
    });
    out.push(at("SB101", item, arg, message));
}

/// SB102-SB104 for one upstream block.
fn check_upstream(index: &Index<'_>, i: usize, upstream: &Item<'_>, out: &mut Vec<Diagnostic>) {
    let name = upstream
        .dir
        .args
        .first()
        .map(|a| a.value.as_str())
        .unwrap_or("");
    let stream = upstream.ctx == Ctx::Stream;
    let children: Vec<&Item<'_>> = index.children(i).collect();
    let method = children
        .iter()
        .map(|c| c.dir.name.as_str())
        .find(|n| NO_BACKUP_METHODS.contains(n));
    let servers: Vec<&&Item<'_>> = children.iter().filter(|c| c.dir.name == "server").collect();
    if servers.is_empty() {
        out.push(Diagnostic::error(
            "SB102",
            upstream.file,
            upstream.dir.span.line,
            upstream.dir.span.col,
            format!(
                "upstream \"{name}\" has no servers: every request sent to it fails with 502; \
                 add at least one `server` line"
            ),
        ));
        return;
    }
    let mut usable = 0;
    for server in &servers {
        let flags = check_server(server, stream, method, out);
        if !flags.down && !flags.backup {
            usable += 1;
        }
    }
    if usable == 0 {
        out.push(Diagnostic::error(
            "SB104",
            upstream.file,
            upstream.dir.span.line,
            upstream.dir.span.col,
            format!(
                "upstream \"{name}\" has no usable server: all {} are marked `down` or `backup`, \
                 so requests fail with 502 or only reach backups",
                servers.len()
            ),
        ));
    }
}

#[derive(Default)]
struct ServerFlags {
    down: bool,
    backup: bool,
}

/// SB103: one `server` line of an upstream.
fn check_server(
    item: &Item<'_>,
    stream: bool,
    method: Option<&str>,
    out: &mut Vec<Diagnostic>,
) -> ServerFlags {
    let mut flags = ServerFlags::default();
    let Some((addr, params)) = item.dir.args.split_first() else {
        return flags;
    };
    match address::check(&addr.value) {
        Err(problem) => out.push(at(
            "SB103",
            item,
            addr,
            format!(
                "invalid upstream server address \"{}\": {problem}",
                addr.value
            ),
        )),
        Ok(Address::Inet { port: None, .. }) if stream => out.push(at(
            "SB103",
            item,
            addr,
            format!(
                "no port in stream upstream server \"{}\": stream upstreams need host:port",
                addr.value
            ),
        )),
        Ok(_) => {}
    }
    for param in params {
        let (key, value) = match param.value.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param.value.as_str(), None),
        };
        let problem = match (key, value) {
            ("weight", Some(v)) => match v.parse::<u32>() {
                Ok(0) => Some("weight=0 is invalid: weight must be at least 1".to_string()),
                Ok(_) => None,
                Err(_) => Some(format!("weight={v} is not a number")),
            },
            ("max_fails" | "max_conns", Some(v)) => v
                .parse::<u32>()
                .err()
                .map(|_| format!("{key}={v} is not a number")),
            ("fail_timeout" | "slow_start", Some(v)) => {
                (!is_time(v)).then(|| format!("{key}={v} is not a time (e.g. 10s, 1m)"))
            }
            ("route" | "service", Some(_)) => None,
            ("down", None) => {
                flags.down = true;
                None
            }
            ("backup", None) => {
                flags.backup = true;
                method.map(|m| format!("`backup` cannot be used with the \"{m}\" balancing method"))
            }
            ("resolve" | "drain", None) => None,
            (
                "weight" | "max_fails" | "max_conns" | "fail_timeout" | "slow_start" | "route"
                | "service",
                None,
            ) => Some(format!("\"{key}\" needs a value ({key}=...)")),
            _ => Some(format!("unknown parameter \"{}\"", param.value)),
        };
        if let Some(problem) = problem {
            out.push(at(
                "SB103",
                item,
                param,
                format!("invalid upstream server parameter: {problem}"),
            ));
        }
    }
    flags
}

/// nginx time syntax: one or more `<digits><unit>` with units ms s m h d w M y (bare digits are
/// seconds).
fn is_time(v: &str) -> bool {
    if v.is_empty() {
        return false;
    }
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        for unit in ["ms", "s", "m", "h", "d", "w", "M", "y"] {
            if let Some(r) = rest.strip_prefix(unit) {
                rest = r;
                break;
            }
        }
    }
    true
}

fn at(rule: &str, item: &Item<'_>, arg: &Arg, message: String) -> Diagnostic {
    Diagnostic::error(rule, item.file, arg.span.line, arg.span.col, message)
}

/// The defined name closest to `name`, when it is close enough to be a likely typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        for ok in ["10s", "1m30s", "500ms", "30", "1h"] {
            assert!(is_time(ok), "{ok}");
        }
        for bad in ["", "s", "10x", "1.5s"] {
            assert!(!is_time(bad), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            closest("app_backend", ["app-backend", "static"].into_iter()),
            Some("app-backend")
        );
        assert_eq!(closest("payments", ["static"].into_iter()), None);
    }
}
