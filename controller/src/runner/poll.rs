//! One round of the runner's look at the fleet: read the pods that are due (`reads`) at once (a
//! hung agent is skipped, never waited for), feed the machine what each serves, record the stable
//! and target revisions' traffic for steps without baseline pods, and give every open analysis
//! window its sample.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Note, Runner, reads};
use crate::analysis::{Counters, Sample, Verdict};
use crate::fleet::{Fleet, PodObservation, Reading};
use crate::render::Digest;
use crate::rollout::{Event, ListedPod};

impl<F: Fleet> Runner<F> {
    /// Reads the pods that are due, feeds the machine what they serve, feeds each open analysis
    /// window a sample, then ticks the clock.
    pub(super) async fn poll(&mut self) {
        let names = match self.fleet.pods().await {
            Ok(names) => names,
            Err(e) => {
                // Nothing is known this round; the machine keeps what it knew and its clock runs.
                tracing::warn!(error = %e, "listing pods failed");
                self.handle(Event::Tick);
                return;
            }
        };
        self.lanes.retain(&names);
        let fast = self.fast_reads();
        let due = self.reads.due(&names, &fast, tokio::time::Instant::now());
        let mut reads = tokio::task::JoinSet::new();
        for name in due {
            let fleet = Arc::clone(&self.fleet);
            let reading = if fast.contains(&name) {
                Reading::Often
            } else {
                Reading::Once
            };
            let patience = self.config.poll_every.max(Duration::from_secs(2));
            reads.spawn(async move {
                // A pod that does not answer in time is simply not read this round: one hung
                // agent must never stall the decisions about every other pod.
                let seen = tokio::time::timeout(patience, fleet.observe(&name, reading)).await;
                (name, seen)
            });
        }
        let mut observed = Vec::new();
        while let Some(joined) = reads.join_next().await {
            match joined {
                Ok((name, Ok(Ok(obs)))) => observed.push((name, obs)),
                Ok((name, Ok(Err(e)))) => tracing::debug!(pod = %name, error = %e, "pod not read"),
                Ok((name, Err(_))) => tracing::warn!(pod = %name, "pod did not answer in time"),
                Err(e) => tracing::warn!(error = %e, "pod read task failed"),
            }
        }
        observed.sort_by(|a, b| a.0.cmp(&b.0));
        self.drift.retain(|pod, _| names.binary_search(pod).is_ok());
        for (name, obs) in &observed {
            self.drift.insert(name.clone(), obs.drift.clone());
        }
        let now = Timestamp::now();
        let _ = self.notes.send(Note::Pods {
            at: now,
            pods: observed
                .iter()
                .map(|(n, o)| (n.clone(), o.applied))
                .collect(),
        });
        // Every listed pod, read or not: a pod whose agent did not answer this round is still
        // there, and forgetting it would lose what it was told.
        self.handle(Event::PodsListed {
            pods: names
                .iter()
                .map(|name| ListedPod {
                    name: name.clone(),
                    applied: observed
                        .binary_search_by(|(n, _)| n.cmp(name))
                        .ok()
                        .and_then(|i| observed[i].1.applied),
                })
                .collect(),
        });

        self.record(now, &observed);
        let count_probes = self.config.count_probes;
        let mut verdicts = Vec::new();
        for (&window, run) in &mut self.windows {
            let none = Counters::default();
            for (name, obs) in &observed {
                for (digest, members, tally) in [
                    (run.canary, &run.canary_pods, &mut run.canary_tally),
                    (run.baseline, &run.baseline_pods, &mut run.baseline_tally),
                ] {
                    if members.binary_search(name).is_ok() {
                        tally.observe(
                            name,
                            obs.traffic.get(&digest).unwrap_or(&none),
                            obs.probes.get(&digest).unwrap_or(&none),
                        );
                    }
                }
            }
            let sample = Sample {
                at: now,
                canary: run.canary_tally.counted(count_probes),
                baseline: run.baseline_tally.counted(count_probes),
            };
            let (user, probes) = run.canary_tally.seen();
            let verdict = probes_only(run.analysis.observe(&sample), user, probes);
            if run.last.as_ref() != Some(&verdict) {
                run.last = Some(verdict.clone());
                let _ = self.notes.send(Note::Verdict {
                    at: now,
                    digest: run.canary,
                    verdict: verdict.clone(),
                });
            }
            verdicts.push(Event::Verdict {
                window,
                digest: run.canary,
                verdict,
            });
        }
        for event in verdicts {
            self.handle(event);
        }
        self.handle(Event::Tick);
    }

    /// The pods read every round: those changing config or failed (so the machine sees them
    /// land), and each open window's canary pods and baseline sample, which this sets.
    fn fast_reads(&mut self) -> BTreeSet<String> {
        let fleet = self.rollout.fleet();
        let mut fast: BTreeSet<String> = fleet
            .iter()
            .filter(|(_, p)| p.in_flight() || p.error.is_some())
            .map(|(name, _)| name.to_string())
            .collect();
        for (&window, run) in &mut self.windows {
            let on = |p: &crate::rollout::PodView, d: Digest| {
                p.applied == Some(d) || p.desired == Some(d)
            };
            run.canary_pods = fleet
                .iter()
                .filter(|(_, p)| on(p, run.canary))
                .map(|(name, _)| name.to_string())
                .collect();
            let candidates = fleet
                .iter()
                .filter(|(_, p)| p.applied == Some(run.baseline) && !on(p, run.canary))
                .map(|(name, _)| name);
            run.baseline_pods = reads::baseline_sample(window, candidates);
            run.baseline_pods.sort_unstable();
            run.canary_tally.retain(&run.canary_pods);
            run.baseline_tally.retain(&run.baseline_pods);
            fast.extend(run.canary_pods.iter().cloned());
            fast.extend(run.baseline_pods.iter().cloned());
        }
        fast
    }

    /// Records what the stable and target revisions served this round (the target too, so a
    /// promoted revision has a record before the next rollout needs one), and forgets the
    /// records of every other revision.
    /// What the analysis counts (user traffic, and probes when they count) is what is recorded.
    fn record(&mut self, now: Timestamp, observed: &[(String, PodObservation)]) {
        let state = self.rollout.state();
        let keep: Vec<Digest> = [state.stable(), state.target()]
            .into_iter()
            .flatten()
            .map(|r| r.digest)
            .collect();
        self.records.retain(|d, _| keep.contains(d));
        for digest in keep {
            let pods: Vec<(&str, Counters)> = observed
                .iter()
                .filter_map(|(name, obs)| {
                    let mut counted = obs.traffic.get(&digest).cloned();
                    if self.config.count_probes
                        && let Some(p) = obs.probes.get(&digest)
                    {
                        counted.get_or_insert_with(Counters::default).merge(p);
                    }
                    counted.map(|c| (name.as_str(), c))
                })
                .collect();
            self.records
                .entry(digest)
                .or_default()
                .observe(now, pods.iter().map(|(n, c)| (*n, c)));
        }
    }
}

/// A verdict that is inconclusive while the canary served only the agents' own health probes
/// (no user traffic at all) says so first: without it, a fleet nobody uses would wait out its
/// bake with a bare "too little traffic".
fn probes_only(verdict: Verdict, user: u64, probes: u64) -> Verdict {
    match verdict {
        Verdict::Inconclusive { reason, pending } if user == 0 && probes > 0 => {
            Verdict::Inconclusive {
                reason: format!(
                    "only the agents' health probes reached the canary ({probes} probe requests, \
                     no user traffic): {reason}"
                ),
                pending,
            }
        }
        other => other,
    }
}
