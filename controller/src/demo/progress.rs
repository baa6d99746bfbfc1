//! What the demo shows while it runs: one line per engine event (a step, a verdict, a rollback)
//! and once a second which commit each pod serves with the request and error rates. Plain lines,
//! so the same output reads on a terminal, in CI logs and through a pipe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::traffic::TrafficHandle;
use crate::analysis::Verdict;
use crate::render::Digest;
use crate::rollout::Command;
use crate::runner::Note;

/// The running display.
pub struct Progress {
    lines: mpsc::UnboundedSender<Option<String>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing (or, when `enabled` is false, only draining the notes).
    pub fn start(
        enabled: bool,
        mut notes: mpsc::UnboundedReceiver<Note>,
        traffic: Arc<TrafficHandle>,
        pods: Vec<String>,
        initial: (Digest, String),
    ) -> Progress {
        let (lines, mut said) = mpsc::unbounded_channel::<Option<String>>();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut labels: HashMap<Digest, String> = HashMap::from([initial]);
            let mut serving: Vec<Option<Digest>> = vec![None; pods.len()];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let print = |line: String| {
                if enabled {
                    println!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
                }
            };
            loop {
                tokio::select! {
                    note = notes.recv() => match note {
                        Some(note) => {
                            if let Some(line) = describe(&note, &mut labels, &pods, &mut serving) {
                                print(line);
                            }
                        }
                        None => break,
                    },
                    line = said.recv() => match line {
                        Some(Some(line)) => print(line),
                        _ => break,
                    },
                    _ = tick.tick() => {
                        let live = traffic.live();
                        let pods_line: Vec<String> = serving
                            .iter()
                            .map(|d| d.and_then(|d| labels.get(&d).cloned()).unwrap_or_else(|| "-".to_string()))
                            .collect();
                        let t = live.last_second;
                        print(format!(
                            "pods [{}]  {} req/s, {} failed ({} x 502)",
                            pods_line.join(" "),
                            t.requests,
                            t.failed,
                            t.status_502
                        ));
                    }
                }
            }
        });
        Progress {
            lines,
            task: Some(task),
        }
    }

    /// Prints a line of the story (a commit made, an outcome).
    pub fn say(&self, line: String) {
        let _ = self.lines.send(Some(line));
    }

    /// Stops the display.
    pub async fn stop(mut self) {
        let _ = self.lines.send(None);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn describe(
    note: &Note,
    labels: &mut HashMap<Digest, String>,
    pods: &[String],
    serving: &mut [Option<Digest>],
) -> Option<String> {
    match note {
        Note::Command { command, .. } => match command {
            Command::Tell {
                digest,
                commit,
                pods: told,
            } => {
                let label = commit.chars().take(8).collect::<String>();
                labels.insert(*digest, label.clone());
                Some(format!("tell {} -> {label}", told.join(", ")))
            }
            Command::Validate { commit, .. } => Some(format!(
                "validate {} (parse, lint, nginx -t)",
                commit.chars().take(8).collect::<String>()
            )),
            Command::Emit(notice) => Some(format!("{:?}: {}", notice.reason, notice.message)),
            _ => None,
        },
        Note::Pods { pods: seen, .. } => {
            for (name, digest) in seen {
                if let Some(i) = pods.iter().position(|p| p == name) {
                    serving[i] = *digest;
                }
            }
            None
        }
        Note::Verdict { verdict, .. } => match verdict {
            Verdict::Failing(evidence) => Some(format!(
                "verdict: FAILING ({}): {}",
                evidence.method, evidence.summary
            )),
            Verdict::Healthy => Some("verdict: healthy".to_string()),
            Verdict::Inconclusive { .. } => None,
        },
    }
}
