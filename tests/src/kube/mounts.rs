//! The volumes the process kubelet mounts into a Pod's agent: the token Secret, so the agent
//! reads the token its Pod mounts, as with a real kubelet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::kubelet::{Ctx, PodKey};

/// When `pod` mounts a Secret volume holding the key `token`, a future that waits (up to a
/// minute, as a real kubelet retries the mount) for that Secret and writes the token into the
/// pod's own file; `None` when it mounts none, and its namespace's token (derived from the
/// kubelet's master) is used.
pub(super) fn secret_token(
    ctx: &Arc<Ctx>,
    key: &PodKey,
    pod: &Value,
) -> Option<impl std::future::Future<Output = Result<PathBuf, String>> + Send + 'static> {
    let secret = pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .next()?
        .to_string();
    let url = format!("{}/api/v1/namespaces/{}/secrets/{secret}", ctx.url, key.0);
    let file = ctx.dir.join(format!("{}.{}.token", key.0, key.1));
    let (http, token) = (ctx.http.clone(), ctx.token.clone());
    Some(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = async {
                http.get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Value>()
                    .await
            }
            .await;
            if let Ok(obj) = got {
                let value = obj["data"]["token"].as_str().unwrap_or_default();
                let bytes = switchback::agent::base64::decode(value)
                    .map_err(|e| format!("Secret {secret}: token: {e}"))?;
                std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
                return Ok(file);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "Secret {secret} (the pod's token volume) never appeared"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
