//! `GET /metrics` in the Prometheus text format. The registry is built from the agent's state on
//! every scrape instead of living beside it: the counters already exist (the tally, the status),
//! so there is one source of truth, and digests the tally forgot disappear from the output
//! instead of lingering as stale series. Labels stay bounded: at most the tally's digest limit
//! (the short 12-hex form), five status classes, two sources.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::analysis::Counters;

use super::state::{Shared, lock};

type Labels = Vec<(&'static str, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn add(f: &Family<Labels, Counter>, labels: Labels, n: u64) {
    f.get_or_create(&labels).inc_by(n);
}

fn classes(c: &Counters) -> [(&'static str, u64); 5] {
    [
        ("1xx", c.status_1xx),
        ("2xx", c.status_2xx),
        ("3xx", c.status_3xx),
        ("4xx", c.status_4xx),
        ("5xx", c.status_5xx),
    ]
}

/// The text exposition of the agent's metrics.
pub fn render(shared: &Shared) -> Result<String, std::fmt::Error> {
    let state = shared.state();
    let totals = lock(&shared.status).applies.clone();
    let mut reg = Registry::default();

    let requests = counter_family(
        &mut reg,
        "switchback_agent_requests",
        "Requests nginx logged, by digest (12 hex), status class and source (traffic or probe)",
    );
    let gateway = counter_family(
        &mut reg,
        "switchback_agent_gateway_errors",
        "502/503/504 responses by digest, status and source",
    );
    let connect = counter_family(
        &mut reg,
        "switchback_agent_upstream_connect_errors",
        "Upstream connect failures in nginx's error log, by digest",
    );
    for dc in &state.counters {
        let digest = dc.digest.short();
        for (source, c) in [("traffic", &dc.traffic), ("probe", &dc.probes)] {
            for (class, n) in classes(c) {
                let labels = vec![
                    ("digest", digest.clone()),
                    ("class", class.to_string()),
                    ("source", source.to_string()),
                ];
                add(&requests, labels, n);
            }
            for (status, n) in [
                ("502", c.status_502),
                ("503", c.status_503),
                ("504", c.status_504),
            ] {
                let labels = vec![
                    ("digest", digest.clone()),
                    ("status", status.to_string()),
                    ("source", source.to_string()),
                ];
                add(&gateway, labels, n);
            }
        }
        add(
            &connect,
            vec![("digest", digest)],
            dc.traffic.upstream_connect_errors,
        );
    }

    let applies = counter_family(&mut reg, "switchback_agent_applies", "Applies by result");
    for (result, n) in [
        ("applied", totals.applied),
        ("noop", totals.noop),
        ("failed", totals.failed),
    ] {
        add(&applies, vec![("result", result.to_string())], n);
    }
    let lines = counter_family(
        &mut reg,
        "switchback_agent_ingested_lines",
        "Log lines received from nginx, by kind",
    );
    for (kind, n) in [
        ("access", state.ingest.access_lines),
        ("error", state.ingest.error_lines),
        ("unattributed", state.ingest.unattributed_lines),
        ("malformed", state.ingest.malformed_lines),
    ] {
        add(&lines, vec![("kind", kind.to_string())], n);
    }
    let restarts = Counter::<u64>::default();
    restarts.inc_by(state.nginx.restarts);
    reg.register(
        "switchback_agent_nginx_restarts",
        "Times the agent restarted a dead nginx",
        restarts,
    );
    let generation = Gauge::<i64>::default();
    generation.set(i64::try_from(state.nginx.generation).unwrap_or(i64::MAX));
    reg.register(
        "switchback_agent_nginx_generation",
        "Confirmed nginx worker generations since the agent started",
        generation,
    );
    let up = Gauge::<i64>::default();
    up.set(i64::from(state.nginx.pid.is_some()));
    reg.register(
        "switchback_agent_nginx_up",
        "Whether an nginx master runs",
        up,
    );
    let probes = counter_family(
        &mut reg,
        "switchback_agent_probe_requests",
        "Probe requests by probe (host and path) and outcome, as the prober saw them",
    );
    for p in &state.probes {
        for (outcome, n) in [
            ("ok", p.ok),
            ("unexpected_status", p.unexpected_status),
            ("error", p.errors),
        ] {
            let labels = vec![
                ("probe", format!("{}{}", p.host, p.path)),
                ("outcome", outcome.to_string()),
            ];
            add(&probes, labels, n);
        }
    }
    let drifted = Gauge::<i64>::default();
    drifted.set(i64::from(state.drift.open().is_some()));
    reg.register(
        "switchback_agent_config_drift",
        "Whether the live config differs from the applied digest now (1) or not (0)",
        drifted,
    );
    let episodes = Counter::<u64>::default();
    episodes.inc_by(state.drift.episodes);
    reg.register(
        "switchback_agent_config_drift_episodes",
        "Drift episodes seen: the live config began to differ from the applied digest",
        episodes,
    );
    let repairs = counter_family(
        &mut reg,
        "switchback_agent_config_drift_repairs",
        "Drift repairs (policy Repair) by result",
    );
    for (result, n) in [
        ("repaired", state.drift.repairs),
        ("failed", state.drift.repair_failures),
    ] {
        add(&repairs, vec![("result", result.to_string())], n);
    }
    let checks = Counter::<u64>::default();
    checks.inc_by(state.drift.checks);
    reg.register(
        "switchback_agent_config_drift_checks",
        "Drift checks done (inotify events, kicks and the interval)",
        checks,
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
