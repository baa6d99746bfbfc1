//! Watch streams: newline-delimited JSON events over a chunked response, resumable from a
//! resourceVersion, with `410 Expired` past the retained history and WatchList
//! (`sendInitialEvents=true`) initial events plus the closing bookmark.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Shared;
use super::error::ApiError;
use super::resources::ResourceType;
use super::select::Selector;
use super::store::Event;
use super::table;

struct Filter {
    rt: ResourceType,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    as_table: bool,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        e.key.group == self.rt.group
            && e.key.plural == self.rt.plural
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == e.key.namespace)
            && self.labels.matches_labels(&e.object)
            && self.fields.matches_fields(&e.object)
    }

    fn line(&self, kind: &str, object: &Value) -> Bytes {
        let object = if self.as_table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            table::table(&self.rt, std::slice::from_ref(object), rv, false)
        } else {
            object.clone()
        };
        let mut text = json!({"type": kind, "object": object}).to_string();
        text.push('\n');
        Bytes::from(text)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line(
            "BOOKMARK",
            &json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta}),
        )
    }
}

/// Starts a watch for `rt` (in `namespace`, or all) as asked by the query parameters.
pub fn watch(
    shared: &Arc<Shared>,
    rt: ResourceType,
    namespace: Option<String>,
    q: &HashMap<String, String>,
    accept: &str,
) -> Result<Response, ApiError> {
    let filter = Filter {
        rt,
        namespace,
        labels: Selector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: Selector::parse(q.get("fieldSelector").map_or("", String::as_str))?,
        as_table: table::wants_table(accept),
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let initial_events = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let since = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {v:?}")))
        })
        .transpose()?;
    let mut lines = Vec::new();
    let rx: Option<broadcast::Receiver<Arc<Event>>>;
    {
        let store = shared.lock();
        if initial_events || since.is_none() {
            for object in store.list(
                &filter.rt.group,
                &filter.rt.plural,
                filter.namespace.as_deref(),
            ) {
                if filter.labels.matches_labels(&object) && filter.fields.matches_fields(&object) {
                    lines.push(filter.line("ADDED", &object));
                }
            }
            if initial_events {
                lines.push(filter.bookmark(store.rv(), true));
            }
            rx = Some(store.subscribe());
        } else if let Some((past, live)) = since
            .filter(|_| !shared.faults.take_gone())
            .and_then(|s| store.watch_from(s))
        {
            lines.extend(
                past.iter()
                    .filter(|e| filter.matches(e))
                    .map(|e| filter.line(e.kind, &e.object)),
            );
            if bookmarks {
                lines.push(filter.bookmark(store.rv(), false));
            }
            rx = Some(live);
        } else {
            lines.push(filter.line("ERROR", &ApiError::Gone(since.unwrap_or_default()).status()));
            rx = None;
        }
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (tx, out) = mpsc::channel::<Bytes>(64);
    let mut shutdown = shared.shutdown.clone();
    let mut cut = shared.faults.cut_receiver();
    tokio::spawn(async move {
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(mut rx) = rx else { return };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = cut.changed() => return,
                _ = tx.closed() => return,
                got = next => match got {
                    Some(Ok(e)) if filter.matches(&e) => {
                        if tx.send(filter.line(e.kind, &e.object)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    // Lagged, closed or timed out: end the stream; clients watch again.
                    _ => return,
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|b| (Ok::<_, Infallible>(b), out))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}
