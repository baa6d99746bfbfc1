//! The invariants of DESIGN §3.4 as property tests: random event sequences against a model fleet
//! of 1–500 pods (see `model.rs`). Every run checks the safety invariants (a)–(d) after every
//! event; each test adds its own check on top. Cases: 3,500 + 2,500 + 2,500 + 1,000 + 1,000 =
//! 10,500, and the set runs in seconds in a debug build: most fleets are small (one case in
//! fifteen goes up to 500 pods), large fleets report through relists, and ops are drawn from a
//! flat tuple rather than a union of strategies.

use jiff::SignedDuration;
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;

use super::model::{Model, Op, VerbOp};
use crate::rollout::{Amount, InconclusivePolicy, Rollout, RolloutConfig};

/// `n` cases. XorShift rather than the default ChaCha: in a debug build ChaCha took half of the
/// run generating inputs, and these inputs need variety, not cryptographic quality. Failures are
/// not persisted: proptest would write them outside this module
/// (`controller/proptest-regressions/`); the minimal failing input is printed instead, and a
/// case worth keeping becomes an example test.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
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
    prop_oneof![10 => 1..=12usize.min(max), 4 => 1..=60usize.min(max), 1 => 1..=max]
}

/// One op from three numbers: `kind` picks the variant by weight, `a` and `b` fill it in. A flat
/// tuple instead of a `prop_oneof!` of ten strategies: a union builds a lazy value tree (and an
/// RNG) per alternative per element, which cost a third of the run; shrinking `kind` still walks
/// towards the first (most common) variants.
fn op() -> impl Strategy<Value = Op> {
    (0u8..50, any::<usize>(), any::<u16>()).prop_map(|(kind, a, b)| {
        let verb = [
            VerbOp::Pause,
            VerbOp::Resume,
            VerbOp::Promote,
            VerbOp::Abort,
            VerbOp::RollbackTo,
            VerbOp::Retry,
        ][usize::from(b) % 6];
        match kind {
            0..=11 => Op::Deliver {
                pick: a,
                fail: b % 10 == 0,
            },
            12..=14 => Op::DeliverMany,
            15 => Op::Relist,
            16..=17 => Op::Appear {
                kind: (b % 3) as u8,
                other: a,
            },
            18..=19 => Op::Gone { pick: a },
            20..=23 => Op::Head { pick: a },
            24..=27 => Op::Validate {
                pick: a,
                stale: b % 7 == 0,
            },
            // Mostly healthy, sometimes inconclusive, rarely failing; now and then for an old window.
            28..=32 => Op::Verdict {
                kind: [0, 0, 0, 0, 0, 0, 1, 1, 2][usize::from(b) % 9],
                stale: b % 10 == 9,
            },
            33..=38 => Op::Tick {
                secs: i64::from(b % 1201),
            },
            39..=40 => Op::Verb { verb, pick: a },
            41 => Op::Repeat,
            // The rest: time passes in small steps, the commonest thing in a real controller.
            _ => Op::Tick {
                secs: i64::from(b % 61),
            },
        }
    })
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
    #![proptest_config(cases(3500))]

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
}

proptest! {
    #![proptest_config(cases(2500))]

    /// (e) never stuck: from the state a random run reached, a calm world (pods apply,
    /// validations answered, verdicts healthy, time passes, a pause resumed) reaches Idle with
    /// every pod on the stable config within a bounded number of rounds. No abort needed.
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

    /// (f) handling any event twice yields the same state as once, and the second time commands
    /// nothing (a refused verb may say so again). Checked for every event of the run and of the
    /// calm drive after it.
    #[test]
    fn handling_an_event_twice_is_harmless(
        w in world(40),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut m = run(&w, &ops, true);
        prop_assert!(m.calm());
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// A restarted controller resumes: at any point of any run the machine survives a JSON round
    /// trip unchanged, and the restored machine carries on (invariants checked, calm drive to
    /// Idle) as the original would.
    #[test]
    fn a_restored_machine_carries_on(
        w in world(60),
        ops in prop::collection::vec(op(), 1..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let (before, after) = ops.split_at(cut.index(ops.len() + 1));
        let mut m = run(&w, before, false);
        let json = serde_json::to_string(&m.r).expect("serialises");
        let back: Rollout = serde_json::from_str(&json).expect("deserialises");
        prop_assert_eq!(&back, &m.r);
        m.r = back;
        for op in after {
            m.apply(op);
        }
        prop_assert!(m.calm());
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
