//! The five kinds of sender: how each one signs a request, which header says what happened, and
//! where its push payload keeps the repository URLs and the ref. Everything here is a pure
//! function of the headers, the body and the secret, so it is tested without a server.

use axum::http::HeaderMap;
use hmac::{KeyInit as _, Mac as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// At most this many refs are taken from one push (Bitbucket sends one change per ref), so a
/// payload cannot make the receiver queue an unbounded number of triggers.
pub const MAX_REFS_PER_PUSH: usize = 16;

/// Who sends the webhook: the `<provider>` segment of `/hooks/<provider>/<hook-id>`. It decides
/// which header carries the signature and how the payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Event: push`.
    GitHub,
    /// GitLab: `X-Gitlab-Token: <secret>`, `X-Gitlab-Event: Push Hook` (or `Tag Push Hook`).
    GitLab,
    /// Gitea: `X-Gitea-Signature: <hex>`, `X-Gitea-Event: push`.
    Gitea,
    /// Forgejo: `X-Forgejo-Signature: <hex>`, `X-Forgejo-Event: push` (Gitea's headers also accepted).
    Forgejo,
    /// Bitbucket Cloud: `X-Hub-Signature: sha256=<hex>`, `X-Event-Key: repo:push`.
    Bitbucket,
    /// Any sender that can sign: `X-Switchback-Signature: sha256=<hex>` over
    /// `{"repository": url, "ref": "refs/heads/main"}`.
    Generic,
}

impl Provider {
    /// Every provider, for metrics that exist from the start.
    pub const ALL: [Provider; 6] = [
        Provider::GitHub,
        Provider::GitLab,
        Provider::Gitea,
        Provider::Forgejo,
        Provider::Bitbucket,
        Provider::Generic,
    ];

    /// The provider a path segment names, `None` for anything else (answered 404).
    pub fn from_path(segment: &str) -> Option<Provider> {
        Some(match segment {
            "github" => Provider::GitHub,
            "gitlab" => Provider::GitLab,
            "gitea" => Provider::Gitea,
            "forgejo" => Provider::Forgejo,
            "bitbucket" => Provider::Bitbucket,
            "generic" => Provider::Generic,
            _ => return None,
        })
    }

    /// The path segment and metric label: a fixed, bounded set.
    pub fn label(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
            Provider::Bitbucket => "bitbucket",
            Provider::Generic => "generic",
        }
    }

    /// Whether the request carries a valid signature (or token) for `secret` over exactly `body`.
    /// Every comparison is constant-time; a missing or malformed header is simply `false`.
    pub fn authenticate(self, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
        match self {
            Provider::GitHub => prefixed_hmac(header(headers, "x-hub-signature-256"), body, secret),
            Provider::Bitbucket => prefixed_hmac(header(headers, "x-hub-signature"), body, secret),
            Provider::Generic => {
                prefixed_hmac(header(headers, "x-switchback-signature"), body, secret)
            }
            Provider::Gitea => {
                let sig = header(headers, "x-gitea-signature")
                    .or_else(|| header(headers, "x-forgejo-signature"));
                hex_hmac(sig, body, secret)
            }
            Provider::Forgejo => {
                let sig = header(headers, "x-forgejo-signature")
                    .or_else(|| header(headers, "x-gitea-signature"));
                hex_hmac(sig, body, secret)
            }
            Provider::GitLab => header(headers, "x-gitlab-token")
                .is_some_and(|token| token_equals(token.as_bytes(), secret)),
        }
    }

    /// Whether the request carries the header this provider authenticates with at all. One
    /// without it can never authenticate, so it is refused before its body is read.
    pub fn has_credentials(self, headers: &HeaderMap) -> bool {
        let names: &[&str] = match self {
            Provider::GitHub => &["x-hub-signature-256"],
            Provider::Bitbucket => &["x-hub-signature"],
            Provider::Generic => &["x-switchback-signature"],
            Provider::Gitea | Provider::Forgejo => &["x-gitea-signature", "x-forgejo-signature"],
            Provider::GitLab => &["x-gitlab-token"],
        };
        names.iter().any(|n| headers.contains_key(*n))
    }

    /// The provider's id of this delivery, when it sends one (none is covered by the signature:
    /// see `replay.rs` for what that means).
    pub fn delivery_id(self, headers: &HeaderMap) -> Option<&str> {
        let names: &[&str] = match self {
            Provider::GitHub => &["x-github-delivery"],
            Provider::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
            Provider::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
            Provider::Forgejo => &["x-forgejo-delivery", "x-gitea-delivery"],
            Provider::Bitbucket => &["x-request-uuid"],
            Provider::Generic => &["x-switchback-delivery"],
        };
        names
            .iter()
            .filter_map(|n| header(headers, n))
            .map(str::trim)
            .find(|v| !v.is_empty())
    }

    /// Whether the event header says "push". Anything else (ping, issues, merge requests, a
    /// missing header) is acknowledged and ignored.
    pub fn is_push(self, headers: &HeaderMap) -> bool {
        let event = |name| header(headers, name).map(str::trim);
        match self {
            Provider::GitHub => event("x-github-event") == Some("push"),
            Provider::GitLab => {
                matches!(event("x-gitlab-event"), Some("Push Hook" | "Tag Push Hook"))
            }
            Provider::Gitea | Provider::Forgejo => {
                let name = event("x-forgejo-event").or_else(|| event("x-gitea-event"));
                name == Some("push")
            }
            Provider::Bitbucket => event("x-event-key") == Some("repo:push"),
            Provider::Generic => true,
        }
    }

    /// The pushes in an authenticated push payload: the repository's URLs and each ref that moved
    /// (at most [`MAX_REFS_PER_PUSH`]). `None` when the body is not such a payload.
    pub fn parse_push(self, body: &[u8]) -> Option<Push> {
        let push = match self {
            Provider::GitHub | Provider::Gitea | Provider::Forgejo => {
                let p: HubPush = serde_json::from_slice(body).ok()?;
                Push {
                    repository_urls: urls([
                        p.repository.html_url,
                        p.repository.clone_url,
                        p.repository.ssh_url,
                        p.repository.git_url,
                    ]),
                    refs: vec![p.git_ref],
                }
            }
            Provider::GitLab => {
                let p: GitLabPush = serde_json::from_slice(body).ok()?;
                let (project, repository) = (p.project.unwrap_or_default(), p.repository);
                Push {
                    repository_urls: urls([
                        project.web_url,
                        project.git_http_url,
                        project.git_ssh_url,
                        repository.git_http_url,
                        repository.git_ssh_url,
                        repository.homepage,
                    ]),
                    refs: vec![p.git_ref],
                }
            }
            Provider::Bitbucket => {
                let p: BitbucketPush = serde_json::from_slice(body).ok()?;
                let refs = p
                    .push
                    .changes
                    .into_iter()
                    .filter_map(|c| c.new.or(c.old))
                    .filter_map(|r| match r.kind.as_str() {
                        "branch" => Some(format!("refs/heads/{}", r.name)),
                        "tag" => Some(format!("refs/tags/{}", r.name)),
                        _ => None,
                    })
                    .collect();
                let html = p.repository.links.html.map(|l| l.href);
                Push {
                    repository_urls: urls([html]),
                    refs,
                }
            }
            Provider::Generic => {
                let p: GenericPush = serde_json::from_slice(body).ok()?;
                Push {
                    repository_urls: urls([Some(p.repository)]),
                    refs: vec![p.git_ref],
                }
            }
        };
        let mut refs: Vec<String> = push
            .refs
            .into_iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        refs.dedup();
        refs.truncate(MAX_REFS_PER_PUSH);
        (!push.repository_urls.is_empty() && !refs.is_empty()).then_some(Push {
            repository_urls: push.repository_urls,
            refs,
        })
    }
}

/// What one push payload says: the repository and the refs that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The repository's URLs as the payload gives them.
    pub repository_urls: Vec<String>,
    /// Full refs (`refs/heads/…`, `refs/tags/…`).
    pub refs: Vec<String>,
}

/// A header as text, `None` when missing or not visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `sha256=<hex>` checked against the HMAC-SHA256 of the body.
fn prefixed_hmac(value: Option<&str>, body: &[u8], secret: &[u8]) -> bool {
    hex_hmac(
        value.and_then(|v| v.trim().strip_prefix("sha256=")),
        body,
        secret,
    )
}

/// `<hex>` checked against the HMAC-SHA256 of the body, in constant time (`verify_slice`).
fn hex_hmac(value: Option<&str>, body: &[u8], secret: &[u8]) -> bool {
    let Some(expected) = value.and_then(|v| hex::decode(v.trim()).ok()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Compares a shared token with the secret without leaking where they differ or their lengths:
/// both are hashed first, then the digests are folded over their (equal) length.
fn token_equals(token: &[u8], secret: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(token), Sha256::digest(secret));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && !secret.is_empty()
}

/// The non-empty URLs, without repeats.
fn urls<const N: usize>(candidates: [Option<String>; N]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in candidates.into_iter().flatten() {
        let url = url.trim().to_string();
        if !url.is_empty() && !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// GitHub's and Gitea's push payload, the fields used.
#[derive(Deserialize)]
struct HubPush {
    #[serde(rename = "ref")]
    git_ref: String,
    repository: HubRepository,
}

#[derive(Deserialize)]
struct HubRepository {
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    git_url: Option<String>,
}

/// GitLab's push (and tag push) payload, the fields used.
#[derive(Deserialize)]
struct GitLabPush {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    project: Option<GitLabProject>,
    #[serde(default)]
    repository: GitLabProject,
}

#[derive(Deserialize, Default)]
struct GitLabProject {
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
    #[serde(default)]
    homepage: Option<String>,
}

/// Bitbucket Cloud's `repo:push` payload, the fields used.
#[derive(Deserialize)]
struct BitbucketPush {
    push: BitbucketChanges,
    repository: BitbucketRepository,
}

#[derive(Deserialize)]
struct BitbucketChanges {
    #[serde(default)]
    changes: Vec<BitbucketChange>,
}

#[derive(Deserialize)]
struct BitbucketChange {
    #[serde(default)]
    new: Option<BitbucketRef>,
    #[serde(default)]
    old: Option<BitbucketRef>,
}

#[derive(Deserialize)]
struct BitbucketRef {
    #[serde(rename = "type")]
    kind: String,
    name: String,
}

#[derive(Deserialize)]
struct BitbucketRepository {
    links: BitbucketLinks,
}

#[derive(Deserialize)]
struct BitbucketLinks {
    #[serde(default)]
    html: Option<BitbucketLink>,
}

#[derive(Deserialize)]
struct BitbucketLink {
    href: String,
}

/// The generic endpoint's payload.
#[derive(Deserialize)]
struct GenericPush {
    repository: String,
    #[serde(rename = "ref")]
    git_ref: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_equals(b"s3cret", b"s3cret"));
        assert!(!token_equals(b"s3cret", b"s3cres"));
        assert!(!token_equals(b"s3cre", b"s3cret"));
        assert!(!token_equals(b"", b""));
    }

    #[test]
    fn hmac_headers_need_the_prefix_and_valid_hex() {
        let mut mac = match HmacSha256::new_from_slice(b"k") {
            Ok(mac) => mac,
            Err(e) => panic!("{e}"),
        };
        mac.update(b"body");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert!(prefixed_hmac(Some(&format!("sha256={hex}")), b"body", b"k"));
        assert!(!prefixed_hmac(Some(&hex), b"body", b"k"));
        assert!(!prefixed_hmac(Some(&format!("sha1={hex}")), b"body", b"k"));
        assert!(!prefixed_hmac(Some("sha256=zz"), b"body", b"k"));
        assert!(!prefixed_hmac(
            Some(&format!("sha256={hex}")),
            b"bodY",
            b"k"
        ));
        assert!(!prefixed_hmac(
            Some(&format!("sha256={hex}")),
            b"body",
            b"K"
        ));
        assert!(!prefixed_hmac(None, b"body", b"k"));
        assert!(hex_hmac(Some(&hex), b"body", b"k"));
        assert!(!hex_hmac(Some(&hex[..62]), b"body", b"k"));
    }
}
