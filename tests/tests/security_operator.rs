//! Issue 13, findings 3 and 7: the controller as a confused deputy, and secrets in URLs. Each test
//! is an attack by someone who may create ProxyRollouts in a namespace (and nothing else), run
//! against a real `switchback controller` process, the test API server, real git and real HTTP(S)
//! servers on loopback that record what they are sent, and checks that it fails, and why.
//!
//! The https servers use a test certificate the controller trusts (`SSL_CERT_FILE`), so that
//! "the token was not sent" means the controller decided not to send it, not that TLS failed.
//! The agents' per-namespace tokens are `security_operator_tokens.rs`.

use serde_json::json;
use switchback::operator::credentials::{ALLOWED_ROLLOUTS_ANNOTATION, GIT_HOST_ANNOTATION};
use switchback_tests::controller_process::{PATIENCE, World};
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::http_recorder::{Answer, Recorder, TestCa};
use switchback_tests::push_hook::GenericHook;

/// The namespace the tenant works in.
const NS: &str = "tenant";
/// The token in the namespace's git credentials Secret: what the attacks are after.
const TOKEN: &str = "ghp_NAMESPACE-SECRET-TOKEN-0123456789";
/// Two loopback addresses standing for two different servers.
const HOST_A: &str = "127.0.0.1";
const HOST_B: &str = "127.0.0.2";

fn ip(host: &str) -> std::net::IpAddr {
    host.parse().expect("an address")
}

/// `Some(what)` when any request `server` saw carried [`TOKEN`].
fn token_seen(server: &Recorder) -> Option<String> {
    server.secret_seen(TOKEN)
}

/// Fails the test if `server` ever received [`TOKEN`].
fn assert_token_never_reached(server: &Recorder) {
    if let Some(leak) = token_seen(server) {
        panic!("{leak}; all requests: {:?}", server.seen());
    }
}

/// A git credentials Secret `name` holding [`TOKEN`], with these annotations.
async fn token_secret(w: &World, name: &str, annotations: &[(&str, &str)]) {
    w.secret(name, &[("bearerToken", TOKEN)], annotations).await;
}

/// (a) Plain `http://`, default settings: the controller does not follow it at all, so a
/// tenant's own http server never gets the namespace's token, even from a Secret that allows
/// every rollout and names that very server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_source_never_receives_the_namespaces_token() {
    let Some(w) = World::up(NS).await else { return };
    let server = Recorder::start(ip(HOST_A), None, Answer::Unauthorized)
        .await
        .expect("server");
    let pinned = server.addr().to_string();
    let annotations = [
        (ALLOWED_ROLLOUTS_ANNOTATION, "*"),
        (GIT_HOST_ANNOTATION, pinned.as_str()),
    ];
    token_secret(&w, "git", &annotations).await;
    let mut controller = w.controller(&[], None);
    let secret_ref = json!({"secretRef": {"name": "git"}});
    w.rollout("evil", &server.url("/x.git"), secret_ref).await;

    let refused = w
        .event("evil", "SourceNotAllowed", |_| token_seen(&server))
        .await;
    controller.assert_running();
    assert_token_never_reached(&server);
    let message = refused.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        message.contains("plain http:// sources are not followed")
            && message.contains("--allow-insecure-sources"),
        "{message}"
    );
    assert!(
        server.seen().is_empty(),
        "not even asked: {:?}",
        server.seen()
    );
}

/// (a) With `--allow-insecure-sources` (tests) the controller follows `http://`, but a token still
/// never goes over it, and the rollout says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_go_over_plain_http_even_where_http_is_allowed() {
    let Some(w) = World::up(NS).await else { return };
    let server = Recorder::start(ip(HOST_A), None, Answer::Unauthorized)
        .await
        .expect("server");
    let pinned = server.addr().to_string();
    let annotations = [
        (ALLOWED_ROLLOUTS_ANNOTATION, "*"),
        (GIT_HOST_ANNOTATION, pinned.as_str()),
    ];
    token_secret(&w, "git", &annotations).await;
    let mut controller = w.controller(&["--allow-insecure-sources"], None);
    let secret_ref = json!({"secretRef": {"name": "git"}});
    w.rollout("evil", &server.url("/x.git"), secret_ref).await;

    let stalled = w
        .stalled("evil", "plain http", |_| token_seen(&server))
        .await;
    controller.assert_running();
    assert_token_never_reached(&server);
    let message = stalled.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        message.contains("never sends a token over it: use an https:// URL"),
        "{message}"
    );
    assert!(
        !server.seen().is_empty(),
        "the server was asked, and refused"
    );
}

/// (b) By default `file://` URLs and local paths are not followed: they read the controller's
/// disk, not a repository the tenant was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_and_local_paths_are_not_followed_by_default() {
    let Some(w) = World::up(NS).await else { return };
    let repo = w.tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("nginx.conf"), "events {}\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "one"]);
    let mut controller = w.controller(&[], None);
    w.rollout("by-url", &format!("file://{}", repo.display()), json!({}))
        .await;
    w.rollout("by-path", &repo.display().to_string(), json!({}))
        .await;
    for (name, kind) in [("by-url", "file://"), ("by-path", "local path")] {
        let tried = |events: &str| {
            ["SourceFailed", "Validating"]
                .iter()
                .any(|r| events.contains(r))
                .then(|| "it was fetched".to_string())
        };
        let message = w.event(name, "SourceNotAllowed", tried).await;
        let message = message.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            message.contains(&format!("{kind} sources are not followed")),
            "{message}"
        );
        let status = w.status(name).await;
        assert!(
            status["stable"].is_null() && status["target"].is_null(),
            "{status}"
        );
    }
    controller.assert_running();
}

/// (b) Even with `--allow-insecure-sources`, a `file://` URL into the controller's cache, where
/// another rollout keeps its git cache, is refused: the other rollout's config stays its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_url_into_another_rollouts_git_cache_is_refused() {
    let Some(w) = World::up(NS).await else { return };
    let repo = w.tmp.path().join("victim-repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    let private = "events {}\nhttp { server { listen 8080; return 200 \"victim-private\"; } }\n";
    std::fs::write(repo.join("nginx.conf"), private).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "victim's config"]);
    // The cache keeps the remote's tags as they are (refs/tags/*), so a tag is what another
    // repository fetching from the cache would get.
    git(&repo, &["tag", "v1"]);
    let victim_commit = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let victim_url = format!("file://{}", repo.display());
    let mut controller = w.controller(&["--allow-insecure-sources"], None);
    w.rollout("victim", &victim_url, json!({})).await;
    // Where the controller keeps the victim's cache (operator::fetch::cache_dir, GitSource).
    let cache = switchback::source::git::GitSource::new(
        &victim_url,
        switchback::source::git::Credentials::None,
        &w.cache_dir().join(format!("{NS}.victim")).join("git"),
    )
    .expect("a source")
    .cache_path()
    .to_path_buf();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cache.join("refs/tags/v1").exists() {
        controller.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim's cache {} never appeared",
            cache.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    w.rollout(
        "evil",
        &format!("file://{}", cache.display()),
        json!({"ref": "v1"}),
    )
    .await;
    let read = |events: &str| {
        events
            .contains(&victim_commit[..12])
            .then(|| "the victim's commit reached the attacker's rollout".to_string())
    };
    let refused = w.event("evil", "SourceNotAllowed", read).await;
    let message = refused.unwrap_or_else(|e| panic!("{e}"));
    assert!(message.contains("cache directory"), "{message}");
    let status = w.status("evil").await.to_string();
    assert!(!status.contains(&victim_commit), "{status}");
    controller.assert_running();
}

/// A Secret that does not name the rollout is not used, and the Warning says exactly what its
/// owner would add; once they do, the token goes to the server the Secret names (so the
/// refusal, not TLS, is what kept it back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_does_not_name_the_rollout_is_refused_with_what_to_add() {
    let Some(w) = World::up(NS).await else { return };
    let ca = TestCa::new(&[ip(HOST_A)]).expect("certificate");
    let server = Recorder::start(ip(HOST_A), Some(&ca), Answer::Unauthorized)
        .await
        .expect("server");
    let pinned = server.addr().to_string();
    token_secret(&w, "team-token", &[(GIT_HOST_ANNOTATION, pinned.as_str())]).await;
    let others = [
        (ALLOWED_ROLLOUTS_ANNOTATION, "edge"),
        (GIT_HOST_ANNOTATION, pinned.as_str()),
    ];
    token_secret(&w, "edge-token", &others).await;
    let mut controller = w.controller(&[], Some(ca.cert_file()));
    let url = server.url("/x.git");
    w.rollout("evil", &url, json!({"secretRef": {"name": "team-token"}}))
        .await;
    w.rollout("evil2", &url, json!({"secretRef": {"name": "edge-token"}}))
        .await;

    let refused = w
        .event("evil", "SecretNotAllowed", |_| token_seen(&server))
        .await;
    let other = w
        .event("evil2", "SecretNotAllowed", |_| token_seen(&server))
        .await;
    controller.assert_running();
    assert_token_never_reached(&server);
    assert_eq!(
        refused.unwrap_or_else(|e| panic!("{e}")),
        "secret tenant/team-token does not allow ProxyRollout evil to use it: add the \
         annotation switchback.dev/allowed-rollouts: \"evil\" to the Secret (a comma-separated \
         list of ProxyRollouts in tenant, or \"*\" for all), e.g. `kubectl -n tenant annotate \
         secret team-token switchback.dev/allowed-rollouts=evil`"
    );
    let other = other.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        other.contains("(its switchback.dev/allowed-rollouts is \"edge\")"),
        "{other}"
    );

    // The Secret's owner agrees: now (after the reconcile's backoff) the token goes, to the
    // server the Secret names, over https.
    let allow = format!("{ALLOWED_ROLLOUTS_ANNOTATION}=evil");
    w.k.ok(&["annotate", "secret", "team-token", "-n", NS, &allow])
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while token_seen(&server).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the allowed rollout never sent its token: {:?}\n{}",
            server.seen(),
            controller.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Credentials are for the server their Secret names: a rollout on another server is refused
/// before anything is fetched, and the other server never sees the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_for_one_server_are_never_sent_to_another() {
    let Some(w) = World::up(NS).await else { return };
    let ca = TestCa::new(&[ip(HOST_A), ip(HOST_B)]).expect("certificate");
    let a = Recorder::start(ip(HOST_A), Some(&ca), Answer::Unauthorized)
        .await
        .expect("server A");
    let b = Recorder::start(ip(HOST_B), Some(&ca), Answer::Unauthorized)
        .await
        .expect("server B");
    let pinned = a.addr().to_string();
    let annotations = [
        (ALLOWED_ROLLOUTS_ANNOTATION, "*"),
        (GIT_HOST_ANNOTATION, pinned.as_str()),
    ];
    token_secret(&w, "git", &annotations).await;
    let mut controller = w.controller(&[], Some(ca.cert_file()));
    w.rollout(
        "evil",
        &b.url("/x.git"),
        json!({"secretRef": {"name": "git"}}),
    )
    .await;

    let refused = w
        .event("evil", "SecretNotAllowed", |_| token_seen(&b))
        .await;
    controller.assert_running();
    assert_token_never_reached(&b);
    assert_token_never_reached(&a);
    let message = refused.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        message.contains(&format!("holds credentials for {}", a.addr()))
            && message.contains(&format!("spec.source.url is on {}", b.addr())),
        "{message}"
    );
}

/// The server the Secret names answers with a redirect to another server: the redirect is not
/// followed, the other server never sees the token, and the message does not say where the
/// redirect pointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_server_never_carries_the_token() {
    let Some(w) = World::up(NS).await else { return };
    let ca = TestCa::new(&[ip(HOST_A), ip(HOST_B)]).expect("certificate");
    let b = Recorder::start(ip(HOST_B), Some(&ca), Answer::Unauthorized)
        .await
        .expect("server B");
    let to_b = Answer::Redirect(format!("https://{}", b.addr()));
    let a = Recorder::start(ip(HOST_A), Some(&ca), to_b)
        .await
        .expect("server A");
    let pinned = a.addr().to_string();
    let annotations = [
        (ALLOWED_ROLLOUTS_ANNOTATION, "*"),
        (GIT_HOST_ANNOTATION, pinned.as_str()),
    ];
    token_secret(&w, "git", &annotations).await;
    let mut controller = w.controller(&[], Some(ca.cert_file()));
    w.rollout(
        "evil",
        &a.url("/x.git"),
        json!({"secretRef": {"name": "git"}}),
    )
    .await;

    let stalled = w.stalled("evil", "redirected", |_| token_seen(&b)).await;
    controller.assert_running();
    assert_token_never_reached(&b);
    let message = stalled.unwrap_or_else(|e| panic!("{e}"));
    assert!(!a.seen().is_empty(), "the pinned server was asked");
    assert!(
        b.seen().is_empty(),
        "the redirect was followed: {:?}",
        b.seen()
    );
    let written = w.everything_written().await;
    assert!(
        !written.contains(HOST_B),
        "the redirect target is shown: {message}"
    );
}

/// (c) A tenant points rollouts at internal services: the Events and status say which kind of
/// failure it was in a fixed sentence, never the status, content type or body they answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_internal_server_answers_is_not_shown_to_the_rollouts_author() {
    let Some(w) = World::up(NS).await else { return };
    let ca = TestCa::new(&[ip(HOST_A)]).expect("certificate");
    let html = Answer::Respond {
        status: 200,
        content_type: "text/html; internal=SECRET-CONTENT-TYPE".to_string(),
        body: "<html>INTERNAL-SECRET-BODY</html>".to_string(),
    };
    let teapot = Answer::Respond {
        status: 418,
        content_type: "text/plain".to_string(),
        body: "INTERNAL-SECRET-BODY".to_string(),
    };
    let a = Recorder::start(ip(HOST_A), Some(&ca), html)
        .await
        .expect("server");
    let b = Recorder::start(ip(HOST_A), Some(&ca), teapot)
        .await
        .expect("server");
    let mut controller = w.controller(&[], Some(ca.cert_file()));
    w.rollout("probe-a", &a.url("/admin"), json!({})).await;
    w.rollout("probe-b", &b.url("/admin"), json!({})).await;

    let echoed = |status: &str| {
        [
            "SECRET-CONTENT-TYPE",
            "INTERNAL-SECRET-BODY",
            " 418",
            "418 ",
            ": 418",
            "text/",
        ]
        .into_iter()
        .find(|s| status.contains(s))
        .map(|s| format!("{s:?} is shown"))
    };
    for name in ["probe-a", "probe-b"] {
        let stalled = w
            .stalled(name, "did not answer as a git repository", echoed)
            .await;
        stalled.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    controller.assert_running();
    assert!(
        !a.seen().is_empty() && !b.seen().is_empty(),
        "both were asked"
    );
    let written = w.messages_written().await;
    if let Some(shown) = echoed(&written) {
        panic!("{shown}: {written}");
    }
}

/// (7) A password written into `spec.source.url` (against the docs' advice), even with a raw
/// `#` and `/` in it, never reaches the controller's log (the push log line printed the spec's
/// URL as written), an Event or a status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_spec_url_stays_out_of_logs_events_and_status() {
    let Some(w) = World::up(NS).await else { return };
    let hook = [(ALLOWED_ROLLOUTS_ANNOTATION, "*")];
    w.secret("hook", &[("token", "hook-s3cret")], &hook).await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let webhook = format!("--webhook-addr={addr}");
    let mut controller = w.controller(&[webhook.as_str()], None);
    // Port 9 is closed: the fetch fails, and says so.
    let leaky = "https://deploy:s3cret-in-url@127.0.0.1:9/org/config.git";
    w.rollout(
        "leaky",
        leaky,
        json!({"webhook": {"secretRef": {"name": "hook"}}}),
    )
    .await;
    let odd = "https://deploy:pa#ss/w0rd-in-url@127.0.0.1:9/org/config.git";
    w.rollout("odd", odd, json!({})).await;

    let repository = "https://127.0.0.1:9/org/config.git";
    let push = GenericHook::new(addr, NS, "hook", "hook-s3cret", repository);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !controller.log().contains("push: fetching now") {
        controller.assert_running();
        // 404 until the worker has registered the hook's secret.
        let _ = push.post().await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the push was never acted on:\n{}",
            controller.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let leaks = |text: &str| {
        ["s3cret-in-url", "pa#ss", "ss/w0rd", "w0rd-in-url"]
            .into_iter()
            .find(|s| text.contains(s))
            .map(|s| format!("{s:?} is shown"))
    };
    let refused = w.event("odd", "SourceNotAllowed", leaks).await;
    let message = refused.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        message.contains("https://deploy:***@127.0.0.1:9/org/config.git"),
        "{message}"
    );
    w.stalled("leaky", "could not connect", leaks)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = controller.log();
    assert!(
        log.contains("https://deploy:***@127.0.0.1:9/org/config.git"),
        "{log}"
    );
    for (what, text) in [("log", log), ("API", w.everything_written().await)] {
        if let Some(shown) = leaks(&text) {
            panic!("{shown} in the {what}:\n{text}");
        }
    }
}
