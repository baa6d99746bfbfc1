//! Behaviour of the two methods through the public [`Analysis`] trait: what each verdict means,
//! Flagger's counting rules for the threshold method, and the settings' validation.

use jiff::{SignedDuration, Timestamp};

use super::*;

/// Cumulative counters with `total` requests of which `bad` were 502s, all 20 ms.
fn counts(total: u64, bad: u64) -> Counters {
    let mut c = Counters {
        status_2xx: total - bad,
        status_5xx: bad,
        status_502: bad,
        ..Counters::default()
    };
    c.latency
        .add_to_bucket(LatencyHistogram::bucket_of(20.0), total);
    c
}

/// A sample at second `t`.
fn at(t: i64, canary: Counters, baseline: Counters) -> Sample {
    Sample {
        at: Timestamp::UNIX_EPOCH + SignedDuration::from_secs(t),
        canary,
        baseline,
    }
}

/// Runs `a` over per-second increments `(canary total, canary bad, baseline total, baseline bad)`
/// and returns every verdict (the first, for the starting sample, included).
fn run(a: &mut dyn Analysis, steps: &[(u64, u64, u64, u64)]) -> Vec<Verdict> {
    let (mut c, mut b) = ((0, 0), (0, 0));
    let mut out = vec![a.observe(&at(0, counts(0, 0), counts(0, 0)))];
    for (i, &(nc, bc, nb, bb)) in steps.iter().enumerate() {
        c = (c.0 + nc, c.1 + bc);
        b = (b.0 + nb, b.1 + bb);
        out.push(a.observe(&at(i as i64 + 1, counts(c.0, c.1), counts(b.0, b.1))));
    }
    out
}

fn failing(v: &Verdict) -> Option<&Evidence> {
    match v {
        Verdict::Failing(e) => Some(e),
        _ => None,
    }
}

fn sequential(c: SequentialConfig) -> Sequential {
    Sequential::new(c).expect("valid config")
}

fn threshold(c: ThresholdConfig) -> Threshold {
    Threshold::new(c).expect("valid config")
}

#[test]
fn sequential_starts_inconclusive_and_says_when_traffic_is_thin() {
    let mut a = sequential(SequentialConfig::default());
    let v = run(&mut a, &[(10, 0, 40, 0)]);
    assert!(matches!(&v[0], Verdict::Inconclusive { reason, .. } if reason.contains("started")));
    assert!(matches!(&v[1], Verdict::Inconclusive { reason, .. } if reason.contains("too little")));
}

#[test]
fn sequential_turns_healthy_at_the_bake_end_with_enough_equal_traffic() {
    let mut a = sequential(SequentialConfig::default());
    // 1% errors on both sides, 100 rps canary, the default 3-minute bake: the healthy test
    // looks once, at the bake's end, and 18,000 canary requests are plenty.
    let v = run(&mut a, &vec![(100, 1, 400, 4); 200]);
    let first = v
        .iter()
        .position(|v| *v == Verdict::Healthy)
        .expect("healthy within 200 s");
    assert_eq!(first, 180, "at the first look");
    assert!(matches!(
        &v[179],
        Verdict::Inconclusive { pending: true, .. }
    ));
    assert!(
        v[180..].iter().all(|v| *v == Verdict::Healthy),
        "it stays healthy"
    );
    assert!(v.iter().all(|v| failing(v).is_none()));
}

#[test]
fn sequential_says_what_a_held_step_needs_and_looks_again_a_bake_later() {
    // 10 rps on the canary, 1% errors, a 1-minute bake: 600 requests at the first look are too
    // few to tell 1% from 2%; the reason says how many would do, and a later look (a bake
    // or more later, with more traffic) passes.
    let plan = Plan {
        bake: SignedDuration::from_mins(1),
        reference: None,
    };
    let mut a = Sequential::planned(SequentialConfig::default(), plan).expect("config");
    let mut steps = vec![(10, 0, 40, 0); 600];
    for (i, s) in steps.iter_mut().enumerate() {
        if i % 10 == 0 {
            s.1 = 1;
            s.3 = 4;
        }
    }
    let v = run(&mut a, &steps);
    let Verdict::Inconclusive { reason, pending } = &v[60] else {
        panic!("not healthy at 600 requests: {:?}", v[60]);
    };
    assert!(!pending, "the look was made");
    assert!(reason.contains("needs about"), "{reason}");
    let need: u64 = reason
        .split("needs about ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a number");
    assert!((600..100_000).contains(&need), "{need}");
    let healthy = v.iter().position(|v| *v == Verdict::Healthy);
    assert!(
        healthy.is_some_and(|t| t % 60 == 0 && t > 60),
        "healthy at a later look: {healthy:?}"
    );
}

#[test]
fn a_canary_beyond_the_tolerance_is_never_called_healthy_and_the_reason_says_why() {
    // 4% vs 1%: worse than the 1-point tolerance. With the failing side switched off (huge
    // margins) the healthy side alone must not pass it, however long it runs.
    let cfg = SequentialConfig {
        absolute_margin: 0.9,
        ceiling: None,
        ..SequentialConfig::default()
    };
    let mut a = sequential(cfg);
    let v = run(&mut a, &vec![(100, 4, 400, 4); 1200]);
    assert!(v.iter().all(|v| *v != Verdict::Healthy));
    let Verdict::Inconclusive { reason, .. } = &v[1200] else {
        panic!("{:?}", v[1200]);
    };
    assert!(reason.contains("not within tolerance"), "{reason}");
}

/// A reference: `total` requests of the stable revision with `bad` 502s.
fn reference(total: u64, bad: u64) -> Reference {
    Reference {
        from: Timestamp::UNIX_EPOCH,
        to: Timestamp::UNIX_EPOCH + SignedDuration::from_mins(10),
        counters: counts(total, bad),
    }
}

#[test]
fn with_no_baseline_pods_the_canary_is_judged_against_the_stable_record() {
    let plan = |r| Plan {
        bake: SignedDuration::from_mins(1),
        reference: Some(r),
    };
    // Healthy: 1% on every pod now, 1% in the record.
    let mut a = Sequential::planned(SequentialConfig::default(), plan(reference(60_000, 600)))
        .expect("config");
    let v = run(&mut a, &vec![(300, 3, 0, 0); 61]);
    assert_eq!(v[60], Verdict::Healthy);
    // Failing: 5% now against 1% in the record, ceiling off.
    let cfg = SequentialConfig {
        ceiling: None,
        ..SequentialConfig::default()
    };
    let mut b = Sequential::planned(cfg, plan(reference(60_000, 600))).expect("config");
    let v = run(&mut b, &vec![(300, 15, 0, 0); 60]);
    let ev = v.iter().find_map(failing).expect("5% vs 1% fails");
    assert!(ev.summary.contains("record"), "{}", ev.summary);
    assert_eq!(ev.baseline_total, 60_000);
    // No record, no baseline pods: the reason says there is nothing to compare with.
    let mut c = sequential(SequentialConfig::default());
    let v = run(&mut c, &vec![(300, 3, 0, 0); 200]);
    let Verdict::Inconclusive { reason, .. } = &v[199] else {
        panic!("{:?}", v[199]);
    };
    assert!(reason.contains("no baseline to compare with"), "{reason}");
}

#[test]
fn sequential_failure_is_final_and_carries_the_evidence() {
    let mut a = sequential(SequentialConfig::default());
    let mut steps = vec![(100, 85, 400, 2)];
    steps.extend(vec![(100, 0, 400, 0); 5]);
    let v = run(&mut a, &steps);
    let ev = failing(&v[1]).expect("85% 502 fails in the first second");
    assert_eq!(ev.canary_total, 100);
    assert!(ev.statistic >= ev.bound);
    assert_eq!(ev.elapsed_secs, 1.0);
    assert!(ev.summary.contains("85.00%"), "{}", ev.summary);
    // Healthy seconds afterwards do not take the decision back.
    assert!(v[2..].iter().all(|x| failing(x) == Some(ev)));
}

#[test]
fn sequential_ignores_trouble_shared_with_the_baseline() {
    // A backend outage: 60% errors on every pod for a minute. Same share → no evidence against
    // the canary; the ceiling is off because it is absolute by design.
    let mut a = sequential(SequentialConfig {
        ceiling: None,
        ..SequentialConfig::default()
    });
    let v = run(&mut a, &vec![(100, 60, 400, 240); 60]);
    assert!(v.iter().all(|v| failing(v).is_none()));
}

#[test]
fn sequential_needs_both_margins() {
    // Canary 0.4% vs baseline 0.1%: 4x worse, but only 0.3 points: under the 0.5-point margin.
    let mut a = sequential(SequentialConfig {
        ceiling: None,
        ..SequentialConfig::default()
    });
    let v = run(&mut a, &vec![(1000, 4, 4000, 4); 300]);
    assert!(v.iter().all(|v| failing(v).is_none()));
    // Canary 2% vs baseline 1.5%: 0.5 points but only 1.35x in odds: under the 1.5x margin.
    let mut b = sequential(SequentialConfig {
        ceiling: None,
        absolute_margin: 0.0,
        ..SequentialConfig::default()
    });
    let v = run(&mut b, &vec![(1000, 20, 4000, 60); 300]);
    assert!(v.iter().all(|v| failing(v).is_none()));
}

#[test]
fn sequential_catches_a_latency_regression() {
    let mut a = sequential(SequentialConfig::default());
    let mut c = counts(0, 0);
    let mut b = counts(0, 0);
    a.observe(&at(0, c.clone(), b.clone()));
    let slow = LatencyHistogram::bucket_of(1200.0);
    let mut decided = None;
    for t in 1..=30 {
        c.merge(&counts(80, 0));
        c.status_2xx += 20;
        c.latency.add_to_bucket(slow, 20);
        b.merge(&counts(400, 0));
        if let Verdict::Failing(ev) = a.observe(&at(t, c.clone(), b.clone())) {
            decided = Some((t, ev));
            break;
        }
    }
    let (t, ev) = decided.expect("20% of requests 1.2 s slower fails");
    assert!(t <= 2, "took {t} s");
    assert_eq!(ev.signal, "latency");
}

#[test]
fn sequential_survives_a_canary_restart() {
    let mut a = sequential(SequentialConfig::default());
    a.observe(&at(0, counts(0, 0), counts(0, 0)));
    a.observe(&at(1, counts(500, 5), counts(2000, 20)));
    // The canary's agent restarted: its counters start again from zero.
    let v = a.observe(&at(2, counts(100, 1), counts(2400, 24)));
    assert!(failing(&v).is_none());
}

#[test]
fn threshold_checks_once_per_interval_on_the_canary_alone() {
    let mut a = threshold(ThresholdConfig::flagger_defaults());
    // 0.5% errors: every check passes; the baseline's 50% errors are not looked at.
    let v = run(&mut a, &vec![(200, 1, 800, 400); 130]);
    assert!(
        matches!(&v[59], Verdict::Inconclusive { reason, .. } if reason.contains("first check"))
    );
    assert_eq!(v[60], Verdict::Healthy);
    assert_eq!(v[130], Verdict::Healthy);
}

#[test]
fn threshold_counts_failed_checks_cumulatively() {
    let mut a = threshold(ThresholdConfig::flagger_example(2));
    // Minute 1 bad, minute 2 good, minute 3 bad: two failed checks, not consecutive.
    let mut steps = vec![(100, 5, 400, 0); 60];
    steps.extend(vec![(100, 0, 400, 0); 60]);
    steps.extend(vec![(100, 5, 400, 0); 60]);
    let v = run(&mut a, &steps);
    assert!(matches!(&v[60], Verdict::Inconclusive { reason, .. } if reason.contains("1/2")));
    assert_eq!(v[120], Verdict::Healthy);
    assert!(failing(&v[179]).is_none());
    let ev = failing(&v[180]).expect("second failed check rolls back");
    assert_eq!(
        (ev.method.as_str(), ev.statistic, ev.bound),
        ("threshold", 2.0, 2.0)
    );
    assert_eq!(ev.canary_total, 6000, "the last metric window only");
}

#[test]
fn threshold_counts_an_empty_window_as_failed_like_flagger() {
    let mut a = threshold(ThresholdConfig::flagger_defaults());
    let v = run(&mut a, &vec![(0, 0, 400, 0); 60]);
    let ev = failing(&v[60]).expect("no values found is a failed check");
    assert!(ev.summary.contains("no canary requests"));
    let mut lenient = threshold(ThresholdConfig {
        empty_window_fails: false,
        ..ThresholdConfig::flagger_defaults()
    });
    assert!(failing(&run(&mut lenient, &vec![(0, 0, 400, 0); 60])[60]).is_none());
}

#[test]
fn threshold_checks_p99_latency() {
    let mut a = threshold(ThresholdConfig::flagger_defaults());
    let mut c = counts(0, 0);
    a.observe(&at(0, c.clone(), counts(0, 0)));
    let mut last = None;
    for t in 1..=60 {
        c.status_2xx += 100;
        c.latency
            .add_to_bucket(LatencyHistogram::bucket_of(800.0), 100);
        last = Some(a.observe(&at(t, c.clone(), counts(0, 0))));
    }
    let ev = last
        .as_ref()
        .and_then(failing)
        .expect("p99 800 ms > 500 ms");
    assert_eq!(ev.signal, "latency");
}

#[test]
fn configs_are_validated_with_the_field_named() {
    let bad = SequentialConfig {
        alpha: 0.0,
        ..SequentialConfig::default()
    };
    let err = Sequential::new(bad).expect_err("alpha 0");
    assert_eq!(err.field, "alpha");
    assert!(err.to_string().contains("alpha"));
    let bad = ThresholdConfig {
        threshold: 0,
        ..ThresholdConfig::default()
    };
    assert_eq!(
        Threshold::new(bad).expect_err("threshold 0").field,
        "threshold"
    );
    let bad = SequentialConfig {
        relative_margin: 0.5,
        ..SequentialConfig::default()
    };
    assert!(AnalysisConfig::Sequential(bad).check().is_err());
    assert!(AnalysisConfig::default().check().is_ok());
}

#[test]
fn config_round_trips_through_json_with_defaults_filled_in() {
    let cfg: AnalysisConfig =
        serde_json::from_str(r#"{"method": "sequential", "alpha": 0.01}"#).expect("parses");
    let AnalysisConfig::Sequential(s) = &cfg else {
        panic!("sequential expected");
    };
    assert_eq!(s.alpha, 0.01);
    assert_eq!(s.relative_margin, 1.5);
    let json = serde_json::to_string(&cfg).expect("serialises");
    assert_eq!(
        serde_json::from_str::<AnalysisConfig>(&json).expect("parses"),
        cfg
    );
    let thr: AnalysisConfig =
        serde_json::from_str(r#"{"method": "threshold", "threshold": 5}"#).expect("parses");
    assert_eq!(
        thr,
        AnalysisConfig::Threshold(ThresholdConfig::flagger_example(5))
    );
}

#[test]
fn evidence_serialises_with_the_new_fields_optional() {
    let old = r#"{"method":"sequential","summary":"s","canary_bad":1,"canary_total":2,
                  "baseline_bad":0,"baseline_total":8}"#;
    let ev: Evidence = serde_json::from_str(old).expect("older evidence still reads");
    assert_eq!(ev.bound, 0.0);
    let v = Verdict::Failing(ev);
    let back: Verdict =
        serde_json::from_str(&serde_json::to_string(&v).expect("serialises")).expect("parses");
    assert_eq!(back, v);
}

#[test]
fn the_ceiling_decides_when_there_is_no_baseline_to_compare_with() {
    // No baseline traffic at all: the comparison has nothing to go on, the ceiling does.
    let mut a = sequential(SequentialConfig::default());
    let v = run(&mut a, &vec![(5, 5, 0, 0); 10]);
    let (t, ev) = v
        .iter()
        .enumerate()
        .find_map(|(t, v)| failing(v).map(|e| (t, e)))
        .expect("ceiling fires");
    assert_eq!((t, ev.method.as_str(), ev.canary_total), (4, "ceiling", 20));
}
