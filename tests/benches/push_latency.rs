//! Push-to-canary latency: from the start of a `git push` to a bare repository until the first
//! proxy pod serves the pushed commit, with a push webhook (`spec.source.webhook`, the hook sent
//! as the git host would once the push is in) and with polling alone (`spec.source.interval`).
//!
//! Everything is real but the cluster: the controller runs in-process against the test API
//! server, the pods are real nginx + agents (process kubelet, Kubernetes mode), git is real.
//! `make bench-push` runs it; `PUSH_SAMPLES` (default 5) pushes per mode, `PUSH_POLL_INTERVAL`
//! (default `10s`) the interval of the polling run. The goal (issue 8) is < 2 s with the webhook.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchback::agent::AgentClient;
use switchback_tests::bin::switchback_bin;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::operator_fixture::Cluster;
use switchback_tests::push_hook::{GenericHook, create_hook_secret};

/// The default strategy. What is measured ends when the first canary pod serves the pushed
/// commit; the analysis that follows is not what this bench is about, so each push is promoted
/// by hand before the next (every push then starts a canary from an idle rollout).
const STRATEGY: &str = "    {}\n";
const SECRET: &str = "bench-secret";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Webhook,
    Poll,
}

struct Sample {
    to_canary: Duration,
    push_took: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::var("PUSH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let poll = std::env::var("PUSH_POLL_INTERVAL").unwrap_or_else(|_| "10s".to_string());
    println!("push-to-canary latency: {samples} pushes per mode; polling run at interval {poll}");
    let webhook = run(Mode::Webhook, samples, "1h", 107).await;
    let polled = run(Mode::Poll, samples, &poll, 108).await;
    println!();
    println!(
        "{:<28}  {:>8}  {:>8}  {:>8}  goal",
        "mode", "p50", "max", "git push"
    );
    report(
        "webhook (interval 1h)",
        &webhook,
        Some(Duration::from_secs(2)),
    );
    report(&format!("poll only (interval {poll})"), &polled, None);
}

fn report(name: &str, samples: &[Sample], goal: Option<Duration>) {
    if samples.is_empty() {
        println!("{name:<28}  (skipped)");
        return;
    }
    let mut times: Vec<Duration> = samples.iter().map(|s| s.to_canary).collect();
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    let push = samples
        .iter()
        .map(|s| s.push_took)
        .max()
        .unwrap_or_default();
    let goal = match goal {
        Some(g) => format!(
            "< {:.1} s: {}",
            g.as_secs_f64(),
            if max < g { "met" } else { "MISSED" }
        ),
        None => "(for comparison)".to_string(),
    };
    println!(
        "{name:<28}  {:>6.2} s  {:>6.2} s  {:>6.2} s  {goal}",
        p50.as_secs_f64(),
        max.as_secs_f64(),
        push.as_secs_f64()
    );
}

async fn run(mode: Mode, samples: usize, interval: &str, subnet: u8) -> Vec<Sample> {
    let Some(mut c) = Cluster::up(subnet, &["edge-0", "edge-1"]).await else {
        eprintln!("SKIPPED: nginx or kubectl missing");
        return Vec::new();
    };
    let origin = c.tmp.path().join("origin.git");
    git(
        c.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    git(
        &c.repo,
        &["remote", "add", "origin", &origin.display().to_string()],
    );
    git(&c.repo, &["push", "-q", "-u", "origin", "main"]);
    let url = format!("file://{}", origin.display());
    create_hook_secret(&c.k, SECRET).await;
    let webhook = if mode == Mode::Webhook {
        "    webhook:\n      secretRef:\n        name: hook\n"
    } else {
        ""
    };
    let rollout = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: {url}\n    ref: main\n    interval: {interval}\n{webhook}  target:\n    selector:\n      app: edge\n  strategy:\n{STRATEGY}"
    );
    let file = c.k.file("rollout.yaml", &rollout);
    c.k.ok(&["apply", "-f", &file]).await;
    let hook_addr = std::net::TcpListener::bind(format!("127.0.{subnet}.1:0"))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut options = c.controller_options();
    options.webhook_addr = (mode == Mode::Webhook).then_some(hook_addr);
    // The agents of `edge` hold that namespace's token, derived from the controller's master.
    let token = options
        .agent_token
        .as_ref()
        .map(|t| t.for_namespace("edge"));
    c.start_controller_with(options).await;
    c.wait_condition("Ready").await;

    let ips = c
        .jsonpath("pods", "{.items[*].status.podIP}")
        .await
        .split_whitespace()
        .map(|ip| ip.parse().expect("a pod IP"))
        .collect::<Vec<std::net::IpAddr>>();
    let agents: Vec<AgentClient> = ips
        .iter()
        .map(|ip| {
            AgentClient::new(SocketAddr::new(*ip, 9180))
                .expect("agent client")
                .with_token(token.clone())
        })
        .collect();
    let hook =
        (mode == Mode::Webhook).then(|| GenericHook::new(hook_addr, "edge", "hook", SECRET, &url));
    if let Some(hook) = &hook {
        hook.wait_registered(Duration::from_secs(60)).await;
    }

    let mut out = Vec::new();
    for n in 0..samples {
        let commit = c.commit(&format!("return 200 \"v{}\\n\";", n + 1), "bench");
        let start = Instant::now();
        git(&c.repo, &["push", "-q", "origin", "main"]);
        let push_took = start.elapsed();
        if let Some(hook) = &hook {
            hook.send().await;
        }
        let to_canary = first_serving(&agents, &commit, start).await;
        println!(
            "  {} #{}: canary serves {} after {:.3} s (git push {:.3} s)",
            if mode == Mode::Webhook {
                "webhook"
            } else {
                "poll"
            },
            n + 1,
            &commit[..12],
            to_canary.as_secs_f64(),
            push_took.as_secs_f64()
        );
        out.push(Sample {
            to_canary,
            push_took,
        });
        promote(&c).await;
        c.wait_for("proxyrollout/edge", "{.status.stable.commit}", |s| {
            s == commit
        })
        .await;
        c.wait_condition("Ready").await;
    }
    c.down().await;
    out
}

/// `kubectl switchback promote edge` (the plugin without the symlink), waiting for the
/// controller's acknowledgement. The first canary pod serves the commit, so a canary is in
/// progress to promote.
async fn promote(c: &Cluster) {
    let out = tokio::process::Command::new(switchback_bin())
        .args([
            "plugin",
            "promote",
            "edge",
            "-n",
            "edge",
            "--timeout",
            "60s",
        ])
        .env("KUBECONFIG", c.k.server.kubeconfig_path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run switchback plugin promote");
    assert!(
        out.status.success(),
        "promote failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls every agent until one serves `commit`; the time since `start`.
async fn first_serving(agents: &[AgentClient], commit: &str, start: Instant) -> Duration {
    let deadline = start + Duration::from_secs(120);
    loop {
        for agent in agents {
            let state = agent.state().await;
            if state.is_ok_and(|s| s.applied.is_some_and(|r| r.commit == commit)) {
                return start.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no pod served {commit} within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
