//! Builders and a small driver shared by the example tests and the property tests.

use jiff::{SignedDuration, Timestamp};

use crate::analysis::{Evidence, Verdict};
use crate::render::Digest;
use crate::rollout::{
    Command, Event, Release, Rollout, RolloutConfig, State, ValidationOutcome, Verb,
};
use crate::source::git::Revision;

/// A digest made from a small number, so tests can say "config 2".
pub fn digest(n: u64) -> Digest {
    format!("{n:064x}")
        .parse()
        .expect("64 hex digits are a digest")
}

/// Commit `c` rendering to config `d`.
pub fn release(c: u64, d: u64) -> Release {
    Release {
        revision: Revision {
            commit: format!("{c:040x}"),
            committed_at: t0(),
            author: "dev@example.com".to_string(),
            message: format!("change {c}"),
        },
        digest: digest(d),
    }
}

/// An arbitrary fixed start time.
pub fn t0() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("a valid timestamp")
}

/// A failing verdict with the outage's numbers.
pub fn failing() -> Verdict {
    Verdict::Failing(Evidence {
        method: "sequential".to_string(),
        summary: "canary 502 rate 85.0% (170/200) vs baseline 0.5% (4/800)".to_string(),
        canary_bad: 170,
        canary_total: 200,
        baseline_bad: 4,
        baseline_total: 800,
        ..Evidence::default()
    })
}

/// Minutes, for the clock.
pub fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

/// A canary of `rel` started on an 8-pod fleet with the default strategy.
pub fn canary_of(rel: &Release) -> Harness {
    let mut h = Harness::new(RolloutConfig::default(), 8);
    h.seen(rel);
    h.validation(rel, true);
    h
}

/// Pod names in sorted order.
pub fn pod(i: usize) -> String {
    format!("pod-{i:03}")
}

/// A rollout plus a clock and a log of every command, driven by hand.
pub struct Harness {
    pub r: Rollout,
    pub now: Timestamp,
    pub log: Vec<Command>,
    pub requests: u64,
}

impl Harness {
    /// `pods` pods all serving `stable` (commit 1, config 1).
    pub fn new(config: RolloutConfig, pods: usize) -> Self {
        let r = Rollout::new(config, Some(release(1, 1))).expect("valid config");
        let mut h = Harness {
            r,
            now: t0(),
            log: Vec::new(),
            requests: 0,
        };
        for i in 0..pods {
            h.send(Event::PodAppeared {
                pod: pod(i),
                applied: Some(digest(1)),
            });
        }
        h
    }

    pub fn send(&mut self, e: Event) -> Vec<Command> {
        let out = self.r.handle(e, self.now);
        self.log.extend(out.iter().cloned());
        out
    }

    pub fn tick(&mut self, d: SignedDuration) -> Vec<Command> {
        self.now += d;
        self.send(Event::Tick)
    }

    pub fn seen(&mut self, rel: &Release) -> Vec<Command> {
        self.send(Event::RevisionSeen {
            revision: rel.revision.clone(),
            digest: rel.digest,
        })
    }

    pub fn validation(&mut self, rel: &Release, passed: bool) -> Vec<Command> {
        let outcome = if passed {
            ValidationOutcome::Passed
        } else {
            ValidationOutcome::Failed {
                summary: "nginx.conf:12:5: error[SB101]: proxy_pass to undefined upstream"
                    .to_string(),
            }
        };
        self.send(Event::ValidationFinished {
            digest: rel.digest,
            outcome,
        })
    }

    pub fn verb(&mut self, verb: Verb) -> Vec<Command> {
        self.requests += 1;
        self.send(Event::Manual {
            verb,
            by: "alice".to_string(),
            request: format!("req-{}", self.requests),
        })
    }

    /// Every pod applies what it was told, until nobody is told anything new.
    pub fn apply_all(&mut self) -> Vec<Command> {
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let todo: Vec<(String, Digest)> = self
                .r
                .fleet()
                .iter()
                .filter_map(|(name, p)| {
                    let d = p.desired?;
                    (p.applied != Some(d)).then(|| (name.to_string(), d))
                })
                .collect();
            if todo.is_empty() {
                return all;
            }
            for (pod, digest) in todo {
                all.extend(self.send(Event::PodApplied { pod, digest }));
            }
        }
        panic!("pods never settled");
    }

    /// The open analysis window and the digest it judges.
    pub fn window(&self) -> Option<(u64, Digest)> {
        let c = self.r.state().canary()?;
        Some((c.bake.as_ref()?.window, c.target.digest))
    }

    /// A verdict for the open window.
    pub fn verdict(&mut self, verdict: Verdict) -> Vec<Command> {
        let (window, digest) = self.window().expect("an analysis window is open");
        self.send(Event::Verdict {
            window,
            digest,
            verdict,
        })
    }

    /// Pods serving `d`.
    pub fn on(&self, d: Digest) -> usize {
        self.r.fleet().count_applied(d)
    }

    pub fn is_idle_on(&self, d: Digest) -> bool {
        matches!(self.r.state(), State::Idle { stable: Some(s) } if s.digest == d)
    }
}

/// Commands of one kind, for assertions.
pub fn tells(cmds: &[Command]) -> Vec<(Digest, Vec<String>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Tell { digest, pods, .. } => Some((*digest, pods.clone())),
            _ => None,
        })
        .collect()
}

/// Whether any command emits an event with this reason.
pub fn emits(cmds: &[Command], reason: crate::rollout::Reason) -> bool {
    cmds.iter()
        .any(|c| matches!(c, Command::Emit(n) if n.reason == reason))
}

/// The messages of every event with this reason.
pub fn notices(cmds: &[Command], reason: crate::rollout::Reason) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Emit(n) if n.reason == reason => Some(n.message.clone()),
            _ => None,
        })
        .collect()
}
