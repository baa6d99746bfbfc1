//! The generic push webhook as a git host sends it once a push is in: a JSON body naming the
//! repository and ref, signed with HMAC-SHA256 of the hook's Secret (`X-Switchback-Signature`).
//! Benches and tests that drive rollouts by push use this one sender.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

/// One hook URL (`/hooks/generic/<namespace>.<secret>` on a controller's webhook address) and
/// the key its Secret holds. Each post carries a delivery id of its own in the signed body, as
/// every real delivery differs (a repeated body is refused as a replay).
pub struct GenericHook {
    url: String,
    key: String,
    repository: String,
    sent: AtomicU64,
    http: reqwest::Client,
}

impl GenericHook {
    /// The hook of Secret `secret` in `namespace` on the receiver at `addr`, for pushes to
    /// `repository` (as the rollouts' `spec.source.url` names it).
    pub fn new(
        addr: std::net::SocketAddr,
        namespace: &str,
        secret: &str,
        key: &str,
        repository: &str,
    ) -> GenericHook {
        GenericHook {
            url: format!("http://{addr}/hooks/generic/{namespace}.{secret}"),
            key: key.to_string(),
            repository: repository.to_string(),
            sent: AtomicU64::new(0),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Posts a push of `refs/heads/main`; the receiver's status code, `None` if it did not answer.
    pub async fn post(&self) -> Option<u16> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "repository": self.repository,
            "ref": "refs/heads/main",
            "delivery": format!("push-{}-{n}", std::process::id()),
        })
        .to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.as_bytes())
            .expect("any key length");
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.http
            .post(&self.url)
            .header("X-Switchback-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Waits until the receiver knows the hook (404 until a worker registered its Secret),
    /// posting pushes of the current head, which change nothing.
    pub async fn wait_registered(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        while self.post().await != Some(202) {
            assert!(Instant::now() < deadline, "the webhook never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Posts a push and insists that it was accepted.
    pub async fn send(&self) {
        let status = self.post().await;
        assert_eq!(status, Some(202), "the push webhook was not accepted");
    }
}

/// Creates the Secret `hook` in `edge` holding `token`, allowed for the rollout `edge` (a Secret
/// says which ProxyRollouts may use it, issue 13): what a rollout's `webhook.secretRef` names in
/// the tests and benches that push.
pub async fn create_hook_secret(k: &crate::kube::kubectl::Kubectl, token: &str) {
    k.ok(&[
        "create",
        "secret",
        "generic",
        "hook",
        "-n",
        "edge",
        &format!("--from-literal=token={token}"),
    ])
    .await;
    k.ok(&[
        "annotate",
        "secret",
        "hook",
        "-n",
        "edge",
        "switchback.dev/allowed-rollouts=edge",
    ])
    .await;
}
