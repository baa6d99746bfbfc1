//! Pushes for rollouts another replica runs. With shards, the webhook Service sends each push
//! to any replica holding a shard, but only the owner of a rollout runs its worker: the others
//! did not even know the hook's Secret, so two pushes in three (three replicas) were answered
//! `404 unknown hook` and the owner saw the commit only at its next poll. Every replica now
//! registers the hook Secret of every rollout it watches (with the same checks as the owner),
//! and a push for a rollout it does not run is handed on through the API server, as Flux's
//! receivers do with `reconcile.fluxcd.io/requestedAt`: the rollout is annotated with the time
//! of the request, and the owner, whose watch sees the change, fetches at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::controller::{Context, ReconcileError};
use super::crd::ProxyRollout;
use super::credentials;
use crate::source::webhook::{HookSecret, Trigger};

/// When a replica last asked the rollout's owner to fetch now (RFC 3339); a change makes the
/// owner fetch.
pub const FETCH_REQUESTED_ANNOTATION: &str = "switchback.dev/fetch-requested-at";

/// The webhook id of `object` (`<namespace>.<secret>`), when its spec names a webhook.
pub fn hook_id(object: &ProxyRollout) -> Option<String> {
    let webhook = object.spec.source.webhook.as_ref()?;
    Some(format!(
        "{}.{}",
        object.namespace().unwrap_or_default(),
        webhook.secret_ref.name
    ))
}

/// Reads the webhook Secret `object` names, checks that it allows the rollout, and registers
/// its token with the receiver. Nothing to do when the spec names no webhook.
pub(super) async fn register_hook(
    ctx: &Context,
    object: &ProxyRollout,
) -> Result<(), ReconcileError> {
    let (Some(id), Some(webhook)) = (hook_id(object), object.spec.source.webhook.as_ref()) else {
        return Ok(());
    };
    let namespace = object.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = &webhook.secret_ref.name;
    let secret = credentials::read(&secrets, &namespace, secret_name).await?;
    credentials::allowed(&secret, &namespace, secret_name, &object.name_any())?;
    let token = secret
        .data
        .unwrap_or_default()
        .remove("token")
        .map(|v| v.0)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ReconcileError::Source(format!(
                "webhook secret {namespace}/{secret_name} has no `token`"
            ))
        })?;
    ctx.hooks.set(&id, HookSecret::new(token));
    Ok(())
}

/// The fetch request `object` carries, if any.
pub fn fetch_requested(object: &ProxyRollout) -> Option<&str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(FETCH_REQUESTED_ANNOTATION)
        .map(String::as_str)
}

/// Whether `trigger` (a verified push) is for `object`: its hook, its repository and its ref.
pub fn is_for(trigger: &Trigger, object: &ProxyRollout) -> bool {
    let source = &object.spec.source;
    hook_id(object).as_deref() == Some(trigger.hook.as_str())
        && trigger.matches(&source.url, &source.git_ref)
}

/// Asks the owners of `elsewhere`, rollouts `trigger` is for that this replica does not run, to
/// fetch now. A failed request is logged: the owner still sees the commit at its next poll.
pub(super) async fn hand_on(ctx: &Context, elsewhere: &[Arc<ProxyRollout>], trigger: &Trigger) {
    let now = jiff::Timestamp::now().to_string();
    for object in elsewhere {
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let api: Api<ProxyRollout> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch =
            serde_json::json!({"metadata": {"annotations": {FETCH_REQUESTED_ANNOTATION: now}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(rollout = %format!("{namespace}/{name}"), hook = %trigger.hook, "push for another replica's rollout: asked its owner to fetch");
            }
            Err(e) => {
                tracing::warn!(rollout = %format!("{namespace}/{name}"), error = %e, "cannot hand the push on; its owner fetches at its next poll");
            }
        }
    }
}
