//! Over a real loopback socket: a stalled sender, a chunked body past the cap, and a signed push.

use super::*;

/// The router served on a loopback port, for tests that need a real socket.
async fn serve_on_loopback(
    router: Router,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("addr: {e}"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Writes `head` then `body_parts` (with a pause after each), and reads the status code of the
/// answer, with a deadline so a hung server fails the test instead of hanging it.
async fn raw_exchange(
    addr: std::net::SocketAddr,
    head: String,
    body_parts: Vec<Vec<u8>>,
    pause: Duration,
) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    for part in body_parts {
        // The server may answer and close before all is sent; that is fine.
        if stream.write_all(&part).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_stalled_sender_gets_408() {
    let config = WebhookConfig {
        body_timeout: Duration::from_millis(300),
        ..WebhookConfig::default()
    };
    let mut h = harness(config, 8);
    let (addr, _stop) = serve_on_loopback(h.router.clone()).await;
    let headers = push_headers(Provider::GitHub, SECRET, GITHUB.as_bytes());
    let mut head = format!(
        "POST /hooks/github/{HOOK} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        GITHUB.len()
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // A trickle: a few bytes, then nothing more (the rest never comes).
    let parts = vec![GITHUB.as_bytes()[..20].to_vec()];
    let status = raw_exchange(addr, head, parts, Duration::from_secs(2)).await;
    assert_eq!(status, Some(408));
    assert!(drain(&mut h.triggers).is_empty());
}

#[tokio::test]
async fn a_chunked_body_past_the_cap_gets_413() {
    let config = WebhookConfig {
        max_body: 64 * 1024,
        ..WebhookConfig::default()
    };
    let mut h = harness(config, 8);
    let (addr, _stop) = serve_on_loopback(h.router.clone()).await;
    let head = format!(
        "POST /hooks/github/{HOOK} HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nx-github-event: push\r\nx-hub-signature-256: sha256=00\r\n\r\n"
    );
    // No Content-Length: the cap has to hold while reading. 32 chunks of 8 KiB = 256 KiB.
    let chunk = vec![b'a'; 8192];
    let mut parts = Vec::new();
    for _ in 0..32 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        parts.push(framed);
    }
    let status = raw_exchange(addr, head, parts, Duration::from_millis(1)).await;
    assert_eq!(status, Some(413));
    assert!(drain(&mut h.triggers).is_empty());
}

#[tokio::test]
async fn a_signed_push_over_a_real_socket_is_accepted() {
    let mut h = default_harness();
    let (addr, stop) = serve_on_loopback(h.router.clone()).await;
    let headers = push_headers(Provider::GitLab, SECRET, GITLAB.as_bytes());
    let mut head = format!(
        "POST /hooks/gitlab/{HOOK} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        GITLAB.len()
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let status = raw_exchange(addr, head, vec![GITLAB.as_bytes().to_vec()], Duration::ZERO).await;
    assert_eq!(status, Some(202));
    assert_eq!(drain(&mut h.triggers).len(), 1);
    let _ = stop.send(());
}
