//! Property tests: nothing without a valid signature ever becomes a trigger, and signed garbage
//! never panics.

use super::*;

fn provider_strategy() -> impl Strategy<Value = Provider> {
    prop_oneof![
        Just(Provider::GitHub),
        Just(Provider::GitLab),
        Just(Provider::Gitea),
        Just(Provider::Forgejo),
        Just(Provider::Bitbucket),
        Just(Provider::Generic),
    ]
}

/// Header names the receiver reads, and some it does not.
fn header_strategy() -> impl Strategy<Value = (String, String)> {
    let names = prop::sample::select(vec![
        "x-hub-signature-256",
        "x-hub-signature",
        "x-gitlab-token",
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-switchback-signature",
        "x-github-event",
        "x-gitlab-event",
        "x-gitea-event",
        "x-event-key",
        "content-length",
        "x-other",
    ]);
    let values = prop_oneof![
        "[ -~]{0,80}",
        "sha256=[0-9a-f]{0,70}",
        "[0-9a-f]{64}",
        Just("push".to_string()),
        Just("Push Hook".to_string()),
        Just("repo:push".to_string()),
    ];
    (names.prop_map(str::to_string), values)
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        Just(GITHUB.as_bytes().to_vec()),
        Just(GITLAB.as_bytes().to_vec()),
        Just(BITBUCKET.as_bytes().to_vec()),
        Just(GENERIC.as_bytes().to_vec()),
        "\\{\"ref\":\"[ -~]{0,20}\",\"repository\":\"[ -~]{0,40}\"\\}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bodies and headers: never a panic, never a trigger (no valid signature can be
    /// guessed), always one of the documented answers.
    #[test]
    fn nothing_unsigned_ever_triggers(
        provider in provider_strategy(),
        headers in prop::collection::vec(header_strategy(), 0..6),
        body in body_strategy(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let Ok(runtime) = runtime else { return Err(TestCaseError::fail("runtime")) };
        runtime.block_on(async {
            let mut h = default_harness();
            let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
            let mut builder = Request::post(format!("/hooks/{}/{HOOK}", provider.label()));
            for (name, value) in &headers {
                builder = builder.header(*name, value.as_str());
            }
            let Ok(req) = builder.body(Body::from(body.clone())) else { return Ok(()) };
            let status = send(&h.router, req).await;
            let valid = provider.authenticate(&req_headers(&headers), &body, SECRET);
            prop_assert!(!valid, "a random header held a valid signature");
            prop_assert!(
                [StatusCode::UNAUTHORIZED, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::BAD_REQUEST].contains(&status),
                "unexpected {status}"
            );
            prop_assert!(drain(&mut h.triggers).is_empty());
            Ok(())
        })?;
    }

    /// Correctly signed arbitrary bodies: never a panic; a trigger only from a payload that names
    /// a repository and a ref.
    #[test]
    fn signed_garbage_never_panics(provider in provider_strategy(), body in body_strategy()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let Ok(runtime) = runtime else { return Err(TestCaseError::fail("runtime")) };
        runtime.block_on(async {
            let mut h = default_harness();
            let headers = push_headers(provider, SECRET, &body);
            let status = send(&h.router, request(provider.label(), HOOK, &headers, body.clone())).await;
            let triggers = drain(&mut h.triggers);
            match provider.parse_push(&body) {
                Some(push) => {
                    prop_assert_eq!(status, StatusCode::ACCEPTED);
                    prop_assert_eq!(triggers.len(), push.refs.len());
                    prop_assert!(triggers.len() <= MAX_REFS_PER_PUSH);
                }
                None => {
                    prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                    prop_assert!(triggers.is_empty());
                }
            }
            Ok(())
        })?;
    }
}

fn req_headers(headers: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}
