//! From a ProxyRollout's spec to the engine's settings: steps, bakes, surge, analysis, and
//! Go-style durations (`30s`, `1m`, `1h30m`) as Kubernetes users write them. Pure.

use std::time::Duration;

use super::crd::{AnalysisMethod, OnInconclusive, ProxyRollout};
use crate::analysis::{AnalysisConfig, SequentialConfig, ThresholdConfig};
use crate::rollout::{Amount, InconclusivePolicy, RolloutConfig};
use crate::runner::RunnerConfig;
use crate::validate::sandbox::Nginx;

/// A spec that cannot be used as written; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("spec: {0}")]
pub struct SpecError(pub String);

/// The runner's settings for this rollout.
pub fn runner_config(rollout: &ProxyRollout) -> Result<RunnerConfig, SpecError> {
    let s = &rollout.spec.strategy;
    let spec = SpecError;
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

fn signed(text: &str) -> Result<jiff::SignedDuration, SpecError> {
    jiff::SignedDuration::try_from(go_duration(text)?)
        .map_err(|e| SpecError(format!("{text:?}: {e}")))
}

/// A Go-style duration (`1m`, `30s`, `1h30m`, `500ms`).
pub fn go_duration(text: &str) -> Result<Duration, SpecError> {
    let bad = || SpecError(format!("{text:?} is not a duration like 30s, 1m or 1h30m"));
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
