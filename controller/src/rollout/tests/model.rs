//! A model fleet for the property tests: pods that apply what they are told (sometimes failing,
//! sometimes slowly, because delivery is a separate random step), appear and vanish; a source
//! that reports heads; a validator that tells the truth; an analysis that returns random
//! verdicts. After every event it checks the safety invariants against what it saw.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::support::{digest, release, t0};
use crate::analysis::Verdict;
use crate::render::Digest;
use crate::rollout::{
    Command, Event, ListedPod, Phase, Reason, Release, Rollout, RolloutConfig, State,
    ValidationOutcome, Verb,
};

/// Fleets larger than this report through relists in the calm drive.
const BATCH_ABOVE: usize = 32;

/// One step of a random run; indices are taken modulo whatever they index.
#[derive(Debug, Clone)]
pub enum Op {
    /// A pod with something pending applies it (or fails to).
    Deliver { pick: usize, fail: bool },
    /// Up to 16 pods apply what they were told.
    DeliverMany,
    /// The edge relists every pod.
    Relist,
    /// A new pod: 0 no config, 1 on stable, 2 on some other config.
    Appear { kind: u8, other: usize },
    /// A pod goes away.
    Gone { pick: usize },
    /// The source reports this head.
    Head { pick: usize },
    /// An outstanding validation is answered (truthfully), or a stale one for any commit.
    Validate { pick: usize, stale: bool },
    /// A verdict: 0 healthy, 1 inconclusive, 2 failing; for the newest window or an older one.
    Verdict { kind: u8, stale: bool },
    /// Time passes.
    Tick { secs: i64 },
    /// A person.
    Verb { verb: VerbOp, pick: usize },
    /// The previous event once more, at the same time.
    Repeat,
}

/// Verbs, with commits picked from the pool.
#[derive(Debug, Clone, Copy)]
pub enum VerbOp {
    Pause,
    Resume,
    Promote,
    Abort,
    RollbackTo,
    Retry,
}

/// What a model pod was told and serves.
#[derive(Debug, Clone, Default)]
struct Pod {
    told: Option<Digest>,
    applied: Option<Digest>,
}

/// The world around one rollout.
pub struct Model {
    pub r: Rollout,
    pub now: Timestamp,
    pods: BTreeMap<String, Pod>,
    next_pod: usize,
    /// Commits the source may report (commit 1 is the initial stable).
    pool: Vec<Release>,
    /// Configs whose validation fails.
    invalid: BTreeSet<Digest>,
    /// Configs whose passing validation the machine consumed (plus the initial stable).
    validated: BTreeSet<Digest>,
    /// Validations asked for and not answered.
    outstanding: Vec<Digest>,
    /// Analysis windows opened: (window, canary digest).
    windows: Vec<(u64, Digest)>,
    /// Quarantined (commit, digest) seen so far, kept until the model itself retries them.
    quarantined: BTreeSet<(String, Digest)>,
    last: Option<Event>,
    requests: u64,
    /// (f): handle every event a second time on a copy and check nothing more happens.
    pub twice: bool,
    /// Events handled, for the report of a failing case.
    pub steps: usize,
}

impl Model {
    /// A model of `pods` pods on the stable config, with commits 2.. rendering to `configs` and
    /// the configs in `invalid` failing validation.
    pub fn new(config: RolloutConfig, pods: usize, configs: &[u64], invalid: &[u64]) -> Self {
        let stable = release(1, 1);
        let mut pool = vec![stable.clone()];
        pool.extend(
            configs
                .iter()
                .enumerate()
                .map(|(i, d)| release(i as u64 + 2, *d)),
        );
        let mut m = Model {
            r: Rollout::new(config, Some(stable)).expect("valid config"),
            now: t0(),
            pods: BTreeMap::new(),
            next_pod: 0,
            pool,
            invalid: invalid
                .iter()
                .map(|d| digest(*d))
                .filter(|d| *d != digest(1))
                .collect(),
            validated: BTreeSet::from([digest(1)]),
            outstanding: Vec::new(),
            windows: Vec::new(),
            quarantined: BTreeSet::new(),
            last: None,
            requests: 0,
            twice: false,
            steps: 0,
        };
        let on_stable = Some(digest(1));
        for _ in 0..pods {
            let pod = format!("p{:04}", m.next_pod);
            m.next_pod += 1;
            m.pods.insert(
                pod,
                Pod {
                    told: None,
                    applied: on_stable,
                },
            );
        }
        m.relist();
        m
    }

    /// The edge's relist: every pod with what it serves, in one event.
    fn relist(&mut self) {
        let pods = self
            .pods
            .iter()
            .map(|(name, p)| ListedPod {
                name: name.clone(),
                applied: p.applied,
            })
            .collect();
        self.handle(Event::PodsListed { pods });
    }

    /// Turns an op into an event (if it applies now) and handles it.
    pub fn apply(&mut self, op: &Op) {
        let event = match op {
            Op::Deliver { pick, fail } => {
                let pending = || {
                    self.pods.iter().filter_map(|(name, p)| {
                        Some((name, p.told?)).filter(|_| p.applied != p.told)
                    })
                };
                let count = pending().count();
                let Some((pod, d)) = (count > 0)
                    .then(|| pending().nth(pick % count))
                    .flatten()
                    .map(|(name, d)| (name.clone(), d))
                else {
                    return;
                };
                if *fail {
                    Event::PodApplyFailed {
                        pod,
                        digest: d,
                        message: "nginx -t failed".to_string(),
                    }
                } else {
                    Event::PodApplied { pod, digest: d }
                }
            }
            Op::DeliverMany => {
                // A burst of reports, bounded so large fleets stay cheap outside the calm drive.
                for (pod, d) in self.pending().into_iter().take(16) {
                    self.handle(Event::PodApplied { pod, digest: d });
                }
                return;
            }
            Op::Relist => return self.relist(),
            Op::Appear { kind, other } => {
                let applied = match kind % 3 {
                    0 => None,
                    1 => self.r.state().stable().map(|s| s.digest),
                    _ => pick_from(&self.pool, *other).map(|r| r.digest),
                };
                return self.appear(applied);
            }
            Op::Gone { pick } => {
                let names: Vec<String> = self.pods.keys().cloned().collect();
                let Some(pod) = pick_from(&names, *pick).cloned() else {
                    return;
                };
                Event::PodGone { pod }
            }
            Op::Head { pick } => {
                let Some(rel) = pick_from(&self.pool, *pick) else {
                    return;
                };
                Event::RevisionSeen {
                    revision: rel.revision.clone(),
                    digest: rel.digest,
                }
            }
            Op::Validate { pick, stale } => {
                let d = if *stale {
                    pick_from(&self.pool, *pick).map(|r| r.digest)
                } else {
                    let i = *pick % self.outstanding.len().max(1);
                    (i < self.outstanding.len()).then(|| self.outstanding.remove(i))
                };
                let Some(d) = d else { return };
                self.validation(d)
            }
            Op::Verdict { kind, stale } => {
                let w = if *stale {
                    self.windows.first()
                } else {
                    self.windows.last()
                };
                let Some(&(window, d)) = w else { return };
                let verdict = match kind % 3 {
                    0 => Verdict::Healthy,
                    1 => Verdict::Inconclusive {
                        reason: "too little traffic".to_string(),
                        pending: false,
                    },
                    _ => super::support::failing(),
                };
                Event::Verdict {
                    window,
                    digest: d,
                    verdict,
                }
            }
            Op::Tick { secs } => {
                self.now += SignedDuration::from_secs(*secs);
                Event::Tick
            }
            Op::Verb { verb, pick } => {
                let commit = || {
                    pick_from(&self.pool, *pick)
                        .map(|r| r.commit().to_string())
                        .unwrap_or_default()
                };
                let verb = match verb {
                    VerbOp::Pause => Verb::Pause,
                    VerbOp::Resume => Verb::Resume,
                    VerbOp::Promote => Verb::Promote,
                    VerbOp::Abort => Verb::Abort,
                    VerbOp::RollbackTo => Verb::RollbackTo { commit: commit() },
                    VerbOp::Retry => Verb::Retry { commit: commit() },
                };
                self.requests += 1;
                Event::Manual {
                    verb,
                    by: "prop".to_string(),
                    request: format!("r{}", self.requests),
                }
            }
            Op::Repeat => match self.last.clone() {
                Some(e) => e,
                None => return,
            },
        };
        self.handle(event);
    }

    fn appear(&mut self, applied: Option<Digest>) {
        let pod = format!("p{:04}", self.next_pod);
        self.next_pod += 1;
        self.pods.insert(
            pod.clone(),
            Pod {
                told: None,
                applied,
            },
        );
        self.handle(Event::PodAppeared { pod, applied });
    }

    fn validation(&self, d: Digest) -> Event {
        let outcome = if self.invalid.contains(&d) {
            ValidationOutcome::Failed {
                summary: "error[SB101]".to_string(),
            }
        } else {
            ValidationOutcome::Passed
        };
        Event::ValidationFinished { digest: d, outcome }
    }

    /// Pods told something they do not serve yet.
    fn pending(&self) -> Vec<(String, Digest)> {
        self.pods
            .iter()
            .filter_map(|(name, p)| {
                let d = p.told?;
                (p.applied != Some(d)).then(|| (name.clone(), d))
            })
            .collect()
    }

    /// Every pod applies what it was told, as often as it is told something new. Small fleets
    /// report pod by pod; large ones through relists, which keeps a 500-pod calm drive linear.
    pub fn deliver_all(&mut self) {
        for _ in 0..=4 * self.pods.len() + 4 {
            let pending = self.pending();
            if pending.is_empty() {
                return;
            }
            if self.pods.len() > BATCH_ABOVE {
                for (pod, d) in pending {
                    if let Some(p) = self.pods.get_mut(&pod) {
                        p.applied = Some(d);
                    }
                }
                self.relist();
            } else {
                for (pod, d) in pending {
                    self.handle(Event::PodApplied { pod, digest: d });
                }
            }
        }
        panic!("pods never settled");
    }

    /// Handles one event, updates the world from the commands, and checks the invariants.
    pub fn handle(&mut self, event: Event) {
        self.steps += 1;
        let before = self.r.state().clone();
        // A passing validation counts only when the machine consumes it.
        if let Event::ValidationFinished {
            digest: d,
            outcome: ValidationOutcome::Passed,
        } = &event
            && matches!(&before, State::Validating { target, .. } if target.digest == *d)
        {
            self.validated.insert(*d);
        }
        // A retry the machine accepts releases the config the commit was quarantined with.
        if let Event::Manual {
            verb: Verb::Retry { commit },
            request,
            ..
        } = &event
            && !self.r.ledger().requests.contains(request)
            && let Some(q) = self
                .r
                .ledger()
                .quarantined()
                .iter()
                .rfind(|q| q.release.commit() == commit)
        {
            let d = q.release.digest;
            self.quarantined.retain(|(_, qd)| *qd != d);
        }
        if let Event::PodApplied { pod, digest: d } = &event
            && let Some(p) = self.pods.get_mut(pod)
        {
            p.applied = Some(*d);
        }
        if let Event::PodGone { pod } = &event {
            self.pods.remove(pod);
        }
        let out = self.r.handle(event.clone(), self.now);
        if self.twice {
            let mut again = self.r.clone();
            let second = again.handle(event.clone(), self.now);
            if again != self.r {
                let a = format!("{:#?}", self.r);
                let b = format!("{again:#?}");
                let diff: Vec<String> = a
                    .lines()
                    .zip(b.lines())
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .take(5)
                    .map(|(i, (x, y))| format!("{i}: {x}  !=  {y}"))
                    .collect();
                panic!(
                    "handling {event:?} twice changed the state:\n{}",
                    diff.join("\n")
                );
            }
            for c in &second {
                assert!(
                    matches!(c, Command::Emit(n) if n.reason == Reason::VerbRejected),
                    "handling {event:?} twice produced {c:?}"
                );
            }
        }
        self.last = Some(event);
        self.observe(&before, &out);
    }

    fn observe(&mut self, before: &State, out: &[Command]) {
        let quarantined_digests: BTreeSet<Digest> =
            self.quarantined.iter().map(|(_, d)| *d).collect();
        for c in out {
            match c {
                Command::Tell {
                    digest: d, pods, ..
                } => {
                    // (a) only validated configs reach pods.
                    assert!(self.validated.contains(d), "told unvalidated {d:?}");
                    // (d) nothing quarantined reaches pods.
                    assert!(!quarantined_digests.contains(d), "told quarantined {d:?}");
                    for pod in pods {
                        let p = self.pods.get_mut(pod).expect("told an unknown pod");
                        p.told = Some(*d);
                    }
                }
                Command::Validate { digest: d, commit } => {
                    assert!(
                        !quarantined_digests.contains(d),
                        "validating quarantined {commit}"
                    );
                    self.outstanding.push(*d);
                }
                Command::StartAnalysis { window, canary, .. } => {
                    self.windows.push((*window, canary.digest));
                }
                _ => {}
            }
        }
        let state = self.r.state();
        // (b) never more pods told the target than the step allows.
        if let Some(c) = state.canary() {
            let allowed = self.r.config().allowed(c.step, self.pods.len());
            let on = self
                .pods
                .values()
                .filter(|p| p.told == Some(c.target.digest))
                .count();
            assert!(
                on <= allowed,
                "{on} pods told the target, step allows {allowed}"
            );
        }
        if let State::RollingBack(rb) = state.active() {
            assert!(
                self.pods.values().all(|p| p.told == Some(rb.to.digest)),
                "a rolling back pod is not told the restored config"
            );
            if rb.reason.is_incident() && !matches!(before.active(), State::RollingBack(_)) {
                assert!(
                    self.r.ledger().blocking(&rb.from.id()).is_some(),
                    "not quarantined"
                );
            }
        }
        // (c) a finished rollback leaves every pod on the restored config.
        if let State::RollingBack(rb) = before
            && out
                .iter()
                .any(|c| matches!(c, Command::Emit(n) if n.reason == Reason::RolledBack))
        {
            let to = rb.to.digest;
            assert!(
                self.pods.values().all(|p| p.applied == Some(to)),
                "rollback finished with pods off the stable config"
            );
        }
        assert_eq!(
            self.r.fleet().len(),
            self.pods.len(),
            "machine knows every pod"
        );
        for q in self.r.ledger().quarantined() {
            self.quarantined
                .insert((q.release.commit().to_string(), q.release.digest));
        }
    }

    /// The machine's view of what it told matches what the pods were told: it never changes its
    /// mind about a pod without telling the pod. O(pods), so checked at the end of a run.
    pub fn check_view(&self) {
        assert_eq!(
            self.r.fleet().len(),
            self.pods.len(),
            "machine knows every pod"
        );
        for ((name, p), (view_name, view)) in self.pods.iter().zip(self.r.fleet().iter()) {
            assert_eq!(name, view_name, "machine knows every pod");
            assert_eq!(view.desired, p.told, "view of {name}");
            assert_eq!(view.applied, p.applied, "view of {name}");
        }
    }

    /// (e) Drives a calm world (pods apply, validations answered, verdicts healthy, time passes,
    /// a pause is resumed) and returns whether the rollout reached Idle with every pod on stable.
    pub fn calm(&mut self) -> bool {
        let bake = self.r.config().bake;
        let rounds = 4 * (self.r.config().steps.len() + 4);
        for _ in 0..rounds {
            if self.r.state().is_paused() {
                self.requests += 1;
                self.handle(Event::Manual {
                    verb: Verb::Resume,
                    by: "calm".to_string(),
                    request: format!("r{}", self.requests),
                });
            }
            self.deliver_all();
            let state = self.r.state();
            if let (State::Idle { stable: Some(s) }, None) = (state, self.r.pending()) {
                let s = s.digest;
                if self.pods.values().all(|p| p.applied == Some(s)) {
                    return true;
                }
            }
            // Like the edge, answer the validations that were asked for, and only those: a machine
            // validating something nobody was asked to validate would wait for ever.
            if matches!(state, State::Validating { .. }) && !self.outstanding.is_empty() {
                for d in std::mem::take(&mut self.outstanding) {
                    let e = self.validation(d);
                    self.handle(e);
                }
                continue;
            }
            // Analysis judges the window it was last asked to open, as the edge knows it.
            if state.canary().is_some()
                && let Some(&(window, digest)) = self.windows.last()
            {
                self.handle(Event::Verdict {
                    window,
                    digest,
                    verdict: Verdict::Healthy,
                });
            }
            self.now += bake;
            self.handle(Event::Tick);
        }
        false
    }

    /// The phase, for reports.
    pub fn phase(&self) -> Phase {
        self.r.state().phase()
    }
}

fn pick_from<T>(v: &[T], i: usize) -> Option<&T> {
    if v.is_empty() {
        None
    } else {
        v.get(i % v.len())
    }
}
