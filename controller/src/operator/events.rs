//! Kubernetes Events from what the engine says: every notice (each transition) and one
//! `RolledBack` Warning per incident with its evidence.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use tokio::sync::mpsc;

use super::crd::ProxyRollout;
use super::metrics::Metrics;
use crate::rollout::{Command, Incident, NoticeKind, Reason};
use crate::runner::Note;

/// Turns the runner's notes into Kubernetes Events: every notice the machine emits (each
/// transition) and every incident with its evidence.
pub(super) async fn report(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    recorder: &Recorder,
    reference: &ObjectReference,
    metrics: &Metrics,
) -> Vec<Incident> {
    let mut incidents = Vec::new();
    while let Ok(note) = notes.try_recv() {
        let Note::Command { command, .. } = note else {
            continue;
        };
        match command {
            Command::Emit(notice) => {
                let kind = match notice.kind {
                    NoticeKind::Normal => EventType::Normal,
                    NoticeKind::Warning => EventType::Warning,
                };
                if notice.reason == Reason::StepHeld {
                    metrics.count_held_step();
                }
                let reason = notice.reason.to_string();
                publish(recorder, reference, kind, &reason, &notice.message).await;
            }
            Command::RecordIncident(incident) => {
                if incident.timeline.restored_at.is_none() {
                    metrics.count_rollback();
                    let message = incident_message(&incident);
                    publish(
                        recorder,
                        reference,
                        EventType::Warning,
                        "RolledBack",
                        &message,
                    )
                    .await;
                }
                incidents.push(*incident);
            }
            _ => {}
        }
    }
    incidents
}

fn incident_message(incident: &Incident) -> String {
    format!(
        "{} rolled back to {}: {}",
        incident.revision,
        incident.restored_to,
        incident.reason.summary()
    )
}

pub(super) async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    // Event notes are limited to 1 kB by the API.
    let note: String = note.chars().take(1000).collect();
    let event = KubeEvent {
        type_,
        reason: reason.chars().take(128).collect(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::debug!(error = %e, "publishing an event failed");
    }
}

pub(super) fn object_reference(object: &ProxyRollout) -> ObjectReference {
    use kube::Resource;
    object.object_ref(&())
}
