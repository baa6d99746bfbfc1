//! The runner against an in-memory fleet whose pods serve traffic instantly: a good revision is
//! promoted everywhere; a revision whose canary 502s is rolled back on every pod and quarantined;
//! a revision that fails validation never reaches a pod.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::fleet::{FleetError, PodObservation, Reading};
use crate::rollout::{Phase, State};
use crate::source::git::Revision;

/// Pods that apply at once and serve 50 requests per read: 85% 502 on a bad digest.
struct FakeFleet {
    pods: Mutex<BTreeMap<String, PodObservation>>,
    bad: BTreeSet<Digest>,
    told: Mutex<Vec<(String, Digest)>>,
    /// Applies of this digest take this long to land (a slow agent, a big bundle).
    slow: Option<(Digest, Duration)>,
    /// Applies of this digest land, but the apply answers [`ApplyResult::Unconfirmed`]: an
    /// agent that restarted mid-apply and applied the tell from its annotations.
    unconfirmed: Option<Digest>,
    /// Requests served per read (50 unless a test says otherwise).
    per_read: u32,
    /// Count them as the agents' own health probes, not user traffic.
    probes_only: bool,
    /// Reads per pod.
    reads: Mutex<BTreeMap<String, usize>>,
    /// Reads per pod that keep the connection ([`Reading::Often`]).
    kept: Mutex<BTreeMap<String, usize>>,
    /// Times the pods were listed (once per poll).
    lists: std::sync::atomic::AtomicUsize,
}

impl FakeFleet {
    fn new(n: usize, stable: Digest, bad: BTreeSet<Digest>) -> Self {
        let pods = (0..n)
            .map(|i| {
                let obs = PodObservation {
                    applied: Some(stable),
                    ..PodObservation::default()
                };
                (format!("pod-{i}"), obs)
            })
            .collect();
        FakeFleet {
            pods: Mutex::new(pods),
            bad,
            told: Mutex::new(Vec::new()),
            slow: None,
            unconfirmed: None,
            per_read: 50,
            probes_only: false,
            reads: Mutex::default(),
            kept: Mutex::default(),
            lists: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Reads per pod since the last call.
    fn take_reads(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.reads.lock().expect("lock"))
    }

    /// Reads per pod that kept their connection, since the last call.
    fn take_kept(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.kept.lock().expect("lock"))
    }

    fn applied(&self) -> Vec<Option<Digest>> {
        let pods = self.pods.lock().expect("lock");
        pods.values().map(|p| p.applied).collect()
    }
}

impl Fleet for FakeFleet {
    async fn pods(&self) -> Result<Vec<String>, FleetError> {
        self.lists
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.pods.lock().expect("lock").keys().cloned().collect())
    }

    async fn apply(
        &self,
        pod: &str,
        bundle: &Bundle,
        _commit: &str,
    ) -> Result<ApplyResult, FleetError> {
        let digest = bundle.digest();
        self.told
            .lock()
            .expect("lock")
            .push((pod.to_string(), digest));
        if let Some((slow, delay)) = self.slow
            && slow == digest
        {
            tokio::time::sleep(delay).await;
        }
        let mut pods = self.pods.lock().expect("lock");
        let obs = pods
            .get_mut(pod)
            .ok_or_else(|| FleetError::NoSuchPod(pod.to_string()))?;
        obs.applied = Some(digest);
        if self.unconfirmed == Some(digest) {
            return Ok(ApplyResult::Unconfirmed(
                "connection reset by peer".to_string(),
            ));
        }
        Ok(ApplyResult::Applied)
    }

    async fn observe(&self, pod: &str, reading: Reading) -> Result<PodObservation, FleetError> {
        if reading == Reading::Often {
            *self
                .kept
                .lock()
                .expect("lock")
                .entry(pod.to_string())
                .or_default() += 1;
        }
        *self
            .reads
            .lock()
            .expect("lock")
            .entry(pod.to_string())
            .or_default() += 1;
        let mut pods = self.pods.lock().expect("lock");
        let obs = pods
            .get_mut(pod)
            .ok_or_else(|| FleetError::NoSuchPod(pod.to_string()))?;
        if let Some(digest) = obs.applied {
            let counters = if self.probes_only {
                obs.probes.entry(digest).or_default()
            } else {
                obs.traffic.entry(digest).or_default()
            };
            for i in 0..self.per_read {
                let status = if self.bad.contains(&digest) && i % 20 < 17 {
                    502
                } else {
                    200
                };
                counters.record(status, 5.0);
            }
        }
        Ok(obs.clone())
    }
}

fn release(n: u8, body: &str) -> (Release, Bundle) {
    let bundle = Bundle::new(
        [(
            "nginx.conf".to_string(),
            format!(
                "events {{}}\nhttp {{\n    server {{ listen 8080; return 200 \"{body}\"; }}\n}}\n"
            )
            .into_bytes(),
        )]
        .into_iter()
        .collect(),
    );
    let revision = Revision {
        commit: format!("{n:0>40}"),
        committed_at: Timestamp::UNIX_EPOCH,
        author: "Test <test@example.test>".to_string(),
        message: format!("commit {n}"),
    };
    (
        Release {
            revision,
            digest: bundle.digest(),
        },
        bundle,
    )
}

/// The defaults (steps, policy, analysis) with a short bake: the fake pods serve 50 requests a
/// read every 10 ms, so a 200 ms bake holds ~1,000 requests per pod, plenty for a first look.
fn config() -> RunnerConfig {
    let mut config = RunnerConfig {
        poll_every: Duration::from_millis(10),
        ..RunnerConfig::default()
    };
    config.rollout.bake = SignedDuration::from_millis(200);
    config
}

const LIMIT: Duration = Duration::from_secs(60);

fn idle_on(digest: Digest) -> impl FnMut(&Rollout) -> bool {
    move |r: &Rollout| {
        matches!(r.state(), State::Idle { stable: Some(s) } if s.digest == digest)
            && r.state().phase() == Phase::Idle
    }
}

#[tokio::test]
async fn a_good_revision_is_promoted_and_a_502ing_one_rolled_back_everywhere() {
    let (r0, b0) = release(0, "v0");
    let (r1, b1) = release(1, "v1");
    let (r2, b2) = release(2, "v2 with a broken upstream");
    let fleet = Arc::new(FakeFleet::new(5, r0.digest, BTreeSet::from([r2.digest])));
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0, b0))).expect("runner");

    runner.submit(r1.clone(), b1);
    runner
        .run_until("promote commit 1", LIMIT, idle_on(r1.digest))
        .await
        .expect("commit 1 promoted");
    runner
        .run_until("bring every pod to commit 1", LIMIT, |_| {
            fleet.applied().iter().all(|d| *d == Some(r1.digest))
        })
        .await
        .expect("all pods on commit 1");

    runner.submit(r2.clone(), b2);
    runner
        .run_until("roll back commit 2", LIMIT, |r| {
            !r.ledger().quarantined().is_empty() && r.state().phase() == Phase::Idle
        })
        .await
        .expect("commit 2 rolled back");
    runner
        .run_until("restore every pod", LIMIT, |_| {
            fleet.applied().iter().all(|d| *d == Some(r1.digest))
        })
        .await
        .expect("all pods back on commit 1");
    assert!(
        runner
            .incidents()
            .values()
            .any(|i| i.revision.digest == r2.digest)
    );
    let told_bad = fleet
        .told
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, d)| *d == r2.digest)
        .count();
    assert_eq!(
        told_bad, 1,
        "only the canary pod may ever get the bad digest"
    );
}

/// 300 pods polled every 10 ms: once adopted, the quiet runner polls once a second and idle
/// pods are read at their heartbeat (not 30 times in 300 ms); in a bake only the canary pods and the bounded baseline sample are read at
/// the poll rate; and the rollout still promotes.
#[tokio::test]
async fn a_large_fleet_reads_only_what_a_decision_needs() {
    let (r0, b0) = release(0, "v0");
    let (r1, b1) = release(1, "v1");
    let fleet = Arc::new(FakeFleet::new(300, r0.digest, BTreeSet::new()));
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0, b0))).expect("runner");
    runner.run_for(Duration::from_millis(300)).await;
    let adopting = fleet.take_reads();
    assert_eq!(adopting.len(), 300, "every pod is read at start");
    let polls_before = fleet.lists.load(std::sync::atomic::Ordering::Relaxed);
    fleet.take_kept();
    runner.run_for(Duration::from_millis(300)).await;
    let total: usize = fleet.take_reads().values().sum();
    assert!(
        total < 100,
        "idle pods wait for their heartbeat: {total} reads"
    );
    let kept = fleet.take_kept();
    assert!(
        kept.is_empty(),
        "a heartbeat read closes its connection, none kept: {kept:?}"
    );
    let polls = fleet.lists.load(std::sync::atomic::Ordering::Relaxed) - polls_before;
    assert!(
        polls <= 2,
        "a quiet runner polls once a second, not every 10 ms: {polls}"
    );

    runner.submit(r1.clone(), b1);
    runner
        .run_until("open the first bake", LIMIT, |r| {
            r.state().canary().is_some_and(|c| c.bake.is_some())
        })
        .await
        .expect("first bake");
    fleet.take_reads();
    fleet.take_kept();
    runner.run_for(Duration::from_millis(150)).await;
    let canary = runner
        .rollout()
        .fleet()
        .iter()
        .filter(|(_, p)| p.desired == Some(r1.digest))
        .count();
    assert!(canary > 0 && canary < 300);
    let hot = fleet.take_reads().into_values().filter(|&n| n >= 5).count();
    assert!(
        hot >= canary && hot <= canary + BASELINE_SAMPLE,
        "{hot} pods read at the poll rate for {canary} canary pods"
    );
    let kept = fleet.take_kept().into_values().filter(|&n| n >= 5).count();
    assert_eq!(
        kept, hot,
        "the pods read at the poll rate keep their connection"
    );
    runner
        .run_until("promote commit 1", LIMIT, idle_on(r1.digest))
        .await
        .expect("commit 1 promoted with a baseline sample");
}

/// The machine tells every pod stable, then the canary pod the target, each tell its own task:
/// a slow stable tell must not land after the target's and leave the canary on stable.
#[tokio::test]
async fn a_tell_overtaken_by_a_newer_one_never_lands_after_it() {
    let (r0, b0) = release(0, "v0");
    let (r1, b1) = release(1, "v1");
    let mut fleet = FakeFleet::new(3, r0.digest, BTreeSet::new());
    fleet.slow = Some((r0.digest, Duration::from_millis(300)));
    let fleet = Arc::new(fleet);
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0.clone(), b0))).expect("runner");
    runner.submit(r1.clone(), b1);
    runner
        .run_until(
            "promote commit 1",
            Duration::from_secs(20),
            idle_on(r1.digest),
        )
        .await
        .expect("commit 1 promoted");
    runner
        .run_until("bring every pod to commit 1", LIMIT, |_| {
            fleet.applied().iter().all(|d| *d == Some(r1.digest))
        })
        .await
        .expect("all pods on commit 1");
    let told = fleet.told.lock().expect("lock").clone();
    let first_target = told.iter().position(|(_, d)| *d == r1.digest);
    assert!(
        first_target.is_some_and(|i| told[i + 1..].iter().all(|(_, d)| *d == r1.digest)),
        "no stable tell may reach a pod after the target: {told:?}"
    );
}

/// A tell whose nudge got no answer (the agent restarted mid-apply) is not a failed apply: the
/// pods' reads show the target applied and the commit promotes, nothing quarantined. Counted as
/// a failure, it rolled the good commit back (`maxApplyFailures: 0`).
#[tokio::test]
async fn a_tell_the_agent_never_answered_is_judged_by_what_the_pod_serves() {
    let (r0, b0) = release(0, "v0");
    let (r1, b1) = release(1, "v1");
    let mut fleet = FakeFleet::new(3, r0.digest, BTreeSet::new());
    fleet.unconfirmed = Some(r1.digest);
    let fleet = Arc::new(fleet);
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0, b0))).expect("runner");
    runner.submit(r1.clone(), b1);
    runner
        .run_until("promote commit 1", LIMIT, idle_on(r1.digest))
        .await
        .expect("commit 1 promoted although no agent answered its tell");
    assert!(runner.rollout.ledger().quarantined().is_empty());
}

#[tokio::test]
async fn a_revision_that_fails_validation_never_reaches_a_pod() {
    let (r0, b0) = release(0, "v0");
    let (bad, _) = release(3, "x");
    let broken = Bundle::new(
        [(
            "nginx.conf".to_string(),
            b"events {}\nhttp { upstream app { } server { location / { proxy_pass http://app; } } }\n"
                .to_vec(),
        )]
        .into_iter()
        .collect(),
    );
    let bad = Release {
        digest: broken.digest(),
        ..bad
    };
    let fleet = Arc::new(FakeFleet::new(3, r0.digest, BTreeSet::new()));
    let (mut runner, _notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0, b0))).expect("runner");
    runner.submit(bad.clone(), broken);
    runner
        .run_until("reject the broken revision", LIMIT, |r| {
            !r.ledger().quarantined().is_empty()
        })
        .await
        .expect("rejected");
    let told = fleet.told.lock().expect("lock").clone();
    assert!(told.iter().all(|(_, d)| *d != bad.digest), "{told:?}");
}

/// A controller restarted mid-canary resumes from the checkpoint: the new runner re-opens the
/// bake's analysis, still rolls the 502ing canary back, and never tells another pod the bad digest.
#[tokio::test]
async fn a_runner_resumed_from_a_checkpoint_mid_canary_finishes_the_rollback() {
    let (r0, b0) = release(0, "v0");
    let (r2, b2) = release(2, "v2 with a broken upstream");
    let fleet = Arc::new(FakeFleet::new(5, r0.digest, BTreeSet::from([r2.digest])));
    let mut cfg = config();
    // Analysis that cannot decide before the restart: the first runner only gets the canary going.
    cfg.poll_every = Duration::from_secs(3600);
    let (mut runner, _notes) =
        Runner::new(cfg, Arc::clone(&fleet), Some((r0.clone(), b0.clone()))).expect("runner");
    runner.submit(r2.clone(), b2.clone());
    runner.poll_soon();
    runner
        .run_until("start the canary", LIMIT, |r| {
            r.state().canary().is_some_and(|c| c.bake.is_some())
        })
        .await
        .expect("canary baking");
    let checkpoint = serde_json::to_value(runner.rollout()).expect("serialise");
    drop(runner);

    let restored: Rollout = serde_json::from_value(checkpoint).expect("deserialise");
    let (mut runner, _notes) =
        Runner::resume(config(), Arc::clone(&fleet), restored, vec![b0, b2]).expect("resume");
    runner
        .run_until("roll back after the restart", LIMIT, |r| {
            r.ledger()
                .quarantined()
                .iter()
                .any(|q| q.release.digest == r2.digest)
                && r.state().phase() == Phase::Idle
        })
        .await
        .expect("rolled back");
    runner
        .run_until("restore every pod", LIMIT, |_| {
            fleet.applied().iter().all(|d| *d == Some(r0.digest))
        })
        .await
        .expect("all pods back on commit 0");
    let told_bad = fleet
        .told
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, d)| *d == r2.digest)
        .count();
    assert_eq!(
        told_bad, 1,
        "only the canary pod may ever get the bad digest"
    );
}

/// With the default steps the last step leaves no pod on the stable revision: it is judged
/// against the stable revision's record, which the engine keeps in its checkpoint, so a runner
/// resumed during that step (with no record of its own) still promotes.
#[tokio::test]
async fn the_last_step_is_judged_against_the_stable_record_even_after_a_restart() {
    let (r0, b0) = release(0, "v0");
    let (r1, b1) = release(1, "v1");
    let fleet = Arc::new(FakeFleet::new(4, r0.digest, BTreeSet::new()));
    let mut cfg = config();
    // Bakes long enough that the restart happens inside the last one.
    cfg.rollout.bake = SignedDuration::from_secs(2);
    let (mut runner, _notes) = Runner::new(
        cfg.clone(),
        Arc::clone(&fleet),
        Some((r0.clone(), b0.clone())),
    )
    .expect("runner");
    runner.submit(r1.clone(), b1.clone());
    runner
        .run_until("reach the 100% step with a record", LIMIT, |r| {
            r.state().canary().is_some_and(|c| {
                c.step == 3
                    && c.bake.as_ref().is_some_and(|b| {
                        b.baseline_pods == Some(0)
                            && b.reference
                                .as_ref()
                                .is_some_and(|r| r.counters.total() >= 200)
                    })
            })
        })
        .await
        .expect("the last step compares with the record");
    let checkpoint = serde_json::to_value(runner.rollout()).expect("serialise");
    drop(runner);
    let restored: Rollout = serde_json::from_value(checkpoint).expect("deserialise");
    let (mut runner, _notes) =
        Runner::resume(cfg, Arc::clone(&fleet), restored, vec![b0, b1]).expect("resume");
    runner
        .run_until("promote after the restart", LIMIT, idle_on(r1.digest))
        .await
        .expect("promoted through the 100% step");
    assert!(
        runner
            .rollout()
            .ledger()
            .history
            .iter()
            .any(|h| h.revision.digest == r1.digest
                && h.outcome == crate::rollout::Outcome::Promoted)
    );
}

/// A fleet whose only traffic is the agents' probes gets a verdict that says so, not a bare
/// "too little traffic".
#[tokio::test]
async fn a_canary_that_only_sees_probes_is_told_so() {
    let (r0, b0) = release(0, "v0");
    let (r1, b1) = release(1, "v1");
    let mut fleet = FakeFleet::new(3, r0.digest, BTreeSet::new());
    fleet.probes_only = true;
    fleet.per_read = 1;
    let fleet = Arc::new(fleet);
    let (mut runner, mut notes) =
        Runner::new(config(), Arc::clone(&fleet), Some((r0, b0))).expect("runner");
    runner.submit(r1, b1);
    let mut said = None;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while said.is_none() && tokio::time::Instant::now() < deadline {
        runner.run_for(Duration::from_millis(50)).await;
        while let Ok(note) = notes.try_recv() {
            if let Note::Verdict {
                verdict: Verdict::Inconclusive { reason, .. },
                ..
            } = note
                && reason.contains("only the agents' health probes")
            {
                said = Some(reason);
            }
        }
    }
    let said = said.expect("a verdict that names the probes");
    assert!(said.contains("no user traffic"), "{said}");
}
