//! Host rewriting for the sandbox copy: every place where `nginx -t` would resolve a host name at
//! configuration time gets `127.0.0.1` instead, so the result never depends on the DNS of the
//! machine that validates. Pure string work.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The address every host name becomes: loopback, always present, never resolved.
pub const LOOPBACK: &str = "127.0.0.1";

/// Whether `host` is an address nginx takes literally (no resolver call).
fn is_ip_literal(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<Ipv6Addr>()
            .is_ok()
}

/// `host[:port]` (as in an upstream `server` or a `resolver` line) with a name host replaced by
/// [`LOOPBACK`]; `None` when nothing needs to change (IP literal, `unix:`, variables, or text
/// nginx will reject by itself).
pub fn host_port(addr: &str) -> Option<String> {
    if addr.is_empty() || addr.starts_with("unix:") || addr.contains('$') || addr.starts_with('[') {
        return None;
    }
    if addr.parse::<Ipv6Addr>().is_ok() {
        return None;
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (addr, None),
    };
    if host.is_empty() || host.contains(':') || is_ip_literal(host) || is_numeric(host) {
        return None;
    }
    Some(match port {
        Some(p) => format!("{LOOPBACK}:{p}"),
        None => LOOPBACK.to_string(),
    })
}

/// A bare port or a number: nginx reads it as a port, not a name.
fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The target of a `*_pass` directive (`http://host:port/uri`, `grpcs://host`, `host:port`,
/// `upstream_name`) with a literal host name replaced by [`LOOPBACK`].
///
/// Names of `upstream` blocks (`upstreams`, lowercase) are kept whatever the port, because nginx
/// never resolves them and reports a port given to one itself.
pub fn pass_target(target: &str, upstreams: &HashSet<String>) -> Option<String> {
    if target.contains('$') {
        // With variables nginx resolves at request time through `resolver`, not at -t.
        return None;
    }
    let (scheme, rest) = match target.find("://") {
        Some(i) => (&target[..i + 3], &target[i + 3..]),
        None => ("", target),
    };
    if rest.starts_with("unix:") {
        return None;
    }
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    let host = match authority.rsplit_once(':') {
        Some((h, _)) if !authority.starts_with('[') => h,
        _ => authority,
    };
    if upstreams.contains(&host.to_ascii_lowercase()) {
        return None;
    }
    let new_authority = host_port(authority)?;
    Some(format!("{scheme}{new_authority}{tail}"))
}

/// A `set_real_ip_from` / `debug_connection` value: an address, a CIDR, `unix:` or a host name
/// (resolved at -t). Names become [`LOOPBACK`].
pub fn cidr_or_host(value: &str) -> Option<String> {
    if value.contains('/') || value.starts_with("unix:") || value == "all" {
        return None;
    }
    if is_ip_literal(value) || value.contains(':') || value.contains('$') {
        return None;
    }
    Some(LOOPBACK.to_string())
}

/// A `syslog:` log target with its `server=` replaced by `server=unix:<socket>`, a socket that
/// does not exist, so nothing is resolved and nothing is sent anywhere.
pub fn syslog_target(target: &str, socket: &str) -> Option<String> {
    let params = target.strip_prefix("syslog:")?;
    let mut changed = false;
    let rewritten: Vec<String> = params
        .split(',')
        .map(|p| match p.strip_prefix("server=") {
            Some(_) => {
                changed = true;
                format!("server=unix:{socket}")
            }
            None => p.to_string(),
        })
        .collect();
    changed.then(|| format!("syslog:{}", rewritten.join(",")))
}

/// The normalised form of a `listen` address, so that `80`, `*:80` and `0.0.0.0:80` share one
/// sandbox socket as they share one socket in nginx, and the text nginx would print for it.
pub fn listen_key(addr: &str, default_port: &str) -> String {
    if is_numeric(addr) {
        return format!("0.0.0.0:{addr}");
    }
    if addr.starts_with("unix:") {
        return addr.to_string();
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (format!("[{h}]"), p.strip_prefix(':').unwrap_or("")),
            None => (addr.to_string(), ""),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (addr.to_string(), ""),
        }
    };
    let host = if host == "*" {
        "0.0.0.0".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let port = if port.is_empty() { default_port } else { port };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_become_loopback_and_ports_stay() {
        assert_eq!(
            host_port("backend.invalid:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_port("localhost").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_port("10.0.0.1:80"), None);
        assert_eq!(host_port("[::1]:80"), None);
        assert_eq!(host_port("::1"), None);
        assert_eq!(host_port("unix:/run/app.sock"), None);
        assert_eq!(host_port("8080"), None);
    }

    #[test]
    fn pass_targets_keep_scheme_uri_and_upstream_names() {
        let u = ups(&["app"]);
        assert_eq!(
            pass_target("http://api.example.com:8080/v1?x=1", &u).as_deref(),
            Some("http://127.0.0.1:8080/v1?x=1")
        );
        assert_eq!(
            pass_target("grpcs://grpc.example", &u).as_deref(),
            Some("grpcs://127.0.0.1")
        );
        assert_eq!(pass_target("http://app", &u), None);
        assert_eq!(pass_target("http://APP:8080", &u), None);
        assert_eq!(pass_target("http://$backend", &u), None);
        assert_eq!(pass_target("http://unix:/run/x.sock:/", &u), None);
        assert_eq!(pass_target("http://[::1]:80/", &u), None);
        assert_eq!(
            pass_target("php.internal:9000", &u).as_deref(),
            Some("127.0.0.1:9000")
        );
    }

    #[test]
    fn cidrs_stay_names_go() {
        assert_eq!(cidr_or_host("10.0.0.0/8"), None);
        assert_eq!(cidr_or_host("192.168.1.1"), None);
        assert_eq!(cidr_or_host("unix:"), None);
        assert_eq!(cidr_or_host("lb.example").as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn syslog_server_becomes_a_dead_socket() {
        assert_eq!(
            syslog_target("syslog:server=logs.example:514,tag=nginx", "/t/s/syslog").as_deref(),
            Some("syslog:server=unix:/t/s/syslog,tag=nginx")
        );
        assert_eq!(syslog_target("/var/log/x.log", "/t"), None);
    }

    #[test]
    fn listen_addresses_normalise_like_nginx() {
        assert_eq!(listen_key("80", "80"), "0.0.0.0:80");
        assert_eq!(listen_key("*:80", "80"), "0.0.0.0:80");
        assert_eq!(listen_key("0.0.0.0:80", "80"), "0.0.0.0:80");
        assert_eq!(listen_key("Example.COM", "80"), "example.com:80");
        assert_eq!(listen_key("[::]:443", "80"), "[::]:443");
        assert_eq!(listen_key("[::]", "80"), "[::]:80");
    }
}
