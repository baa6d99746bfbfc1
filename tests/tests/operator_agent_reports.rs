//! Agents report their changes (`--report-to`), so the controller need not read idle pods often:
//! with a heartbeat of an hour, a hand edit on one pod still shows as its `ConfigDrifted`
//! condition, because its agent said "read me" and the controller did. The agents run as the
//! process kubelet's pods (real nginx), the controller in-process with its health port serving
//! the reports; every policy is at its default.

use std::time::Duration;

use switchback::operator::agent_reports::{AGENT_REPORT_PATH, AgentReports};
use switchback::operator::controller::ControllerOptions;
use switchback::operator::health::{self, HealthState, Readiness};
use switchback::operator::metrics::Metrics;
use switchback_tests::agent_harness::pid_file;
use switchback_tests::operator_fixture::Cluster;

const DRIFTED: &str = "{.status.conditions[?(@.type==\"switchback.dev/ConfigDrifted\")].status}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_on_an_idle_pod_is_seen_through_its_agents_report_not_the_heartbeat() {
    let listener = tokio::net::TcpListener::bind("127.0.134.3:0")
        .await
        .expect("bind the health port");
    let url = format!(
        "http://{}{AGENT_REPORT_PATH}",
        listener.local_addr().expect("address")
    );
    let Some(mut c) = Cluster::up_reporting_to(134, &["edge-0", "edge-1"], &url).await else {
        return;
    };
    let master = c
        .controller_options()
        .agent_token
        .expect("the agents' token");
    let reports = AgentReports::new(master);
    let state = HealthState {
        metrics: Metrics::new(),
        readiness: Readiness::not_ready("test"),
        reports: Some(reports.clone()),
    };
    let server = tokio::spawn(health::serve_on(listener, state, std::future::pending()));

    c.apply_rollout("    {}\n").await;
    let options = ControllerOptions {
        // Idle pods are read once at start and then, without reports, not for an hour.
        heartbeat: Duration::from_secs(3600),
        agent_reports: Some(reports),
        ..c.controller_options()
    };
    c.start_controller_with(options).await;
    c.wait_condition("Ready").await;
    for pod in ["pod/edge-0", "pod/edge-1"] {
        c.wait_for(pod, DRIFTED, |s| s == "False").await;
    }

    // Someone with a shell in edge-0 edits the config and reloads nginx.
    let live = c.live_config("edge-0").join("nginx.conf");
    let original = std::fs::read_to_string(&live).expect("read the live config");
    std::fs::write(&live, original.replace("\"v0\\n\"", "\"hand\\n\"")).expect("edit");
    let state_dir = c.live_config("edge-0");
    let master = pid_file(state_dir.parent().expect("state dir")).expect("nginx pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("reload nginx by hand");

    let drifted = c.wait_for("pod/edge-0", DRIFTED, |s| s == "True").await;
    assert_eq!(
        drifted, "True",
        "the report made the controller read edge-0"
    );
    assert_eq!(c.jsonpath("pod/edge-1", DRIFTED).await, "False");
    server.abort();
    c.down().await;
}
