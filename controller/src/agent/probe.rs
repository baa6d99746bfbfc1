//! Active health checks: the agent asks its own nginx for configured URLs at a bounded rate, so a
//! pod with no user traffic still says whether its config works. Probe requests carry the probe
//! header with this agent's token; the access log marks them, and they are counted apart from
//! user traffic (per digest, in [`super::wire::DigestCounters::probes`]). The prober also keeps
//! what it saw itself ([`ProbeStatus`]), which covers requests nginx never logged (refused
//! connections while nginx restarts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::config::ProbeSpec;
use super::directives::PROBE_HEADER;
use super::state::{Shared, lock};
use super::wire::ProbeStatus;

/// The status entry of a probe before its first request.
pub fn initial_status(spec: &ProbeSpec) -> ProbeStatus {
    ProbeStatus {
        host: spec.host.clone(),
        path: spec.path.clone(),
        expected_status: spec.status,
        sent: 0,
        ok: 0,
        unexpected_status: 0,
        errors: 0,
        last_status: None,
    }
}

/// Runs probe `index` until `shutdown` turns true. One request in flight at a time; ticks that
/// fall due while a request is slow are skipped, never bunched up, so the rate is an upper bound.
pub async fn run(
    shared: Arc<Shared>,
    index: usize,
    target: SocketAddr,
    client: reqwest::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(spec) = shared.cfg.probes.get(index).cloned() else {
        return;
    };
    let period = Duration::from_secs_f64(1.0 / spec.rate.max(0.01));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let url = format!("http://{target}{}", spec.path);
    let timeout = shared
        .cfg
        .timeouts
        .probe
        .min(period.max(Duration::from_millis(200)));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if lock(&shared.status).nginx.pid.is_none() {
            continue;
        }
        let sent = client
            .get(&url)
            .header(reqwest::header::HOST, &spec.host)
            .header(PROBE_HEADER, &shared.probe_token)
            .timeout(timeout)
            .send();
        let result = tokio::select! {
            _ = shutdown.changed() => return,
            r = sent => r,
        };
        let status = result.map(|r| r.status().as_u16());
        let mut s = lock(&shared.status);
        let Some(p) = s.probes.get_mut(index) else {
            return;
        };
        p.sent += 1;
        match status {
            Ok(code) => {
                p.last_status = Some(code);
                if code == spec.status {
                    p.ok += 1;
                } else {
                    p.unexpected_status += 1;
                }
            }
            Err(_) => p.errors += 1,
        }
    }
}
