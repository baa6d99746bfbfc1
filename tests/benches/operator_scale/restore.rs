//! Run 2: one rollout over many pods, a bad commit, the time to restore every pod.

use super::*;

pub(crate) async fn restore(s: &Settings, bin: &Path) -> Vec<Row> {
    println!(
        "\n== restore: one ProxyRollout over {} pods, canary step {}, a commit answered with 85% 502",
        s.restore_pods, s.restore_step
    );
    let Stage {
        server,
        client,
        dir,
        repo,
        v0,
    } = Stage::set().await;
    let (d0, bad) = (digest_of(&site("v0")), digest_of(&site("bad")));
    let farm = Farm::start(11 + 2 * s.index, s.restore_pods, AGENT_PORT).await;
    create_pods(&client, "restore", farm.addresses(), |_| {
        BTreeMap::from([("app".to_string(), "edge".to_string())])
    })
    .await;
    // The step that takes the bad commit is the run's setting; the policy is the default one (the
    // commit is rolled back within its first step's bake either way).
    let strategy = json!({"steps": [s.restore_step, "100%"], "bake": "30s", "maxSurge": "100%"});
    Api::<ProxyRollout>::namespaced(client.clone(), "restore")
        .create(
            &PostParams::default(),
            &rollout(
                "edge",
                "restore",
                &repo.path,
                json!({"app": "edge"}),
                strategy,
                Source::Push,
            ),
        )
        .await
        .expect("create the ProxyRollout");
    let rollouts = Mirror::follow(&server, "switchback.dev", "proxyrollouts");
    let pods = Mirror::follow(&server, "", "pods");
    let annotated = |digest: String| {
        move |p: &Value| {
            p["metadata"]["annotations"]["switchback.dev/applied-digest"].as_str()
                == Some(digest.as_str())
        }
    };
    create_push_secret(&client, "restore").await;
    let controller = Controller::start(bin, &server, "restore", dir.path()).await;
    let hook = push_hook(&controller, "restore", &repo);
    wait_until("the rollout stable on v0 with every pod marked", || {
        rollouts
            .get("edge")
            .as_ref()
            .and_then(|o| status_str(o, &["stable", "commit"]))
            == Some(v0.as_str())
            && pods.all(annotated(d0.to_string()))
    })
    .await;
    println!("  v0 adopted on {} pods", s.restore_pods);

    farm.set_bad(bad);
    let committed = Instant::now();
    let commit = repo.commit(&site("bad"), "bad upstream");
    hook.send().await;
    let mut most_bad = 0;
    wait_until("the incident decision", || {
        most_bad = most_bad.max(farm.count_applied(&bad));
        rollouts
            .get("edge")
            .as_ref()
            .and_then(|o| status_str(o, &["lastIncident", "commit"]))
            .is_some_and(|c| c == commit)
    })
    .await;
    let seen_decided = Instant::now();
    // Restored: every agent serves stable again and every pod says so in its annotation.
    let restored_seen = wait_until("every pod restored and marked on the stable digest", || {
        most_bad = most_bad.max(farm.count_applied(&bad));
        farm.all_applied_at(&d0).is_some() && pods.all(annotated(d0.to_string()))
    })
    .await;
    let restored_wall = jiff::Timestamp::now();
    let (anchor_wall, anchor) = (jiff::Timestamp::now(), Instant::now());
    let agents_restored = farm.all_applied_at(&d0);
    let object = rollouts.get("edge").expect("the rollout");
    let decided: jiff::Timestamp = status_str(&object, &["lastIncident", "decidedAt"])
        .expect("lastIncident.decidedAt")
        .parse()
        .expect("decidedAt is RFC 3339");
    let restored_at = status_str(&object, &["lastIncident", "restoredAt"]).map(str::to_string);
    let to_duration = |from: jiff::Timestamp, to: jiff::Timestamp| {
        let d = to.duration_since(from);
        Duration::try_from(d).unwrap_or(Duration::ZERO)
    };
    let restore_marks = to_duration(decided, restored_wall);
    // The farm's Instant as a wall time, to compare with decidedAt.
    let restore_agents = agents_restored.map(|at| {
        let wall = anchor_wall
            .checked_sub(
                jiff::SignedDuration::try_from(anchor.duration_since(at)).unwrap_or_default(),
            )
            .unwrap_or(anchor_wall);
        to_duration(decided, wall)
    });
    let detect = seen_decided.duration_since(committed);
    println!(
        "  commit -> decision seen {}; {} pods had applied the bad digest at most; decidedAt {decided}, restoredAt {}",
        secs(detect),
        most_bad,
        restored_at.as_deref().unwrap_or("(empty)")
    );
    println!(
        "  decision -> every agent on stable {}, -> every pod annotated stable {} (observed {} after the decision was seen)",
        restore_agents.map(secs).unwrap_or_else(|| "?".into()),
        secs(restore_marks),
        secs(restored_seen.duration_since(seen_decided))
    );
    let restored_status = restored_at
        .as_deref()
        .and_then(|r| r.parse::<jiff::Timestamp>().ok())
        .map(|r| to_duration(decided, r));
    println!("  controller log: {}", controller.log.display());
    controller.stop().await;
    rollouts.stop();
    pods.stop();
    farm.stop().await;
    let mut rows = vec![
        row(
            &format!("commit -> incident decision seen ({} pods)", s.restore_pods),
            secs(detect),
            "",
            None,
        ),
        row(
            &format!("decision -> all {} pods annotated stable", s.restore_pods),
            secs(restore_marks),
            &format!("< {}", secs(s.goals.restore)),
            Some(restore_marks < s.goals.restore),
        ),
    ];
    if let Some(d) = restore_agents {
        rows.push(row(
            "decision -> all agents serve stable",
            secs(d),
            "",
            None,
        ));
    }
    if let Some(d) = restored_status {
        rows.push(row("decision -> status restoredAt", secs(d), "", None));
    }
    rows
}
