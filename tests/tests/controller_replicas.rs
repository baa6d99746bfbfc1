//! Two `switchback controller --leader-elect` processes against the Kubernetes API test server:
//! both become ready, exactly one leads (the Lease and `switchback_is_leader` agree), and SIGTERM
//! to the leader hands the Lease to the other long before the 15 s lease duration.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use switchback_tests::bin::switchback_bin;
use switchback_tests::kube::KubeServer;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const LEASE: &str = "switchback-controller";

struct Replica {
    identity: &'static str,
    addr: SocketAddr,
    child: Child,
}

async fn free_addr(ip: &str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind a loopback port");
    l.local_addr().expect("local address")
}

async fn start(server: &KubeServer, identity: &'static str, ip: &str) -> Replica {
    let addr = free_addr(ip).await;
    let child = Command::new(switchback_bin())
        .args(["controller", "--leader-elect", "--lease-identity", identity])
        .arg("--metrics-addr")
        .arg(addr.to_string())
        .arg("--cache-dir")
        .arg(server.dir().join(identity))
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("SWITCHBACK_LOG", "switchback::operator::leader=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchback controller");
    Replica {
        identity,
        addr,
        child,
    }
}

async fn get(r: &Replica, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://{}{path}", r.addr))
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

async fn is_leader(r: &Replica) -> Option<bool> {
    let (_, text) = get(r, "/metrics").await?;
    text.lines().find_map(|l| match l {
        "switchback_is_leader 1" => Some(true),
        "switchback_is_leader 0" => Some(false),
        _ => None,
    })
}

async fn holder(client: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "default");
    api.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

/// Polls until `check` holds, failing with `what` after `within`.
async fn until<F: Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_sigterm_hands_over() {
    let server = KubeServer::start().await.expect("test API server");
    let client = server.client().await;
    let mut a = start(&server, "replica-a", "127.0.96.11").await;
    let mut b = start(&server, "replica-b", "127.0.96.12").await;
    for r in [&a, &b] {
        until(Duration::from_secs(20), "a replica is ready", || async {
            get(r, "/readyz").await.is_some_and(|(s, _)| s == 200)
                && get(r, "/healthz").await.is_some_and(|(s, _)| s == 200)
        })
        .await;
    }
    until(
        Duration::from_secs(20),
        "one replica holds the lease",
        || async { holder(&client).await.is_some() },
    )
    .await;
    let first = holder(&client).await.expect("a holder");
    let (leader, standby) = if first == a.identity {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    until(
        Duration::from_secs(10),
        "the leader's gauge says 1",
        || async { is_leader(leader).await == Some(true) },
    )
    .await;
    assert_eq!(is_leader(standby).await, Some(false), "the standby's gauge");

    let pid = leader.child.id().expect("leader pid");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the leader");
    let status = tokio::time::timeout(Duration::from_secs(20), leader.child.wait())
        .await
        .expect("the leader exits after SIGTERM")
        .expect("wait for the leader");
    assert!(status.success(), "the leader exited with {status}");
    // The Lease was released: the standby takes it at its next 2 s poll, not after 15 s.
    let standby_id = standby.identity;
    until(Duration::from_secs(8), "the standby takes over", || async {
        holder(&client).await.as_deref() == Some(standby_id)
    })
    .await;
    until(
        Duration::from_secs(5),
        "the new leader's gauge says 1",
        || async { is_leader(standby).await == Some(true) },
    )
    .await;
}
