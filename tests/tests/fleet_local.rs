//! The runner driving a local fleet of real nginx pods: a bundle `nginx -t` rejects never reaches
//! a pod, and a bundle whose upstream is dead is rolled back on every pod on the evidence of the
//! agents' own probes alone (no user traffic at all).

use std::sync::Arc;
use std::time::Duration;

use switchback::agent::{AgentClient, ProbeSpec};
use switchback::fleet::Fleet;
use switchback::fleet::local::{LocalFleet, LocalFleetOptions};
use switchback::render::Bundle;
use switchback::rollout::{Phase, Release};
use switchback::runner::{Runner, RunnerConfig};
use switchback::validate::sandbox::Nginx;
use switchback_tests::agent_harness::nginx_available;

const LIMIT: Duration = Duration::from_secs(60);

fn release(n: u8, server_body: &str) -> (Release, Bundle) {
    let conf = format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.9.2:9001; }}\n    server {{\n        listen 8080;\n{server_body}\n    }}\n}}\n"
    );
    switchback_tests::release::release(n, conf)
}

async fn start(subnet: [u8; 2], dir: &std::path::Path) -> Arc<LocalFleet> {
    let mut options = LocalFleetOptions::new(dir.to_path_buf());
    options.pods = 3;
    options.subnet = subnet;
    options.probes = vec![ProbeSpec {
        host: "localhost".to_string(),
        path: "/".to_string(),
        status: 200,
        rate: 20.0,
    }];
    Arc::new(LocalFleet::start(options).await.expect("local fleet"))
}

/// The default strategy (steps 1, 25%, 50%, 100%; bake 3m; hold when inconclusive): neither
/// test gets a revision past its first step, so nothing here waits for a bake.
fn config() -> RunnerConfig {
    RunnerConfig {
        nginx: Nginx::find(None).expect("nginx"),
        poll_every: Duration::from_millis(100),
        ..RunnerConfig::default()
    }
}

async fn put_everywhere(fleet: &LocalFleet, release: &Release, bundle: &Bundle) {
    for pod in fleet.names() {
        let applied = fleet
            .apply(&pod, bundle, &release.revision.commit)
            .await
            .expect("apply");
        assert_eq!(applied, switchback::fleet::ApplyResult::Applied, "{pod}");
    }
}

async fn stop(fleet: Arc<LocalFleet>) {
    let fleet = Arc::try_unwrap(fleet).ok().expect("fleet no longer shared");
    assert!(fleet.shutdown().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_nginx_t_rejects_never_reaches_a_pod() {
    if !nginx_available() {
        return;
    }
    let dir = switchback_tests::files::searchable_tempdir();
    let fleet = start([0, 9], dir.path()).await;
    let (r0, b0) = release(0, "        location / { return 200 \"v0\\n\"; }");
    put_everywhere(&fleet, &r0, &b0).await;
    // Valid grammar, every lint rule passes; only nginx's regex compiler knows the location's
    // pattern is broken (SB900 from `nginx -t`).
    let (bad, bad_bundle) = release(
        1,
        "        location / { return 200 \"v1\\n\"; }\n        location ~ ^/v1/(x { return 200; }",
    );
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0.clone(), b0))).expect("runner");
    runner.submit(bad.clone(), bad_bundle);
    runner
        .run_until("reject it", LIMIT, |r| {
            r.ledger()
                .quarantined()
                .iter()
                .any(|q| q.release.digest == bad.digest)
        })
        .await
        .expect("quarantined");
    let reason = runner
        .rollout()
        .ledger()
        .quarantined()
        .iter()
        .find(|q| q.release.digest == bad.digest)
        .map(|q| q.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.contains("SB900") || reason.contains("pcre2"),
        "rejected by nginx -t, not the lint: {reason}"
    );
    for addr in fleet.http_addresses() {
        let api = std::net::SocketAddr::new(addr.ip(), 9180);
        let state = AgentClient::new(api)
            .expect("client")
            .with_token(fleet.token().clone())
            .state()
            .await
            .expect("state");
        assert_eq!(state.applied.map(|a| a.digest), Some(r0.digest), "{addr}");
        assert_ne!(
            state.desired.map(|d| d.digest),
            Some(bad.digest),
            "{addr} was told"
        );
    }
    drop(runner);
    stop(fleet).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_upstream_is_rolled_back_on_every_pod_on_probe_evidence_alone() {
    if !nginx_available() {
        return;
    }
    let dir = switchback_tests::files::searchable_tempdir();
    let fleet = start([0, 10], dir.path()).await;
    let (r0, b0) = release(0, "        location / { return 200 \"v0\\n\"; }");
    put_everywhere(&fleet, &r0, &b0).await;
    // Nothing listens on 127.0.9.2:9001: every request through the new config is a 502.
    let (bad, bad_bundle) = release(1, "        location / { proxy_pass http://app; }");
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0.clone(), b0))).expect("runner");
    runner.submit(bad.clone(), bad_bundle);
    runner
        .run_until("roll it back everywhere", LIMIT, |r| {
            r.state().phase() == Phase::Idle
                && r.ledger()
                    .quarantined()
                    .iter()
                    .any(|q| q.release.digest == bad.digest)
                && r.fleet().iter().all(|(_, p)| p.settled_on(r0.digest))
        })
        .await
        .expect("rolled back");
    let incident = runner
        .incidents()
        .values()
        .find(|i| i.revision.digest == bad.digest)
        .expect("an incident about the bad revision");
    assert!(incident.timeline.restored_at.is_some());
    for addr in fleet.http_addresses() {
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "v0\n", "{addr} serves the stable config again");
    }
    drop(runner);
    stop(fleet).await;
}
