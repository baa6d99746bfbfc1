//! Setting a worker up from a ProxyRollout's spec: the runner's settings, whether its URL may be
//! followed (`source_policy`), the Secrets it names (git credentials, trusted keys, the webhook
//! secret; each must allow the rollout, see `credentials`), the git source opened off the async
//! threads, and the fleet of pods with its namespace's agent token. It runs before the old worker is stopped and outside the
//! workers lock, so a spec that cannot be used leaves the old worker (and its rollback safety)
//! running, and one slow setup never holds up the reconciles of other rollouts.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::{Resource, ResourceExt};

use super::controller::{Context, ReconcileError};
use super::crd::{ProxyRollout, VerifyMode, VerifySpec};
use super::credentials;
use super::fetch;
use super::source_policy;
use super::spec::{SpecError, go_duration, runner_config};
use super::worker::WorkerSetup;
use crate::fleet::kube::{FIELD_MANAGER, KubeFleet};
use crate::source::git::Credentials;
use crate::source::verify::{KeyKind, TrustedKeys};

/// A worker's setup for `object`'s current spec, or why the spec or its Secrets cannot be used.
pub(super) async fn setup(
    ctx: &Context,
    object: &Arc<ProxyRollout>,
) -> Result<WorkerSetup, ReconcileError> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let spec = &object.spec;
    let mut config = runner_config(object)?;
    if let Some(image) = &ctx.options.image_files {
        config.layout.image = image.clone();
    }
    config.heartbeat = ctx.options.heartbeat;
    config.check().map_err(|e| SpecError(e.to_string()))?;
    let interval = go_duration(&spec.source.interval)?;
    let write_back = super::writeback::settings(spec.rollback.write_back.as_ref())?;
    let cache = fetch::cache_dir(&ctx.options.cache_dir, object);
    // Before any Secret is read or anything fetched: may this rollout follow this URL at all?
    let server = source_policy::check(
        &spec.source.url,
        ctx.options.allow_insecure_sources,
        &ctx.options.cache_dir,
    )
    .map_err(|message| ReconcileError::NotAllowed {
        reason: "SourceNotAllowed",
        message,
    })?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let credentials = match &spec.source.secret_ref {
        Some(secret) => {
            credentials::from_secret(
                &secrets,
                &namespace,
                &secret.name,
                &name,
                server.as_ref(),
                &cache,
            )
            .await?
        }
        None => Credentials::None,
    };
    // The receiver checks a push for this rollout against its hook Secret.
    super::push_relay::register_hook(ctx, object).await?;
    let keys = match &spec.source.verify {
        Some(verify) => Some(Arc::new(
            trusted_keys(ctx, &namespace, &name, verify).await?,
        )),
        None => None,
    };
    // Opening (or creating) the bare cache is file I/O: off the async threads.
    let (for_source, git_dir) = (Arc::clone(object), cache.join("git"));
    let source =
        tokio::task::spawn_blocking(move || fetch::git_source(&for_source, credentials, &git_dir))
            .await
            .map_err(|e| ReconcileError::Source(e.to_string()))?
            .map_err(|e| ReconcileError::Source(e.to_string()))?;
    // The tenure this rollout's writes are fenced by: the Lease's, or (sharded) its shard's,
    // whose client is fenced here (with one Lease, the context's client already is).
    let (client, tenure) = match (&ctx.options.tenure, &ctx.options.shards) {
        (Some(tenure), _) => (ctx.client.clone(), Some(tenure.clone())),
        (None, Some(shards)) => {
            let shard = super::shard::shard_of(object, shards.count).shard;
            match ctx.options.shard_tenures.get(shard as usize) {
                Some(tenure) => (tenure.fence(ctx.client.clone()), Some(tenure.clone())),
                None => (ctx.client.clone(), None),
            }
        }
        (None, None) => (ctx.client.clone(), None),
    };
    let mut fleet = KubeFleet::new(
        client.clone(),
        &namespace,
        &name,
        &spec.target.selector,
        spec.target.agent_port,
        &spec.render.entry,
    )
    .with_config_root(&spec.render.config_root);
    if let Some(owner) = object.controller_owner_ref(&()) {
        fleet = fleet.with_owner(owner);
    }
    fleet = fleet.with_cache(ctx.pods.clone());
    if let Some(tenure) = &tenure {
        fleet = fleet.with_tenure(tenure.clone());
    }
    if let Some(master) = &ctx.options.agent_token {
        // The agents of this namespace hold only their namespace's token (agent::token).
        fleet = fleet.with_agent_token(master.for_namespace(&namespace));
    }
    Ok(WorkerSetup {
        rollout: Arc::clone(object),
        client,
        tenure,
        config,
        source,
        interval,
        fleet,
        metrics: ctx.options.metrics.clone(),
        keys,
        reporter: Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: ctx.options.instance.clone(),
        },
        resume: None,
        write_back,
    })
}

/// The trusted keys from the Secret `spec.source.verify` names, narrowed to its mode.
async fn trusted_keys(
    ctx: &Context,
    namespace: &str,
    rollout: &str,
    verify: &VerifySpec,
) -> Result<TrustedKeys, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &verify.secret_ref.name;
    let secret = credentials::read(&secrets, namespace, name).await?;
    credentials::allowed(&secret, namespace, name, rollout)?;
    let data: std::collections::BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let keys = TrustedKeys::from_secret_data(&data)
        .map_err(|e| ReconcileError::Source(format!("verify secret {namespace}/{name}: {e}")))?;
    Ok(match verify.mode {
        VerifyMode::Openpgp => keys.only(KeyKind::OpenPgp),
        VerifyMode::Ssh => keys.only(KeyKind::Ssh),
        VerifyMode::Any => keys,
    })
}
