//! Run 3 (`SCALE_SHARDS=k`): the scale run's pods and rollouts driven by k controller replicas
//! started with `--leader-elect --shards k`. Prints each replica's memory, their idle CPU
//! together, the time from a SIGKILL of the replica holding shard 0 to another replica holding
//! that shard's Lease (takeover), and then commit → every rollout stable with one replica fewer.

use k8s_openapi::api::coordination::v1::Lease;

use super::*;
use crate::scale::{BAKE_SECS, populate};

/// The Lease of shard `k` (`--lease-name` default with the shard suffix).
fn lease_name(k: u32) -> String {
    format!("switchback-controller-shard-{k}")
}

async fn holder(leases: &Api<Lease>, k: u32) -> Option<String> {
    leases
        .get_opt(&lease_name(k))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

pub(crate) async fn sharded(s: &Settings, bin: &Path, shards: u32) -> Vec<Row> {
    println!(
        "\n== sharded: {} pods in {} ProxyRollouts, {shards} replicas with --shards {shards}",
        s.pods, s.rollouts
    );
    let Stage {
        server,
        client,
        dir,
        repo,
        v0,
    } = Stage::set().await;
    let (d0, d1) = (digest_of(&site("v0")), digest_of(&site("v1")));
    let farm = Farm::start(30 + s.index, s.pods, AGENT_PORT).await;
    let groups = populate(&client, s, &repo, &farm, Source::Poll).await;
    let mirror = Mirror::follow(&server, "switchback.dev", "proxyrollouts");
    let stable_is = |commit: String| {
        move |o: &Value| status_str(o, &["stable", "commit"]) == Some(commit.as_str())
    };

    let started = Instant::now();
    let mut replicas = Vec::new();
    for i in 0..shards {
        let home = dir.path().join(format!("replica-{i}"));
        std::fs::create_dir(&home).expect("replica dir");
        let args: Vec<String> = [
            "--leader-elect",
            "--shards",
            &shards.to_string(),
            "--lease-namespace",
            "scale",
            "--lease-identity",
            &format!("replica-{i}"),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        replicas.push(Controller::start_with(bin, &server, "scale", &home, &args).await);
    }
    wait_until(&format!("{groups} rollouts stable on v0 (sharded)"), || {
        mirror.all(stable_is(v0.clone())) && farm.all_applied_at(&d0).is_some()
    })
    .await;
    let adopted = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss: Vec<u64> = replicas.iter().map(|c| c.memory().0).collect();
    let cpu0: f64 = replicas.iter().map(Controller::cpu).sum();
    let at0 = Instant::now();
    tokio::time::sleep(s.idle).await;
    let idle = at0.elapsed().as_secs_f64();
    let idle_cpu = (replicas.iter().map(Controller::cpu).sum::<f64>() - cpu0) / idle;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "scale");
    let mut held = Vec::new();
    for k in 0..shards {
        held.push(holder(&leases, k).await.unwrap_or_else(|| "-".into()));
    }
    println!(
        "  adopted in {}; VmRSS per replica {}; idle CPU of all replicas {:.0}% of a core; shard holders {held:?}",
        secs(adopted),
        rss.iter()
            .map(|b| format!("{:.1} MiB", *b as f64 / MIB))
            .collect::<Vec<_>>()
            .join(", "),
        idle_cpu * 100.0
    );

    // SIGKILL the holder of shard 0: no step-down, so its Lease must expire first.
    let victim = held[0].clone();
    let index = replicas
        .iter()
        .enumerate()
        .find(|(i, _)| format!("replica-{i}") == victim)
        .map(|(i, _)| i)
        .expect("shard 0 is held by a replica");
    let killed = Instant::now();
    replicas.remove(index).kill().await;
    let deadline = Instant::now() + patience();
    let taken_by = loop {
        match holder(&leases, 0).await {
            Some(h) if h != victim => break h,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "shard 0 not taken over from {victim} within {:?}",
            patience()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let takeover = killed.elapsed();
    let committed = Instant::now();
    let v1 = repo.commit(&site("v1"), "v1");
    let promoted = wait_until(
        &format!("{groups} rollouts stable on v1 after the takeover"),
        || mirror.all(stable_is(v1.clone())) && farm.all_applied_at(&d1).is_some(),
    )
    .await
    .duration_since(committed);
    let beyond = promoted.saturating_sub(Duration::from_secs(4 * BAKE_SECS));
    println!(
        "  SIGKILL of {victim}: shard 0 held by {taken_by} after {}; v1 committed then: every rollout stable after {} ({} beyond the four bakes)",
        secs(takeover),
        secs(promoted),
        secs(beyond)
    );
    for c in replicas {
        c.stop().await;
    }
    mirror.stop();
    farm.stop().await;

    let g = s.goals;
    let worst = rss.iter().copied().max().unwrap_or(0);
    vec![
        row(
            &format!("{shards} replicas: adopt {} pods", s.pods),
            secs(adopted),
            "",
            None,
        ),
        row(
            "largest replica VmRSS, adopted",
            format!("{:.1} MiB", worst as f64 / MIB),
            &format!("< {:.0} MiB", g.rss_mib),
            Some((worst as f64) < g.rss_mib * MIB),
        ),
        row(
            &format!("idle CPU, all {shards} replicas"),
            format!("{:.1}% core", idle_cpu * 100.0),
            &format!("< {:.0}% core", g.idle_cpu * 100.0),
            Some(idle_cpu < g.idle_cpu),
        ),
        row(
            "SIGKILL -> shard taken over",
            secs(takeover),
            "< 15 s lease",
            Some(takeover < Duration::from_secs(15)),
        ),
        row(
            "then commit -> all rollouts stable",
            secs(promoted),
            "",
            None,
        ),
        row(
            &format!("  of which beyond the four {BAKE_SECS} s bakes"),
            secs(beyond),
            "",
            None,
        ),
    ]
}
