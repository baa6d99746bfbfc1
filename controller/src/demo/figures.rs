//! What the demo measured and what it adds up to: the record of every request the traffic generator
//! sent, and the final figures (time to detect, time to restore, share of requests failed) set
//! against the seed outage, where 85% of users got 502 for 150 minutes.
//!
//! Why apart from [`super::traffic`]: that module is the I/O edge (sockets, timers); everything here
//! is plain data and arithmetic, so the figures are tested without sending a request and the demo's
//! `--json` output is the same numbers the table shows.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Why a request produced no status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    /// Nothing listened on the target (nginx down or not yet started).
    ConnectRefused,
    /// No complete answer within the request timeout.
    Timeout,
    /// Any other transport failure (reset, broken response, other connect errors).
    Other,
    /// Still unanswered when the generator stopped waiting at the end of the run (rare: every
    /// request has its own timeout); recorded so that no request goes missing.
    Cancelled,
}

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// An HTTP status (the body was read in full).
    Status(u16),
    /// No status: why.
    Error(ErrorKind),
}

impl Outcome {
    /// Whether a user would call it a failure: any 5xx or no answer at all.
    pub fn is_failure(&self) -> bool {
        match self {
            Outcome::Status(s) => *s >= 500,
            Outcome::Error(_) => true,
        }
    }
}

/// Serialises a duration as fractional seconds, the unit people and plots expect.
pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One request as sent and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseRecord {
    /// When it was sent, from the start of the run.
    #[serde(rename = "offsetSecs", serialize_with = "secs")]
    pub offset: Duration,
    /// Index into [`TrafficRecord::targets`].
    pub pod: usize,
    /// Index into [`TrafficRecord::paths`].
    pub path: usize,
    /// Status or error.
    pub outcome: Outcome,
    /// Time from sending to the full answer (or to the error).
    #[serde(rename = "latencySecs", serialize_with = "secs")]
    pub latency: Duration,
}

/// Counts over some set of requests; the unit of every traffic figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// Requests.
    pub requests: u64,
    /// Failed requests: 5xx plus errors.
    pub failed: u64,
    /// 5xx responses.
    pub status_5xx: u64,
    /// 502 responses (the signature of a broken `upstream`).
    pub status_502: u64,
    /// Requests with no status at all.
    pub errors: u64,
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Status(s) if *s >= 500 => {
                self.status_5xx += 1;
                if *s == 502 {
                    self.status_502 += 1;
                }
            }
            Outcome::Status(_) => {}
            Outcome::Error(_) => self.errors += 1,
        }
        if outcome.is_failure() {
            self.failed += 1;
        }
    }

    /// Failed requests as a share of all, 0 when there were none.
    pub fn failed_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

/// How the sending ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// The configured duration passed.
    Duration,
    /// Stopped through a [`StopHandle`] (or every stop handle was dropped).
    Stopped,
    /// The request cap was reached.
    MaxRequests,
}

/// Everything a run sent and got, for the figures and the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRecord {
    /// Wall-clock time of offset zero, to place responses on the rollout's timeline.
    pub started_at: jiff::Timestamp,
    /// The targets, indexed by [`ResponseRecord::pod`].
    pub targets: Vec<SocketAddr>,
    /// The paths, indexed by [`ResponseRecord::path`].
    pub paths: Vec<String>,
    /// The configured total rate.
    pub rate_per_sec: u32,
    /// How long requests were being sent.
    #[serde(rename = "sendWindowSecs", serialize_with = "secs")]
    pub send_window: Duration,
    /// Why sending ended.
    pub ended_by: EndReason,
    /// Every request sent, in sending order.
    pub responses: Vec<ResponseRecord>,
}

impl TrafficRecord {
    /// All requests sent.
    pub fn total(&self) -> u64 {
        self.responses.len() as u64
    }

    /// Requests that failed (5xx or no answer).
    pub fn failed(&self) -> u64 {
        self.tally().failed
    }

    /// Failed share of the whole run, 0 when nothing was sent.
    pub fn failed_share(&self) -> f64 {
        self.tally().failed_share()
    }

    /// Counts over the whole run.
    pub fn tally(&self) -> Tally {
        self.tally_where(|_| true)
    }

    /// Counts over requests sent in `[from, to)` (offsets from the start): the incident's share.
    pub fn tally_between(&self, from: Duration, to: Duration) -> Tally {
        self.tally_where(|r| r.offset >= from && r.offset < to)
    }

    /// Failed requests sent in `[from, to)`.
    pub fn failed_between(&self, from: Duration, to: Duration) -> u64 {
        self.tally_between(from, to).failed
    }

    /// Counts per target, in target order.
    pub fn per_pod(&self) -> Vec<Tally> {
        let mut pods = vec![Tally::default(); self.targets.len()];
        for r in &self.responses {
            if let Some(t) = pods.get_mut(r.pod) {
                t.add(&r.outcome);
            }
        }
        pods
    }

    /// The offset of a wall-clock time (e.g. "first applied" from the timeline), 0 for times
    /// before the start. Mixes the wall clock with the monotonic one, so it is exact to the
    /// precision of the two clocks agreeing, which on one machine is far below a millisecond.
    pub fn offset_of(&self, at: jiff::Timestamp) -> Duration {
        let d = at.duration_since(self.started_at);
        Duration::try_from(d).unwrap_or(Duration::ZERO)
    }

    fn tally_where(&self, keep: impl Fn(&ResponseRecord) -> bool) -> Tally {
        let mut t = Tally::default();
        for r in self.responses.iter().filter(|r| keep(r)) {
            t.add(&r.outcome);
        }
        t
    }
}

/// The outage Switchback exists for: a routine `upstream` change reached every load balancer at
/// once, 85% of users got 502, and people needed 150 minutes to find and revert it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedOutage {
    /// Share of users failed while the bad config was live.
    pub failed_share: f64,
    /// How long the bad config was live, in seconds.
    pub duration_secs: f64,
}

/// The seed outage's numbers, the yardstick every demo run is compared with.
pub const SEED: SeedOutage = SeedOutage {
    failed_share: 0.85,
    duration_secs: 150.0 * 60.0,
};

/// When the incident happened on the rollout's timeline, to cut the traffic record with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    /// The bad revision first applied on a pod: the incident starts.
    pub first_applied: jiff::Timestamp,
    /// Switchback decided to roll back; `None` when it never did within the run.
    pub decision: Option<jiff::Timestamp>,
    /// Every pod back on the stable revision; `None` when not (yet).
    pub all_restored: Option<jiff::Timestamp>,
}

/// One run's figures, as plain numbers: what the demo prints and `--json` carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// The analysis method that watched the canary (`sequential`, `threshold`).
    pub method: String,
    /// First applied → decision, in seconds; `None` when the failure was not detected.
    pub time_to_detect_secs: Option<f64>,
    /// Decision → every pod restored, in seconds; `None` when not restored.
    pub time_to_restore_secs: Option<f64>,
    /// Requests sent while the bad config was live (first applied → all restored).
    pub incident_requests: u64,
    /// Of those, failed ones (5xx or no answer).
    pub incident_failed: u64,
    /// Requests in the whole run.
    pub run_requests: u64,
    /// Failed requests in the whole run.
    pub run_failed: u64,
}

/// Seconds from `a` to `b`, never negative (clocks of different observers may disagree slightly).
fn secs_between(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64().max(0.0)
}

/// `part / whole`, 0 for an empty whole.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Figures {
    /// Cuts a traffic record at the incident's times: the incident window is first applied → all
    /// restored, or to the end of sending when the pods were never all restored.
    pub fn from_record(method: &str, record: &TrafficRecord, incident: &Incident) -> Figures {
        let from = record.offset_of(incident.first_applied);
        let to = incident
            .all_restored
            .map_or(record.send_window, |t| record.offset_of(t));
        let during = record.tally_between(from, to.max(from));
        let run = record.tally();
        let detect = incident
            .decision
            .map(|d| secs_between(incident.first_applied, d));
        let restore = match (incident.decision, incident.all_restored) {
            (Some(d), Some(r)) => Some(secs_between(d, r)),
            _ => None,
        };
        Figures {
            method: method.to_string(),
            time_to_detect_secs: detect,
            time_to_restore_secs: restore,
            incident_requests: during.requests,
            incident_failed: during.failed,
            run_requests: run.requests,
            run_failed: run.failed,
        }
    }

    /// How long the bad config was live: detect + restore, when both happened.
    pub fn incident_secs(&self) -> Option<f64> {
        Some(self.time_to_detect_secs? + self.time_to_restore_secs?)
    }

    /// Failed share of the requests sent during the incident.
    pub fn incident_failed_share(&self) -> f64 {
        share(self.incident_failed, self.incident_requests)
    }

    /// Failed share of the whole run.
    pub fn run_failed_share(&self) -> f64 {
        share(self.run_failed, self.run_requests)
    }

    /// Failed share × incident length: how long a total outage would have done the same harm.
    /// One number that puts 85% for 150 minutes and 40% for 2 seconds on the same scale.
    pub fn outage_equivalent_secs(&self) -> Option<f64> {
        Some(self.incident_failed_share() * self.incident_secs()?)
    }

    /// `seed: 85% failed for 150 min; here: 35.2% for 2.10 s`, the demo's closing line.
    pub fn seed_line(&self) -> String {
        let here = match self.incident_secs() {
            Some(s) => format!(
                "{} for {}",
                percent(self.incident_failed_share()),
                duration(s)
            ),
            None => format!(
                "{} and not rolled back",
                percent(self.incident_failed_share())
            ),
        };
        format!(
            "seed: {} failed for {}; here ({}): {here}",
            percent(SEED.failed_share),
            duration(SEED.duration_secs),
            self.method
        )
    }
}

/// One run's figures with the derived numbers, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFigures {
    /// The measured numbers.
    #[serde(flatten)]
    pub figures: Figures,
    /// See [`Figures::incident_secs`].
    pub incident_secs: Option<f64>,
    /// See [`Figures::incident_failed_share`].
    pub incident_failed_share: f64,
    /// See [`Figures::run_failed_share`].
    pub run_failed_share: f64,
    /// See [`Figures::outage_equivalent_secs`].
    pub outage_equivalent_secs: Option<f64>,
}

/// The seed outage and every run, for `switchback demo --json` (and `--compare`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FiguresReport {
    /// The yardstick.
    pub seed: SeedOutage,
    /// Full-outage equivalent of the seed, in seconds.
    pub seed_outage_equivalent_secs: f64,
    /// One entry per method, in the order given.
    pub runs: Vec<RunFigures>,
}

/// The figures of one or more runs (two for `--compare`) with the derived numbers.
pub fn report(runs: &[Figures]) -> FiguresReport {
    FiguresReport {
        seed: SEED,
        seed_outage_equivalent_secs: SEED.failed_share * SEED.duration_secs,
        runs: runs
            .iter()
            .map(|f| RunFigures {
                figures: f.clone(),
                incident_secs: f.incident_secs(),
                incident_failed_share: f.incident_failed_share(),
                run_failed_share: f.run_failed_share(),
                outage_equivalent_secs: f.outage_equivalent_secs(),
            })
            .collect(),
    }
}

/// `0.352` → `35.2%`; whole percentages without decimals (`85%`), so round numbers read as round.
fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Seconds for people: `1.20 s` under a minute, `61.3 s` under ten, else `150 min` / `12.5 min`.
fn duration(secs: f64) -> String {
    let m = secs / 60.0;
    if secs < 60.0 {
        format!("{secs:.2} s")
    } else if secs < 600.0 {
        format!("{secs:.1} s")
    } else if (m - m.round()).abs() < 1e-9 {
        format!("{m:.0} min")
    } else {
        format!("{m:.1} min")
    }
}

/// The figures table: a column for the seed outage, then one per run (two side by side for
/// `--compare`), then the closing seed line of each run.
pub fn table(runs: &[Figures]) -> String {
    let dash = || "-".to_string();
    let opt = |v: Option<f64>, none: &str| v.map_or_else(|| none.to_string(), duration);
    let of = |failed: u64, total: u64| {
        format!("{} ({failed} of {total})", percent(share(failed, total)))
    };
    let seed_equiv = SEED.failed_share * SEED.duration_secs;
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        ("", vec!["seed outage".to_string()]),
        ("time to detect", vec![dash()]),
        ("time to restore all pods", vec![dash()]),
        ("bad config live", vec![duration(SEED.duration_secs)]),
        ("failed during incident", vec![percent(SEED.failed_share)]),
        ("failed over the whole run", vec![dash()]),
        ("full-outage equivalent", vec![duration(seed_equiv)]),
    ];
    for f in runs {
        let cells = [
            f.method.clone(),
            opt(f.time_to_detect_secs, "not detected"),
            opt(f.time_to_restore_secs, "not restored"),
            opt(f.incident_secs(), "-"),
            of(f.incident_failed, f.incident_requests),
            of(f.run_failed, f.run_requests),
            opt(f.outage_equivalent_secs(), "-"),
        ];
        for (row, cell) in rows.iter_mut().zip(cells) {
            row.1.push(cell);
        }
    }
    let label_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..=runs.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.1[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (label, cells) in &rows {
        let _ = write!(out, "{label:<label_width$}");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {cell:>w$}");
        }
        out.push('\n');
    }
    out.push('\n');
    for f in runs {
        out.push_str(&f.seed_line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential() -> Figures {
        Figures {
            method: "sequential".into(),
            time_to_detect_secs: Some(1.2),
            time_to_restore_secs: Some(0.8),
            incident_requests: 400,
            incident_failed: 70,
            run_requests: 12_000,
            run_failed: 72,
        }
    }

    fn threshold() -> Figures {
        Figures {
            method: "threshold".into(),
            time_to_detect_secs: Some(61.0),
            time_to_restore_secs: Some(0.9),
            incident_requests: 12_380,
            incident_failed: 2_160,
            run_requests: 24_000,
            run_failed: 2_170,
        }
    }

    #[test]
    fn derived_numbers() {
        let f = sequential();
        assert_eq!(f.incident_secs(), Some(2.0));
        assert!((f.incident_failed_share() - 0.175).abs() < 1e-12);
        assert!((f.run_failed_share() - 0.006).abs() < 1e-12);
        assert!((f.outage_equivalent_secs().unwrap() - 0.35).abs() < 1e-12);
        let mut undetected = f.clone();
        undetected.time_to_detect_secs = None;
        assert_eq!(undetected.incident_secs(), None);
        assert_eq!(undetected.outage_equivalent_secs(), None);
        let empty = Figures {
            incident_requests: 0,
            incident_failed: 0,
            ..f
        };
        assert_eq!(empty.incident_failed_share(), 0.0);
    }

    #[test]
    fn seed_line_compares_share_and_length() {
        assert_eq!(
            sequential().seed_line(),
            "seed: 85% failed for 150 min; here (sequential): 17.5% for 2.00 s"
        );
        let mut f = sequential();
        f.time_to_detect_secs = None;
        assert_eq!(
            f.seed_line(),
            "seed: 85% failed for 150 min; here (sequential): 17.5% and not rolled back"
        );
    }

    #[test]
    fn single_table_has_seed_and_run_columns() {
        let t = table(&[sequential()]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["seed", "outage", "sequential"]
        );
        assert!(lines[1].starts_with("time to detect ") && lines[1].ends_with(" 1.20 s"));
        assert!(lines[2].ends_with(" 0.80 s"), "{}", lines[2]);
        assert!(lines[3].contains(" 150 min ") && lines[3].ends_with(" 2.00 s"));
        assert!(lines[4].contains(" 85% ") && lines[4].ends_with("17.5% (70 of 400)"));
        assert!(lines[5].ends_with("0.6% (72 of 12000)"), "{}", lines[5]);
        assert!(lines[6].contains(" 127.5 min ") && lines[6].ends_with(" 0.35 s"));
        assert_eq!(lines[7], "");
        assert_eq!(lines[8], sequential().seed_line());
        // Columns line up: every row is as wide as the header row.
        let width = lines[0].len();
        assert!(lines[..7].iter().all(|l| l.len() == width), "{t}");
    }

    #[test]
    fn compare_table_puts_methods_side_by_side() {
        let t = table(&[sequential(), threshold()]);
        let lines: Vec<&str> = t.lines().collect();
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(lines[0]), "seed outage sequential threshold");
        assert!(
            lines[1].contains(" 1.20 s ") && lines[1].ends_with(" 61.0 s"),
            "{t}"
        );
        assert_eq!(words(lines[3]), "bad config live 150 min 2.00 s 61.9 s");
        assert_eq!(lines.len(), 10);
        assert!(
            lines[9].contains("here (threshold): 17.4% for 61.9 s"),
            "{t}"
        );
        let mut undetected = threshold();
        undetected.time_to_detect_secs = None;
        undetected.time_to_restore_secs = None;
        let t = table(&[sequential(), undetected]);
        assert!(t.lines().nth(1).unwrap().ends_with("not detected"), "{t}");
    }

    #[test]
    fn json_carries_inputs_and_derived_numbers_in_camel_case() {
        let v = serde_json::to_value(report(&[sequential(), threshold()])).unwrap();
        assert_eq!(v["seed"]["failedShare"], 0.85);
        assert_eq!(v["seed"]["durationSecs"], 9000.0);
        assert_eq!(v["seedOutageEquivalentSecs"], 7650.0);
        let run = &v["runs"][0];
        assert_eq!(run["method"], "sequential");
        assert_eq!(run["timeToDetectSecs"], 1.2);
        assert_eq!(run["incidentFailed"], 70);
        assert_eq!(run["incidentSecs"], 2.0);
        assert_eq!(run["runFailedShare"], 0.006);
        assert_eq!(v["runs"][1]["method"], "threshold");
    }
}
