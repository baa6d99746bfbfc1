//! Telling the controller when something it should see changed (`--report-to`): the config
//! applied, a drift episode opening, closing or being repaired, and the agent itself starting (a
//! restarted container serves whatever its disk held). The controller reads idle pods only once
//! per heartbeat; a report makes it read this one at its next poll.
//!
//! A report is only "read me": `{namespace, pod}` with the agent's own bearer token, posted to
//! every address the controller's host name resolves to (a headless Service names every replica,
//! and only the one driving this pod acts on it). The agent looks at its state four times a
//! second and reports each change once; a report no replica took is sent again with a growing
//! pause, and never more than one at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::{KubeSettings, ReportTo};
use super::state::{Shared, lock};
use crate::operator::agent_reports::AgentReport;

/// How often the agent looks at its own state for a change to report.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// The longest pause between attempts at a report no replica took.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// At most this many replicas are told.
const MAX_ADDRESSES: usize = 16;

/// What, when it changes, the controller should hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reportable {
    applied: Option<crate::render::Digest>,
    drifted: bool,
    episodes: u64,
    repairs: u64,
    repair_failures: u64,
}

fn reportable(shared: &Shared) -> Reportable {
    let status = lock(&shared.status);
    Reportable {
        applied: status.applied.as_ref().map(|a| a.digest),
        drifted: status.drift.open().is_some(),
        episodes: status.drift.episodes,
        repairs: status.drift.repairs,
        repair_failures: status.drift.repair_failures,
    }
}

/// Reports every change of this agent's state to the controller until `stop`.
pub(super) async fn run(
    shared: Arc<Shared>,
    to: ReportTo,
    pod: KubeSettings,
    mut stop: watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::warn!(error = %e, "no HTTP client for reports; the controller's heartbeat reads this pod");
            return;
        }
    };
    let report = AgentReport {
        namespace: pod.namespace.clone(),
        pod: pod.pod_name.clone(),
    };
    // `None`: the start itself is the first change.
    let mut told: Option<Reportable> = None;
    let mut pause = LOOK_EVERY;
    let mut next_try = tokio::time::Instant::now();
    loop {
        let now = reportable(&shared);
        if told.as_ref() != Some(&now) && tokio::time::Instant::now() >= next_try {
            if send(&http, &to, &report, &pod.token).await {
                told = Some(now);
                pause = LOOK_EVERY;
            } else {
                pause = (pause * 2).min(MAX_PAUSE);
                next_try = tokio::time::Instant::now() + pause;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Posts the report to every address of the controller's host; whether any took it.
async fn send(
    http: &reqwest::Client,
    to: &ReportTo,
    report: &AgentReport,
    token: &super::Token,
) -> bool {
    let addresses = match tokio::net::lookup_host((to.host.as_str(), to.port)).await {
        Ok(found) => found.take(MAX_ADDRESSES).collect::<Vec<_>>(),
        Err(e) => {
            tracing::debug!(host = %to.host, error = %e, "the controller's host does not resolve");
            return false;
        }
    };
    let mut took = false;
    for addr in addresses {
        let url = format!("http://{addr}{}", to.path);
        let sent = http
            .post(&url)
            .header(reqwest::header::HOST, &to.host)
            .bearer_auth(token.expose())
            .json(report)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => took = true,
            Ok(r) => tracing::debug!(%addr, status = %r.status(), "report refused"),
            Err(e) => tracing::debug!(%addr, error = %e, "report not delivered"),
        }
    }
    took
}
