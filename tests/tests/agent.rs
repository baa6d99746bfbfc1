//! The agent against the real nginx, with real HTTP on loopback: applies that take, applies nginx
//! refuses, 502s counted under the digest that caused them, probes counted apart, a restarted
//! agent coming back on its last good config, and `SIGKILL` in the middle of an apply.
//!
//! These tests need nginx (`make test` installs nginx-light). Without it they fail, unless
//! `SWITCHBACK_SKIP_NGINX=1` is set, in which case they say loudly that they skipped.

use switchback::agent::client::apply_request;
use switchback::agent::{ApplyOutcome, ApplyStep, ProbeSpec};
use switchback::render::Digest;
use switchback_tests::agent_harness::{
    InProcess, Site, alive, applied, bundle, eventually, free_addr, get, nginx_available, ready,
    shutdown_leaves_nothing, site, traffic,
};
use switchback_tests::upstream::Upstream;

#[tokio::test(flavor = "multi_thread")]
async fn a_good_bundle_is_served_and_its_requests_counted() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("hello from the app\n").await;
    let site_ = Site::new();
    let agent = InProcess::start(site_.config(free_addr(), vec![])).await;
    let s = ready(&agent.client, false).await;
    assert_eq!(s.applied, None);
    assert_eq!(s.nginx.pid, None, "no config, no nginx");

    let v1 = site(site_.nginx, app.addr(), "v1");
    let out = agent
        .client
        .apply(&v1, "c1", "nginx.conf")
        .await
        .expect("apply");
    assert!(applied(&out), "{out:?}");
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );
    assert_eq!(
        get(site_.nginx, "/anything").await,
        Some((200, "hello from the app\n".into()))
    );
    assert!(app.hits() >= 1);
    let statuses = traffic(site_.nginx, "/version", 9).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");

    let s = eventually("11 requests counted under v1", || async {
        let s = agent.client.state().await.ok()?;
        let c = s.counters.iter().find(|c| c.digest == v1.digest())?;
        (c.traffic.status_2xx == 11).then_some(s)
    })
    .await;
    assert_eq!(s.applied.as_ref().map(|a| a.digest), Some(v1.digest()));
    assert_eq!(s.applied.as_ref().map(|a| a.commit.as_str()), Some("c1"));
    assert_eq!(s.nginx.generation, 1);
    assert!(s.nginx.managed);
    assert_eq!(s.counters[0].traffic.latency.total(), 11);
    let current = std::fs::read_link(site_.state.join("current")).expect("current");
    assert_eq!(
        current,
        std::path::Path::new("versions").join(v1.digest().to_hex())
    );

    // The same digest again: nothing to do, no reload.
    let again = agent
        .client
        .apply(&v1, "c1", "nginx.conf")
        .await
        .expect("apply");
    assert!(
        matches!(again, ApplyOutcome::Applied { noop: true, .. }),
        "{again:?}"
    );
    let s = agent.client.state().await.expect("state");
    assert_eq!(s.nginx.generation, 1);

    let metrics = agent.client.metrics().await.expect("metrics");
    let line = format!(
        "switchback_agent_requests_total{{digest=\"{}\",class=\"2xx\",source=\"traffic\"}} 11",
        v1.digest().short()
    );
    assert!(metrics.contains(&line), "{metrics}");
    assert!(metrics.contains("switchback_agent_applies_total{result=\"noop\"} 1"));
    shutdown_leaves_nothing(agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_bundles_leave_nginx_on_the_previous_config() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let agent = InProcess::start(site_.config(free_addr(), vec![])).await;
    let v1 = site(site_.nginx, app.addr(), "v1");
    assert!(applied(
        &agent
            .client
            .apply(&v1, "c1", "nginx.conf")
            .await
            .expect("apply")
    ));

    // nginx -t refuses it: an unknown directive on line 3.
    let bad = bundle(&format!(
        "events {{}}\nhttp {{\n  no_such_directive on;\n  server {{ listen {}; }}\n}}\n",
        site_.nginx
    ));
    let out = agent
        .client
        .apply(&bad, "c2", "nginx.conf")
        .await
        .expect("apply");
    let ApplyOutcome::ApplyFailed {
        step,
        reason,
        digest,
    } = &out
    else {
        panic!("accepted: {out:?}");
    };
    assert_eq!((*step, *digest), (ApplyStep::NginxTest, bad.digest()));
    assert!(
        reason.contains("unknown directive \"no_such_directive\"")
            && reason.contains("nginx.conf:3"),
        "{reason}"
    );
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );

    // nginx -t accepts it, the reload does not: its port is taken by someone else.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr");
    let clash = bundle(&format!(
        "events {{}}\nhttp {{\n  server {{ listen {}; location / {{ return 200 \"v3\\n\"; }} }}\n  server {{ listen {taken}; }}\n}}\n",
        site_.nginx
    ));
    let out = agent
        .client
        .apply(&clash, "c3", "nginx.conf")
        .await
        .expect("apply");
    let ApplyOutcome::ApplyFailed { step, reason, .. } = &out else {
        panic!("accepted: {out:?}");
    };
    assert_eq!(*step, ApplyStep::Reload, "{reason}");
    assert!(reason.contains("Address already in use"), "{reason}");
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );

    // A request whose files do not match its digest is refused before anything is written.
    let mut forged = apply_request(&v1, "c4", "nginx.conf");
    forged.digest = bad.digest();
    let out = agent.client.apply_raw(&forged).await.expect("apply");
    assert!(
        matches!(
            out,
            ApplyOutcome::ApplyFailed {
                step: ApplyStep::Verify,
                ..
            }
        ),
        "{out:?}"
    );

    let s = agent.client.state().await.expect("state");
    assert_eq!(s.applied.map(|a| a.digest), Some(v1.digest()));
    assert_eq!(s.desired.map(|d| d.digest), Some(bad.digest()));
    assert_eq!(s.nginx.generation, 1, "no reload took");
    assert!(matches!(
        s.last_apply.map(|l| l.outcome),
        Some(ApplyOutcome::ApplyFailed { .. })
    ));
    let current = std::fs::read_link(site_.state.join("current")).expect("current");
    assert!(current.ends_with(v1.digest().to_hex()), "{current:?}");
    let versions: Vec<_> = std::fs::read_dir(site_.state.join("versions"))
        .expect("versions")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(
        versions,
        [v1.digest().to_hex()],
        "refused versions are removed"
    );
    drop(squatter);
    shutdown_leaves_nothing(agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_upstream_shows_as_502s_and_connect_errors_under_its_digest() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let agent = InProcess::start(site_.config(free_addr(), vec![])).await;
    let good = site(site_.nginx, app.addr(), "good");
    assert!(applied(
        &agent
            .client
            .apply(&good, "c1", "nginx.conf")
            .await
            .expect("apply")
    ));
    traffic(site_.nginx, "/x", 5).await;

    // The outage's mistake: the upstream points at a port nothing listens on.
    let closed = free_addr();
    let broken = site(site_.nginx, closed, "broken");
    assert!(applied(
        &agent
            .client
            .apply(&broken, "c2", "nginx.conf")
            .await
            .expect("apply")
    ));
    let statuses = traffic(site_.nginx, "/x", 20).await;
    assert!(statuses.iter().all(|&s| s == 502), "{statuses:?}");

    let s = eventually(
        "20 502s and their connect errors under the broken digest",
        || async {
            let s = agent.client.state().await.ok()?;
            let c = s.counters.iter().find(|c| c.digest == broken.digest())?;
            (c.traffic.status_502 == 20 && c.traffic.upstream_connect_errors >= 20).then_some(s)
        },
    )
    .await;
    let by = |d: Digest| s.counters.iter().find(|c| c.digest == d).expect("counted");
    let b = by(broken.digest());
    assert_eq!((b.traffic.status_5xx, b.traffic.status_2xx), (20, 0));
    let g = by(good.digest());
    assert_eq!((g.traffic.status_2xx, g.traffic.status_5xx), (5, 0));
    assert_eq!(g.traffic.upstream_connect_errors, 0);
    assert_eq!(s.counters[0].digest, broken.digest(), "most recent first");
    shutdown_leaves_nothing(agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_are_counted_apart_from_user_traffic() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let probe: ProbeSpec = "host=probe.test,path=/healthz,status=200,rate=20"
        .parse()
        .expect("probe");
    let wrong: ProbeSpec = "host=probe.test,path=/version,status=204,rate=10"
        .parse()
        .expect("probe");
    let agent = InProcess::start(site_.config(free_addr(), vec![probe, wrong])).await;
    let v1 = site(site_.nginx, app.addr(), "v1");
    assert!(applied(
        &agent
            .client
            .apply(&v1, "c1", "nginx.conf")
            .await
            .expect("apply")
    ));
    traffic(site_.nginx, "/version", 7).await;

    let s = eventually("probe requests in the log and in the prober", || async {
        let s = agent.client.state().await.ok()?;
        let c = s.counters.iter().find(|c| c.digest == v1.digest())?;
        let prober = s.probes.first()?;
        (c.probes.status_2xx >= 10 && prober.ok >= 10 && c.traffic.total() == 7).then_some(s)
    })
    .await;
    // Probes keep coming; user traffic stays exactly what the test sent.
    let c = &s.counters[0];
    assert_eq!(c.traffic.status_2xx, 7);
    assert_eq!(s.probes[0].host, "probe.test");
    assert_eq!(s.probes[0].errors + s.probes[0].unexpected_status, 0);
    assert!(s.probes[1].unexpected_status >= 1, "{:?}", s.probes[1]);
    assert_eq!(s.probes[1].last_status, Some(200));
    // Someone sending the probe header with another value is still user traffic.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{}/version", site_.nginx))
        .header("X-Switchback-Probe", "guess")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    eventually("the forged probe counted as traffic", || async {
        let s = agent.client.state().await.ok()?;
        (s.counters[0].traffic.total() == 8).then_some(())
    })
    .await;
    shutdown_leaves_nothing(agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_are_serialised() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let agent = InProcess::start(site_.config(free_addr(), vec![])).await;
    let (a, b) = (
        site(site_.nginx, app.addr(), "a"),
        site(site_.nginx, app.addr(), "b"),
    );
    let (ra, rb) = tokio::join!(
        agent.client.apply(&a, "a", "nginx.conf"),
        agent.client.apply(&b, "b", "nginx.conf")
    );
    assert!(applied(&ra.expect("apply a")) && applied(&rb.expect("apply b")));
    let s = agent.client.state().await.expect("state");
    assert_eq!(s.nginx.generation, 2, "one start, one confirmed reload");
    let winner = s.applied.expect("applied");
    let body = get(site_.nginx, "/version").await.expect("answer").1;
    assert_eq!(
        body.trim(),
        winner.commit,
        "nginx serves what the state says"
    );
    shutdown_leaves_nothing(agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_serves_its_last_good_digest_and_restarts_a_dead_nginx() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let first = InProcess::start(site_.config(free_addr(), vec![])).await;
    let v1 = site(site_.nginx, app.addr(), "v1");
    assert!(applied(
        &first
            .client
            .apply(&v1, "c1", "nginx.conf")
            .await
            .expect("apply")
    ));
    let bad = bundle("events {}\nhttp { nope; }\n");
    let out = first
        .client
        .apply(&bad, "c2", "nginx.conf")
        .await
        .expect("apply");
    assert!(!out.is_applied());
    shutdown_leaves_nothing(first).await;
    assert_eq!(
        get(site_.nginx, "/version").await,
        None,
        "nginx stopped with its agent"
    );

    let second = InProcess::start(site_.config(free_addr(), vec![])).await;
    let s = ready(&second.client, true).await;
    let intruder = switchback::agent::run_with(site_.config(free_addr(), vec![]), async {}).await;
    assert!(
        matches!(&intruder, Err(switchback::agent::AgentError::Config(m)) if m.contains("another agent")),
        "{intruder:?}"
    );
    assert_eq!(
        s.applied.map(|a| (a.digest, a.commit)),
        Some((v1.digest(), "c1".into()))
    );
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );

    // The master dies hard; its workers live on, orphaned, holding the port. The agent clears
    // them and starts nginx again on the same config.
    let old = s.nginx.pid.expect("master");
    let orphans = s.nginx.workers.clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill nginx");
    let s = eventually("a new nginx master", || async {
        let s = second.client.state().await.ok()?;
        (s.nginx.pid.is_some_and(|p| p != old) && s.nginx.restarts == 1).then_some(s)
    })
    .await;
    assert!(!alive(old));
    assert!(
        orphans.iter().all(|&p| !alive(p)),
        "orphaned workers cleared"
    );
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );
    assert_eq!(s.applied.map(|a| a.digest), Some(v1.digest()));
    shutdown_leaves_nothing(second).await;
}

/// Stages of an apply at which the crash test kills the agent, and whether the new bundle is
/// the one nginx must serve afterwards (only once `applied` was persisted).
const CRASH_STAGES: [(&str, bool); 6] = [
    ("mid_write", false),
    ("written", false),
    ("renamed", false),
    ("swapped", false),
    ("reloaded", false),
    ("persisted", true),
];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_any_stage_of_an_apply_leaves_a_complete_config() {
    use switchback_tests::agent_harness::{Process, pid_file};
    if !nginx_available() {
        return;
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sb-test-agent"));
    let app = Upstream::start("app\n").await;
    for (stage, new_wins) in CRASH_STAGES {
        let site_ = Site::new();
        // Many files, so `mid_write` stops with most of them unwritten.
        let v1 = site(site_.nginx, app.addr(), "v1");
        let mut files = site(site_.nginx, app.addr(), "v2").files().clone();
        for i in 0..50 {
            files.insert(format!("conf.d/f{i:02}.conf"), vec![b'#'; 4096]);
        }
        let v2 = switchback::render::Bundle::new(files);

        // An agent applies v1, then dies: its nginx lives on, orphaned.
        let first = Process::spawn(bin, &site_, free_addr(), &[]);
        ready(&first.client, false).await;
        assert!(applied(
            &first
                .client
                .apply(&v1, "c1", "nginx.conf")
                .await
                .expect("apply")
        ));
        let master = pid_file(&site_.state).expect("nginx pid");
        drop(first);

        // The next agent adopts that nginx and is killed by SIGKILL in the middle of v2.
        let second = Process::spawn(
            bin,
            &site_,
            free_addr(),
            &[("SWITCHBACK_AGENT_CRASH_AT", stage)],
        );
        ready(&second.client, true).await;
        let r = second.client.apply(&v2, "c2", "nginx.conf").await;
        assert!(r.is_err(), "{stage}: the agent answered {r:?}");
        let status = second.wait().await;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{stage}: {status:?}");
        assert!(alive(master), "{stage}: nginx outlives its agent");

        // A restarted agent puts nginx on the last confirmed config, complete.
        let third = Process::spawn(bin, &site_, free_addr(), &[]);
        let s = ready(&third.client, true).await;
        let (want, body) = if new_wins {
            (&v2, "v2\n")
        } else {
            (&v1, "v1\n")
        };
        assert_eq!(s.applied.map(|a| a.digest), Some(want.digest()), "{stage}");
        assert_eq!(
            s.nginx.pid,
            Some(master),
            "{stage}: the running nginx was adopted"
        );
        assert_eq!(
            get(site_.nginx, "/version").await,
            Some((200, body.into())),
            "{stage}"
        );
        let current = std::fs::read_link(site_.state.join("current")).expect("current");
        assert!(
            current.ends_with(want.digest().to_hex()),
            "{stage}: {current:?}"
        );
        let stale = std::fs::read_dir(site_.state.join("versions"))
            .expect("versions")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(stale, 0, "{stage}: half-written stages are cleared");

        let status = third.terminate().await;
        assert!(status.success(), "{stage}: {status:?}");
        assert!(!alive(master), "{stage}: nginx stopped with the agent");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_mode_reloads_an_nginx_it_did_not_start_and_leaves_it_running() {
    use std::os::unix::process::CommandExt;
    use switchback::agent::layout::Layout;
    use switchback::agent::nginx::nginx_args;
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let local = InProcess::start(site_.config(free_addr(), vec![])).await;
    let v1 = site(site_.nginx, app.addr(), "v1");
    assert!(applied(
        &local
            .client
            .apply(&v1, "c1", "nginx.conf")
            .await
            .expect("apply")
    ));
    shutdown_leaves_nothing(local).await;

    // The pod's container runs nginx itself, with the documented arguments.
    let layout = Layout::new(site_.state.clone()).expect("layout");
    let binary = switchback::validate::sandbox::Nginx::find(None)
        .expect("nginx")
        .expect("nginx");
    let mut pod = std::process::Command::new(binary.path())
        .args(nginx_args(&layout, "current/nginx.conf"))
        .process_group(0)
        .spawn()
        .expect("start the pod's nginx");
    let pod_pid = i32::try_from(pod.id()).expect("pid");
    let mut cfg = site_.config(free_addr(), vec![]);
    cfg.manage_nginx = false;
    let agent = InProcess::start(cfg).await;
    let s = ready(&agent.client, true).await;
    assert_eq!((s.nginx.pid, s.nginx.managed), (Some(pod_pid), false));

    let v2 = site(site_.nginx, app.addr(), "v2");
    assert!(applied(
        &agent
            .client
            .apply(&v2, "c2", "nginx.conf")
            .await
            .expect("apply")
    ));
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v2\n".into()))
    );
    traffic(site_.nginx, "/version", 2).await;
    eventually("the pod's requests counted under v2", || async {
        let s = agent.client.state().await.ok()?;
        let c = s.counters.iter().find(|c| c.digest == v2.digest())?;
        (c.traffic.status_2xx == 3).then_some(())
    })
    .await;
    agent.shutdown().await;
    assert!(alive(pod_pid), "the pod's nginx is not the agent's to stop");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pod_pid),
        nix::sys::signal::Signal::SIGQUIT,
    )
    .expect("stop the pod's nginx");
    let _ = pod.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initial_bundle_is_applied_once() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let dir = site_.dir.path().join("config");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let v1 = site(site_.nginx, app.addr(), "v1");
    std::fs::write(dir.join("nginx.conf"), v1.get("nginx.conf").expect("conf")).expect("write");
    let mut cfg = site_.config(free_addr(), vec![]);
    cfg.initial_bundle = Some((dir.clone(), "nginx.conf".into()));

    let first = InProcess::start(cfg.clone()).await;
    let s = ready(&first.client, true).await;
    assert_eq!(s.applied.map(|a| a.digest), Some(v1.digest()));
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );
    shutdown_leaves_nothing(first).await;

    // Started again with the same flag: already applied, so no apply at all.
    cfg.listen = free_addr();
    let second = InProcess::start(cfg).await;
    let s = ready(&second.client, true).await;
    assert_eq!(s.applied.map(|a| a.digest), Some(v1.digest()));
    assert!(s.last_apply.is_none(), "{:?}", s.last_apply);
    shutdown_leaves_nothing(second).await;
}
