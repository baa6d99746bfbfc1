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
/// The userinfo ends at the last `@` before the first `/`, `?` or `#` after the scheme, as RFC 3986
/// says; a password containing a raw `/` must be percent-encoded (libgit2 needs that too).
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
        let start = scheme.len() + 3;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let at = rest[..authority_end].rfind('@')?;
        let user_is_login = SSH_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s));
        return Some(UserInfo {
            range: start..start + at,
            user_is_login,
        });
    }
    // scp-like `[user@]host:path`; anything with a `/` before the first `:` is a local path.
    let colon = url.find(':')?;
    if url[..colon].contains('/') {
        return None;
    }
    let end = url.find('/').unwrap_or(url.len());
    let at = url[..end].rfind('@')?;
    Some(UserInfo {
        range: 0..at,
        user_is_login: true,
    })
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

/// Decodes `%XX` escapes; anything malformed is kept as written (this only feeds the scrubber).
fn percent_decode(s: &str) -> String {
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
    fn at_in_path_is_not_userinfo() {
        assert_eq!(
            redact_url("https://host/org/repo@v1"),
            "https://host/org/repo@v1"
        );
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
}
