//! A relay in front of every pod's agent API that can be frozen, standing in for a stopped
//! (SIGSTOPped) agent: the process kubelet runs agents as tasks of the test process, which
//! cannot be stopped alone. Frozen, a relay still accepts connections and reads requests (as
//! the kernel does for a stopped process) but passes nothing on either way until thawed. The
//! controller reaches the agents through the relays once the rollout's `spec.target.agentPort`
//! is [`Relays::PORT`].

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::kube::kubelet::AGENT_PORT;
use crate::operator_fixture::Cluster;

/// One relay per pod, on the pod's address and [`Relays::PORT`], to its agent's API; all stop
/// when dropped.
pub struct Relays {
    frozen: Vec<(String, watch::Sender<bool>)>,
    _tasks: JoinSet<()>,
}

impl Relays {
    /// The port the relays listen on, beside the agents' own.
    pub const PORT: u16 = AGENT_PORT + 1;

    /// A relay for each of `pods` (Ready, with an IP).
    pub async fn start(c: &Cluster, pods: &[&str]) -> Relays {
        let mut frozen = Vec::new();
        let mut tasks = JoinSet::new();
        for pod in pods {
            let ip: std::net::IpAddr = c
                .jsonpath(&format!("pod/{pod}"), "{.status.podIP}")
                .await
                .parse()
                .expect("a pod IP");
            let listener = TcpListener::bind(SocketAddr::new(ip, Relays::PORT))
                .await
                .expect("bind the relay");
            let agent = SocketAddr::new(ip, AGENT_PORT);
            let (tx, rx) = watch::channel(false);
            tasks.spawn(relay(listener, agent, rx));
            frozen.push((pod.to_string(), tx));
        }
        Relays {
            frozen,
            _tasks: tasks,
        }
    }

    /// Freezes (`on`) or thaws the relay of `pod`.
    pub fn freeze(&self, pod: &str, on: bool) {
        for (name, tx) in &self.frozen {
            if name == pod {
                let _ = tx.send(on);
            }
        }
    }
}

/// Accepts until dropped; each connection's pumps are owned here and go with it.
async fn relay(listener: TcpListener, agent: SocketAddr, frozen: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let frozen = frozen.clone();
        conns.spawn(async move {
            let mut thawed = frozen.clone();
            if thawed.wait_for(|f| !*f).await.is_err() {
                return;
            }
            let Ok(upstream) = TcpStream::connect(agent).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::join!(pump(cr, uw, frozen.clone()), pump(ur, cw, frozen));
        });
        // Finished connections are reaped as new ones come.
        while conns.try_join_next().is_some() {}
    }
}

/// Copies `from` to `to`, holding each chunk while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
