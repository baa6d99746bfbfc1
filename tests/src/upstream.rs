//! A tiny HTTP application server on loopback for nginx to proxy to: every request gets `200`
//! with a fixed body, so a test can tell which upstream (and so which config) answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;

/// A running upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream on `127.0.0.1` at a free port answering `body` to everything.
    pub async fn start(body: &'static str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the upstream");
        let addr = listener.local_addr().expect("bound address");
        let hits = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .fallback(
                |State((hits, body)): State<(Arc<AtomicU64>, &'static str)>| async move {
                    hits.fetch_add(1, Ordering::Relaxed);
                    body
                },
            )
            .with_state((Arc::clone(&hits), body));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, hits, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests it answered.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
