//! The demo's story, run for real: a git repository, upstream app servers, a local fleet of nginx
//! pods, a load balancer's worth of traffic, and the runner driving the rollout engine through the
//! four commits of [`super::repo::story`]. Everything it starts is stopped before it returns,
//! also when it fails or is interrupted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::figures::{self, Figures};
use super::progress::Progress;
use super::repo::{self, CONFIG_PATH, StoryCommit};
use super::traffic::{self, TrafficConfig, TrafficHandle};
use super::upstreams::{self, UpstreamSpec, Upstreams};
use crate::agent::ProbeSpec;
use crate::analysis::{AnalysisConfig, SequentialConfig, ThresholdConfig};
use crate::fleet::Fleet;
use crate::fleet::local::{LocalFleet, LocalFleetOptions};
use crate::render::{self, Bundle, Digest};
use crate::report;
use crate::rollout::{Incident, Phase, Release, Rollout, State};
use crate::runner::{Runner, RunnerConfig};
use crate::source::git::{Credentials, GitSource};
use crate::validate::sandbox::Nginx;

/// The `Host` the demo site answers to.
const SITE: &str = "shop.example.test";

/// Which analysis watches the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The sequential test (Switchback's default).
    Sequential,
    /// Flagger's policy at its defaults (check every 60 s, roll back after 1 failed check).
    Threshold,
}

impl Method {
    /// The name shown in figures.
    pub fn name(self) -> &'static str {
        match self {
            Method::Sequential => "sequential",
            Method::Threshold => "threshold",
        }
    }

    fn analysis(self) -> AnalysisConfig {
        match self {
            Method::Sequential => AnalysisConfig::Sequential(SequentialConfig::default()),
            Method::Threshold => AnalysisConfig::Threshold(ThresholdConfig::flagger_defaults()),
        }
    }

    /// How long each canary step bakes: long enough for the method to have looked at least
    /// once, as Flagger's own bake is its analysis interval.
    fn bake(self, base: Duration) -> Duration {
        match self {
            Method::Sequential => base,
            Method::Threshold => base.max(Duration::from_secs(65)),
        }
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Proxy pods.
    pub pods: usize,
    /// Total requests per second across the pods.
    pub rate: u32,
    /// The analysis method.
    pub method: Method,
    /// How long each canary step bakes (the threshold method bakes at least its interval).
    pub bake: Duration,
    /// Where to put the repository, pod state and reports (default: a temporary directory).
    pub dir: Option<PathBuf>,
    /// The second and third octets of every address the demo uses (127.a.b.x).
    pub subnet: [u8; 2],
    /// The nginx binary.
    pub nginx: Option<PathBuf>,
    /// Print progress lines as it goes.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            pods: 5,
            rate: 200,
            method: Method::Sequential,
            bake: Duration::from_secs(10),
            dir: None,
            subnet: [0, 7],
            nginx: None,
            progress: true,
        }
    }
}

/// Why the demo could not run (as opposed to Switchback deciding wrongly, which is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up failed: a port, a directory, nginx.
    #[error("setting up the demo: {0}")]
    Setup(String),
    /// Interrupted (Ctrl-C); everything was stopped.
    #[error("interrupted; every process the demo started was stopped")]
    Interrupted,
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> DemoError + '_ {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// What became of one commit of the story.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitOutcome {
    /// The commit SHA.
    pub commit: String,
    /// Its summary line.
    pub summary: String,
    /// The rendered digest.
    pub digest: String,
    /// What should have happened: `promoted` or `rolled back`.
    pub expected: &'static str,
    /// What did: `promoted`, `rolled back`, or what the wait gave up on.
    pub result: String,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoRun {
    /// The analysis method.
    pub method: &'static str,
    /// Each commit and what became of it.
    pub commits: Vec<CommitOutcome>,
    /// Time to detect and restore, and failed shares.
    pub figures: Figures,
    /// The incident the bad commit caused, as the engine recorded it.
    pub incident: Option<Incident>,
    /// Where the repository, pod state and report are.
    pub dir: PathBuf,
    /// Whether the story went as it should: commits 1 and 3 promoted, commit 2 rolled back.
    pub ok: bool,
    /// The incident report (Markdown), when there was an incident.
    #[serde(skip)]
    pub report_markdown: Option<String>,
    /// The incident report as JSON.
    pub report: Option<serde_json::Value>,
}

/// Everything the demo started, so it can all be stopped whatever happens.
struct Stage {
    upstreams: Option<Upstreams>,
    fleet: Option<Arc<LocalFleet>>,
    traffic: Option<Arc<TrafficHandle>>,
}

impl Stage {
    async fn stop(&mut self) {
        if let Some(traffic) = self.traffic.take()
            && let Ok(handle) = Arc::try_unwrap(traffic)
        {
            let _ = handle.stop().await;
        }
        if let Some(fleet) = self.fleet.take() {
            match Arc::try_unwrap(fleet) {
                Ok(fleet) => {
                    for (pod, error) in fleet.shutdown().await {
                        tracing::warn!(%pod, %error, "agent ended with an error");
                    }
                }
                Err(_) => tracing::error!("the fleet is still shared; its agents stop on exit"),
            }
        }
        if let Some(upstreams) = self.upstreams.take() {
            upstreams.stop(upstreams::DEFAULT_STOP_GRACE).await;
        }
    }
}

/// Runs the story once. Returns when every process it started has stopped.
pub async fn run(options: DemoOptions) -> Result<DemoRun, DemoError> {
    let tmp;
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("switchback-demo-")
                .permissions(crate::fleet::local::searchable())
                .tempdir()
                .map_err(setup("temporary directory"))?;
            tmp.path().to_path_buf()
        }
    };
    let mut stage = Stage {
        upstreams: None,
        fleet: None,
        traffic: None,
    };
    let result = tokio::select! {
        result = story(&options, &dir, &mut stage) => result,
        () = crate::signals::terminated() => Err(DemoError::Interrupted),
    };
    stage.stop().await;
    let mut run = result?;
    run.dir = if options.dir.is_some() {
        dir
    } else {
        PathBuf::new()
    };
    Ok(run)
}

async fn story(
    options: &DemoOptions,
    dir: &std::path::Path,
    stage: &mut Stage,
) -> Result<DemoRun, DemoError> {
    let [a, b] = options.subnet;
    let upstream_ip = Ipv4Addr::new(127, a, b, 2);
    let specs: Vec<UpstreamSpec> = [
        ("app-1", 9001),
        ("app-2", 9002),
        ("app-3", 9003),
        ("api-1", 9101),
        ("api-2", 9102),
    ]
    .into_iter()
    .map(|(name, port)| UpstreamSpec::new(name, SocketAddr::new(IpAddr::V4(upstream_ip), port)))
    .collect();
    stage.upstreams = Some(
        upstreams::start(&specs)
            .await
            .map_err(setup("upstream app servers"))?,
    );

    let story = repo::story(&upstream_ip.to_string());
    let git = repo::init(&dir.join("repo")).map_err(setup("git repository"))?;
    repo::commit(&git, &story[0]).map_err(setup("first commit"))?;
    let url = format!("file://{}", dir.join("repo").display());
    let source =
        GitSource::new(&url, Credentials::None, &dir.join("cache")).map_err(setup("git source"))?;
    let (r0, b0) = read_head(&source).await?;

    let mut fleet_options = LocalFleetOptions::new(dir.join("pods"));
    fleet_options.pods = options.pods;
    fleet_options.subnet = options.subnet;
    fleet_options.nginx = options.nginx.clone();
    fleet_options.probes = vec![ProbeSpec {
        host: SITE.to_string(),
        path: "/".to_string(),
        status: 200,
        rate: 5.0,
    }];
    let fleet = Arc::new(
        LocalFleet::start(fleet_options)
            .await
            .map_err(setup("local fleet"))?,
    );
    stage.fleet = Some(Arc::clone(&fleet));
    for pod in fleet.names() {
        match fleet.apply(&pod, &b0, &r0.revision.commit).await {
            Ok(crate::fleet::ApplyResult::Applied) => {}
            Ok(
                crate::fleet::ApplyResult::Failed(why)
                | crate::fleet::ApplyResult::Unconfirmed(why),
            ) => {
                return Err(DemoError::Setup(format!("{pod}: initial config: {why}")));
            }
            Err(e) => return Err(DemoError::Setup(format!("{pod}: initial config: {e}"))),
        }
    }

    let mut paths = vec!["/".to_string(); 6];
    paths.push("/api/items".to_string());
    let traffic_config = TrafficConfig {
        paths,
        rate_per_sec: options.rate,
        duration: Duration::from_secs(600),
        host: Some(SITE.to_string()),
        ..TrafficConfig::new(fleet.http_addresses())
    };
    let traffic = Arc::new(traffic::start(&traffic_config).map_err(setup("traffic"))?);
    stage.traffic = Some(Arc::clone(&traffic));

    let nginx = Nginx::find(options.nginx.as_deref()).ok().flatten();
    let mut config = RunnerConfig {
        analysis: options.method.analysis(),
        nginx,
        ..RunnerConfig::default()
    };
    // Every policy at its default (steps, surge, onInconclusive, analysis); only the bake is
    // short, so the story fits in a minute or two.
    config.rollout.bake = SignedDuration::try_from(options.method.bake(options.bake))
        .unwrap_or(SignedDuration::from_secs(10));
    let config_steps = config.rollout.steps.len();
    let (mut runner, notes) =
        Runner::new(config, Arc::clone(&fleet), Some((r0.clone(), b0.clone())))
            .map_err(setup("runner"))?;
    let initial = (r0.digest, short(&r0.revision.commit).to_string());
    let progress = Progress::start(
        options.progress,
        notes,
        Arc::clone(&traffic),
        fleet.names(),
        initial,
    );

    let mut commits = Vec::new();
    let mut stable = (r0, b0);
    let mut bad = None;
    // Room for every step to be held for two more looks, and the applies.
    let steps = u32::try_from(config_steps).unwrap_or(u32::MAX);
    let limit = options.method.bake(options.bake) * (3 * steps) + Duration::from_secs(60);
    for step in &story[1..] {
        let (release, bundle) = commit_and_read(&git, step, &source).await?;
        progress.say(format!(
            "commit {} {:?}",
            short(&release.revision.commit),
            first_line(&step.message)
        ));
        let digest = release.digest;
        runner.submit(release.clone(), bundle.clone());
        let result = if step.good {
            runner
                .run_until("promote it on every pod", limit, |r| settled_on(r, digest))
                .await
        } else {
            let stable_digest = stable.0.digest;
            runner
                .run_until("roll it back on every pod", limit, |r| {
                    quarantined(r, digest) && settled_on(r, stable_digest)
                })
                .await
        };
        let result = match (result, step.good) {
            (Ok(()), true) => "promoted".to_string(),
            (Ok(()), false) => "rolled back".to_string(),
            (Err(e), _) => format!("not done: {e}"),
        };
        progress.say(format!(
            "commit {}: {result}",
            short(&release.revision.commit)
        ));
        commits.push(CommitOutcome {
            commit: release.revision.commit.clone(),
            summary: first_line(&step.message).to_string(),
            digest: digest.to_string(),
            expected: if step.good { "promoted" } else { "rolled back" },
            result,
        });
        if step.good {
            stable = (release, bundle);
        } else {
            bad = Some((release, bundle, stable.clone()));
        }
    }
    progress.stop().await;

    let incident = bad.as_ref().and_then(|(release, _, _)| {
        runner
            .incidents()
            .values()
            .find(|i| i.revision.digest == release.digest)
            .cloned()
    });
    drop(runner);
    stage.traffic = None;
    let record = match Arc::try_unwrap(traffic) {
        Ok(handle) => handle.stop().await.map_err(setup("traffic"))?,
        Err(_) => {
            return Err(DemoError::Setup(
                "traffic generator still shared".to_string(),
            ));
        }
    };
    let window = incident.as_ref().and_then(|i| {
        Some(figures::Incident {
            first_applied: i.timeline.first_applied?,
            decision: i.timeline.decided_at,
            all_restored: i.timeline.restored_at,
        })
    });
    let figures = match &window {
        Some(w) => Figures::from_record(options.method.name(), &record, w),
        None => Figures::from_record(
            options.method.name(),
            &record,
            &figures::Incident {
                first_applied: Timestamp::now(),
                decision: None,
                all_restored: None,
            },
        ),
    };
    let ok = commits.iter().all(|c| c.result == c.expected);
    let report = match (&incident, &bad) {
        (Some(incident), Some((_, bad_bundle, restored))) => Some(incident_report(
            incident,
            restored,
            bad_bundle,
            &record,
            window.as_ref(),
            options.method,
        )),
        _ => None,
    };
    let report_markdown = report.as_ref().map(report::to_markdown);
    let report = report
        .as_ref()
        .and_then(|r| report::to_json(r).ok())
        .and_then(|text| serde_json::from_str(&text).ok());
    Ok(DemoRun {
        method: options.method.name(),
        commits,
        figures,
        incident,
        dir: PathBuf::new(),
        ok,
        report_markdown,
        report,
    })
}

/// The report's input from what the engine recorded and what the traffic saw.
fn incident_report(
    incident: &Incident,
    stable: &(Release, Bundle),
    bad_bundle: &Bundle,
    record: &super::figures::TrafficRecord,
    window: Option<&figures::Incident>,
    method: Method,
) -> report::IncidentInput {
    let t = &incident.timeline;
    let first_bad_response = t.first_applied.and_then(|from| {
        let from = record.offset_of(from);
        record
            .responses
            .iter()
            .filter(|r| r.offset >= from && r.outcome.is_failure())
            .map(|r| r.offset)
            .min()
            .and_then(|offset| SignedDuration::try_from(offset).ok())
            .and_then(|offset| record.started_at.checked_add(offset).ok())
    });
    let traffic = window.map(|w| {
        let from = record.offset_of(w.first_applied);
        let to = w
            .all_restored
            .map_or(record.send_window, |t| record.offset_of(t));
        let tally = record.tally_between(from, to.max(from));
        report::TrafficFigures {
            requests: tally.requests,
            failed: tally.failed,
        }
    });
    let mut input = report::from_incident(
        "demo",
        incident,
        Some(method.name()),
        report::Restored {
            revision: Some(&stable.0.revision),
            bundle: Some(&stable.1),
        },
        Some(bad_bundle),
        crate::validate::DEFAULT_ENTRY,
    );
    if let Some(first) = &mut input.timeline.first_applied {
        first.pod = "pod-0 (canary)".to_string();
    }
    input.timeline.first_bad_response = first_bad_response;
    input.traffic = traffic;
    input
}

fn settled_on(r: &Rollout, digest: Digest) -> bool {
    matches!(r.state(), State::Idle { stable: Some(s) } if s.digest == digest)
        && r.state().phase() == Phase::Idle
        && !r.fleet().is_empty()
        && r.fleet().iter().all(|(_, pod)| pod.settled_on(digest))
}

fn quarantined(r: &Rollout, digest: Digest) -> bool {
    r.ledger()
        .quarantined()
        .iter()
        .any(|q| q.release.digest == digest)
}

async fn commit_and_read(
    git: &git2::Repository,
    step: &StoryCommit,
    source: &GitSource,
) -> Result<(Release, Bundle), DemoError> {
    repo::commit(git, step).map_err(setup("commit"))?;
    read_head(source).await
}

/// What a poll of the source sees: the head of `main`, read and rendered.
async fn read_head(source: &GitSource) -> Result<(Release, Bundle), DemoError> {
    let revision = source.fetch("main").await.map_err(setup("git fetch"))?;
    let tree = source
        .read_tree(&revision.commit, CONFIG_PATH)
        .await
        .map_err(setup("git read"))?;
    let bundle = render::render(&tree, &serde_json::Value::Null).map_err(setup("render"))?;
    Ok((
        Release {
            revision,
            digest: bundle.digest(),
        },
        bundle,
    ))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
