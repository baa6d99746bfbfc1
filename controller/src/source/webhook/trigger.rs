//! What an authenticated push asks for, and how the controller decides which rollouts it concerns.
//!
//! A provider names one repository many ways (`https://host/org/repo`, `https://host/org/repo.git`,
//! `git@host:org/repo.git`, `ssh://git@host:22/org/repo`), and a rollout's spec names it one way, so
//! both sides are reduced to a key (lower-case host and the path without `.git`) before comparing.
//! Refs are compared in their full form (`refs/heads/main`), since specs usually say `main`.

/// A valid push for one repository and ref: "fetch this now". The controller pokes every rollout
/// whose source [`Trigger::matches`]; the poll interval stays as the fallback, so a trigger that is
/// dropped costs latency, never correctness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The hook id from the URL path: which Secret authenticated the push.
    pub hook: String,
    /// Every URL the payload gave for the repository (web, https clone, ssh clone).
    pub repository_urls: Vec<String>,
    /// The full ref that moved, e.g. `refs/heads/main` or `refs/tags/v1`.
    pub git_ref: String,
}

impl Trigger {
    /// Whether this push concerns a source that follows `git_ref` of `url`, as written in a spec.
    ///
    /// The URL matches when any payload URL has the same key ([`repository_key`]). The ref matches
    /// when it names the same ref: `main` matches `refs/heads/main` and `refs/tags/main`, a full
    /// `refs/…` name only itself. A spec following the default branch (empty or `HEAD`) matches
    /// any push, because the payload does not reliably say which branch is the default and an
    /// extra fetch finds nothing new; a spec pinned to a commit id never matches (it cannot move).
    pub fn matches(&self, url: &str, git_ref: &str) -> bool {
        let Some(wanted) = repository_key(url) else {
            return false;
        };
        let url_matches = self
            .repository_urls
            .iter()
            .filter_map(|u| repository_key(u))
            .any(|k| k == wanted);
        url_matches && ref_matches(&self.git_ref, git_ref)
    }
}

/// Whether the pushed ref `pushed` (full form) is what a spec's `wanted` ref follows.
fn ref_matches(pushed: &str, wanted: &str) -> bool {
    let wanted = wanted.trim();
    let pushed = pushed.trim();
    if wanted.is_empty() || wanted == "HEAD" {
        return true;
    }
    if is_commit_id(wanted) {
        return false;
    }
    if wanted.starts_with("refs/") {
        return pushed == wanted;
    }
    pushed.strip_prefix("refs/heads/") == Some(wanted)
        || pushed.strip_prefix("refs/tags/") == Some(wanted)
}

/// A full or abbreviated (7+) hex commit id, which a spec may pin instead of a branch.
fn is_commit_id(rev: &str) -> bool {
    (7..=64).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The full form of a ref as a spec may write it: `main` → `refs/heads/main`; `refs/…` as is.
pub fn full_ref(git_ref: &str) -> String {
    let git_ref = git_ref.trim();
    if git_ref.starts_with("refs/") {
        git_ref.to_string()
    } else {
        format!("refs/heads/{git_ref}")
    }
}

/// The key two spellings of one repository URL share: `host/path`, host lower-cased, user, port,
/// scheme, a trailing `/` and a trailing `.git` dropped; local paths and `file://` URLs keep their
/// path. The path keeps its case (servers differ on whether it matters). `None` for an empty or
/// unparsable URL, which then matches nothing.
pub fn repository_key(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() {
        return None;
    }
    let (host, path) = if url.contains("://") {
        let parsed = url::Url::parse(url).ok()?;
        let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
        (host, parsed.path().to_string())
    } else if let Some((left, path)) = scp_like(url) {
        let host = left.rsplit('@').next().unwrap_or(left).to_ascii_lowercase();
        (host, path.to_string())
    } else {
        (String::new(), url.to_string())
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let path = path.trim_matches('/');
    if host.is_empty() && path.is_empty() {
        return None;
    }
    Some(format!("{host}/{path}"))
}

/// Splits an scp-like `user@host:path` at its colon (a colon before any `/`).
fn scp_like(url: &str) -> Option<(&str, &str)> {
    let colon = url.find(':')?;
    let (left, right) = (&url[..colon], &url[colon + 1..]);
    (!left.contains('/') && !left.is_empty()).then_some((left, right))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(urls: &[&str], git_ref: &str) -> Trigger {
        Trigger {
            hook: "h".to_string(),
            repository_urls: urls.iter().map(|u| u.to_string()).collect(),
            git_ref: git_ref.to_string(),
        }
    }

    #[test]
    fn url_spellings_of_one_repository_share_a_key() {
        let key = Some("github.com/acme/edge".to_string());
        for url in [
            "https://github.com/acme/edge",
            "https://github.com/acme/edge.git",
            "https://GitHub.COM/acme/edge/",
            "https://user:token@github.com/acme/edge.git",
            "git@github.com:acme/edge.git",
            "ssh://git@github.com:22/acme/edge.git",
            "git://github.com/acme/edge.git",
        ] {
            assert_eq!(repository_key(url), key, "{url}");
        }
        assert_ne!(repository_key("https://github.com/acme/Edge"), key);
        assert_ne!(repository_key("https://gitlab.com/acme/edge"), key);
        assert_ne!(repository_key("https://github.com/acme/edge-two"), key);
        assert_eq!(repository_key(""), None);
        assert_eq!(
            repository_key("/srv/git/edge.git"),
            Some("/srv/git/edge".to_string())
        );
    }

    #[test]
    fn refs_match_short_and_full_forms() {
        let push = trigger(&["git@github.com:acme/edge.git"], "refs/heads/main");
        let url = "https://github.com/acme/edge";
        assert!(push.matches(url, "main"));
        assert!(push.matches(url, "refs/heads/main"));
        assert!(push.matches(url, ""));
        assert!(push.matches(url, "HEAD"));
        assert!(!push.matches(url, "dev"));
        assert!(!push.matches(url, "refs/tags/main"));
        assert!(!push.matches(url, "0123456789abcdef0123456789abcdef01234567"));
        assert!(!push.matches("https://github.com/acme/other", "main"));
        let tag = trigger(&["https://github.com/acme/edge"], "refs/tags/v1");
        assert!(tag.matches(url, "v1"));
        assert!(!tag.matches(url, "refs/heads/v1"));
        assert_eq!(full_ref("main"), "refs/heads/main");
        assert_eq!(full_ref("refs/tags/v1"), "refs/tags/v1");
    }
}
