//! The invariants of DESIGN §3.4 as property tests: random event sequences against a model fleet
//! of 1–500 pods (see `model.rs`). Every run checks the safety invariants (a)–(d) after every
//! event; each test adds its own check on top. Case counts add up to more than 10,000 and the set
//! runs in seconds in a debug build: most fleets are small, one case in seven is large.

use jiff::SignedDuration;
use proptest::prelude::*;

use super::model::{Model, Op, VerbOp};
use crate::rollout::{Amount, InconclusivePolicy, Rollout, RolloutConfig};

/// `n` cases. Failures are not persisted: proptest would write them outside this module
/// (`controller/proptest-regressions/`); the failing input is printed, and a case worth keeping
/// becomes an example test.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(n)
    }
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        (1u32..=5).prop_map(Amount::Pods),
        (1u8..=100).prop_map(Amount::Percent)
    ]
}

fn config() -> impl Strategy<Value = RolloutConfig> {
    (
        prop::collection::vec(amount(), 1..=4),
        amount(),
        prop_oneof![
            Just(InconclusivePolicy::Hold),
            Just(InconclusivePolicy::Promote),
            Just(InconclusivePolicy::RollBack)
        ],
        0u32..=2,
        60i64..=600,
        1i64..=4,
        30i64..=300,
        1usize..=6,
    )
        .prop_map(
            |(steps, surge, policy, failures, bake, stretch, timeout, history)| RolloutConfig {
                steps,
                bake: SignedDuration::from_secs(bake),
                max_bake: SignedDuration::from_secs(bake * stretch),
                max_surge: surge,
                on_inconclusive: policy,
                max_apply_failures: failures,
                apply_timeout: SignedDuration::from_secs(timeout),
                history_limit: history,
            },
        )
}

/// Mostly small fleets (fast, and where edge cases live), sometimes up to `max` pods.
fn fleet(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1..=12usize.min(max), 2 => 1..=60usize.min(max), 1 => 1..=max]
}

fn verb() -> impl Strategy<Value = VerbOp> {
    prop_oneof![
        Just(VerbOp::Pause),
        Just(VerbOp::Resume),
        Just(VerbOp::Promote),
        Just(VerbOp::Abort),
        Just(VerbOp::RollbackTo),
        Just(VerbOp::Retry)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        12 => (pick, prop::bool::weighted(0.1))
            .prop_map(|(pick, fail)| Op::Deliver { pick, fail }),
        3 => Just(Op::DeliverMany),
        2 => (0u8..3, pick).prop_map(|(kind, other)| Op::Appear { kind, other }),
        2 => pick.prop_map(|pick| Op::Gone { pick }),
        4 => pick.prop_map(|pick| Op::Head { pick }),
        4 => (pick, prop::bool::weighted(0.15))
            .prop_map(|(pick, stale)| Op::Validate { pick, stale }),
        5 => (prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)], prop::bool::weighted(0.1))
            .prop_map(|(kind, stale)| Op::Verdict { kind, stale }),
        6 => (0i64..=1200).prop_map(|secs| Op::Tick { secs }),
        2 => (verb(), pick).prop_map(|(verb, pick)| Op::Verb { verb, pick }),
        1 => Just(Op::Repeat),
    ]
}

/// A random world: config, fleet size, commits (configs 1..=5, 1 being the stable one) and which
/// configs fail validation.
#[derive(Debug, Clone)]
struct World {
    config: RolloutConfig,
    pods: usize,
    configs: Vec<u64>,
    invalid: Vec<u64>,
}

fn world(max_pods: usize) -> impl Strategy<Value = World> {
    (
        config(),
        fleet(max_pods),
        prop::collection::vec(1u64..=5, 1..=6),
        prop::collection::vec(2u64..=5, 0..=2),
    )
        .prop_map(|(config, pods, configs, invalid)| World {
            config,
            pods,
            configs,
            invalid,
        })
}

fn run(w: &World, ops: &[Op], twice: bool) -> Model {
    let mut m = Model::new(w.config.clone(), w.pods, &w.configs, &w.invalid);
    m.twice = twice;
    for op in ops {
        m.apply(op);
    }
    m.check_view();
    m
}

proptest! {
    #![proptest_config(cases(3000))]

    /// (a) a pod is only told a digest that passed validation; (b) never more pods on the target
    /// than the step allows; (c) a finished rollback leaves every pod on stable; (d) a quarantined
    /// commit or config is never validated or told again without a retry. All checked in
    /// `Model::observe` after every event.
    #[test]
    fn safety_invariants_hold_after_every_event(
        w in world(500),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(&w, &ops, false);
    }

    /// (e) never stuck: from the state a random run reached, a calm world (pods apply,
    /// validations answered, verdicts healthy, time passes, a pause resumed) reaches Idle with
    /// every pod on the stable config within a bounded number of rounds.
    #[test]
    fn every_reached_state_gets_back_to_idle(
        w in world(500),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut m = run(&w, &ops, false);
        let phase = m.phase();
        prop_assert!(m.calm(), "stuck: started calm in {phase:?}, ended in {:?}", m.r.state());
        m.check_view();
    }
}

proptest! {
    #![proptest_config(cases(2500))]

    /// (f) handling any event twice yields the same state as once, and the second time commands
    /// nothing (a refused verb may say so again).
    #[test]
    fn handling_an_event_twice_is_harmless(
        w in world(40),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut m = run(&w, &ops, true);
        m.calm();
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// A restarted controller resumes: the machine survives a JSON round trip unchanged, at any
    /// point of any run, so what it does next is the same.
    #[test]
    fn the_machine_survives_serialisation(
        w in world(60),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let m = run(&w, &ops, false);
        let json = serde_json::to_string(&m.r).expect("serialises");
        let back: Rollout = serde_json::from_str(&json).expect("deserialises");
        prop_assert_eq!(back, m.r);
    }

    /// Step sizes: never more than the fleet, at least one pod of a non-empty fleet, and never
    /// fewer pods for a bigger fleet (so growing a fleet cannot push pods off the target).
    #[test]
    fn amounts_are_bounded_and_monotone(a in amount(), n in 0usize..=2000) {
        let k = a.of(n);
        prop_assert!(k <= n);
        prop_assert!(n == 0 || k >= 1);
        prop_assert!(a.of(n + 1) >= k);
    }
}
