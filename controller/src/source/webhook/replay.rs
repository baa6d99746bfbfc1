//! The replay guard: an authenticated delivery is acted on once. Without it anyone who sees one
//! signed request (a proxy log, a misconfigured TLS terminator) can send it again as often as the
//! rate limit allows (issue 13, finding 8).
//!
//! What a delivery is known by, per provider (`docs/webhooks-and-signing.md` has the table):
//! - its **body**, for every provider: the SHA-256 of the exact bytes the signature covers. A
//!   provider's delivery id travels in a header the signature does not cover, so a replayer can
//!   change it at will; the body it cannot change without breaking the signature. Real push
//!   payloads differ from push to push (commit ids, timestamps), so a repeated body is a replay;
//! - its **delivery id**, when the provider sends one (GitHub `X-GitHub-Delivery`, Gitea
//!   `X-Gitea-Delivery`, Forgejo `X-Forgejo-Delivery`, Bitbucket Cloud `X-Request-UUID`, GitLab
//!   `Idempotency-Key` or `X-Gitlab-Event-UUID`, generic `X-Switchback-Delivery`): a provider's
//!   own redelivery of the same event is then recognised even if it re-serialised the body.
//!
//! A provider with no delivery id (the generic endpoint without the header) is guarded by the
//! body alone, so a generic sender must make each body unique (a `"delivery"` or `"after"` field
//! does it: unknown fields are ignored).
//!
//! The cache is bounded: at most `capacity` keys per provider, the oldest forgotten first. Only
//! authenticated requests add keys, so nobody without the secret can push a real delivery's key
//! out; a delivery older than the last `capacity` of its provider can be replayed (the poll
//! would have fetched its commit long before).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use axum::http::HeaderMap;
use sha2::{Digest as _, Sha256};

use super::provider::Provider;

/// Default keys remembered per provider (two per delivery with an id).
pub const DEFAULT_REPLAY_CAPACITY: usize = 8192;

/// One remembered key: a SHA-256, so the memory per key is fixed whatever the header held.
type Key = [u8; 32];

/// The keys of one delivery: its body, and its delivery id when the provider sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKeys(Vec<Key>);

impl DeliveryKeys {
    /// The keys of a request to `hook` with these headers and this (authenticated) body.
    pub fn of(provider: Provider, hook: &str, headers: &HeaderMap, body: &[u8]) -> DeliveryKeys {
        let mut keys = vec![key(hook, b"body", &Sha256::digest(body))];
        if let Some(id) = provider.delivery_id(headers) {
            keys.push(key(hook, b"delivery", id.as_bytes()));
        }
        DeliveryKeys(keys)
    }
}

/// `SHA-256(hook, kind, value)`, each length-prefixed so no two triples give the same bytes.
fn key(hook: &str, kind: &[u8], value: &[u8]) -> Key {
    let mut h = Sha256::new();
    for part in [hook.as_bytes(), kind, value] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The deliveries seen lately, per provider.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    seen: Mutex<HashMap<Provider, Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<Key>,
    order: VecDeque<Key>,
}

impl ReplayCache {
    /// A cache remembering up to `capacity` keys per provider.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity: capacity.max(2),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any key of this delivery was recorded already.
    pub fn seen(&self, provider: Provider, keys: &DeliveryKeys) -> bool {
        // A poisoned lock only means another request panicked mid-update; the sets are sound.
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(&provider)
            .is_some_and(|s| keys.0.iter().any(|k| s.keys.contains(k)))
    }

    /// Records the delivery; `false` (and nothing recorded) when any of its keys was there
    /// already, e.g. the same delivery arriving twice at once.
    pub fn record(&self, provider: Provider, keys: &DeliveryKeys) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let s = seen.entry(provider).or_default();
        if keys.0.iter().any(|k| s.keys.contains(k)) {
            return false;
        }
        for k in &keys.0 {
            s.keys.insert(*k);
            s.order.push_back(*k);
        }
        while s.order.len() > self.capacity {
            if let Some(old) = s.order.pop_front() {
                s.keys.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_delivery_is_recorded_once_by_body_and_by_id() {
        let cache = ReplayCache::new(16);
        let gh = |id: &str, body: &[u8]| {
            DeliveryKeys::of(
                Provider::GitHub,
                "h",
                &headers(&[("x-github-delivery", id)]),
                body,
            )
        };
        let first = gh("id-1", b"{\"after\":\"a\"}");
        assert!(!cache.seen(Provider::GitHub, &first));
        assert!(cache.record(Provider::GitHub, &first));
        assert!(cache.seen(Provider::GitHub, &first));
        assert!(!cache.record(Provider::GitHub, &first), "recorded once");
        // The same body under a fresh id (a replayer changing the unsigned header).
        assert!(cache.seen(Provider::GitHub, &gh("id-2", b"{\"after\":\"a\"}")));
        // The same id with a re-serialised body (the provider redelivering).
        assert!(cache.seen(Provider::GitHub, &gh("id-1", b"{ \"after\": \"a\" }")));
        // A new delivery; the same delivery to another hook or provider is another delivery.
        assert!(!cache.seen(Provider::GitHub, &gh("id-3", b"{\"after\":\"b\"}")));
        let other_hook =
            DeliveryKeys::of(Provider::GitHub, "h2", &headers(&[]), b"{\"after\":\"a\"}");
        assert!(!cache.seen(Provider::GitHub, &other_hook));
        assert!(!cache.seen(Provider::Gitea, &first));
    }

    #[test]
    fn the_cache_forgets_the_oldest_past_its_capacity() {
        let cache = ReplayCache::new(4);
        let k =
            |i: u32| DeliveryKeys::of(Provider::Generic, "h", &HeaderMap::new(), &i.to_be_bytes());
        for i in 0..10 {
            assert!(cache.record(Provider::Generic, &k(i)));
        }
        let seen = cache
            .seen
            .lock()
            .map(|s| s[&Provider::Generic].keys.len())
            .unwrap_or(0);
        assert_eq!(seen, 4);
        assert!(cache.seen(Provider::Generic, &k(9)));
        assert!(!cache.seen(Provider::Generic, &k(0)), "forgotten");
    }
}
