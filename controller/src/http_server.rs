//! Serving an axum router on a port that others can reach (the agent's API, the webhook
//! receiver) with the two limits `axum::serve` does not offer: a deadline on the request head and a
//! cap on open connections.
//!
//! `axum::serve` (axum 0.8) runs hyper-util's auto builder without a timer, so hyper's
//! header-read timeout never fires: a connection that sends nothing, or half a request head, is
//! kept for as long as the peer likes, and a few hundred of them use up the process's file
//! descriptors, after which even `/healthz` is unreachable (issue 13, finding 5). Here every
//! connection is served by hyper's HTTP/1 builder with a timer:
//! - the request head (the first one, and each next one on a kept-alive connection) must arrive
//!   within [`ServeLimits::header_read_timeout`], else the connection is closed, so an idle or
//!   slowloris connection is closed by the server;
//! - at most [`ServeLimits::max_connections`] connections are open at once; past that the listener
//!   is not accepted from, so further connections wait in the kernel's backlog, costing this
//!   process no descriptor, until one closes.
//!
//! Bodies are each handler's business: every one reads its body with a size cap and a deadline.
//! Each request carries the peer's address as [`ConnectInfo<SocketAddr>`], as with axum's
//! `into_make_service_with_connect_info`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tracing::Instrument as _;

/// Default deadline for a request head: generous for any real client on a network, short enough
/// that idle connections cannot pile up.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open connections: far more than the controller, Prometheus and the kubelet
/// need, far below the 1024 descriptors a process usually gets.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Pause after a failed `accept` (no descriptor left, say), so a full table is not spun on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The shortest head deadline honoured (a zero would close every connection at once).
const MIN_HEADER_READ_TIMEOUT: Duration = Duration::from_millis(10);

/// The limits of one served port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a connection may take to send a complete request head (also between requests
    /// on a kept-alive connection) before the server closes it.
    pub header_read_timeout: Duration,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, asks every open connection to finish its request and close, and returns once all
/// have (callers that cannot wait bound this with a timeout and drop the future, which closes
/// them all). Accept errors are logged and retried after a pause, never fatal.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let head_timeout = limits.header_read_timeout.max(MIN_HEADER_READ_TIMEOUT);
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed while this loop holds `slots`.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; retrying");
                drop(permit);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = connection(
            stream,
            peer,
            router.clone(),
            head_timeout,
            closing.clone(),
            permit,
        );
        connections.spawn(conn.in_current_span());
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection, until the peer closes it, its head deadline passes, or shutdown has let its
/// current request finish. Holds its slot (`_permit`) until then.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    head_timeout: Duration,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut asked_to_close = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection closed");
                }
                return;
            }
            _ = closing.changed(), if !asked_to_close => {
                asked_to_close = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn start(limits: ServeLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Reads until the server closes the connection (bounded by a deadline), returning what came.
    async fn read_to_close(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .ok()?;
        Some(out)
    }

    #[test]
    fn the_defaults_are_ten_seconds_and_64_connections() {
        let d = ServeLimits::default();
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.max_connections, 64);
    }

    #[tokio::test]
    async fn a_silent_or_half_sent_head_is_closed_and_the_peer_is_known() {
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(200),
            max_connections: 4,
        };
        let (addr, _stop) = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut partial = TcpStream::connect(addr).await.expect("connect");
        partial
            .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        assert!(read_to_close(&mut silent).await.is_some(), "silent closed");
        assert!(
            read_to_close(&mut partial).await.is_some(),
            "partial closed"
        );
        let mut ok = TcpStream::connect(addr).await.expect("connect");
        ok.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_to_close(&mut ok).await.expect("answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("127.0.0.1"), "{text}");
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_a_slot_frees() {
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 2,
        };
        let (addr, _stop) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..6 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Answered once the idle ones ahead of it have been closed by their head deadline.
        let mut late = TcpStream::connect(addr).await.expect("connect");
        late.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_to_close(&mut late).await.expect("answer");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        for mut s in idle {
            assert!(read_to_close(&mut s).await.is_some());
        }
    }
}
