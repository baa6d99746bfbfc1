//! A recording relay between one controller process and the test API server (plain HTTP/1.1),
//! so a test can say which replica sent which request and when: the server's own tap
//! ([`crate::kube::faults::Faults::annotation_writes`]) cannot tell two replicas apart, since
//! both use the same kubeconfig. The replica is pointed at the relay with the kubeconfig of
//! [`ApiTap::kubeconfig`]. Each request line is recorded with the instant the relay read it
//! (for a stopped process: only once it runs again and sends).
//!
//! Bounded: at most [`MAX_RECORDED`] requests are kept; the relay stops when dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::kube::KubeServer;

/// How many requests the tap keeps.
pub const MAX_RECORDED: usize = 100_000;

/// One request the replica sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// When the relay read its request line.
    pub at: Instant,
}

impl Sent {
    /// Whether it changes anything on the server.
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    /// Whether it is about a Lease (the election's own reads and writes).
    pub fn is_lease(&self) -> bool {
        self.path.contains("/apis/coordination.k8s.io/")
    }
}

/// See the module doc; stops when dropped.
pub struct ApiTap {
    kubeconfig: PathBuf,
    sent: Arc<Mutex<Vec<Sent>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl ApiTap {
    /// A relay to `server` on a free loopback port, and a kubeconfig (written into `dir`, named
    /// after `name`) pointing at it.
    pub async fn start(server: &KubeServer, dir: &Path, name: &str) -> ApiTap {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API tap");
        let addr = listener.local_addr().expect("the tap's address");
        let upstream = server.url();
        let text = std::fs::read_to_string(server.kubeconfig_path()).expect("read kubeconfig");
        assert!(text.contains(&upstream), "the kubeconfig names {upstream}");
        let kubeconfig = dir.join(format!("kubeconfig-{name}"));
        std::fs::write(
            &kubeconfig,
            text.replace(&upstream, &format!("http://{addr}")),
        )
        .expect("write the tap's kubeconfig");
        let target = upstream.trim_start_matches("http://").to_string();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let task = tokio::spawn(accept(listener, target, Arc::clone(&sent)));
        ApiTap {
            kubeconfig,
            sent,
            _task: task,
        }
    }

    /// The kubeconfig to give the replica (`KUBECONFIG`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request so far, in the order read.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests read after `since`.
    pub fn sent_after(&self, since: Instant) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.at > since).collect()
    }
}

async fn accept(listener: TcpListener, target: String, sent: Arc<Mutex<Vec<Sent>>>) {
    let mut conns = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let (target, sent) = (target.clone(), Arc::clone(&sent));
        conns.spawn(async move {
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::join!(requests(cr, uw, sent), pump(ur, cw));
        });
        while conns.try_join_next().is_some() {}
    }
}

/// Copies the replica's bytes to the server, recording each request line on the way.
async fn requests(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    sent: Arc<Mutex<Vec<Sent>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        record_lines(&mut pending, &sent);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

const METHODS: [&str; 7] = ["DELETE", "OPTIONS", "PATCH", "POST", "HEAD", "GET", "PUT"];

/// Finds the complete request lines (`METHOD PATH HTTP/1.1`) in `pending`, records them and
/// keeps only what may still begin one.
fn record_lines(pending: &mut Vec<u8>, sent: &Mutex<Vec<Sent>>) {
    const MARK: &[u8] = b" HTTP/1.1\r\n";
    let at = Instant::now();
    while let Some(end) = pending.windows(MARK.len()).position(|w| w == MARK) {
        let start = pending[..end]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = String::from_utf8_lossy(&pending[start..end]).into_owned();
        // A body without a final newline runs into the next request line: the method is the
        // known name the first word ends with.
        if let Some((first, path)) = line.split_once(' ')
            && let Some(method) = METHODS.iter().find(|m| first.ends_with(*m))
        {
            let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
            if sent.len() < MAX_RECORDED {
                sent.push(Sent {
                    method: method.to_string(),
                    path: path.to_string(),
                    at,
                });
            }
        }
        pending.drain(..end + MARK.len());
    }
    // A request line is short: keep the tail only.
    if pending.len() > 8 * 1024 {
        pending.drain(..pending.len() - 8 * 1024);
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_split_across_reads_are_recorded_once() {
        let sent = Mutex::new(Vec::new());
        let mut pending = b"PATCH /api/v1/namespaces/edge/pods/edge-0 HT".to_vec();
        record_lines(&mut pending, &sent);
        assert!(sent.lock().unwrap().is_empty());
        pending.extend_from_slice(b"TP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}GET /api/v1/pods?watch=true HTTP/1.1\r\n\r\n");
        record_lines(&mut pending, &sent);
        let got: Vec<(String, String)> = sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.method.clone(), s.path.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "PATCH".to_string(),
                    "/api/v1/namespaces/edge/pods/edge-0".to_string()
                ),
                ("GET".to_string(), "/api/v1/pods?watch=true".to_string()),
            ]
        );
    }
}
