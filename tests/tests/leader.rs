//! Leader election on a Lease against the Kubernetes API test server: one leader among two,
//! takeover after a crash, at once after a graceful step-down, and a leader cut off from the API
//! server giving up before its standby can take over. Short timings (2 s / 1.5 s / 0.25 s) keep
//! it quick; waits poll with deadlines and sample both electors' flags as they go.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use switchback::operator::leader::{self, LeaderHandle, LeaseSettings};
use switchback_tests::kube::KubeServer;
use switchback_tests::kube::kubectl::Kubectl;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

const LEASE: &str = "switchback-leader";
const SAMPLE: Duration = Duration::from_millis(10);

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
        ..LeaseSettings::new("default", LEASE, identity)
    }
}

fn elect(client: &kube::Client, s: LeaseSettings) -> LeaderHandle {
    leader::spawn(client.clone(), s).expect("valid lease settings")
}

/// Samples both flags every few milliseconds until `done` holds for them, failing if both ever
/// say "leader" at once or the deadline passes. Returns when `done` held.
async fn watch_both(
    a: &watch::Receiver<bool>,
    b: &watch::Receiver<bool>,
    within: Duration,
    what: &str,
    done: impl Fn(bool, bool) -> bool,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(!(la && lb), "both electors led at once ({what})");
        if done(la, lb) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?} (a={la}, b={lb})"
        );
        tokio::time::sleep(SAMPLE).await;
    }
}

async fn holder(client: &kube::Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "default");
    api.get(LEASE)
        .await
        .expect("read the lease")
        .spec
        .and_then(|s| s.holder_identity)
}

/// `a` leads and `b` stands by, both on `client`.
async fn leader_and_standby(
    client_a: &kube::Client,
    client_b: &kube::Client,
    a: LeaseSettings,
    b: LeaseSettings,
) -> (LeaderHandle, LeaderHandle) {
    let a = elect(client_a, a);
    let mut ra = a.subscribe();
    tokio::time::timeout(Duration::from_secs(10), leader::acquired(&mut ra))
        .await
        .expect("a leads an empty lease within 10s");
    let b = elect(client_b, b);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_exactly_one_leads() {
    let server = KubeServer::start().await.expect("test API server");
    let client = server.client().await;
    let a = elect(&client, settings("a"));
    let b = elect(&client, settings("b"));
    let (ra, rb) = (a.subscribe(), b.subscribe());
    watch_both(
        &ra,
        &rb,
        Duration::from_secs(10),
        "someone leads",
        |x, y| x || y,
    )
    .await;
    let first = if a.is_leader() { "a" } else { "b" };
    // Over several renewals the same one keeps leading and the other never joins it.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let (la, lb) = (*ra.borrow(), *rb.borrow());
        assert!(la ^ lb, "exactly one leader expected, a={la} b={lb}");
        assert_eq!(if la { "a" } else { "b" }, first, "leadership moved");
        tokio::time::sleep(SAMPLE).await;
    }
    assert_eq!(holder(&client).await.as_deref(), Some(first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_after_the_lease_expires() {
    let server = KubeServer::start().await.expect("test API server");
    let client = server.client().await;
    let (a, b) = leader_and_standby(&client, &client, settings("a"), settings("b")).await;
    let (ra, rb) = (a.subscribe(), b.subscribe());
    // Let b see a renew a few times, so it is genuinely standing by on a live lease.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert!(*ra.borrow() && !*rb.borrow(), "a leads, b stands by");
        tokio::time::sleep(SAMPLE).await;
    }
    let s = settings("b");
    let crashed = Instant::now();
    a.abort();
    let took_over = watch_both(
        &ra,
        &rb,
        s.lease_duration + s.retry_period + Duration::from_secs(3),
        "b takes over after a's crash",
        |_, y| y,
    )
    .await;
    // a's last renewal started at most one retry period before the crash; b must have waited
    // out the lease duration from then (a bound that load can only make easier to meet).
    let waited = took_over - crashed;
    assert!(
        waited + s.retry_period + Duration::from_millis(50) >= s.lease_duration,
        "b acquired after only {waited:?}, before a's lease could have expired"
    );
    assert_eq!(holder(&client).await.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_step_down_hands_over_at_once() {
    let server = KubeServer::start().await.expect("test API server");
    let client = server.client().await;
    // A long lease: a standby that waited it out would miss the deadline below by far.
    let long = |id: &str| LeaseSettings {
        lease_duration: Duration::from_secs(20),
        renew_deadline: Duration::from_secs(10),
        ..settings(id)
    };
    let (a, b) = leader_and_standby(&client, &client, long("a"), long("b")).await;
    let (ra, rb) = (a.subscribe(), b.subscribe());
    watch_both(&ra, &rb, Duration::from_secs(5), "b stands by", |x, y| {
        x && !y
    })
    .await;
    a.step_down().await.expect("step down");
    assert!(!*ra.borrow(), "a reports false once it stepped down");
    watch_both(
        &ra,
        &rb,
        Duration::from_secs(5),
        "b takes over well before the 20s lease duration",
        |_, y| y,
    )
    .await;
    assert_eq!(holder(&client).await.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_gives_up_before_the_standby_takes_over() {
    let server = KubeServer::start().await.expect("test API server");
    let direct = server.client().await;
    let proxy = BlackHoleProxy::start(server_addr(&server)).await;
    let via_proxy = client_at(&server, &format!("http://{}", proxy.addr)).await;
    let s = settings("a");
    let (a, b) = leader_and_standby(&via_proxy, &direct, s.clone(), settings("b")).await;
    let (ra, rb) = (a.subscribe(), b.subscribe());
    // Requests through the proxy now hang without an answer, the hardest case: no error comes
    // back, only the renew deadline ends the wait.
    proxy.cut();
    // Its last successful renewal started before the cut, so it must give up within the
    // renew deadline of the cut (plus slack for a loaded machine).
    watch_both(
        &ra,
        &rb,
        s.renew_deadline + Duration::from_secs(1),
        "a gives up after losing the API server",
        |x, _| !x,
    )
    .await;
    watch_both(
        &ra,
        &rb,
        s.lease_duration + s.retry_period + Duration::from_secs(3),
        "b takes over from the cut-off leader",
        |_, y| y,
    )
    .await;
    drop(a);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_api_server_stops_reports_false_within_the_renew_deadline() {
    let server = KubeServer::start().await.expect("test API server");
    let client = server.client().await;
    let s = settings("a");
    let a = elect(&client, s.clone());
    let mut ra = a.subscribe();
    tokio::time::timeout(Duration::from_secs(10), leader::acquired(&mut ra))
        .await
        .expect("a leads");
    server.stop();
    tokio::time::timeout(
        s.renew_deadline + Duration::from_secs(2),
        leader::lost(ra.clone()),
    )
    .await
    .expect("a reports false soon after the API server stops");
    // It keeps electing (and failing) rather than ending; step_down is still bounded.
    tokio::time::timeout(s.renew_deadline * 2, a.step_down())
        .await
        .expect("step_down is bounded without an API server")
        .expect_err("nothing to release without an API server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_holder() {
    let Some(k) = Kubectl::up().await else { return };
    let client = k.server.client().await;
    let a = elect(&client, settings("replica-a"));
    let mut ra = a.subscribe();
    tokio::time::timeout(Duration::from_secs(10), leader::acquired(&mut ra))
        .await
        .expect("a leads");
    let lease = k.json(&["get", "lease", LEASE, "-n", "default"]).await;
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a", "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2, "{lease}");
    assert!(lease["spec"]["renewTime"].is_string(), "{lease}");
    let yaml = k.ok(&["get", "lease", LEASE, "-o", "yaml"]).await;
    assert!(yaml.contains("holderIdentity: replica-a"), "{yaml}");
    a.step_down().await.expect("step down");
    let lease = k.json(&["get", "lease", LEASE, "-n", "default"]).await;
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

fn server_addr(server: &KubeServer) -> SocketAddr {
    server
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("server address")
}

/// A client for the test server's credentials at another address.
async fn client_at(server: &KubeServer, url: &str) -> kube::Client {
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(server.kubeconfig_path()).expect("read kubeconfig");
    for c in &mut kubeconfig.clusters {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.server = Some(url.to_string());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("kube client")
}

/// A loopback TCP forwarder that, once cut, stops forwarding but keeps every connection open and
/// accepts new ones without answering: a network partition rather than a refused connection.
struct BlackHoleProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl BlackHoleProxy {
    async fn start(target: SocketAddr) -> BlackHoleProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, cut_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                conns.spawn(async move {
                    let open = !*cut_rx.borrow();
                    if open && let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = cut_rx.wait_for(|c| *c) => {}
                        }
                    }
                    // Cut: hold the connection open, silently, until the proxy goes.
                    std::future::pending::<()>().await;
                });
            }
        });
        BlackHoleProxy {
            addr,
            cut,
            _tasks: tasks,
        }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}
