//! The `ProxyRollout` custom resource (DESIGN §3.7): what a user applies with kubectl, and the
//! status the controller writes back. The CRD YAML in `crds/` is generated from these types
//! (`switchback crd`); a test fails when the committed file is stale.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::writeback::{RevertStatus, WriteBackSpec};

/// A ProxyRollout: a git path of nginx config, the proxy pods it goes to, and how.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "switchback.dev",
    version = "v1alpha1",
    kind = "ProxyRollout",
    namespaced,
    status = "ProxyRolloutStatus",
    shortname = "prx",
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".status.stable.commit","description":"The known-good commit every pod falls back to"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.target.commit","description":"The commit being rolled out"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.pods.ready","description":"Pods serving the stable or promoted config / pods selected"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.analysis.step","description":"The canary step in progress, of how many"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.analysis.verdict","description":"What analysis says of the step: Healthy, Failing, Inconclusive (held when the bake is over) or Waiting"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRolloutSpec {
    /// Where the config comes from.
    pub source: SourceSpec,
    /// How it is rendered.
    #[serde(default)]
    pub render: RenderSpec,
    /// Which pods serve it.
    pub target: TargetSpec,
    /// How a new revision reaches the pods.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// What happens when a canary gets worse.
    #[serde(default)]
    pub rollback: RollbackSpec,
    /// Stop acting on new commits (pods keep what they serve; automatic rollback stays armed).
    #[serde(default)]
    pub suspend: bool,
    /// What the pods' agents do when a pod's live config drifts from what was applied
    /// (`docs/drift.md`).
    #[serde(default)]
    pub drift: super::drift::DriftSpec,
}

/// A git repository path at a branch, tag or commit.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Repository URL: `https://`, `ssh://` or `git@host:path`; `http://`, `git://`, `file://` and
    /// local paths only when the controller runs with `--allow-insecure-sources`. Credentials
    /// never go here; use `secretRef`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Branch, tag or commit to follow.
    #[serde(default = "default_ref", rename = "ref")]
    pub git_ref: String,
    /// The config directory inside the repository.
    #[serde(default = "default_path")]
    pub path: String,
    /// How often to look for new commits (Go duration, e.g. `30s`, `1m`); jittered.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: String,
    /// A Secret in the same namespace with `bearerToken` (or `token`), or `username` and
    /// `password`, or `identity` (an ssh private key) and optionally `passphrase`. It must carry
    /// the annotations `switchback.dev/allowed-rollouts` (this rollout's name, or `*`) and
    /// `switchback.dev/git-host` (the server of `url`, `host` or `host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Roll out only commits signed by a trusted key; an unsigned or untrusted head is not
    /// rolled out and `Stalled` says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// Push webhooks: a signed push for this repository and ref fetches at once (`interval` stays
    /// the fallback). The Secret's `token` is the webhook secret; the hook's URL is
    /// `/hooks/<provider>/<namespace>.<secret name>` on the controller's `--webhook-addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// Where the webhook secret is.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// A Secret in the rollout's namespace with the key `token`, annotated
    /// `switchback.dev/allowed-rollouts`.
    pub secret_ref: LocalObjectReference,
}

/// Which commits may be rolled out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// A Secret with the trusted keys: `*.asc` (armored OpenPGP public keys), `allowed_signers`
    /// or `*.pub` (SSH signing keys), annotated `switchback.dev/allowed-rollouts`.
    pub secret_ref: LocalObjectReference,
    /// Which kind of signature counts.
    #[serde(default)]
    pub mode: VerifyMode,
}

/// Which signatures count.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// OpenPGP signatures only.
    Openpgp,
    /// SSH signatures only.
    Ssh,
    /// Either.
    #[default]
    Any,
}

/// A reference to an object in the rollout's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct LocalObjectReference {
    /// Its name.
    pub name: String,
}

/// Rendering: the values the templates see, over `values.yaml`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderSpec {
    /// Values deep-merged over the directory's `values.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_fields")]
    pub values: Option<serde_json::Value>,
    /// The entry file nginx is started with.
    #[serde(default = "default_entry")]
    pub entry: String,
    /// The directory the config stands for on the proxies (where their image keeps nginx's
    /// config): absolute paths below it, such as `include /etc/nginx/conf.d/*.conf`, name the
    /// config's own files, and files the config lacks (`mime.types`) are the image's.
    #[serde(default = "default_config_root")]
    #[schemars(regex(pattern = r"^(/[^/\s;{}$'\x22\\]+)+/?$"))]
    pub config_root: String,
}

impl Default for RenderSpec {
    fn default() -> Self {
        RenderSpec {
            values: None,
            entry: default_entry(),
            config_root: default_config_root(),
        }
    }
}

/// The proxy pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Labels that select the proxy pods (all must match).
    #[schemars(length(min = 1))]
    pub selector: BTreeMap<String, String>,
    /// The nginx container's name in those pods.
    #[serde(default = "default_container")]
    pub container: String,
    /// The port of the Switchback agent in each pod.
    #[serde(default = "default_agent_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub agent_port: u16,
}

/// Canary steps and analysis.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.steps.size() > 0", "message": "at least one step: e.g. [\"1\", \"25%\", \"100%\"]"}
]))]
pub struct StrategySpec {
    /// Pods (`"1"`) or percentages (`"25%"`) on the new revision at each step; each bakes.
    #[serde(default = "default_steps")]
    pub steps: Vec<String>,
    /// How long each step bakes while analysis runs (Go duration).
    #[serde(default = "default_bake")]
    pub bake: String,
    /// How long a step may bake without a conclusive verdict before `onInconclusive` applies.
    #[serde(default = "default_max_bake")]
    pub max_bake: String,
    /// Most pods changing at once (`"1"` or `"25%"`).
    #[serde(default = "default_max_surge")]
    pub max_surge: String,
    /// What a bake without a conclusive verdict does.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// How canaries are judged.
    #[serde(default)]
    pub analysis: AnalysisSpec,
}

impl Default for StrategySpec {
    fn default() -> Self {
        StrategySpec {
            steps: default_steps(),
            bake: default_bake(),
            max_bake: default_max_bake(),
            max_surge: default_max_surge(),
            on_inconclusive: OnInconclusive::default(),
            analysis: AnalysisSpec::default(),
        }
    }
}

/// What an inconclusive bake does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnInconclusive {
    /// Hold the step and wait for evidence or a person (the default).
    #[default]
    Hold,
    /// Treat it as a pass.
    Promote,
    /// Roll back and quarantine.
    RollBack,
}

/// The analysis method and its settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// `sequential` (default) or `threshold` (Flagger's policy).
    #[serde(default)]
    pub method: AnalysisMethod,
    /// Sequential: the false-rollback bound.
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.000001, max = 0.1))]
    pub alpha: f64,
    /// Sequential: how much worse than its baseline a canary may be and still be called
    /// healthy at a step's end. Unset: 2 times the baseline's odds of a bad response, or 1
    /// percentage point above its rate, whichever is more. A tighter tolerance needs more
    /// traffic per bake (`docs/analysis.md`, "The healthy side").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<ToleranceSpec>,
    /// Threshold: seconds between checks (unset: 60, Flagger's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    /// Threshold: failed checks before rolling back (unset: 1, Flagger's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Threshold: highest error rate (percent) a check passes with (unset: 1, the 99% success rate
    /// of Flagger's docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            method: AnalysisMethod::default(),
            alpha: default_alpha(),
            tolerance: None,
            interval_seconds: None,
            threshold: None,
            max_error_rate: None,
        }
    }
}

/// The healthy side's tolerance: the larger of the two margins.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToleranceSpec {
    /// The canary's odds of a bad response may be up to this multiple of the baseline's.
    #[serde(default = "default_tolerance_relative")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub relative: f64,
    /// The canary's bad-response rate may be up to this many percentage points above the
    /// baseline's.
    #[serde(default = "default_tolerance_points")]
    #[schemars(range(min = 0.01, max = 50.0))]
    pub absolute_points: f64,
}

fn default_tolerance_relative() -> f64 {
    2.0
}
fn default_tolerance_points() -> f64 {
    1.0
}

/// The analysis methods.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisMethod {
    /// The anytime-valid sequential test.
    #[default]
    Sequential,
    /// Interval checks against a maximum error rate.
    Threshold,
}

/// Rollback settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Roll back by itself when the canary gets worse.
    #[serde(default = "yes")]
    pub automatic: bool,
    /// Never roll a rolled-back commit out again without an explicit retry.
    #[serde(default = "yes")]
    pub quarantine: bool,
    /// After a rollback, write a revert commit to git so git names again what runs (a new
    /// branch, or a fast-forward push to the followed branch). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBackSpec>,
}

impl Default for RollbackSpec {
    fn default() -> Self {
        RollbackSpec {
            automatic: true,
            quarantine: true,
            write_back: None,
        }
    }
}

/// What the controller observed and decided; written by server-side apply, manager `switchback`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRolloutStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `RolledBack`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Idle, Validating, Canary, RollingBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The known-good revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<RevisionStatus>,
    /// The revision being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RevisionStatus>,
    /// Pod counts per revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodCounts>,
    /// Commits that are never rolled out again without a retry.
    #[serde(default)]
    pub quarantined: Vec<QuarantinedStatus>,
    /// The canary step in progress and its analysis: the verdict so far, what the traffic
    /// seen allows, and, when the bake ended without a verdict, since when the step is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// The last rollback, in one line with its times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_incident: Option<IncidentStatus>,
    /// The last revisions and what became of them, newest first.
    #[serde(default)]
    pub history: Vec<HistoryStatus>,
    /// Pods whose live config differs from what their agent applied (edited by hand), by name,
    /// at most 20; each pod's `switchback.dev/ConfigDrifted` condition has the full story.
    /// Always written (an empty list when none), so a server-side apply clears it.
    #[serde(default)]
    pub drift: Vec<super::drift::PodDriftStatus>,
    /// The id of the last `switchback.dev/request` annotation the controller acted on, so
    /// `kubectl switchback promote` can tell that its request was seen, and a request is acted on
    /// once however often it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    /// The engine's own state (machine, fleet view, ledger), so a restarted or newly elected
    /// controller resumes a rollout mid-canary instead of starting over. Not for people.
    // Shared (`Arc`): the worker builds the status every turn from the last one written, and a
    // deep copy of the checkpoint per turn was most of an idle controller's status work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_fields")]
    pub engine: Option<std::sync::Arc<serde_json::Value>>,
}

/// A status condition, as `kubectl wait --for=condition=…` reads it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling`, `Stalled` or `RolledBack`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A revision: the commit for people, the digest for pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RevisionStatus {
    /// Commit SHA.
    pub commit: String,
    /// Rendered bundle digest.
    pub digest: String,
}

/// How many pods serve what.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PodCounts {
    /// Pods selected.
    pub total: u32,
    /// On the stable revision.
    pub stable: u32,
    /// On the target revision.
    pub target: u32,
    /// Being told a revision right now.
    pub changing: u32,
    /// That failed to apply.
    pub failed: u32,
    /// `serving/total` for the printer column.
    pub ready: String,
}

/// A quarantined commit.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct QuarantinedStatus {
    /// Commit SHA.
    pub commit: String,
    /// Rendered digest.
    pub digest: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The last incident in brief; the full report is in the ConfigMap `report` names.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentStatus {
    /// The commit rolled back.
    pub commit: String,
    /// Why, with the evidence in one line.
    pub reason: String,
    /// When the rollback was decided (RFC 3339).
    pub decided_at: String,
    /// When every pod was back (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<String>,
    /// The ConfigMap holding the incident report (`report.md` for people, `report.json` for
    /// tools), in the rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// What the git write-back (`spec.rollback.writeBack`) did for this incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertStatus>,
}

/// The canary step in progress, for people at 3 a.m.: where it is, what analysis says, and why a
/// step is held.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// `2/4`: the step and how many there are.
    pub step: String,
    /// Pods the step puts on the target.
    pub pods: u32,
    /// When every pod of the step served the target and the bake began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baking_since: Option<String>,
    /// `Healthy`, `Failing`, `Inconclusive`, or `Waiting` (no verdict yet).
    pub verdict: String,
    /// What analysis says: the traffic seen on the canary and its baseline, and, once the bake
    /// has ended without a verdict, how much a verdict needs at the current rate. Refreshed at
    /// most every 15 s while only the counts move.
    pub message: String,
    /// Set when the bake ended without a conclusive verdict and the step is held while
    /// analysis goes on (RFC 3339). `kubectl switchback promote` moves it on; so does the
    /// evidence, once there is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<String>,
}

/// One revision's fate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HistoryStatus {
    /// Commit SHA.
    pub commit: String,
    /// `Promoted`, `RolledBack`, `Rejected`, `Superseded`.
    pub outcome: String,
    /// When (RFC 3339).
    pub at: String,
}

fn preserve_unknown_fields(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn default_ref() -> String {
    "main".to_string()
}
fn default_path() -> String {
    ".".to_string()
}
fn default_interval() -> String {
    "1m".to_string()
}
fn default_entry() -> String {
    crate::validate::DEFAULT_ENTRY.to_string()
}
fn default_config_root() -> String {
    crate::validate::paths::DEFAULT_CONFIG_ROOT.to_string()
}
fn default_container() -> String {
    "nginx".to_string()
}
fn default_agent_port() -> u16 {
    9180
}
fn default_steps() -> Vec<String> {
    ["1", "25%", "50%", "100%"].map(String::from).to_vec()
}
fn default_bake() -> String {
    // `crate::analysis::DEFAULT_BAKE`, written as a Go duration.
    "3m".to_string()
}
fn default_max_bake() -> String {
    "30m".to_string()
}
fn default_max_surge() -> String {
    "25%".to_string()
}
fn default_alpha() -> f64 {
    0.001
}
fn yes() -> bool {
    true
}

/// The CRD as YAML, exactly what `crds/proxyrollout.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&ProxyRollout::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_committed_crd_is_the_generated_one() {
        let committed = std::fs::read_to_string(root().join("crds/proxyrollout.yaml"))
            .expect("crds/proxyrollout.yaml");
        let generated = crd_yaml().expect("serialise the CRD");
        assert!(
            committed == generated,
            "crds/proxyrollout.yaml is stale: run `switchback crd > crds/proxyrollout.yaml`"
        );
    }

    #[test]
    fn the_example_parses_and_unset_fields_take_their_defaults() {
        let text = std::fs::read_to_string(root().join("examples/kubernetes/proxyrollout.yaml"))
            .expect("example");
        let rollout: ProxyRollout = serde_saphyr::from_str(&text).expect("a valid ProxyRollout");
        assert_eq!(rollout.spec.source.git_ref, "main");
        assert_eq!(rollout.spec.target.agent_port, 9180);
        assert_eq!(rollout.spec.strategy.max_bake, "30m");
        assert_eq!(rollout.spec.strategy.on_inconclusive, OnInconclusive::Hold);
        assert!(rollout.spec.rollback.automatic);
        assert!(!rollout.spec.suspend);

        let minimal: ProxyRolloutSpec = serde_json::from_value(serde_json::json!({
            "source": {"url": "https://git.example.test/x.git"},
            "target": {"selector": {"app": "edge"}}
        }))
        .expect("minimal spec");
        assert_eq!(minimal.strategy, StrategySpec::default());
        assert_eq!(minimal.render.entry, "nginx.conf");
        assert_eq!(minimal.source.interval, "1m");
    }
}
