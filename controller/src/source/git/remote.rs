//! Which transport a git URL uses and which host it reaches, read the way libgit2 reads it.
//!
//! Credentials are only handed to the host a source names, over a transport that encrypts
//! ([`super::auth`]), and the operator decides from this which URLs a ProxyRollout may name. Both
//! decisions are only as good as the agreement between this reading and libgit2's, so the host is
//! only taken from URLs whose authority leaves no room for two readings: `[user[:password]@]host
//! [:port]` with one `@` at most, a host of letters, digits, `.` and `-` (or an `[IPv6]` literal)
//! and a numeric port. libgit2 ends the authority at the first `/` (not at `?` or `#`, as RFC 3986
//! and the `url` crate do), which is why `https://github.com#@evil.example/x` is refused here rather
//! than read as `github.com`. scp-like URLs (`[user@]host:path`) are read as libgit2's
//! `git_net_url_parse_scp` reads them: the user up to the first `@`, the host up to the next `:`.

use std::fmt;

/// How libgit2 reaches a repository, chosen as its `transport_find_fn` chooses (by the URL's
/// prefix, case-insensitively; anything else with a `:` is ssh; the rest a local path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https://`: encrypted, the server authenticated by its certificate.
    Https,
    /// `http://`: plain text; credentials are never sent over it.
    Http,
    /// `ssh://`, `ssh+git://`, `git+ssh://` and scp-like `[user@]host:path`.
    Ssh,
    /// `git://`: plain text, unauthenticated.
    Git,
    /// `file://`: a repository on this machine.
    File,
    /// A path on this machine.
    Local,
    /// A scheme libgit2 does not know; it would try ssh.
    Other,
}

impl Transport {
    /// The transport of `url`.
    pub fn of(url: &str) -> Transport {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        let prefixed = |prefixes: &[&str]| prefixes.iter().any(|p| lower.starts_with(p));
        if prefixed(&["https://"]) {
            Transport::Https
        } else if prefixed(&["http://"]) {
            Transport::Http
        } else if prefixed(&["ssh://", "ssh+git://", "git+ssh://"]) {
            Transport::Ssh
        } else if prefixed(&["git://"]) {
            Transport::Git
        } else if prefixed(&["file://"]) {
            Transport::File
        } else if has_scheme(url) {
            Transport::Other
        } else if url.contains(':') {
            Transport::Ssh
        } else {
            Transport::Local
        }
    }

    /// The port a URL of this transport means when it names none (`None`: no network port).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Transport::Https => Some(443),
            Transport::Http => Some(80),
            Transport::Ssh => Some(22),
            Transport::Git => Some(9418),
            Transport::File | Transport::Local | Transport::Other => None,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::Http => "plain http",
            Transport::Ssh => "ssh",
            Transport::Git => "git:// (plain text)",
            Transport::File => "file://",
            Transport::Local => "a local path",
            Transport::Other => "an unknown scheme",
        }
    }
}

/// Whether `url` starts with `scheme://` (libgit2's `git_net_str_is_url`).
fn has_scheme(url: &str) -> bool {
    match url.find("://") {
        Some(end) if end > 0 => url[..end]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')),
        _ => false,
    }
}

/// The network end of a URL: its transport, host (lower-case) and port (explicit or default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// How it is reached.
    pub transport: Transport,
    /// The host, lower-case; an IPv6 literal keeps its brackets.
    pub host: String,
    /// The port, the transport's default when the URL names none.
    pub port: u16,
}

impl Remote {
    /// Reads the transport, host and port of a network URL (https, http, ssh, git, scp-like).
    /// Local paths, `file://` URLs, unknown schemes and authorities that libgit2 could read
    /// another way are errors, so a caller never acts on a host libgit2 would not connect to.
    pub fn parse(url: &str) -> Result<Remote, RemoteError> {
        let url = url.trim();
        let transport = Transport::of(url);
        let Some(default_port) = transport.default_port() else {
            return Err(RemoteError::NoHost(transport));
        };
        let (userinfo, hostport) = if has_scheme(url) {
            let rest = url.split_once("://").map_or("", |(_, rest)| rest);
            let authority = rest.split('/').next().unwrap_or("");
            match authority.split_once('@') {
                Some((user, hostport)) => (Some(user), hostport),
                None => (None, authority),
            }
        } else {
            // scp-like: user up to the first `@`, host up to the next `:`, then the path.
            let (user, rest) = match url.split_once('@') {
                Some((user, rest)) if !user.contains(':') => (Some(user), rest),
                _ => (None, url),
            };
            let host = if rest.starts_with('[') {
                rest.find(']').map_or(rest, |end| &rest[..=end])
            } else {
                rest.split(':').next().unwrap_or("")
            };
            if !rest[host.len()..].starts_with(':') {
                return Err(RemoteError::Ambiguous);
            }
            // The port of an scp-like URL is always the default (`[host:port]:path` is refused).
            (user, host)
        };
        let odd = |c: char| {
            matches!(c, '@' | '/' | '\\' | '#' | '?') || c.is_whitespace() || c.is_control()
        };
        if userinfo.is_some_and(|u| u.contains(odd)) || hostport.contains('@') {
            return Err(RemoteError::Ambiguous);
        }
        let (host, port) = split_port(hostport)?;
        if !is_host(host) {
            return Err(RemoteError::Ambiguous);
        }
        Ok(Remote {
            transport,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(default_port),
        })
    }

    /// Whether `other` is the same server: same host (case-insensitive) and port.
    pub fn same_server(&self, other: &Remote) -> bool {
        self.host == other.host && self.port == other.port
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// `host[:port]` or `[v6][:port]` split, the port checked to be a number.
fn split_port(hostport: &str) -> Result<(&str, Option<u16>), RemoteError> {
    let (host, port) = if hostport.starts_with('[') {
        let end = hostport.find(']').ok_or(RemoteError::Ambiguous)?;
        let (host, rest) = hostport.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(RemoteError::Ambiguous),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    match port {
        None => Ok((host, None)),
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u16>()
            .map(|p| (host, Some(p)))
            .map_err(|_| RemoteError::Ambiguous),
        Some(_) => Err(RemoteError::Ambiguous),
    }
}

/// A DNS name or IPv4 address (letters, digits, `.`, `-`), or a bracketed IPv6 literal.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
    }
    !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

/// Why no host could be read from a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// A local path, `file://` or unknown scheme: no network host.
    #[error("{} has no network host", .0.name())]
    NoHost(Transport),
    /// The authority has characters libgit2 and a reader could split differently.
    #[error(
        "the host cannot be told for certain: write it as scheme://[user@]host[:port]/path or \
         [user@]host:path, with a host of letters, digits, `.` and `-`, and any `@`, `#`, `?` or \
         `\\` in the user name percent-encoded"
    )]
    Ambiguous,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str) -> Result<(Transport, String, u16), RemoteError> {
        Remote::parse(url).map(|r| (r.transport, r.host, r.port))
    }

    #[test]
    fn transports_as_libgit2_picks_them() {
        for (url, transport) in [
            ("https://h/x", Transport::Https),
            ("HTTPS://h/x", Transport::Https),
            ("http://h/x", Transport::Http),
            ("ssh://git@h/x", Transport::Ssh),
            ("git+ssh://h/x", Transport::Ssh),
            ("git@h:org/x.git", Transport::Ssh),
            ("h:x", Transport::Ssh),
            ("git://h/x", Transport::Git),
            ("file:///srv/x", Transport::File),
            ("/srv/x", Transport::Local),
            ("rel/x", Transport::Local),
            ("ftp://h/x", Transport::Other),
            ("ext::sh -c id", Transport::Ssh),
        ] {
            assert_eq!(Transport::of(url), transport, "{url}");
        }
    }

    #[test]
    fn hosts_and_default_ports() {
        assert_eq!(
            remote("https://GitHub.com/org/x.git"),
            Ok((Transport::Https, "github.com".into(), 443))
        );
        assert_eq!(
            remote("https://x-access-token:t%40k@git.example:8443/x"),
            Ok((Transport::Https, "git.example".into(), 8443))
        );
        assert_eq!(
            remote("http://127.0.0.1:8080/x"),
            Ok((Transport::Http, "127.0.0.1".into(), 8080))
        );
        assert_eq!(
            remote("ssh://git@[::1]:2222/x"),
            Ok((Transport::Ssh, "[::1]".into(), 2222))
        );
        assert_eq!(
            remote("git@github.com:org/x.git"),
            Ok((Transport::Ssh, "github.com".into(), 22))
        );
        assert_eq!(
            remote("github.com:org/x.git"),
            Ok((Transport::Ssh, "github.com".into(), 22))
        );
        assert_eq!(remote("https://h"), Ok((Transport::Https, "h".into(), 443)));
    }

    #[test]
    fn authorities_libgit2_could_read_otherwise_are_refused() {
        for url in [
            // libgit2 ends the authority at `/` only: its host here is evil.example.
            "https://github.com#@evil.example/x",
            "https://github.com?@evil.example/x",
            "https://a@b@evil.example/x",
            "https://github.com\\@evil.example/x",
            "https://gith%75b.com/x",
            "https://h:/x",
            "https://h:99999/x",
            "https://h:8a/x",
            "https://[::1/x",
            "https:///x",
            "a/b@h:x",
        ] {
            assert_eq!(remote(url), Err(RemoteError::Ambiguous), "{url}");
        }
        for url in ["file:///srv/x", "/srv/x", "ftp://h/x", "git@h"] {
            assert!(matches!(remote(url), Err(RemoteError::NoHost(_))), "{url}");
        }
    }

    #[test]
    fn same_server_compares_host_and_port() {
        let a = Remote::parse("https://h/x").ok();
        let b = Remote::parse("https://H:443/y").ok();
        let c = Remote::parse("https://h:8443/x").ok();
        let (Some(a), Some(b), Some(c)) = (a, b, c) else {
            panic!("parse");
        };
        assert!(a.same_server(&b));
        assert!(!a.same_server(&c));
        assert_eq!(c.to_string(), "h:8443");
    }
}
