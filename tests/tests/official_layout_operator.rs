//! The operator rolls a repository laid out like the official nginx image's `/etc/nginx`
//! (`examples/official-layout`) out to its pods, on the default strategy (only the bake
//! shortened), with users on every pod: the absolute includes below `/etc/nginx` are served from
//! the bundle, `mime.types` and `fastcgi_params` from the pod's own nginx files, and every pod is
//! told the config root beside the entry.

use std::time::Duration;

use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::{Cluster, PATIENCE};
use switchback_tests::upstream::Upstream;

const PODS: &[&str] = &["edge-0", "edge-1", "edge-2"];

/// Long enough for four steps of 8 s and their applies on a loaded 2-core machine.
const ROLLOUT_PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_promotes_the_official_layout_through_every_default_step() {
    let Some(mut c) = Cluster::up(125, PODS).await else {
        return;
    };
    let app = Upstream::start("app\n").await;
    c.apply_rollout("    bake: 8s\n").await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let load = c.start_traffic(PER_POD_RPS).await;
    load.wait_flowing(3, 150, PATIENCE).await;

    // The repository becomes the image's layout; only the app's address is this test's.
    std::fs::remove_file(c.repo.join("nginx.conf")).expect("remove");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/official-layout");
    switchback_tests::files::copy_tree(&example, &c.repo);
    let site = c.repo.join("conf.d/app.conf");
    let text = std::fs::read_to_string(&site).expect("read");
    std::fs::write(
        &site,
        text.replace("127.0.22.2:9001", &app.addr().to_string()),
    )
    .expect("write");
    switchback_tests::files::official_layout_port_unless_root(&c.repo);
    git(&c.repo, &["add", "-A"]);
    git(
        &c.repo,
        &["commit", "-q", "-m", "the image's layout, two sites"],
    );
    let v1 = git(&c.repo, &["rev-parse", "HEAD"]).trim().to_string();

    c.wait_for_within(
        "proxyrollout/edge",
        "{.status.stable.commit}",
        ROLLOUT_PATIENCE,
        |s| s == v1,
    )
    .await;
    c.wait_condition("Ready").await;
    let seen = load.stop().await;
    assert_eq!(seen.tally.status_5xx, 0, "{seen:?}");
    assert!(
        app.hits() > 0,
        "the pods proxied to the app through the layout's site"
    );
    for pod in PODS {
        let root = c
            .jsonpath(
                &format!("pod/{pod}"),
                "{.metadata.annotations.switchback\\.dev/config-root}",
            )
            .await;
        assert_eq!(root, "/etc/nginx", "{pod}");
        let live = std::fs::read_to_string(c.live_config(pod).join("nginx.conf")).expect("live");
        assert!(live.contains("include conf.d/*.conf;"), "{pod}: {live}");
    }
    c.down().await;
}
