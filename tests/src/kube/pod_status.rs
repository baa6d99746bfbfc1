//! The process kubelet's status manager: a Pod's phase, IP and conditions written through the
//! status subresource as a real kubelet writes them, with `Ready` following the readiness gates.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchback::agent::AgentClient;
use tokio::sync::watch;

use super::kubelet::{AGENT_PORT, Ctx, PodKey};

/// Waits for the agent's `/healthz`, then writes Running/Ready with the pod IP into the Pod's
/// status; when the agent ends first, or after a minute without an answer, writes Failed.
pub(super) async fn report(
    ctx: Arc<Ctx>,
    key: PodKey,
    ip: IpAddr,
    gated: bool,
    ended: watch::Receiver<bool>,
) {
    let api = SocketAddr::new(ip, AGENT_PORT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let up = match AgentClient::new(api) {
        Ok(client) => loop {
            if client.healthz().await.is_ok() {
                break true;
            }
            if tokio::time::Instant::now() >= deadline || *ended.borrow() {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
        Err(_) => false,
    };
    let now = jiff::Timestamp::now().to_string();
    let status = if up {
        let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
        // With readiness gates the pod starts not Ready; `follow_gates` flips it once every
        // gate's condition is True.
        let ready = if gated {
            crate::kube::readiness::ready_patch(false, &now)["status"]["conditions"][0].clone()
        } else {
            cond("Ready")
        };
        json!({
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), ready,
            ],
        })
    } else {
        json!({
            "phase": "Failed",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "message": "the Switchback agent ended or did not answer /healthz within 60s",
        })
    };
    let url = format!(
        "{}/api/v1/namespaces/{}/pods/{}/status",
        ctx.url, key.0, key.1
    );
    let sent = ctx
        .http
        .patch(url)
        .bearer_auth(&ctx.token)
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({ "status": status }).to_string())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {}
        Ok(r) => eprintln!(
            "process kubelet: status of {}/{}: HTTP {}",
            key.0,
            key.1,
            r.status()
        ),
        Err(e) => eprintln!("process kubelet: status of {}/{}: {e}", key.0, key.1),
    }
}

/// Sets a running Pod's `Ready` from its readiness gates when they disagree (a real kubelet's
/// status manager does this on every change of the Pod's conditions).
pub(super) fn follow_gates(ctx: &Arc<Ctx>, key: &PodKey, pod: &Value) {
    use crate::kube::readiness::{ready_by_gates, ready_patch, says_ready};
    let Some(ready) = ready_by_gates(pod) else {
        return;
    };
    if says_ready(pod, ready) {
        return;
    }
    let url = format!(
        "{}/api/v1/namespaces/{}/pods/{}/status",
        ctx.url, key.0, key.1
    );
    let patch = ready_patch(ready, &jiff::Timestamp::now().to_string());
    let (http, token) = (ctx.http.clone(), ctx.token.clone());
    tokio::spawn(async move {
        let sent = http
            .patch(url)
            .bearer_auth(token)
            .header("Content-Type", "application/strategic-merge-patch+json")
            .body(patch.to_string())
            .send()
            .await;
        if let Err(e) = sent {
            eprintln!("process kubelet: readiness: {e}");
        }
    });
}
