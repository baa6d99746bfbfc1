//! From a ProxyRollout's spec to the engine's settings: steps, bakes, surge, analysis, and
//! Go-style durations (`30s`, `1m`, `1h30m`) as Kubernetes users write them. Pure.

use std::time::Duration;

use super::crd::{AnalysisMethod, OnInconclusive, ProxyRollout};
use crate::analysis::{AnalysisConfig, SequentialConfig, ThresholdConfig};
use crate::rollout::{Amount, InconclusivePolicy, RolloutConfig};
use crate::runner::RunnerConfig;
use crate::validate::sandbox::Nginx;
use crate::validate::{ConfigRoot, ProxyLayout};

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
        AnalysisMethod::Sequential => {
            let defaults = SequentialConfig::default();
            let (relative, absolute) = a.tolerance.as_ref().map_or(
                (
                    defaults.healthy_relative_margin,
                    defaults.healthy_absolute_margin,
                ),
                |t| (t.relative, t.absolute_points / 100.0),
            );
            AnalysisConfig::Sequential(SequentialConfig {
                alpha: a.alpha,
                healthy_relative_margin: relative,
                healthy_absolute_margin: absolute,
                ..defaults
            })
        }
        AnalysisMethod::Threshold => AnalysisConfig::Threshold(ThresholdConfig::flagger_defaults()),
    };
    Ok(RunnerConfig {
        rollout: rollout_config,
        analysis,
        entry: rollout.spec.render.entry.clone(),
        layout: ProxyLayout {
            config_root: ConfigRoot::new(&rollout.spec.render.config_root)
                .map_err(|e| spec(format!("render.configRoot: {e}")))?,
            ..ProxyLayout::default()
        },
        nginx: controller_nginx(),
        ..RunnerConfig::default()
    })
}

/// The nginx of the `nginx -t` gate, found once per process: finding it runs `nginx -V` and reads
/// its packaged files, which every worker start did on an async thread (a reconcile's slowest
/// part at 100 rollouts), and the binary does not change while the controller runs.
fn controller_nginx() -> Option<Nginx> {
    static NGINX: std::sync::OnceLock<Option<Nginx>> = std::sync::OnceLock::new();
    NGINX
        .get_or_init(|| Nginx::find(None).ok().flatten())
        .clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(strategy: serde_json::Value) -> ProxyRollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchback.dev/v1alpha1",
            "kind": "ProxyRollout",
            "metadata": {"name": "edge", "namespace": "prod"},
            "spec": {
                "source": {"url": "https://git.example.test/x.git"},
                "target": {"selector": {"app": "edge"}},
                "strategy": strategy,
            }
        }))
        .expect("a ProxyRollout")
    }

    #[test]
    fn an_empty_strategy_is_the_engines_default() {
        let config = runner_config(&rollout(serde_json::json!({}))).expect("config");
        assert_eq!(config.rollout, RolloutConfig::default());
        assert_eq!(config.analysis, AnalysisConfig::default());
    }

    #[test]
    fn the_tolerance_reaches_the_healthy_test() {
        let strategy = serde_json::json!({"analysis": {"tolerance": {"absolutePoints": 0.25}}});
        let config = runner_config(&rollout(strategy)).expect("config");
        let AnalysisConfig::Sequential(s) = config.analysis else {
            panic!("sequential");
        };
        assert!((s.healthy_absolute_margin - 0.0025).abs() < 1e-12);
        assert_eq!(s.healthy_relative_margin, 2.0, "unset: the default");
    }
}
