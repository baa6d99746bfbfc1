//! nginx address syntax (`host:port`, `[v6]:port`, `unix:/path`), shared by the upstream and
//! listen rules. Pure string work: nothing here resolves a name.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An address as written in a `server` or `*_pass` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address<'a> {
    /// A Unix socket path.
    Unix(&'a str),
    /// A host (name or IP) and an optional port.
    Inet {
        /// Host name, IPv4 literal, or IPv6 literal without brackets.
        host: &'a str,
        /// The port as written, if any.
        port: Option<&'a str>,
        /// Whether the host was a bracketed IPv6 literal.
        v6: bool,
    },
}

/// What is wrong with an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressProblem {
    /// Empty host.
    NoHost,
    /// `[` without `]`, or bad IPv6 text.
    BadIpv6(String),
    /// Looks like IPv4 but is not.
    BadIpv4(String),
    /// Port not a number.
    BadPort(String),
    /// Port 0 or above 65535.
    PortOutOfRange(String),
    /// Characters no host name can have.
    BadHost(String),
}

impl std::fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressProblem::NoHost => write!(f, "no host"),
            AddressProblem::BadIpv6(s) => write!(f, "{s:?} is not a valid IPv6 address"),
            AddressProblem::BadIpv4(s) => write!(f, "{s:?} is not a valid IPv4 address"),
            AddressProblem::BadPort(s) => write!(f, "port {s:?} is not a number"),
            AddressProblem::PortOutOfRange(s) => {
                write!(f, "port {s} is out of range (1-65535)")
            }
            AddressProblem::BadHost(s) => write!(f, "{s:?} is not a valid host name"),
        }
    }
}

/// Splits an address into host and port without judging either.
pub fn split(text: &str) -> Result<Address<'_>, AddressProblem> {
    if let Some(path) = text.strip_prefix("unix:") {
        return Ok(Address::Unix(path));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(AddressProblem::BadIpv6(text.to_string()));
        };
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| AddressProblem::BadIpv6(text.to_string()))?,
            ),
        };
        return Ok(Address::Inet {
            host,
            port,
            v6: true,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    Ok(Address::Inet {
        host,
        port,
        v6: false,
    })
}

/// Splits and checks an address: host syntax, IP literals, port range.
pub fn check(text: &str) -> Result<Address<'_>, AddressProblem> {
    let addr = split(text)?;
    if let Address::Inet { host, port, v6 } = &addr {
        if host.is_empty() {
            return Err(AddressProblem::NoHost);
        }
        if *v6 {
            host.parse::<Ipv6Addr>()
                .map_err(|_| AddressProblem::BadIpv6(host.to_string()))?;
        } else if looks_like_ipv4(host) {
            host.parse::<Ipv4Addr>()
                .map_err(|_| AddressProblem::BadIpv4(host.to_string()))?;
        } else if !is_host_name(host) {
            return Err(AddressProblem::BadHost(host.to_string()));
        }
        if let Some(port) = port {
            check_port(port)?;
        }
    }
    Ok(addr)
}

/// Checks a port number as nginx reads it.
pub fn check_port(port: &str) -> Result<u16, AddressProblem> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressProblem::BadPort(port.to_string()));
    }
    match port.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(AddressProblem::PortOutOfRange(port.to_string())),
    }
}

/// Whether a host is an IP literal (so never an upstream name or a DNS name).
pub fn is_ip(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok()
}

fn looks_like_ipv4(host: &str) -> bool {
    host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.contains('.')
}

fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !host.starts_with('.')
        && !host.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_forms() {
        for ok in [
            "127.0.0.1:8080",
            "backend.internal:80",
            "backend",
            "[::1]:443",
            "[2001:db8::1]",
            "unix:/run/app.sock",
            "app_backend",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_nginx_rejects() {
        assert_eq!(
            check("127.0.0.1:80800"),
            Err(AddressProblem::PortOutOfRange("80800".into()))
        );
        assert_eq!(
            check("10.0.0.300:80"),
            Err(AddressProblem::BadIpv4("10.0.0.300".into()))
        );
        assert_eq!(
            check("host:http"),
            Err(AddressProblem::BadPort("http".into()))
        );
        assert_eq!(
            check("host:0"),
            Err(AddressProblem::PortOutOfRange("0".into()))
        );
        assert_eq!(check(":80"), Err(AddressProblem::NoHost));
        assert!(matches!(check("[::1"), Err(AddressProblem::BadIpv6(_))));
        assert!(matches!(check("ba d"), Err(AddressProblem::BadHost(_))));
    }
}
