//! Drift detection with a real agent and nginx on loopback: a file of the live config edited by
//! hand is reported (naming the file) while nginx is left alone under policy `Report`, and is put
//! back, with nginx serving the applied config again, under policy `Repair`. The agent's own
//! applies are never reported as drift.
//!
//! Needs nginx, like `agent.rs`.

use std::time::Duration;

use switchback::agent::{AgentState, DriftPolicy, DriftResolution, DriftSettings};
use switchback::render::Bundle;
use switchback_tests::agent_harness::{
    InProcess, Site, applied, eventually, free_addr, get, nginx_available, pid_file, ready, site,
};
use switchback_tests::upstream::Upstream;

/// An agent on `site_` whose drift interval is long enough that only inotify can explain a
/// prompt report.
async fn agent(site_: &Site, policy: DriftPolicy) -> InProcess {
    let mut cfg = site_.config(free_addr(), vec![]);
    cfg.drift = DriftSettings {
        interval: Some(Duration::from_secs(600)),
        policy,
    };
    InProcess::start(cfg).await
}

/// An agent under `policy` serving v1 of the test site, applied through its API (so not drift),
/// and the upstream v1 proxies to; `None` (the test skipped) without nginx.
async fn serving_v1(policy: DriftPolicy) -> Option<(Upstream, Site, InProcess, Bundle)> {
    if !nginx_available() {
        return None;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let agent = agent(&site_, policy).await;
    ready(&agent.client, false).await;
    let v1 = site(site_.nginx, app.addr(), "v1");
    let out = agent
        .client
        .apply(&v1, "c1", "nginx.conf")
        .await
        .expect("apply");
    assert!(applied(&out), "{out:?}");
    Some((app, site_, agent, v1))
}

async fn state(agent: &InProcess) -> Option<AgentState> {
    agent.client.state().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_edit_is_reported_naming_the_file_and_left_alone() {
    let Some((app, site_, agent, v1)) = serving_v1(DriftPolicy::Report).await else {
        return;
    };
    let s = state(&agent).await.expect("state");
    assert!(s.drift.enabled);
    assert_eq!(s.drift.policy, DriftPolicy::Report);
    assert_eq!(s.drift.report, None, "the agent's own apply is not drift");

    // By hand, as someone with a shell in the pod would.
    let live = site_.state.join("current/nginx.conf");
    let original = std::fs::read_to_string(&live).expect("read the live config");
    std::fs::write(&live, original.replace("\"v1\\n\"", "\"hand\\n\"")).expect("edit");
    std::fs::write(site_.state.join("current/extra.conf"), "# added\n").expect("add");

    let s = eventually("the drift to be reported", || async {
        let s = state(&agent).await?;
        let open = s.drift.open()?;
        (open.added == ["extra.conf"]).then_some(s)
    })
    .await;
    let report = s.drift.open().expect("open");
    assert_eq!(report.digest, v1.digest());
    assert_eq!(report.changed, ["nginx.conf"]);
    assert!(report.removed.is_empty());
    assert_ne!(report.expected, report.found);
    assert_eq!(s.drift.episodes, 1);
    assert_eq!(s.drift.repairs, 0);
    let metrics = agent.client.metrics().await.expect("metrics");
    assert!(
        metrics.contains("switchback_agent_config_drift 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchback_agent_config_drift_episodes_total 1"),
        "{metrics}"
    );
    // Report only: the file stays as edited, nginx serves what it loaded, nothing reloaded.
    assert!(
        std::fs::read_to_string(&live)
            .expect("read")
            .contains("hand")
    );
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );
    assert_eq!(s.nginx.generation, 1);

    // Undone by hand: the episode ends as reverted.
    std::fs::write(&live, &original).expect("undo");
    std::fs::remove_file(site_.state.join("current/extra.conf")).expect("remove");
    let s = eventually("the drift to end", || async {
        let s = state(&agent).await?;
        (s.drift.open().is_none()).then_some(s)
    })
    .await;
    let last = s.drift.report.expect("the last episode is kept");
    assert_eq!(last.resolution, Some(DriftResolution::Reverted));

    // A new apply rewrites the live directory: the check it causes finds no drift, and from
    // then on the new directory is the one watched.
    let checks = state(&agent).await.expect("state").drift.checks;
    let v2 = site(site_.nginx, app.addr(), "v2");
    let out = agent
        .client
        .apply(&v2, "c2", "nginx.conf")
        .await
        .expect("apply");
    assert!(applied(&out), "{out:?}");
    let s = eventually("a check after the apply", || async {
        let s = state(&agent).await?;
        (s.drift.checks > checks).then_some(s)
    })
    .await;
    assert_eq!(s.drift.episodes, 1, "{:?}", s.drift);
    assert!(s.drift.open().is_none(), "{:?}", s.drift);
    let live = site_.state.join("current/nginx.conf");
    let v2_text = std::fs::read_to_string(&live).expect("read");
    std::fs::write(&live, v2_text.replace("\"v2\\n\"", "\"hand\\n\"")).expect("edit");
    let s = eventually("the drift of the new version to be reported", || async {
        let s = state(&agent).await?;
        (s.drift.open()?.digest == v2.digest()).then_some(s)
    })
    .await;
    assert_eq!(s.drift.episodes, 2);
    assert_eq!(
        s.drift.open().map(|r| r.changed.clone()),
        Some(vec!["nginx.conf".to_string()])
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn under_repair_a_hand_edit_is_undone_and_nginx_serves_the_applied_config() {
    let Some((_app, site_, agent, v1)) = serving_v1(DriftPolicy::Repair).await else {
        return;
    };
    let before = state(&agent).await.expect("state");
    assert_eq!(before.drift.policy, DriftPolicy::Repair);

    let live = site_.state.join("current/nginx.conf");
    let original = std::fs::read_to_string(&live).expect("read the live config");
    std::fs::write(&live, original.replace("\"v1\\n\"", "\"hand\\n\"")).expect("edit");
    // And make nginx load it, as `nginx -s reload` in the pod would (the repair may come first:
    // then this reload reads the repaired file; either way nginx must end on v1).
    let master = pid_file(&site_.state).expect("nginx pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("reload nginx by hand");

    let s = eventually("the drift to be repaired", || async {
        let s = state(&agent).await?;
        let last = s.drift.report.as_ref()?;
        (last.resolution == Some(DriftResolution::Repaired)).then_some(s)
    })
    .await;
    let last = s.drift.report.as_ref().expect("report");
    assert_eq!(last.changed, ["nginx.conf"]);
    assert!(s.drift.repairs >= 1);
    assert_eq!(s.drift.repair_failures, 0);
    assert!(
        s.nginx.generation > before.nginx.generation,
        "the repair reloaded nginx"
    );
    assert_eq!(
        std::fs::read_to_string(&live).expect("read"),
        original,
        "the file is restored"
    );
    eventually("nginx to serve v1 again", || async {
        (get(site_.nginx, "/version").await == Some((200, "v1\n".into()))).then_some(())
    })
    .await;
    assert_eq!(s.applied.map(|a| a.digest), Some(v1.digest()));
    let metrics = agent.client.metrics().await.expect("metrics");
    assert!(
        metrics.contains("switchback_agent_config_drift_repairs_total{result=\"repaired\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchback_agent_config_drift 0"),
        "{metrics}"
    );

    // A file removed by hand is put back too.
    std::fs::remove_file(&live).expect("remove");
    eventually("the removed file to be restored", || async {
        let s = state(&agent).await?;
        let back = std::fs::read_to_string(&live).ok()? == original;
        (back && s.drift.repairs >= 2 && s.drift.open().is_none()).then_some(())
    })
    .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_version_touched_by_hand_is_rewritten_when_rolled_back_to() {
    if !nginx_available() {
        return;
    }
    let app = Upstream::start("app\n").await;
    let site_ = Site::new();
    let agent = agent(&site_, DriftPolicy::Report).await;
    ready(&agent.client, false).await;
    let v1 = site(site_.nginx, app.addr(), "v1");
    let v2 = site(site_.nginx, app.addr(), "v2");
    for (b, c) in [(&v1, "c1"), (&v2, "c2")] {
        let out = agent.client.apply(b, c, "nginx.conf").await.expect("apply");
        assert!(applied(&out), "{out:?}");
    }
    // v1 is kept, not live: a symlink dropped into it by hand is nobody's drift yet...
    let kept = site_.state.join("versions").join(v1.digest().to_hex());
    std::os::unix::fs::symlink("/etc/hostname", kept.join("extra.conf")).expect("add");
    // ...but rolling back to v1 must not adopt it as part of what was applied.
    let out = agent
        .client
        .apply(&v1, "c1", "nginx.conf")
        .await
        .expect("apply");
    assert!(applied(&out), "{out:?}");
    assert!(
        !kept.join("extra.conf").exists(),
        "the kept copy was rewritten"
    );
    assert_eq!(
        get(site_.nginx, "/version").await,
        Some((200, "v1\n".into()))
    );
    let s = state(&agent).await.expect("state");
    assert!(s.drift.open().is_none(), "{:?}", s.drift);
    assert_eq!(s.drift.episodes, 0);
    agent.shutdown().await;
}
