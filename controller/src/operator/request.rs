//! The request contract between people and the controller: `kubectl switchback promote` (and the
//! other manual verbs) writes one JSON request into the `switchback.dev/request` annotation of a
//! `ProxyRollout`; the controller reads it with [`pending`], hands it to the engine as a
//! [`rollout::Event::Manual`](crate::rollout::Event::Manual), and acknowledges it by writing its id
//! to `status.handledRequest`. An annotation instead of a status field or a subresource because
//! any user allowed to `patch` the object can write it with plain kubectl, the API server keeps it
//! across controller restarts, and a request is acted on once however often it is read.
//!
//! The annotation's value:
//! `{"id": "<unique>", "verb": "promote|abort|rollback|retry|pause|resume", "commit": "<sha or null>", "by": "<user>", "at": "<RFC 3339>"}`.
//! `rollback` and `retry` need a commit (the plugin resolves short SHAs to full ones first); the
//! other verbs take none.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::crd::ProxyRollout;
use crate::rollout::{Event, Verb};

/// The annotation a request lives in. One at a time: a new request replaces an unhandled one.
pub const ANNOTATION: &str = "switchback.dev/request";

/// A person's request, as written into [`ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique per request; the controller writes it to `status.handledRequest` once acted on.
    pub id: String,
    /// What to do.
    pub verb: RequestVerb,
    /// The full commit SHA for `rollback` and `retry`; `null` for the other verbs.
    pub commit: Option<String>,
    /// Who asked (the kubeconfig context's user, or `$USER`), for Events and the incident report.
    pub by: String,
    /// When it was asked.
    pub at: Timestamp,
}

/// The verbs a request can carry, as spelled in the annotation (lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestVerb {
    /// Skip the remaining canary steps.
    Promote,
    /// Roll the canary back and quarantine it.
    Abort,
    /// Put every pod on an earlier known-good commit.
    Rollback,
    /// Take a quarantined commit out of quarantine and roll it out again.
    Retry,
    /// Stop moving pods to new config; automatic rollback stays armed.
    Pause,
    /// Continue after a pause.
    Resume,
}

impl RequestVerb {
    /// Whether the verb names a commit (`rollback`, `retry`).
    pub fn needs_commit(self) -> bool {
        matches!(self, RequestVerb::Rollback | RequestVerb::Retry)
    }

    /// The annotation spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestVerb::Promote => "promote",
            RequestVerb::Abort => "abort",
            RequestVerb::Rollback => "rollback",
            RequestVerb::Retry => "retry",
            RequestVerb::Pause => "pause",
            RequestVerb::Resume => "resume",
        }
    }
}

impl fmt::Display for RequestVerb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the annotation does not hold a usable request. Every message names the annotation, so the
/// person reading an Event or a log line knows what to fix or overwrite.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not the request shape (unknown verb, missing field).
    #[error(
        "annotation {ANNOTATION} is not a valid request ({source}); expected {{\"id\": \"...\", \"verb\": \"promote|abort|rollback|retry|pause|resume\", \"commit\": null, \"by\": \"...\", \"at\": \"<RFC 3339>\"}}: write it with `kubectl switchback`"
    )]
    Json {
        /// The request's id when the text had one, so the controller can still acknowledge it.
        id: Option<String>,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// An empty id could never be acknowledged.
    #[error(
        "annotation {ANNOTATION} has an empty id: a request needs a unique id to be acknowledged"
    )]
    EmptyId,
    /// `rollback` or `retry` without a commit.
    #[error("annotation {ANNOTATION}: {verb} needs a commit (request {id})")]
    MissingCommit {
        /// The request's id.
        id: String,
        /// The verb.
        verb: RequestVerb,
    },
    /// A commit on a verb that takes none: refused rather than ignored, so a mistyped verb is
    /// not carried out as something else.
    #[error(
        "annotation {ANNOTATION}: {verb} takes no commit, but {commit} was given (request {id})"
    )]
    UnexpectedCommit {
        /// The request's id.
        id: String,
        /// The verb.
        verb: RequestVerb,
        /// The commit given.
        commit: String,
    },
}

impl RequestError {
    /// The id of the refused request when it has one: the controller acknowledges a refused
    /// request too (after saying why in an Event), so it is not reported again on every reconcile.
    pub fn id(&self) -> Option<&str> {
        match self {
            RequestError::Json { id, .. } => id.as_deref(),
            RequestError::EmptyId => None,
            RequestError::MissingCommit { id, .. } | RequestError::UnexpectedCommit { id, .. } => {
                Some(id)
            }
        }
    }
}

impl Request {
    /// A new request with a fresh unique id, stamped now: what the plugin writes.
    pub fn new(verb: RequestVerb, commit: Option<String>, by: impl Into<String>) -> Request {
        let at = Timestamp::now();
        Request::with_id(fresh_id(at), verb, commit, by, at)
    }

    /// A request with a given id and time, for tests and replays.
    pub fn with_id(
        id: impl Into<String>,
        verb: RequestVerb,
        commit: Option<String>,
        by: impl Into<String>,
        at: Timestamp,
    ) -> Request {
        Request {
            id: id.into(),
            verb,
            commit,
            by: by.into(),
            at,
        }
    }

    /// Reads and checks an annotation value.
    pub fn parse(text: &str) -> Result<Request, RequestError> {
        let request: Request = serde_json::from_str(text).map_err(|source| RequestError::Json {
            id: serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(String::from))
                .filter(|id| !id.is_empty()),
            source,
        })?;
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<(), RequestError> {
        if self.id.is_empty() {
            return Err(RequestError::EmptyId);
        }
        match (&self.commit, self.verb.needs_commit()) {
            (None, true) => Err(RequestError::MissingCommit {
                id: self.id.clone(),
                verb: self.verb,
            }),
            (Some(commit), false) => Err(RequestError::UnexpectedCommit {
                id: self.id.clone(),
                verb: self.verb,
                commit: commit.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        // Serialising a struct of strings and a timestamp cannot fail; fall back to an empty
        // object anyway rather than panic, which `parse` would then refuse loudly.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// The JSON merge patch that writes this request onto a `ProxyRollout`.
    pub fn merge_patch(&self) -> serde_json::Value {
        serde_json::json!({"metadata": {"annotations": {ANNOTATION: self.to_annotation()}}})
    }

    /// The engine's verb. [`Request::parse`] has already checked the commit is there when needed.
    pub fn verb(&self) -> Result<Verb, RequestError> {
        self.check()?;
        let commit = || self.commit.clone().unwrap_or_default();
        Ok(match self.verb {
            RequestVerb::Promote => Verb::Promote,
            RequestVerb::Abort => Verb::Abort,
            RequestVerb::Pause => Verb::Pause,
            RequestVerb::Resume => Verb::Resume,
            RequestVerb::Rollback => Verb::RollbackTo { commit: commit() },
            RequestVerb::Retry => Verb::Retry { commit: commit() },
        })
    }

    /// The engine event carrying this request (its id makes a repeated delivery harmless).
    pub fn event(&self) -> Result<Event, RequestError> {
        Ok(Event::Manual {
            verb: self.verb()?,
            by: self.by.clone(),
            request: self.id.clone(),
        })
    }
}

/// The request in `rollout`'s annotation that the controller has not acted on yet: `None` when
/// there is no annotation or its id equals `status.handledRequest`; `Some(Err)` when the
/// annotation cannot be used (a refused request whose id was acknowledged is `None` too).
pub fn pending(rollout: &ProxyRollout) -> Option<Result<Request, RequestError>> {
    let text = rollout.metadata.annotations.as_ref()?.get(ANNOTATION)?;
    let handled = rollout
        .status
        .as_ref()
        .and_then(|s| s.handled_request.as_deref());
    let parsed = Request::parse(text);
    let id = match &parsed {
        Ok(request) => Some(request.id.as_str()),
        Err(e) => e.id(),
    };
    if id.is_some() && id == handled {
        return None;
    }
    Some(parsed)
}

/// A unique enough id without a UUID dependency: the time in nanoseconds, the process id and 32
/// random bits from the standard library's per-process hash keys.
fn fresh_id(at: Timestamp) -> String {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_i128(at.as_nanosecond());
    hasher.write_u32(std::process::id());
    let random = hasher.finish() & 0xffff_ffff;
    format!(
        "{}-{:x}-{random:08x}",
        at.strftime("%Y%m%dT%H%M%S%.fZ"),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{ProxyRolloutSpec, ProxyRolloutStatus};

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn rollout(annotation: Option<&str>, handled: Option<&str>) -> ProxyRollout {
        let spec: ProxyRolloutSpec = serde_json::from_value(serde_json::json!({
            "source": {"url": "https://git.example.test/x.git"},
            "target": {"selector": {"app": "edge"}}
        }))
        .expect("minimal spec");
        let mut r = ProxyRollout::new("edge", spec);
        if let Some(text) = annotation {
            r.metadata.annotations = Some([(ANNOTATION.to_string(), text.to_string())].into());
        }
        r.status = Some(ProxyRolloutStatus {
            handled_request: handled.map(String::from),
            ..Default::default()
        });
        r
    }

    #[test]
    fn the_documented_shape_parses() {
        let text = format!(
            r#"{{"id": "r1", "verb": "rollback", "commit": "{SHA}", "by": "alice", "at": "2026-11-25T03:04:05Z"}}"#
        );
        let request = Request::parse(&text).expect("parses");
        assert_eq!(request.verb, RequestVerb::Rollback);
        assert_eq!(request.commit.as_deref(), Some(SHA));
        assert_eq!(request.by, "alice");
        assert_eq!(
            request.verb().expect("verb"),
            Verb::RollbackTo {
                commit: SHA.to_string()
            }
        );
        let promote = Request::parse(
            r#"{"id":"r2","verb":"promote","commit":null,"by":"bob","at":"2026-11-25T03:04:05+02:00"}"#,
        )
        .expect("parses");
        assert_eq!(promote.verb().expect("verb"), Verb::Promote);
        assert_eq!(promote.at.to_string(), "2026-11-25T01:04:05Z");
    }

    #[test]
    fn a_request_round_trips_through_its_annotation_with_a_null_commit() {
        let request = Request::new(RequestVerb::Pause, None, "carol");
        let text = request.to_annotation();
        assert!(text.contains(r#""commit":null"#), "{text}");
        assert!(text.contains(r#""verb":"pause""#), "{text}");
        assert_eq!(Request::parse(&text).expect("parses"), request);
        let patch = request.merge_patch();
        assert_eq!(patch["metadata"]["annotations"][ANNOTATION], text.as_str());
        assert_eq!(
            request.event().expect("event"),
            Event::Manual {
                verb: Verb::Pause,
                by: "carol".to_string(),
                request: request.id.clone(),
            }
        );
    }

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::BTreeSet<String> = (0..200)
            .map(|_| Request::new(RequestVerb::Promote, None, "x").id)
            .collect();
        assert_eq!(ids.len(), 200);
    }

    #[test]
    fn every_verb_maps_to_the_engine() {
        let at = Timestamp::UNIX_EPOCH;
        let with = |verb, commit: Option<&str>| {
            Request::with_id("r", verb, commit.map(String::from), "x", at).verb()
        };
        assert_eq!(with(RequestVerb::Abort, None).expect("abort"), Verb::Abort);
        assert_eq!(
            with(RequestVerb::Resume, None).expect("resume"),
            Verb::Resume
        );
        assert_eq!(
            with(RequestVerb::Retry, Some(SHA)).expect("retry"),
            Verb::Retry {
                commit: SHA.to_string()
            }
        );
        assert!(matches!(
            with(RequestVerb::Retry, None),
            Err(RequestError::MissingCommit { .. })
        ));
        assert!(matches!(
            with(RequestVerb::Promote, Some(SHA)),
            Err(RequestError::UnexpectedCommit { .. })
        ));
    }

    #[test]
    fn pending_is_a_present_request_not_yet_handled() {
        let request = Request::with_id(
            "r-7",
            RequestVerb::Abort,
            None,
            "dave",
            Timestamp::UNIX_EPOCH,
        );
        let text = request.to_annotation();
        assert!(pending(&rollout(None, None)).is_none());
        assert!(pending(&rollout(None, Some("r-7"))).is_none());
        let found = pending(&rollout(Some(&text), None))
            .expect("pending")
            .expect("valid");
        assert_eq!(found, request);
        assert!(
            pending(&rollout(Some(&text), Some("r-6")))
                .expect("an older ack leaves it pending")
                .is_ok()
        );
        assert!(pending(&rollout(Some(&text), Some("r-7"))).is_none());
        let mut no_status = rollout(Some(&text), None);
        no_status.status = None;
        assert!(pending(&no_status).is_some());
    }

    #[test]
    fn bad_json_is_an_error_naming_the_annotation() {
        let err = pending(&rollout(Some("promote please"), None))
            .expect("pending")
            .expect_err("not JSON");
        let message = err.to_string();
        assert!(message.contains(ANNOTATION), "{message}");
        assert!(message.contains("not a valid request"), "{message}");
        assert_eq!(err.id(), None);

        let unknown_verb =
            r#"{"id":"r9","verb":"deploy","commit":null,"by":"x","at":"2026-11-25T03:04:05Z"}"#;
        let err = Request::parse(unknown_verb).expect_err("unknown verb");
        assert_eq!(err.id(), Some("r9"));
        assert!(err.to_string().contains("deploy"), "{err}");
        // Once the controller has acknowledged the refused request, it is no longer pending.
        assert!(pending(&rollout(Some(unknown_verb), Some("r9"))).is_none());

        let err = Request::parse(
            r#"{"id":"r10","verb":"rollback","commit":null,"by":"x","at":"2026-11-25T03:04:05Z"}"#,
        )
        .expect_err("no commit");
        assert!(err.to_string().contains("rollback needs a commit"), "{err}");
        let err = Request::parse(
            r#"{"id":"","verb":"pause","commit":null,"by":"x","at":"2026-11-25T03:04:05Z"}"#,
        )
        .expect_err("empty id");
        assert!(matches!(err, RequestError::EmptyId));
        let err = Request::parse(r#"{"id":"r11","verb":"pause","by":"x","at":"yesterday"}"#)
            .expect_err("bad time");
        assert!(err.to_string().contains(ANNOTATION), "{err}");
    }
}
