//! Keeping secrets out of every message the git source produces.
//!
//! Two layers, because neither alone is enough: [`redact_url`] removes the secret part of a URL's
//! userinfo before the URL is put into an error, a span or a log line; [`Scrubber`] then cleans the
//! messages that come back from libgit2, which may echo the raw URL (or a decoded part of it) and
//! which we do not control.

use std::ops::Range;

use super::Credentials;

/// What a redacted secret is replaced with.
const MASK: &str = "***";

/// Schemes whose user-only userinfo (`ssh://git@host/...`) is a login name, not a secret.
const SSH_SCHEMES: &[&str] = &["ssh", "git+ssh", "ssh+git"];

/// The URL with the secret part of its userinfo replaced by `***`, so it can be logged and shown.
///
/// - `https://user:tok@host/x` → `https://user:***@host/x` (the password is a secret, the user not);
/// - `https://tok@host/x` → `https://***@host/x` (over http(s) a lone userinfo is almost always a
///   token, e.g. `https://ghp_...@github.com/...`);
/// - `ssh://git@host/x` and scp-like `git@host:x` are unchanged (a lone ssh userinfo is the login);
///   an ssh password (`ssh://user:pw@host/x`) is masked like the https one;
/// - local paths and URLs without userinfo are unchanged.
///
/// RFC 3986 wants `/`, `?`, `#` and `@` in a password percent-encoded, but people paste tokens as
/// they are, and a redactor that stops at the first `/` shows the rest of such a password. So
/// the userinfo here ends at the *last* `@` that is followed by something shaped like a host (and
/// port) and then the end of the authority (`/`, `?`, `#`, the end; `:` for scp-like URLs). The
/// price is paid by URLs with an `@` in their path: `https://host/org/repo@v1` is shown as
/// `https://***@v1`. Showing too little is the safe way to be wrong.
pub fn redact_url(url: &str) -> String {
    let Some(info) = userinfo(url) else {
        return url.to_string();
    };
    let raw = &url[info.range.clone()];
    let masked = match raw.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None if info.user_is_login => raw.to_string(),
        None => MASK.to_string(),
    };
    format!(
        "{}{masked}{}",
        &url[..info.range.start],
        &url[info.range.end..]
    )
}

/// Where a URL's userinfo is, and whether a lone user there is a login name (ssh) or a secret.
struct UserInfo {
    range: Range<usize>,
    user_is_login: bool,
}

fn userinfo(url: &str) -> Option<UserInfo> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if is_scheme(scheme) {
            let start = scheme.len() + 3;
            let at = userinfo_end(rest, |tail| {
                tail.is_empty() || tail.starts_with(['/', '?', '#'])
            })?;
            let user_is_login = SSH_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s));
            return Some(UserInfo {
                range: start..start + at,
                user_is_login,
            });
        }
    }
    // scp-like `[user@]host:path`: the host is followed by `:`. A local path with `@` in it and a
    // `:` after (rare) is read as one too; its lone "user" is shown as it is.
    let at = userinfo_end(url, |tail| tail.starts_with(':'))?;
    Some(UserInfo {
        range: 0..at,
        user_is_login: true,
    })
}

/// `scheme` is a URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Where the userinfo of `rest` (what follows `scheme://`, or a whole scp-like URL) ends: the last
/// `@` followed by a host, an optional `:port`, and then text that `ends_authority` accepts. With
/// no such `@`, the last `@` at all: when in doubt, mask more. `None` without any `@`.
fn userinfo_end(rest: &str, ends_authority: impl Fn(&str) -> bool) -> Option<usize> {
    let mut last = None;
    for (i, _) in rest.match_indices('@').rev() {
        last.get_or_insert(i);
        let tail = &rest[i + 1..];
        let after_host = &tail[host_len(tail)..];
        if ends_authority(after_host) {
            return Some(i);
        }
        if let Some(port) = after_host.strip_prefix(':') {
            let digits = port.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && ends_authority(&port[digits..]) {
                return Some(i);
            }
        }
    }
    last
}

/// The length of the host at the start of `s`: an `[IP literal]`, or RFC 3986 reg-name
/// characters (unreserved, sub-delims, `%`).
fn host_len(s: &str) -> usize {
    if s.starts_with('[') {
        return s.find(']').map_or(0, |end| end + 1);
    }
    s.bytes()
        .take_while(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        })
        .count()
}

/// The secret part of a URL's userinfo, as written and percent-decoded (libgit2 may echo either).
fn url_secrets(url: &str) -> Vec<String> {
    let Some(info) = userinfo(url) else {
        return Vec::new();
    };
    let raw = &url[info.range];
    let secret = match raw.split_once(':') {
        Some((_, password)) => password,
        None if info.user_is_login => return Vec::new(),
        None => raw,
    };
    let mut out = vec![secret.to_string()];
    let decoded = percent_decode(secret);
    if decoded != secret {
        out.push(decoded);
    }
    out
}

/// Decodes `%XX` escapes; anything malformed is kept as written (it feeds the scrubber, and the
/// operator's reading of `file://` URLs as libgit2 reads them).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Cleans text we did not write (libgit2 error messages, panic messages) of the raw URL and of
/// every secret this source knows, so that no error or log line can carry a credential.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    raw_url: String,
    redacted_url: String,
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Scrubber {
    /// A scrubber for one source: its URL as given and the secrets of its credentials.
    pub(crate) fn new(url: &str, credentials: &Credentials) -> Self {
        let mut secrets: Vec<String> = url_secrets(url);
        secrets.extend(credentials.secrets().into_iter().map(str::to_string));
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self {
            raw_url: url.to_string(),
            redacted_url: redact_url(url),
            secrets,
        }
    }

    /// `message` with the raw URL replaced by the redacted one and every secret by `***`.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = if self.raw_url.is_empty() || self.raw_url == self.redacted_url {
            message.to_string()
        } else {
            message.replace(&self.raw_url, &self.redacted_url)
        };
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_password_is_masked_user_kept() {
        assert_eq!(
            redact_url("https://user:tok@host/x"),
            "https://user:***@host/x"
        );
        assert_eq!(
            redact_url("http://user:tok@host:8080/x?y#z"),
            "http://user:***@host:8080/x?y#z"
        );
        assert_eq!(
            redact_url("https://user:@host/x"),
            "https://user:***@host/x"
        );
    }

    #[test]
    fn https_lone_userinfo_is_a_token() {
        assert_eq!(redact_url("https://tok@host/x"), "https://***@host/x");
        assert_eq!(redact_url("HTTPS://tok@host"), "HTTPS://***@host");
    }

    #[test]
    fn password_with_at_signs_is_masked_whole() {
        assert_eq!(
            redact_url("https://user:p@ss@host/x"),
            "https://user:***@host/x"
        );
    }

    #[test]
    fn an_at_in_the_path_is_masked_rather_than_risk_a_password() {
        // Indistinguishable from `https://<token with a slash>@v1`: masked, never shown.
        assert_eq!(redact_url("https://host/org/repo@v1"), "https://***@v1");
        assert_eq!(
            redact_url("https://user:tok@host/org/repo@v1"),
            "https://user:***@v1"
        );
    }

    #[test]
    fn passwords_with_raw_delimiters_are_masked_whole() {
        for (url, shown) in [
            ("https://user:pa#ss@host/x", "https://user:***@host/x"),
            ("https://user:pa?ss@host/x", "https://user:***@host/x"),
            ("https://user:pa/ss@host/x", "https://user:***@host/x"),
            (
                "https://user:p@s/s@host:8443/x?y#z",
                "https://user:***@host:8443/x?y#z",
            ),
            ("https://user:a/b?c#d@e@host", "https://user:***@host"),
            ("https://tok/en+x==@host/x", "https://***@host/x"),
            ("http://u:p#w@[::1]:80/x", "http://u:***@[::1]:80/x"),
            ("ssh://git:pa/ss@host/x", "ssh://git:***@host/x"),
            ("git:pa/ss#x@host:org/repo", "git:***@host:org/repo"),
            ("https://user:pw@ho st/x", "https://user:***@ho st/x"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            let secrets = url_secrets(url);
            assert!(!secrets.is_empty(), "{url}: no secret found");
        }
    }

    #[test]
    fn ssh_login_kept_password_masked() {
        assert_eq!(
            redact_url("ssh://git@host:22/x.git"),
            "ssh://git@host:22/x.git"
        );
        assert_eq!(redact_url("ssh://git:pw@host/x"), "ssh://git:***@host/x");
        assert_eq!(
            redact_url("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
        assert_eq!(redact_url("git:pw@host:org/repo"), "git:***@host:org/repo");
    }

    #[test]
    fn paths_and_plain_urls_unchanged() {
        for url in [
            "/srv/git/repo.git",
            "./rel/a@b:c",
            "file:///srv/git/repo.git",
            "https://host/x",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn scrubber_removes_url_and_secrets() {
        let url = "https://user:p%40ss@host/x";
        let s = Scrubber::new(url, &Credentials::Token("tok-123".into()));
        let msg = format!("failed {url} with p@ss and tok-123 and p%40ss");
        let out = s.scrub(&msg);
        assert_eq!(
            out,
            "failed https://user:***@host/x with *** and *** and ***"
        );
    }

    #[test]
    fn scrubber_replaces_longest_secret_first() {
        let creds = Credentials::Basic {
            username: "u".into(),
            password: "abc".into(),
        };
        let s = Scrubber::new("https://xabcx@host/", &creds);
        assert_eq!(s.scrub("xabcx abc"), "*** ***");
    }

    #[test]
    fn percent_decode_handles_malformed() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Hosts, with or without a port, as URLs name them.
        fn host() -> impl Strategy<Value = String> {
            (
                "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
                proptest::option::of(1u16..),
            )
                .prop_map(|(h, port)| match port {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
        }

        /// A path, query and fragment without `@` (an `@` there is masked too: see
        /// `an_at_in_the_path_is_masked_rather_than_risk_a_password`).
        fn rest() -> impl Strategy<Value = String> {
            "(/[A-Za-z0-9._~-]{0,8}){0,3}(\\?[a-z=&]{0,6})?(#[a-z]{0,4})?"
        }

        proptest! {
            #[test]
            fn an_https_password_never_shows(
                user in "[^:]{0,12}",
                password in ".{1,24}",
                host in host(),
                rest in rest(),
            ) {
                let url = format!("https://{user}:{password}@{host}{rest}");
                let shown = format!("https://{user}:***@{host}{rest}");
                prop_assert_eq!(redact_url(&url), shown.clone());
                // libgit2 may echo the URL, or the password alone (decoded or not).
                let scrubbed = Scrubber::new(&url, &Credentials::None)
                    .scrub(&format!("could not fetch {url}: {password}"));
                prop_assume!(!format!("could not fetch {shown}").contains(&password));
                prop_assert!(!scrubbed.contains(&password), "{}", scrubbed);
            }

            #[test]
            fn an_https_token_never_shows(
                token in "[^:]{1,24}",
                host in host(),
                rest in rest(),
            ) {
                let url = format!("https://{token}@{host}{rest}");
                prop_assert_eq!(redact_url(&url), format!("https://***@{host}{rest}"));
            }

            #[test]
            fn an_ssh_password_never_shows(
                user in "[a-z]{1,8}",
                password in ".{1,24}",
                host in "[a-z][a-z0-9.-]{0,20}",
                path in "[A-Za-z0-9/._-]{1,20}",
            ) {
                // `ab://...` would be a URL of scheme `ab`, whose userinfo is all after `://`.
                prop_assume!(!password.starts_with("//"));
                let scp = format!("{user}:{password}@{host}:{path}");
                prop_assert_eq!(redact_url(&scp), format!("{user}:***@{host}:{path}"));
                let url = format!("ssh://{user}:{password}@{host}/{path}");
                prop_assert_eq!(redact_url(&url), format!("ssh://{user}:***@{host}/{path}"));
            }
        }
    }
}
