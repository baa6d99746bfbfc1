//! A first controller: every ProxyRollout gets one task that polls its git source, renders each
//! new head, and drives the engine (validation, canary steps, analysis, rollback) against the pods
//! it selects through [`KubeFleet`], writing the status back through the status subresource.
//!
//! Still to come (the operator issue): kube-rs `runtime::Controller` watches instead of a list
//! poll, server-side apply for status, Events, finalizers, credentials from `secretRef`, leader
//! election on a Lease, metrics. The engine, fleet and status mapping used here are the final ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::task::JoinHandle;

use super::crd::{AnalysisMethod, OnInconclusive, ProxyRollout, ProxyRolloutStatus};
use super::status::to_status;
use crate::analysis::{AnalysisConfig, SequentialConfig, ThresholdConfig};
use crate::fleet::kube::{FIELD_MANAGER, KubeFleet};
use crate::render::{self, Bundle};
use crate::rollout::{Amount, InconclusivePolicy, Release, RolloutConfig};
use crate::runner::{Runner, RunnerConfig};
use crate::source::git::{Credentials, GitSource};
use crate::validate::sandbox::Nginx;

/// Why a rollout could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The spec cannot be used as written.
    #[error("spec: {0}")]
    Spec(String),
    /// The git source failed.
    #[error("source: {0}")]
    Source(#[from] crate::source::git::GitError),
    /// The Kubernetes API failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Where git caches live.
    pub cache_dir: PathBuf,
    /// How often the list of rollouts is read.
    pub resync: Duration,
}

/// Runs until `shutdown`: one task per ProxyRollout, started when it appears and stopped when it
/// goes.
pub async fn run(
    client: kube::Client,
    options: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), OperatorError> {
    let api: Api<ProxyRollout> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut tasks: BTreeMap<(String, String), JoinHandle<()>> = BTreeMap::new();
    let mut tick = tokio::time::interval(options.resync);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing ProxyRollouts failed");
                continue;
            }
        };
        let mut seen = Vec::new();
        for rollout in list.items {
            let key = (
                rollout.metadata.namespace.clone().unwrap_or_default(),
                rollout.metadata.name.clone().unwrap_or_default(),
            );
            seen.push(key.clone());
            if tasks.get(&key).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            let (client, cache) = (
                client.clone(),
                options.cache_dir.join(format!("{}.{}", key.0, key.1)),
            );
            tasks.insert(
                key.clone(),
                tokio::spawn(async move {
                    if let Err(e) = drive(client, rollout, cache).await {
                        tracing::warn!(rollout = %format!("{}/{}", key.0, key.1), error = %e, "rollout stopped; retried at the next resync");
                    }
                }),
            );
        }
        tasks.retain(|key, task| {
            let keep = seen.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
    }
    for (_, task) in tasks {
        task.abort();
    }
    Ok(())
}

/// Drives one rollout until it fails or is aborted.
#[tracing::instrument(skip_all, fields(rollout = rollout.metadata.name.as_deref().unwrap_or("")))]
async fn drive(
    client: kube::Client,
    rollout: ProxyRollout,
    cache: PathBuf,
) -> Result<(), OperatorError> {
    let namespace = rollout.metadata.namespace.clone().unwrap_or_default();
    let name = rollout.metadata.name.clone().unwrap_or_default();
    let generation = rollout.metadata.generation.unwrap_or(0);
    let spec = &rollout.spec;
    let api: Api<ProxyRollout> = Api::namespaced(client.clone(), &namespace);
    let source = GitSource::new(&spec.source.url, Credentials::None, &cache)?;
    let fleet = Arc::new(KubeFleet::new(
        client,
        &namespace,
        &name,
        &spec.target.selector,
        spec.target.agent_port,
        &spec.render.entry,
    ));
    let config = runner_config(&rollout)?;
    let interval = go_duration(&spec.source.interval)?;
    let (mut runner, _notes) =
        Runner::new(config, fleet, None).map_err(|e| OperatorError::Spec(e.to_string()))?;
    let mut head = None;
    let mut last_fetch: Option<tokio::time::Instant> = None;
    let mut written: Option<ProxyRolloutStatus> = rollout.status.clone();
    loop {
        if last_fetch.is_none_or(|t| t.elapsed() >= interval) {
            last_fetch = Some(tokio::time::Instant::now());
            match read(&source, &rollout).await {
                Ok((release, bundle)) if head.as_ref() != Some(&release.revision.commit) => {
                    head = Some(release.revision.commit.clone());
                    runner.submit(release, bundle);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the source failed"),
            }
        }
        runner.run_for(Duration::from_millis(500)).await;
        let status = to_status(
            &runner.rollout().status(),
            generation,
            written.as_ref(),
            jiff::Timestamp::now(),
        );
        if written.as_ref() != Some(&status) {
            let patch = serde_json::json!({ "status": status });
            let params = PatchParams::apply(FIELD_MANAGER);
            match api
                .patch_status(
                    &name,
                    &PatchParams {
                        force: false,
                        ..params
                    },
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => written = Some(status),
                Err(e) => tracing::warn!(error = %e, "writing status failed"),
            }
        }
    }
}

async fn read(
    source: &GitSource,
    rollout: &ProxyRollout,
) -> Result<(Release, Bundle), OperatorError> {
    let revision = source.fetch(&rollout.spec.source.git_ref).await?;
    let tree = source
        .read_tree(&revision.commit, &rollout.spec.source.path)
        .await?;
    let values = rollout
        .spec
        .render
        .values
        .clone()
        .unwrap_or(serde_json::Value::Null);
    let bundle = render::render(&tree, &values)
        .map_err(|e| OperatorError::Spec(e.to_diagnostic().to_string()))?;
    Ok((
        Release {
            digest: bundle.digest(),
            revision,
        },
        bundle,
    ))
}

fn runner_config(rollout: &ProxyRollout) -> Result<RunnerConfig, OperatorError> {
    let s = &rollout.spec.strategy;
    let spec = |e: String| OperatorError::Spec(e);
    let steps = s
        .steps
        .iter()
        .map(|x| {
            x.parse::<Amount>()
                .map_err(|e| spec(format!("strategy.steps: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rollout_config = RolloutConfig {
        steps,
        bake: signed(&s.bake)?,
        max_bake: signed(&s.max_bake)?,
        max_surge: s
            .max_surge
            .parse()
            .map_err(|e| spec(format!("strategy.maxSurge: {e}")))?,
        on_inconclusive: match s.on_inconclusive {
            OnInconclusive::Hold => InconclusivePolicy::Hold,
            OnInconclusive::Promote => InconclusivePolicy::Promote,
            OnInconclusive::RollBack => InconclusivePolicy::RollBack,
        },
        ..RolloutConfig::default()
    };
    let a = &s.analysis;
    let analysis = match a.method {
        AnalysisMethod::Sequential => AnalysisConfig::Sequential(SequentialConfig {
            alpha: a.alpha,
            ..SequentialConfig::default()
        }),
        AnalysisMethod::Threshold => AnalysisConfig::Threshold(ThresholdConfig::flagger_defaults()),
    };
    Ok(RunnerConfig {
        rollout: rollout_config,
        analysis,
        entry: rollout.spec.render.entry.clone(),
        nginx: Nginx::find(None).ok().flatten(),
        ..RunnerConfig::default()
    })
}

fn signed(text: &str) -> Result<jiff::SignedDuration, OperatorError> {
    jiff::SignedDuration::try_from(go_duration(text)?)
        .map_err(|e| OperatorError::Spec(format!("{text:?}: {e}")))
}

/// A Go-style duration (`1m`, `30s`, `1h30m`, `500ms`).
pub fn go_duration(text: &str) -> Result<Duration, OperatorError> {
    let bad = || OperatorError::Spec(format!("{text:?} is not a duration like 30s, 1m or 1h30m"));
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, secs) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        total += Duration::from_secs_f64(value * secs);
    }
    Ok(total)
}
