//! The fault switch against a running test API server, through a real HTTP client.

use std::time::Duration;

use super::KubeServer;
use super::faults::ErrorSpec;

const PATIENCE: Duration = Duration::from_secs(10);

async fn server() -> (KubeServer, reqwest::Client) {
    let server = KubeServer::start().await.expect("the API test server");
    (server, reqwest::Client::new())
}

async fn get(
    server: &KubeServer,
    http: &reqwest::Client,
    path: &str,
) -> reqwest::Result<reqwest::Response> {
    http.get(format!("{}{path}", server.url()))
        .bearer_auth(server.token())
        .send()
        .await
}

async fn create_configmap(
    server: &KubeServer,
    http: &reqwest::Client,
    name: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!(
        "{}/api/v1/namespaces/default/configmaps",
        server.url()
    ))
    .bearer_auth(server.token())
    .json(&serde_json::json!({"metadata": {"name": name}, "data": {"a": "b"}}))
    .send()
    .await
}

const LIST: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn error_answers_follow_the_spec_and_end_when_cleared() {
    let (server, http) = server().await;
    let faults = server.faults();
    assert_eq!(get(&server, &http, LIST).await.expect("get").status(), 200);

    faults.fail_for(ErrorSpec::all(503), Duration::from_secs(600));
    let answer = get(&server, &http, LIST).await.expect("get");
    assert_eq!(answer.status(), 503);
    let status: serde_json::Value = answer.json().await.expect("a Status");
    assert_eq!(status["reason"], "ServiceUnavailable");

    faults.fail_for(ErrorSpec::all(429), Duration::from_secs(600));
    let answer = get(&server, &http, LIST).await.expect("get");
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["retry-after"], "1");

    faults.fail_for(ErrorSpec::all(500).writes_only(), Duration::from_secs(600));
    assert_eq!(get(&server, &http, LIST).await.expect("get").status(), 200);
    let created = create_configmap(&server, &http, "x").await.expect("post");
    assert_eq!(created.status(), 500, "writes fail");

    faults.fail_for(ErrorSpec::all(500).every(2), Duration::from_secs(600));
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            get(&server, &http, LIST)
                .await
                .expect("get")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, [200, 500, 200, 500]);
    assert_eq!(faults.injected(), 5, "503, 429, the write, two of four");

    faults.clear();
    assert_eq!(get(&server, &http, LIST).await.expect("get").status(), 200);
    let recorded = server.requests();
    assert!(
        recorded.iter().any(|r| r.status == 429),
        "injected answers are recorded like any other"
    );
}

#[tokio::test]
async fn error_answers_end_by_themselves_after_their_duration() {
    let (server, http) = server().await;
    server
        .faults()
        .fail_for(ErrorSpec::all(500), Duration::from_millis(300));
    assert_eq!(get(&server, &http, LIST).await.expect("get").status(), 500);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if get(&server, &http, LIST).await.expect("get").status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the errors never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_down_server_fails_old_and_new_connections_then_serves_again() {
    let (server, http) = server().await;
    let faults = server.faults();
    // A pooled keep-alive connection exists.
    assert_eq!(get(&server, &http, LIST).await.expect("get").status(), 200);
    faults.down_for(Duration::from_secs(600));
    assert!(faults.is_down());
    assert!(
        get(&server, &http, LIST).await.is_err(),
        "the pooled connection dies"
    );
    let fresh = reqwest::Client::new();
    assert!(
        get(&server, &fresh, LIST).await.is_err(),
        "a new connection is closed at once"
    );
    faults.clear();
    assert!(!faults.is_down());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if get(&server, &http, LIST)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cut_watches_end_and_resumes_can_be_answered_gone() {
    let (server, http) = server().await;
    let faults = server.faults();
    let created: serde_json::Value = create_configmap(&server, &http, "a")
        .await
        .expect("post")
        .json()
        .await
        .expect("the created object");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_string();

    // A live watch ends when cut.
    let mut watch = get(
        &server,
        &http,
        &format!("{LIST}?watch=true&resourceVersion={rv}"),
    )
    .await
    .expect("watch");
    assert_eq!(watch.status(), 200);
    faults.cut_watches();
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(_)) = watch.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the cut watch never ended");

    // The next resume is Gone; the one after is served.
    faults.gone_on_next_resumes(1);
    let gone = get(
        &server,
        &http,
        &format!("{LIST}?watch=true&resourceVersion={rv}"),
    )
    .await
    .expect("watch")
    .text()
    .await
    .expect("the stream");
    let line: serde_json::Value =
        serde_json::from_str(gone.lines().next().expect("one line")).expect("json");
    assert_eq!(line["type"], "ERROR");
    assert_eq!(line["object"]["code"], 410);
    let mut served = get(
        &server,
        &http,
        &format!("{LIST}?watch=true&resourceVersion={rv}"),
    )
    .await
    .expect("watch");
    create_configmap(&server, &http, "b").await.expect("post");
    let chunk = tokio::time::timeout(PATIENCE, served.chunk())
        .await
        .expect("an event in time")
        .expect("the stream")
        .expect("a chunk");
    let line: serde_json::Value = serde_json::from_slice(&chunk).expect("json");
    assert_eq!(line["type"], "ADDED", "{line}");
}

#[tokio::test]
async fn the_tap_keeps_every_annotation_write_even_of_an_unchanged_value() {
    let (server, http) = server().await;
    create_configmap(&server, &http, "a").await.expect("post");
    for _ in 0..2 {
        let answer = http
            .patch(format!("{}{LIST}/a", server.url()))
            .bearer_auth(server.token())
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"annotations":{"k":"v"}}}"#)
            .send()
            .await
            .expect("patch");
        assert_eq!(answer.status(), 200);
    }
    let writes = server.faults().annotation_writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().all(|w| w.plural == "configmaps"
        && w.namespace == "default"
        && w.name == "a"
        && w.annotations.get("k").map(String::as_str) == Some("v")));
}
