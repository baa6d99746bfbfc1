//! Run 1: every rollout adopted, a commit rolled out everywhere, idle cost and memory.

use super::*;

/// The bake of every step in the scale run (the default is 3 minutes).
pub(crate) const BAKE_SECS: u64 = 8;

pub(crate) async fn scale(s: &Settings, bin: &Path) -> Vec<Row> {
    println!(
        "\n== scale: {} pods in {} ProxyRollouts ({} pods each), one git repository",
        s.pods,
        s.rollouts,
        s.pods / s.rollouts
    );
    let Stage {
        server,
        client,
        dir,
        repo,
        v0,
    } = Stage::set().await;
    let (d0, d1) = (digest_of(&site("v0")), digest_of(&site("v1")));
    let farm = Farm::start(10 + 2 * s.index, s.pods, AGENT_PORT).await;
    let groups = populate(&client, s, &repo, &farm, Source::Push).await;
    let mirror = Mirror::follow(&server, "switchback.dev", "proxyrollouts");
    let stable_is = |commit: String| {
        move |o: &Value| status_str(o, &["stable", "commit"]) == Some(commit.as_str())
    };

    let started = Instant::now();
    let controller = Controller::start(bin, &server, "scale", dir.path()).await;
    let ready = started.elapsed();
    let hook = push_hook(&controller, "scale", &repo);
    wait_until_explained(
        &format!("{groups} rollouts stable on v0"),
        || mirror.all(stable_is(v0.clone())) && farm.all_applied_at(&d0).is_some(),
        || explain_unconverged(&server, &mirror, &farm, &v0, &d0, &controller.log),
    )
    .await;
    let adopted = started.elapsed();
    println!(
        "  controller ready in {}, every rollout stable on v0 and every pod on it {} after start",
        secs(ready),
        secs(adopted)
    );
    // Let the adoption's status writes and reconciles settle before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_adopted, hwm_adopted) = controller.memory();
    let adoption_reconciles = reconcile_buckets(&controller.scrape().await);
    let (cpu0, reads0, at0) = (controller.cpu(), farm.counts(), Instant::now());
    let api0 = server.request_count();
    tokio::time::sleep(s.idle).await;
    let idle = at0.elapsed().as_secs_f64();
    let idle_cpu = (controller.cpu() - cpu0) / idle;
    let idle_reads = (farm.counts().reads - reads0.reads) as f64 / idle;
    let idle_api = (server.request_count() - api0) as f64 / idle;
    println!(
        "  idle (all stable), over {idle:.0} s: controller CPU {:.0}% of a core, {idle_reads:.0} agent state reads/s, {idle_api:.0} API requests/s",
        idle_cpu * 100.0
    );

    let (reads1, api1) = (farm.counts().reads, server.request_count());
    let committed = Instant::now();
    let v1 = repo.commit(&site("v1"), "v1");
    hook.send().await;
    let applied_at = wait_until("every pod to apply v1", || {
        farm.all_applied_at(&d1).is_some()
    })
    .await;
    let applied = farm
        .all_applied_at(&d1)
        .unwrap_or(applied_at)
        .duration_since(committed);
    let promoted = wait_until(&format!("{groups} rollouts stable on v1"), || {
        mirror.all(stable_is(v1.clone()))
    })
    .await
    .duration_since(committed);
    // The rates while the rollout runs (mostly bakes): what analysis costs.
    let rolling = promoted.as_secs_f64();
    let rollout_reads = (farm.counts().reads - reads1) as f64 / rolling;
    let rollout_api = (server.request_count() - api1) as f64 / rolling;
    // Steps 1-3 bake before step 4 tells the last pods: the rest is the controller's own time.
    let applied_beyond = applied.saturating_sub(Duration::from_secs(3 * BAKE_SECS));
    // Four steps each bake BAKE_SECS whatever the controller does; the rest is its own time.
    let bakes = Duration::from_secs(4 * BAKE_SECS);
    let overhead = promoted.saturating_sub(bakes);
    println!(
        "  v1 committed: every pod applied it after {}, every rollout stable on it after {} ({} beyond the four {BAKE_SECS} s bakes)",
        secs(applied),
        secs(promoted),
        secs(overhead)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, hwm_after) = controller.memory();
    let metrics = controller.scrape().await;
    let (count, p50, p99) = reconcile_quantiles(&metrics);
    // Without the adoption: its first reconciles start all at once and queue at the API server
    // (the finalizer patches), which is most of the p99 above.
    let (_, _, p99_after) = quantiles_of(&buckets_since(
        &adoption_reconciles,
        &reconcile_buckets(&metrics),
    ));
    let counts = farm.counts();
    println!(
        "  memory: after adoption VmRSS {:.1} MiB (peak {:.1}), after v1 VmRSS {:.1} MiB (peak {:.1})",
        rss_adopted as f64 / MIB,
        hwm_adopted as f64 / MIB,
        rss_after as f64 / MIB,
        hwm_after as f64 / MIB
    );
    println!(
        "  {count} reconciles; agents answered {} applies, {} nudges, {} state reads; the API server {} requests; controller CPU {:.1} s",
        counts.applies,
        counts.nudges,
        counts.reads,
        server.request_count(),
        controller.cpu()
    );
    print_api_breakdown(&server);
    println!(
        "  controller log: {} (kept in the temp dir until the run ends)",
        controller.log.display()
    );
    controller.stop().await;
    mirror.stop();
    farm.stop().await;

    let g = s.goals;
    let goal_rss = g.rss_mib * MIB;
    let rss_goal = format!("< {:.0} MiB", g.rss_mib);
    let peak = hwm_after.max(hwm_adopted);
    let per_sec = |x: f64| format!("{x:.0}/s");
    vec![
        row(
            &format!("{} pods / {groups} rollouts converged", s.pods),
            "yes".into(),
            "yes",
            Some(true),
        ),
        row(
            &format!("controller VmRSS, {} pods adopted", s.pods),
            format!("{:.1} MiB", rss_adopted as f64 / MIB),
            &rss_goal,
            Some((rss_adopted as f64) < goal_rss),
        ),
        row(
            "controller VmRSS after v1 everywhere",
            format!("{:.1} MiB", rss_after as f64 / MIB),
            &rss_goal,
            Some((rss_after as f64) < goal_rss),
        ),
        row(
            "controller VmHWM (peak RSS)",
            format!("{:.1} MiB", peak as f64 / MIB),
            &rss_goal,
            Some((peak as f64) < goal_rss),
        ),
        row(
            &format!("reconciles (of {} rollouts)", groups),
            count.to_string(),
            "",
            None,
        ),
        row(
            "reconcile p50 (bucket-interpolated)",
            format!("{:.2} ms", p50.as_secs_f64() * 1e3),
            "",
            None,
        ),
        row(
            "reconcile p99 (bucket-interpolated)",
            format!("{:.2} ms", p99.as_secs_f64() * 1e3),
            &format!("< {} ms", g.reconcile_p99.as_millis()),
            Some(p99 < g.reconcile_p99),
        ),
        row(
            "  after adoption (idle and the rollout)",
            format!("{:.2} ms", p99_after.as_secs_f64() * 1e3),
            "",
            None,
        ),
        row(
            &format!("idle CPU (over {idle:.0} s, all stable)"),
            format!("{:.1}% core", idle_cpu * 100.0),
            &format!("< {:.0}% core", g.idle_cpu * 100.0),
            Some(idle_cpu < g.idle_cpu),
        ),
        row("agent state reads, idle", per_sec(idle_reads), "", None),
        row(
            "agent state reads, during the rollout",
            per_sec(rollout_reads),
            "",
            None,
        ),
        row("API requests, idle", per_sec(idle_api), "", None),
        row(
            "API requests, during the rollout",
            per_sec(rollout_api),
            "",
            None,
        ),
        row(
            &format!("adopt: start -> {} pods on v0", s.pods),
            secs(adopted),
            "",
            None,
        ),
        row(
            &format!("commit -> all {} pods applied (step 4/4)", s.pods),
            secs(applied),
            "",
            None,
        ),
        row(
            &format!("  of which beyond the three {BAKE_SECS} s bakes"),
            secs(applied_beyond),
            &format!("< {}", secs(g.applied)),
            Some(applied_beyond < g.applied),
        ),
        row(
            &format!("commit -> all {groups} rollouts stable (4 steps)"),
            secs(promoted),
            "",
            None,
        ),
        row(
            &format!("  of which beyond the four {BAKE_SECS} s bakes"),
            secs(overhead),
            "",
            None,
        ),
    ]
}

/// Creates the run's pods (on `farm`'s addresses) and its `s.rollouts` ProxyRollouts of ten pods
/// each, following `repo`; returns how many rollouts.
pub(crate) async fn populate(
    client: &kube::Client,
    s: &Settings,
    repo: &Repo,
    farm: &Farm,
    source: Source,
) -> usize {
    let per = s.pods.div_ceil(s.rollouts);
    let group = |i: usize| format!("r{:03}", i / per);
    create_pods(client, "scale", farm.addresses(), |i| {
        BTreeMap::from([
            ("app".to_string(), "edge".to_string()),
            ("rollout".to_string(), group(i)),
        ])
    })
    .await;
    create_push_secret(client, "scale").await;
    let rollouts: Api<ProxyRollout> = Api::namespaced(client.clone(), "scale");
    // The default steps and policy (hold when inconclusive): each fake pod serves 50 requests/s,
    // so a step's canary is called healthy at its bake's end. The bake shortened from 3m to
    // BAKE_SECS (step 1's one canary pod serves 400 requests in it, more than the ~330 a
    // verdict needs); maxSurge 100% so the figures are the controller's, not a surge schedule.
    let bake = format!("{BAKE_SECS}s");
    let strategy = json!({"bake": bake, "maxSurge": "100%"});
    let groups = s.pods.div_ceil(per);
    for r in 0..groups {
        let name = format!("r{r:03}");
        let object = rollout(
            &name,
            "scale",
            &repo.path,
            json!({"app": "edge", "rollout": name}),
            strategy.clone(),
            source,
        );
        rollouts
            .create(&PostParams::default(), &object)
            .await
            .expect("create a ProxyRollout");
    }
    groups
}

/// Requests the API server answered, by method and resource, most first: what the controller
/// spends its API traffic on.
pub(crate) fn print_api_breakdown(server: &KubeServer) {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in server.requests() {
        let path = r.uri.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // /api/v1/namespaces/ns/<plural>[/name[/sub]] or /apis/g/v/namespaces/ns/<plural>/...
        let at = parts.iter().position(|p| *p == "namespaces").map(|i| i + 2);
        let resource = match at {
            Some(i) if i < parts.len() => {
                let sub = parts
                    .get(i + 2)
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!("{}{sub}", parts[i])
            }
            _ => parts.last().copied().unwrap_or_default().to_string(),
        };
        let watch = if r.uri.contains("watch=true") {
            " (watch)"
        } else {
            ""
        };
        *by.entry(format!("{} {resource}{watch}", r.method))
            .or_default() += 1;
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort_by_key(|b| std::cmp::Reverse(b.1));
    let top: Vec<String> = by
        .iter()
        .take(8)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    println!("  API requests by kind: {}", top.join(", "));
}
