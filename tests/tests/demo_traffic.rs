//! The demo's traffic generator against real HTTP servers on loopback (the demo's own upstream
//! servers stand in for the proxy pods, so no nginx is needed): pacing, the request cap, failures
//! recorded rather than retried, stopping, the loopback-only rule, and the figures cut from a record.
//!
//! No test asserts a wall-clock time: rate bounds are computed from the run's own measured send
//! window, and waits are on events (completed-request counts) with a deadline only against hangs.

use std::net::SocketAddr;
use std::time::Duration;

use switchback::demo::figures::{Figures, Incident};
use switchback::demo::traffic::{
    self, EndReason, ErrorKind, Outcome, ResponseRecord, Spread, Tally, TrafficConfig,
    TrafficError, TrafficRecord,
};
use switchback::demo::upstreams::{self, DEFAULT_STOP_GRACE, UpstreamSpec, Upstreams};

/// Only against hangs: a test that waits this long has failed anyway.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Two app servers on different loopback addresses, standing in for two proxy pods.
async fn two_pods() -> (Upstreams, Vec<SocketAddr>) {
    let ups = upstreams::start(&[
        UpstreamSpec::new("pod-a", addr("127.0.0.1:0")),
        UpstreamSpec::new("pod-b", addr("127.0.0.2:0")),
    ])
    .await
    .expect("start servers");
    let targets = ups.addrs().into_iter().map(|(_, a)| a).collect();
    (ups, targets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_is_held_and_every_request_is_recorded_round_robin() {
    let (ups, targets) = two_pods().await;
    let mut config = TrafficConfig::new(targets);
    config.rate_per_sec = 100;
    config.duration = Duration::from_millis(1_500);
    let record = traffic::start(&config)
        .expect("start traffic")
        .finish()
        .await
        .expect("record");
    let served = ups.stop(DEFAULT_STOP_GRACE).await;

    assert_eq!(record.ended_by, EndReason::Duration);
    assert!(record.send_window >= config.duration);
    // Pacing never runs ahead of schedule: the k-th request is sent no earlier than k periods
    // after the start. Small delays are caught up, so it holds the rate; the lower bound leaves
    // room for stalls longer than `MAX_LAG` on a loaded machine, whose backlog is dropped.
    let n = record.total();
    let window = record.send_window.as_secs_f64();
    let most = (window * 100.0).floor() as u64 + 1;
    let least = (window * 100.0 * 0.7) as u64;
    assert!((least..=most).contains(&n), "{n} requests in {window:.3} s");
    assert!(n <= config.request_cap());

    // Every request got its answer and is in the record: the servers saw exactly as many.
    assert!(
        record
            .responses
            .iter()
            .all(|r| r.outcome == Outcome::Status(200))
    );
    let seen: u64 = served.iter().map(|s| s.stats.requests).sum();
    assert_eq!(seen, n);
    assert!(served.iter().all(|s| s.graceful));

    // Round robin: pods within one request of each other, every (pod, path) pair used.
    let pods = record.per_pod();
    assert_eq!(pods.len(), 2);
    assert!(pods[0].requests.abs_diff(pods[1].requests) <= 1, "{pods:?}");
    assert_eq!(served[0].stats.requests, pods[0].requests);
    for pod in 0..2 {
        for path in 0..2 {
            let k = record
                .responses
                .iter()
                .filter(|r| r.pod == pod && r.path == path)
                .count() as u64;
            assert!(k + 2 >= n / 4, "pod {pod} path {path}: {k} of {n}");
        }
    }
    // Offsets are the sending times: increasing, inside the send window.
    assert!(
        record
            .responses
            .windows(2)
            .all(|w| w[0].offset <= w[1].offset)
    );
    assert!(
        record
            .responses
            .iter()
            .all(|r| r.offset <= record.send_window)
    );
}

#[tokio::test]
async fn the_request_cap_is_never_exceeded() {
    let (ups, targets) = two_pods().await;
    let mut config = TrafficConfig::new(targets);
    config.rate_per_sec = 1_000;
    config.duration = Duration::from_secs(10);
    config.max_requests = Some(25);
    let record = traffic::start(&config)
        .expect("start")
        .finish()
        .await
        .expect("record");
    ups.stop(DEFAULT_STOP_GRACE).await;
    assert_eq!(record.total(), 25);
    assert_eq!(record.ended_by, EndReason::MaxRequests);
}

#[tokio::test]
async fn a_closed_port_is_recorded_as_failures() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    // The listener is dropped here, so nothing listens on `closed` any more.
    let mut config = TrafficConfig::new(vec![closed]);
    config.rate_per_sec = 50;
    config.max_requests = Some(10);
    let record = traffic::start(&config)
        .expect("start")
        .finish()
        .await
        .expect("record");
    assert_eq!(record.total(), 10);
    assert_eq!(record.failed(), 10);
    assert_eq!(record.failed_share(), 1.0);
    for r in &record.responses {
        assert_eq!(
            r.outcome,
            Outcome::Error(ErrorKind::ConnectRefused),
            "{r:?}"
        );
    }
    assert_eq!(record.tally().errors, 10);
}

#[tokio::test]
async fn a_timeout_is_a_failure_and_is_not_retried() {
    let ups = upstreams::start(&[
        UpstreamSpec::new("slow", addr("127.0.0.1:0")).with_latency(Duration::from_millis(800))
    ])
    .await
    .expect("start");
    let mut config = TrafficConfig::new(vec![ups.addrs()[0].1]);
    config.rate_per_sec = 20;
    config.max_requests = Some(3);
    config.request_timeout = Duration::from_millis(100);
    let record = traffic::start(&config)
        .expect("start")
        .finish()
        .await
        .expect("record");
    let served = ups.stop(DEFAULT_STOP_GRACE).await;
    assert_eq!(record.total(), 3);
    for r in &record.responses {
        assert_eq!(r.outcome, Outcome::Error(ErrorKind::Timeout), "{r:?}");
        assert!(r.latency >= config.request_timeout, "{r:?}");
    }
    // Not retried: the server never saw more requests than were sent.
    assert!(served[0].stats.requests <= 3, "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_handle_ends_a_long_run_and_live_stats_follow() {
    let (ups, targets) = two_pods().await;
    let mut config = TrafficConfig::new(targets);
    config.rate_per_sec = 50;
    config.duration = Duration::from_secs(600);
    config.spread = Spread::Random { seed: 42 };
    let handle = traffic::start(&config).expect("start");
    let mut completed = handle.completed();
    tokio::time::timeout(HANG_GUARD, completed.wait_for(|&c| c >= 10))
        .await
        .expect("10 answers before the hang guard")
        .expect("generator alive");
    let live = handle.live();
    assert!(
        live.sent >= live.completed && live.completed >= 10,
        "{live:?}"
    );
    assert_eq!(live.per_pod_last_second.len(), 2);
    let sum: u64 = live.per_pod_last_second.iter().map(|t| t.requests).sum();
    assert_eq!(sum, live.last_second.requests);
    assert_eq!(live.last_second.failed, 0);

    let stopper = handle.stop_handle();
    stopper.stop();
    let record = handle.finish().await.expect("record");
    ups.stop(DEFAULT_STOP_GRACE).await;
    assert_eq!(record.ended_by, EndReason::Stopped);
    assert!(record.total() >= 10 && record.total() < config.request_cap());
    // Requests in flight at the stop were awaited, not dropped.
    assert_eq!(record.failed(), 0, "{:?}", record.tally());
    assert!(record.per_pod().iter().all(|t| t.requests > 0));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_generator() {
    let (ups, targets) = two_pods().await;
    let mut config = TrafficConfig::new(targets);
    config.duration = Duration::from_secs(600);
    let handle = traffic::start(&config).expect("start");
    let mut completed = handle.completed();
    tokio::time::timeout(HANG_GUARD, completed.wait_for(|&c| c >= 5))
        .await
        .expect("5 answers before the hang guard")
        .expect("generator alive");
    drop(handle);
    // The generator drops its completion channel when it has drained and returned.
    let done = tokio::time::timeout(HANG_GUARD, completed.wait_for(|_| false)).await;
    assert!(matches!(done, Ok(Err(_))), "generator still running");
    ups.stop(DEFAULT_STOP_GRACE).await;
}

#[test]
fn non_loopback_targets_and_unbounded_settings_are_refused() {
    for bad in [
        "10.0.0.1:8080",
        "0.0.0.0:8080",
        "[::1]:8080",
        "192.168.1.1:80",
    ] {
        let config = TrafficConfig::new(vec![addr("127.0.0.2:8080"), addr(bad)]);
        match traffic::start(&config) {
            Err(TrafficError::NotLoopback { addr }) => assert_eq!(addr.to_string(), bad),
            other => panic!("{bad}: expected NotLoopback, got {:?}", other.err()),
        }
    }
    let base = TrafficConfig::new(vec![addr("127.0.0.2:8080")]);
    let field = |f: fn(&mut TrafficConfig)| {
        let mut c = base.clone();
        f(&mut c);
        match traffic::start(&c) {
            Err(TrafficError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {:?}", other.err()),
        }
    };
    assert_eq!(field(|c| c.targets.clear()), "targets");
    assert_eq!(field(|c| c.paths = vec!["api".into()]), "paths");
    assert_eq!(field(|c| c.paths.clear()), "paths");
    assert_eq!(field(|c| c.rate_per_sec = 0), "rate_per_sec");
    assert_eq!(field(|c| c.rate_per_sec = 1_000_000), "rate_per_sec");
    assert_eq!(field(|c| c.duration = Duration::ZERO), "duration");
    assert_eq!(
        field(|c| c.duration = Duration::from_secs(86_400)),
        "duration"
    );
    assert_eq!(field(|c| c.max_in_flight = 0), "max_in_flight");
    let too_many = |c: &mut TrafficConfig| {
        c.rate_per_sec = 5_000;
        c.duration = Duration::from_secs(3_600);
    };
    assert_eq!(field(too_many), "max_requests");
    let mut capped = base.clone();
    too_many(&mut capped);
    capped.max_requests = Some(1_000);
    assert_eq!(capped.request_cap(), 1_000);
    assert_eq!(
        field(|c| c.request_timeout = Duration::ZERO),
        "request_timeout"
    );
    assert_eq!(field(|c| c.host = Some("a\nb".into())), "host");
}

#[test]
fn cap_is_rate_times_duration_plus_ten_percent_or_lower() {
    let mut c = TrafficConfig::new(vec![addr("127.0.0.2:8080")]);
    c.duration = Duration::from_secs(10);
    assert_eq!(c.request_cap(), 2_200);
    c.max_requests = Some(500);
    assert_eq!(c.request_cap(), 500);
    c.max_requests = Some(1_000_000);
    assert_eq!(c.request_cap(), 2_200);
}

fn rec(offset_ms: u64, pod: usize, outcome: Outcome) -> ResponseRecord {
    ResponseRecord {
        offset: Duration::from_millis(offset_ms),
        pod,
        path: 0,
        outcome,
        latency: Duration::from_millis(3),
    }
}

#[test]
fn record_counts_failures_overall_per_pod_and_in_an_interval() {
    let record = TrafficRecord {
        started_at: jiff::Timestamp::UNIX_EPOCH,
        targets: vec![addr("127.0.0.2:8080"), addr("127.0.0.3:8080")],
        paths: vec!["/".into()],
        rate_per_sec: 10,
        send_window: Duration::from_secs(3),
        ended_by: EndReason::Duration,
        responses: vec![
            rec(0, 0, Outcome::Status(200)),
            rec(900, 1, Outcome::Status(404)),
            rec(1000, 1, Outcome::Status(502)),
            rec(1500, 1, Outcome::Error(ErrorKind::ConnectRefused)),
            rec(1999, 0, Outcome::Status(503)),
            rec(2000, 1, Outcome::Error(ErrorKind::Timeout)),
        ],
    };
    assert_eq!((record.total(), record.failed()), (6, 4));
    assert!((record.failed_share() - 4.0 / 6.0).abs() < 1e-12);
    let t = record.tally_between(Duration::from_secs(1), Duration::from_secs(2));
    let expected = Tally {
        requests: 3,
        failed: 3,
        status_5xx: 2,
        status_502: 1,
        errors: 1,
    };
    assert_eq!(t, expected);
    assert_eq!(
        record.failed_between(Duration::ZERO, Duration::from_secs(1)),
        0
    );
    let pods = record.per_pod();
    assert_eq!((pods[0].requests, pods[0].failed), (2, 1));
    assert_eq!((pods[1].requests, pods[1].failed), (4, 3));
    let at = jiff::Timestamp::from_millisecond(1_250).expect("ts");
    assert_eq!(record.offset_of(at), Duration::from_millis(1_250));
    let before = jiff::Timestamp::from_millisecond(-5).expect("ts");
    assert_eq!(record.offset_of(before), Duration::ZERO);
    let json = serde_json::to_value(&record).expect("json");
    assert_eq!(
        json["responses"][2]["outcome"],
        serde_json::json!({"status": 502})
    );
    assert_eq!(
        json["responses"][3]["outcome"],
        serde_json::json!({"error": "connectRefused"})
    );
    assert_eq!(json["responses"][1]["offsetSecs"], 0.9);
    assert_eq!(json["endedBy"], "duration");
}

#[test]
fn from_record_cuts_the_incident_window() {
    let at = |ms| jiff::Timestamp::from_millisecond(ms).unwrap();
    let resp = |ms, outcome| ResponseRecord {
        offset: Duration::from_millis(ms),
        pod: 0,
        path: 0,
        outcome,
        latency: Duration::from_millis(1),
    };
    let record = TrafficRecord {
        started_at: at(10_000),
        targets: vec![SocketAddr::from(([127, 0, 0, 2], 8080))],
        paths: vec!["/".into()],
        rate_per_sec: 10,
        send_window: Duration::from_secs(5),
        ended_by: EndReason::Duration,
        responses: vec![
            resp(500, Outcome::Status(200)),
            resp(1_000, Outcome::Status(502)),
            resp(1_500, Outcome::Status(200)),
            resp(2_900, Outcome::Error(ErrorKind::Timeout)),
            resp(3_000, Outcome::Status(503)),
        ],
    };
    let incident = Incident {
        first_applied: at(11_000),
        decision: Some(at(12_200)),
        all_restored: Some(at(13_000)),
    };
    let f = Figures::from_record("sequential", &record, &incident);
    assert_eq!((f.incident_requests, f.incident_failed), (3, 2));
    assert_eq!((f.run_requests, f.run_failed), (5, 3));
    assert!((f.time_to_detect_secs.unwrap() - 1.2).abs() < 1e-9);
    assert!((f.time_to_restore_secs.unwrap() - 0.8).abs() < 1e-9);
    let open = Incident {
        decision: None,
        all_restored: None,
        ..incident
    };
    let f = Figures::from_record("threshold", &record, &open);
    assert_eq!((f.incident_requests, f.incident_failed), (4, 3));
    assert_eq!(
        (f.time_to_detect_secs, f.time_to_restore_secs),
        (None, None)
    );
}
