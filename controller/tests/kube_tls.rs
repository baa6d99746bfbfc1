//! The kube client speaks TLS (rustls with the ring provider) to an https API server, as a real
//! cluster needs: built without a TLS feature, kube-rs refuses an https URL before connecting.
//! The "server" here is a loopback socket that only checks the first bytes are a TLS ClientHello.

use tokio::io::AsyncReadExt;

#[tokio::test]
async fn an_https_cluster_url_gets_a_tls_client_hello() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let config = kube::Config::new(url.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("a client for an https URL");
    let request = tokio::spawn(async move { client.apiserver_version().await });
    let (mut socket, _) =
        tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept())
            .await
            .expect("the client connects within 30s")
            .expect("accept");
    let mut head = [0u8; 3];
    socket
        .read_exact(&mut head)
        .await
        .expect("read the first bytes");
    // A TLS record: content type 22 (handshake), protocol major version 3.
    assert_eq!(head[..2], [0x16, 0x03], "not a TLS handshake: {head:?}");
    drop(socket);
    let result = request.await.expect("request task");
    assert!(result.is_err(), "a closed TLS handshake cannot succeed");
}
