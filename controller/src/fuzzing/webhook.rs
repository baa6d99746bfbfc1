//! The webhook receiver's pure parts (`source::webhook`): each provider's signature or token
//! check, its event and delivery headers, its push payload, and the trigger matching that
//! follows.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hmac::{KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::source::webhook::{DeliveryKeys, MAX_REFS_PER_PUSH, Provider, Trigger, repository_key};

/// The hook secret every input is checked against.
pub const SECRET: &[u8] = b"fuzz-hook-secret";

const PROVIDERS: [&str; 6] = [
    "github",
    "gitlab",
    "gitea",
    "forgejo",
    "bitbucket",
    "generic",
];

/// One input: a first line naming the provider (as in `/hooks/<provider>/…`), then header lines
/// `name: value` up to an empty line, then the body.
///
/// Checks: a request the provider authenticates carries exactly the right credential for
/// [`SECRET`] (the full HMAC-SHA256 of the body, or the token itself); the same request signed
/// correctly is accepted, and refused with one body byte changed or under another secret; a
/// parsed push has between one and [`MAX_REFS_PER_PUSH`] refs and URLs, and matches a spec
/// naming any of its URLs and its (full) ref.
pub fn webhook(data: &[u8]) {
    let (provider, headers, body) = split(data);
    let Some(provider) = Provider::from_path(provider) else {
        for name in PROVIDERS {
            if let Some(p) = Provider::from_path(name) {
                check(p, &headers, body);
            }
        }
        return;
    };
    check(provider, &headers, body);
}

fn split(data: &[u8]) -> (&str, HeaderMap, &[u8]) {
    let (first, mut rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let provider = std::str::from_utf8(first).unwrap_or("").trim();
    let mut headers = HeaderMap::new();
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..i];
        rest = &rest[i + 1..];
        if line.is_empty() || line == b"\r" {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    (provider, headers, rest)
}

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; an empty tag would match nothing.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The header a provider reads its credential from first, and how to write one for `body`.
fn credential(provider: Provider, body: &[u8], secret: &[u8]) -> (&'static str, String) {
    let hex_mac = hex::encode(mac(secret, body));
    match provider {
        Provider::GitHub => ("x-hub-signature-256", format!("sha256={hex_mac}")),
        Provider::Bitbucket => ("x-hub-signature", format!("sha256={hex_mac}")),
        Provider::Generic => ("x-switchback-signature", format!("sha256={hex_mac}")),
        Provider::Gitea => ("x-gitea-signature", hex_mac),
        Provider::Forgejo => ("x-forgejo-signature", hex_mac),
        Provider::GitLab => (
            "x-gitlab-token",
            String::from_utf8_lossy(secret).into_owned(),
        ),
    }
}

/// Whether a presented credential value is exactly right for `body` under `secret`.
fn is_right(provider: Provider, value: &str, body: &[u8], secret: &[u8]) -> bool {
    let value = value.trim();
    let hex_part = match provider {
        Provider::GitLab => return value.as_bytes() == secret,
        Provider::GitHub | Provider::Bitbucket | Provider::Generic => {
            match value.strip_prefix("sha256=") {
                Some(h) => h.trim(),
                None => return false,
            }
        }
        Provider::Gitea | Provider::Forgejo => value,
    };
    hex::decode(hex_part).is_ok_and(|m| m == mac(secret, body))
}

fn check(provider: Provider, headers: &HeaderMap, body: &[u8]) {
    let accepted = provider.authenticate(headers, body, SECRET);
    if accepted {
        let (name, _) = credential(provider, body, SECRET);
        let alternates: &[&str] = match provider {
            Provider::Gitea => &["x-forgejo-signature"],
            Provider::Forgejo => &["x-gitea-signature"],
            _ => &[],
        };
        let right = std::iter::once(name)
            .chain(alternates.iter().copied())
            .filter_map(|n| headers.get(n).and_then(|v| v.to_str().ok()))
            .any(|v| is_right(provider, v, body, SECRET));
        assert!(
            right,
            "{provider:?} accepted a request without the right credential"
        );
        assert!(provider.has_credentials(headers));
    }
    assert!(
        !provider.authenticate(headers, body, b""),
        "{provider:?} accepted a request under an empty secret"
    );

    // The same body, signed right, is accepted; one flipped byte or another secret is not.
    let (name, value) = credential(provider, body, SECRET);
    let mut signed = headers.clone();
    if let Ok(v) = HeaderValue::from_str(&value) {
        signed.insert(name, v);
        for other in ["x-forgejo-signature", "x-gitea-signature"] {
            if other != name {
                signed.remove(other);
            }
        }
        assert!(
            provider.authenticate(&signed, body, SECRET),
            "{provider:?} refused a right signature"
        );
        assert!(!provider.authenticate(&signed, body, b"another-secret"));
        if provider != Provider::GitLab {
            let mut changed = body.to_vec();
            match changed.first_mut() {
                Some(b) => *b ^= 1,
                None => changed.push(0),
            }
            assert!(
                !provider.authenticate(&signed, &changed, SECRET),
                "{provider:?} accepted a changed body"
            );
        }
    }

    let _ = provider.is_push(headers);
    let _ = provider.delivery_id(headers);
    let _ = DeliveryKeys::of(provider, "hook", headers, body);

    if let Some(push) = provider.parse_push(body) {
        assert!(!push.refs.is_empty() && push.refs.len() <= MAX_REFS_PER_PUSH);
        assert!(!push.repository_urls.is_empty());
        for git_ref in &push.refs {
            let trigger = Trigger {
                hook: "hook".to_string(),
                repository_urls: push.repository_urls.clone(),
                git_ref: git_ref.clone(),
            };
            for url in &push.repository_urls {
                if repository_key(url).is_some() {
                    assert!(
                        trigger.matches(url, ""),
                        "{url} does not match its own push"
                    );
                    // Only a full ref names itself: a payload's `ref: main` (no provider sends
                    // one) is matched by no spec, as `trigger::ref_matches` reads refs.
                    if git_ref.starts_with("refs/") {
                        assert!(
                            trigger.matches(url, git_ref),
                            "{url} {git_ref} does not match"
                        );
                    }
                }
            }
        }
    }
}
