//! The strategy's wire form and its checks: what a person writes in `spec.strategy`.

use jiff::SignedDuration;

use crate::rollout::{Amount, AmountError, ConfigError, RolloutConfig};

#[test]
fn amounts_parse_from_counts_and_percentages() {
    assert_eq!("3".parse::<Amount>(), Ok(Amount::Pods(3)));
    assert_eq!(" 25% ".parse::<Amount>(), Ok(Amount::Percent(25)));
    assert_eq!("0".parse::<Amount>(), Err(AmountError::Zero));
    assert_eq!("0%".parse::<Amount>(), Err(AmountError::Zero));
    assert_eq!("150%".parse::<Amount>(), Err(AmountError::OverHundred(150)));
    assert_eq!("300%".parse::<Amount>(), Err(AmountError::OverHundred(300)));
    assert!(matches!(
        "lots".parse::<Amount>(),
        Err(AmountError::NotANumber(_))
    ));
}

#[test]
fn percentages_round_up_and_never_exceed_the_fleet() {
    assert_eq!(Amount::Percent(25).of(8), 2);
    assert_eq!(Amount::Percent(25).of(9), 3);
    assert_eq!(
        Amount::Percent(1).of(3),
        1,
        "a step always moves at least one pod"
    );
    assert_eq!(Amount::Pods(5).of(3), 3);
    assert_eq!(Amount::Percent(100).of(0), 0);
}

#[test]
fn the_strategy_reads_like_the_crd() {
    let config: RolloutConfig = serde_json::from_value(serde_json::json!({
        "steps": [1, "25%", "100%"],
        "bake": "10m",
        "maxBake": "1h",
        "maxSurge": 2,
        "onInconclusive": "rollBack"
    }))
    .expect("a valid strategy");
    assert_eq!(
        config.steps,
        vec![Amount::Pods(1), Amount::Percent(25), Amount::Percent(100)]
    );
    assert_eq!(config.bake, SignedDuration::from_mins(10));
    assert_eq!(config.max_surge, Amount::Pods(2));
    assert_eq!(config.apply_timeout, RolloutConfig::default().apply_timeout);
    let back: RolloutConfig =
        serde_json::from_value(serde_json::to_value(&config).expect("serialises"))
            .expect("round trips");
    assert_eq!(back, config);
    assert!(serde_json::from_value::<RolloutConfig>(serde_json::json!({"steps": [0]})).is_err());
}

#[test]
fn a_strategy_that_could_never_finish_is_refused() {
    let ok = RolloutConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let no_steps = RolloutConfig {
        steps: vec![],
        ..ok.clone()
    };
    assert_eq!(no_steps.validate(), Err(ConfigError::NoSteps));
    let short = RolloutConfig {
        max_bake: SignedDuration::from_mins(1),
        ..ok.clone()
    };
    assert!(matches!(
        short.validate(),
        Err(ConfigError::MaxBakeTooShort { .. })
    ));
    let zero = RolloutConfig {
        steps: vec![Amount::Pods(1), Amount::Percent(0)],
        ..ok
    };
    let err = zero.validate().expect_err("0% never finishes");
    assert_eq!(
        err.to_string(),
        "strategy.canary.steps[1]: an amount of zero never makes progress: use at least 1 pod or 1%"
    );
}
