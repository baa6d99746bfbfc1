//! Replays and the order of authentication and rate limits (issue 13, finding 8).

use super::*;

#[tokio::test]
async fn a_delivery_is_accepted_once_even_under_a_new_delivery_id() {
    let mut h = default_harness();
    let headers = push_headers(Provider::GitHub, SECRET, GITHUB.as_bytes());
    let first = send(&h.router, request("github", HOOK, &headers, GITHUB.into())).await;
    assert_eq!(first, StatusCode::ACCEPTED);
    let again = send(&h.router, request("github", HOOK, &headers, GITHUB.into())).await;
    assert_eq!(again, StatusCode::CONFLICT);
    // The delivery id is not signed: a replayer can change it, but not the body.
    let renamed: Vec<(&str, String)> = headers
        .iter()
        .map(|(n, v)| match *n {
            "x-github-delivery" => (*n, "a-fresh-id".to_string()),
            _ => (*n, v.clone()),
        })
        .collect();
    let status = send(&h.router, request("github", HOOK, &renamed, GITHUB.into())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The provider's own redelivery under the same id with the body re-serialised.
    let reserialised = nth(GITHUB, 3);
    let mut same_id = push_headers(Provider::GitHub, SECRET, reserialised.as_bytes());
    for (n, v) in &mut same_id {
        if *n == "x-github-delivery" {
            *v = headers
                .iter()
                .find(|(name, _)| *name == "x-github-delivery")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
        }
    }
    let status = send(
        &h.router,
        request("github", HOOK, &same_id, reserialised.into()),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(drain(&mut h.triggers).len(), 1, "one trigger in all");
    assert_eq!(h.metrics.requests(Provider::GitHub, Outcome::Duplicate), 3);
}

#[tokio::test]
async fn replays_do_not_use_up_the_hook_budget() {
    let config = WebhookConfig {
        burst: 2,
        per_second: 0.001,
        ..WebhookConfig::default()
    };
    let mut h = harness(config, 8);
    let headers = push_headers(Provider::Gitea, SECRET, GITEA.as_bytes());
    for _ in 0..10 {
        send(&h.router, request("gitea", HOOK, &headers, GITEA.into())).await;
    }
    let body = nth(GITEA, 1);
    let headers = push_headers(Provider::Gitea, SECRET, body.as_bytes());
    let status = send(&h.router, request("gitea", HOOK, &headers, body.into())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the second real push");
    assert_eq!(drain(&mut h.triggers).len(), 2);
}

#[tokio::test]
async fn unsigned_floods_never_make_a_signed_push_wait() {
    let config = WebhookConfig {
        burst: 2,
        per_second: 0.001,
        unauthenticated_burst: 3,
        unauthenticated_per_second: 0.001,
        ..WebhookConfig::default()
    };
    let mut h = harness(config, 8);
    let signed = push_headers(Provider::GitHub, SECRET, GITHUB.as_bytes());
    let unsigned: Vec<(&str, String)> = signed
        .iter()
        .filter(|(n, _)| !n.contains("signature"))
        .cloned()
        .collect();
    let forged = push_headers(Provider::GitHub, b"guess", GITHUB.as_bytes());
    let mut statuses = Vec::new();
    for i in 0..40 {
        let headers = if i % 2 == 0 { &unsigned } else { &forged };
        statuses.push(send(&h.router, request("github", HOOK, headers, GITHUB.into())).await);
    }
    assert!(
        statuses[..3].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses[3..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "a source that keeps failing hears 429: {statuses:?}"
    );
    let status = send(&h.router, request("github", HOOK, &signed, GITHUB.into())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(drain(&mut h.triggers).len(), 1);
}

#[tokio::test]
async fn a_request_without_credentials_is_refused_before_its_body_is_read() {
    let mut h = default_harness();
    // A body that never ends: reading it would wait for the body timeout.
    let (_sender, body) = body_channel();
    let req = match Request::post(format!("/hooks/github/{HOOK}"))
        .header("x-github-event", "push")
        .body(body)
    {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let status = tokio::time::timeout(Duration::from_secs(5), send(&h.router, req)).await;
    assert_eq!(status.ok(), Some(StatusCode::UNAUTHORIZED));
    assert!(drain(&mut h.triggers).is_empty());
}

#[tokio::test]
async fn one_source_cannot_hold_every_body_slot() {
    let config = WebhookConfig {
        max_in_flight: 4,
        max_in_flight_per_source: 1,
        body_timeout: Duration::from_secs(5),
        ..WebhookConfig::default()
    };
    let mut h = harness(config, 8);
    let peer = |ip: [u8; 4]| ConnectInfo(std::net::SocketAddr::from((ip, 40000)));
    let (sender, body) = body_channel();
    let headers = push_headers(Provider::GitHub, SECRET, GITHUB.as_bytes());
    let mut slow = request("github", HOOK, &headers, Vec::new());
    *slow.body_mut() = body;
    slow.extensions_mut().insert(peer([10, 0, 0, 1]));
    let router = h.router.clone();
    let held = tokio::spawn(async move { send(&router, slow).await });
    let _ = sender.send(b"{".to_vec()).await;
    let mut same = StatusCode::OK;
    for i in 1..200 {
        let body = nth(GITHUB, i);
        let headers = push_headers(Provider::GitHub, SECRET, body.as_bytes());
        let mut req = request("github", HOOK, &headers, body.into());
        req.extensions_mut().insert(peer([10, 0, 0, 1]));
        same = send(&h.router, req).await;
        if same == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(same, StatusCode::SERVICE_UNAVAILABLE, "its share is taken");
    let body = nth(GITHUB, 500);
    let headers = push_headers(Provider::GitHub, SECRET, body.as_bytes());
    let mut other = request("github", HOOK, &headers, body.into());
    other.extensions_mut().insert(peer([10, 0, 0, 2]));
    assert_eq!(send(&h.router, other).await, StatusCode::ACCEPTED);
    drop(sender);
    let _ = held.await;
    drain(&mut h.triggers);
}
