//! The agent's inputs from outside: `POST /v1/apply` and `/v1/nudge` bodies (`agent::wire`),
//! the bundle decoder behind them (`agent::apply::decode`, `agent::base64`) and the directives
//! the agent inserts into what it decoded (`agent::directives::prepare`); the syslog datagrams
//! nginx sends it (`agent::ingest`); and the agents' reports to the controller
//! (`operator::agent_reports`), through the real route.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use crate::agent::apply::decode;
use crate::agent::directives::{AgentDirectives, prepare};
use crate::agent::ingest::{self, Line, Tally};
use crate::agent::wire::{ApplyRequest, NudgeRequest};
use crate::agent::{Token, base64};
use crate::operator::agent_reports::{AGENT_REPORT_PATH, AgentReports};
use crate::render::Bundle;
use crate::validate::{ConfigRoot, DEFAULT_ENTRY};

/// One input: an apply or nudge body as JSON; or, when it is not JSON, a bundle in the framing
/// of [`super::split_files`], sent the way the controller sends one.
///
/// Checks: base64 round-trips any bytes; a request that decodes yields a bundle with the digest
/// it claims and its entry; a well-formed request for a bundle of plain paths always decodes
/// (and survives JSON); the agent's edit of a decoded bundle keeps its set of files.
pub fn apply(data: &[u8]) {
    assert_eq!(
        base64::decode(&base64::encode(data)).ok().as_deref(),
        Some(data)
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = base64::decode(text);
    }
    let _ = serde_json::from_slice::<NudgeRequest>(data);
    if let Ok(req) = serde_json::from_slice::<ApplyRequest>(data) {
        if let Ok(bundle) = decode(&req) {
            assert_eq!(
                bundle.digest(),
                req.digest,
                "decoded a bundle of another digest"
            );
            assert!(
                bundle.get(&req.entry).is_some(),
                "decoded without its entry"
            );
            edit(&bundle, &req.entry);
        }
        return;
    }
    let files = super::split_files(data, DEFAULT_ENTRY);
    let bundle = Bundle::new(files);
    let req = ApplyRequest {
        digest: bundle.digest(),
        commit: "fuzz".to_string(),
        entry: DEFAULT_ENTRY.to_string(),
        files: bundle
            .files()
            .iter()
            .map(|(p, b)| (p.clone(), base64::encode(b)))
            .collect(),
    };
    let json = serde_json::to_vec(&req).unwrap_or_default();
    let back: ApplyRequest = match serde_json::from_slice(&json) {
        Ok(back) => back,
        Err(e) => panic!("an apply request does not survive JSON: {e}"),
    };
    assert_eq!(back, req);
    let plain = bundle
        .files()
        .keys()
        .all(|p| crate::agent::layout::checked_rel(p).is_ok())
        && crate::agent::layout::check_paths(bundle.files().keys().map(String::as_str)).is_ok();
    match decode(&back) {
        Ok(decoded) => {
            assert!(decoded == bundle, "decoded another bundle");
            edit(&decoded, DEFAULT_ENTRY);
        }
        Err((step, why)) => assert!(
            !plain || bundle.get(DEFAULT_ENTRY).is_none(),
            "a faithful request was refused at {step:?}: {why}"
        ),
    }
}

/// The agent's preparation of a decoded bundle, as root (user inserted, listens pinned) and not.
fn edit(bundle: &Bundle, entry: &str) {
    let root = ConfigRoot::default();
    let temp = [
        "client_body_temp_path".to_string(),
        "proxy_temp_path".to_string(),
    ];
    let short = "0123456789ab";
    let _ = crate::agent::guard::refuse_code(
        bundle.files(),
        entry,
        &root,
        Path::new("/nonexistent/modules"),
        Path::new("/nonexistent/prefix"),
    );
    for as_root in [false, true] {
        let d = AgentDirectives {
            log_socket: Path::new("/state/log.sock"),
            short,
            temp_dir: Path::new("/state/tmp"),
            temp_paths: &temp,
            user: as_root.then_some("nobody nogroup"),
            pin_listen: as_root.then_some(std::net::IpAddr::from([127, 0, 0, 2])),
            config_root: &root,
            replace_user: as_root,
        };
        if let Ok(out) = prepare(bundle.files(), entry, &d) {
            let before: Vec<&String> = bundle.files().keys().collect();
            let after: Vec<&String> = out.keys().collect();
            assert_eq!(before, after, "prepare changed the set of files");
        }
    }
}

/// The probe token the ingest target's agent uses.
const PROBE_TOKEN: &[u8] = b"probe-token";

/// One input: syslog datagrams separated by NUL bytes, as the agent's log socket receives them.
///
/// Checks: a parsed access line has a finite, non-negative latency and is a probe only when
/// marked with the token; the tally counts at most one line per datagram.
pub fn ingest(data: &[u8]) {
    let digest = Bundle::new(BTreeMap::new()).digest();
    let mut tally = Tally::new(ingest::DEFAULT_MAX_DIGESTS);
    tally.register(digest);
    let mut datagrams = 0u64;
    for datagram in data.split(|&b| b == 0) {
        datagrams += 1;
        if let Some(Line::Access {
            latency_ms, probe, ..
        }) = ingest::parse(datagram, PROBE_TOKEN)
        {
            assert!(latency_ms.is_finite() && latency_ms >= 0.0);
            assert!(
                !probe
                    || datagram
                        .windows(PROBE_TOKEN.len())
                        .any(|w| w == PROBE_TOKEN),
                "a probe without the token"
            );
        }
        if let Some(Line::Access { probe, .. }) = ingest::parse(datagram, b"") {
            assert!(!probe, "an empty token marks probes");
        }
        tally.ingest(datagram, PROBE_TOKEN);
    }
    let (counters, status) = tally.snapshot();
    let _ = (counters, datagrams, status);
}

/// The controller's master token for agent reports.
const MASTER: &str = "fuzz-master-token-of-enough-length";

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().ok())
        .as_ref()
}

/// One input: a first line with the `Authorization` header's value, then the report body.
///
/// Checks: the route accepts a report only with `Bearer` and its namespace's agent token
/// (`Token::for_namespace` of the master), and the bearer check of agents' tokens accepts only
/// the token itself.
pub fn report(data: &[u8]) {
    let (auth, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(master) = Token::new(MASTER, "fuzz") else {
        return;
    };
    if master.authorizes(Some(auth)) {
        assert_eq!(auth, format!("Bearer {MASTER}").as_bytes());
    }
    let Some(rt) = runtime() else { return };
    let reports = AgentReports::new(master.clone());
    let mut request = Request::post(AGENT_REPORT_PATH);
    if let Ok(value) = axum::http::HeaderValue::from_bytes(auth) {
        request = request.header(header::AUTHORIZATION, value);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let status = rt.block_on(async { reports.router().oneshot(request).await.map(|r| r.status()) });
    if status.ok() == Some(StatusCode::ACCEPTED) {
        let report: crate::operator::agent_reports::AgentReport = match serde_json::from_slice(body)
        {
            Ok(r) => r,
            Err(e) => panic!("accepted a body that is not a report: {e}"),
        };
        let token = master.for_namespace(&report.namespace);
        assert_eq!(
            auth,
            format!("Bearer {}", token.expose()).as_bytes(),
            "accepted a report without its namespace's token"
        );
    }
}
