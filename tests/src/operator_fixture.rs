//! Test support for the operator end-to-end tests: a test API server driven by real kubectl, the
//! process kubelet running each Pod as a real nginx + agent on its own loopback address, a real git
//! repository of nginx config, and the controller running in-process (so a test can stop and
//! restart it mid-rollout).

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchback::agent::ProbeSpec;
use switchback::operator::controller::{self, ControllerOptions, OperatorError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent_harness::nginx_available;
use crate::git_fixture::git_cli as git;
use crate::kube::kubectl::Kubectl;
use crate::kube::kubelet::{KubeletOptions, ProcessKubelet};

/// How long any one wait may take before the test fails with what it saw.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One running controller.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), OperatorError>>,
}

/// A cluster of proxy pods in namespace `edge`, a git repository, and (when started) a controller.
pub struct Cluster {
    /// kubectl against the test server.
    pub k: Kubectl,
    /// Temporary files: the repository, the controller's cache.
    pub tmp: tempfile::TempDir,
    /// The repository the ProxyRollout follows.
    pub repo: PathBuf,
    /// `127.0.<subnet>.x` is this cluster's; the dead upstream is `127.0.<subnet>.2:9001`.
    pub subnet: u8,
    kubelet: Option<ProcessKubelet>,
    controller: Option<Running>,
}

impl Cluster {
    /// A cluster with `pods` ready and the first commit (`return 200 "v0"`) in the repository.
    /// `None` (with a message) when nginx or kubectl are missing and the test is skipped.
    pub async fn up(subnet: u8, pods: &[&str]) -> Option<Cluster> {
        Cluster::up_with_probe_rate(subnet, pods, 20.0).await
    }

    /// [`Cluster::up`] with every pod's agent probing `GET /` at `rate` per second instead of 20
    /// (the example proxy Deployment probes at 2), for tests about a fleet with little traffic.
    pub async fn up_with_probe_rate(subnet: u8, pods: &[&str], rate: f64) -> Option<Cluster> {
        Cluster::up_with_agents(subnet, pods, rate, None).await
    }

    /// [`Cluster::up`] with every agent reporting its changes to `report_to` (`--report-to`).
    pub async fn up_reporting_to(subnet: u8, pods: &[&str], report_to: &str) -> Option<Cluster> {
        Cluster::up_with_agents(subnet, pods, 20.0, Some(report_to.to_string())).await
    }

    async fn up_with_agents(
        subnet: u8,
        pods: &[&str],
        rate: f64,
        report_to: Option<String>,
    ) -> Option<Cluster> {
        if !nginx_available() {
            return None;
        }
        let k = Kubectl::up().await?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        let options = KubeletOptions {
            probes: vec![ProbeSpec {
                host: "localhost".to_string(),
                path: "/".to_string(),
                status: 200,
                rate,
            }],
            report_to,
            ..KubeletOptions::new([0, subnet])
        };
        let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
        let cluster = Cluster {
            k,
            tmp,
            repo,
            subnet,
            kubelet: Some(kubelet),
            controller: None,
        };
        cluster.commit("return 200 \"v0\\n\";", "first");
        let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/proxyrollout.yaml");
        cluster
            .k
            .ok(&["apply", "-f", &crd.display().to_string()])
            .await;
        cluster.k.ok(&["create", "namespace", "edge"]).await;
        for name in pods {
            cluster.add_pod(name).await;
        }
        cluster.wait_pods_ready().await;
        Some(cluster)
    }

    /// Creates a proxy pod (as a ReplicaSet would).
    pub async fn add_pod(&self, name: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: edge\n  labels:\n    app: edge\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n"
        );
        let file = self.k.file(&format!("{name}.yaml"), &text);
        self.k.ok(&["apply", "-f", &file]).await;
    }

    /// Waits for every proxy pod to be Ready.
    pub async fn wait_pods_ready(&self) {
        self.k
            .ok(&[
                "wait",
                "-n",
                "edge",
                "--for=condition=Ready",
                "pod",
                "-l",
                "app=edge",
                "--timeout=60s",
            ])
            .await;
    }

    /// The nginx config whose `location /` holds `location`.
    pub fn site(&self, location: &str) -> String {
        format!(
            "events {{}}\nhttp {{\n    upstream app {{ server 127.0.{}.2:9001; }}\n    server {{\n        listen 8080;\n        location / {{ {location} }}\n    }}\n}}\n",
            self.subnet
        )
    }

    /// Commits `nginx.conf` with `location` and returns the commit id.
    pub fn commit(&self, location: &str, message: &str) -> String {
        self.commit_text(&self.site(location), message)
    }

    /// Commits `nginx.conf` with exactly `text` and returns the commit id.
    pub fn commit_text(&self, text: &str, message: &str) -> String {
        std::fs::write(self.repo.join("nginx.conf"), text).expect("write");
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-q", "-m", message]);
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Applies the ProxyRollout `edge` with these strategy lines (YAML under `strategy:`).
    pub async fn apply_rollout(&self, strategy: &str) {
        let text = format!(
            "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1s\n  target:\n    selector:\n      app: edge\n  strategy:\n{strategy}",
            self.repo.display()
        );
        let file = self.k.file("rollout.yaml", &text);
        self.k.ok(&["apply", "-f", &file]).await;
    }

    /// Controller options for this cluster. The repository is a local one (`file://`), which a
    /// controller only follows when told to (issue 13).
    pub fn controller_options(&self) -> ControllerOptions {
        ControllerOptions {
            namespace: Some("edge".to_string()),
            agent_token: self.kubelet.as_ref().map(ProcessKubelet::agent_token),
            allow_insecure_sources: true,
            ..ControllerOptions::new(self.tmp.path().join("cache"))
        }
    }

    /// Environment a `switchback controller` process needs to drive these pods.
    pub fn controller_env(&self) -> Vec<(String, String)> {
        self.kubelet
            .as_ref()
            .map(|k| {
                vec![(
                    "SWITCHBACK_AGENT_TOKEN".to_string(),
                    k.agent_token().expose().to_string(),
                )]
            })
            .unwrap_or_default()
    }

    /// Starts the controller in-process.
    pub async fn start_controller(&mut self) {
        let options = self.controller_options();
        self.start_controller_with(options).await;
    }

    /// Starts the controller in-process with these options.
    pub async fn start_controller_with(&mut self, options: ControllerOptions) {
        log_controller();
        let client = self.k.server.client().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, options, async move {
            let _ = stopped.await;
        }));
        self.controller = Some(Running { stop, task });
    }

    /// `switchback controller` as a process against this cluster, ready to spawn: namespace
    /// `edge`, local sources allowed, its own cache directory `cache` under the cluster's temp
    /// dir, this cluster's agent token, its log (`switchback=info`) to the test's stderr, killed
    /// when dropped. Callers add their flags (leader election, shards) and spawn it
    /// (`cargo build --bin switchback` first).
    pub fn controller_command(&self, cache: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(crate::bin::switchback_bin());
        command
            // The repository is a local one.
            .args([
                "controller",
                "--namespace",
                "edge",
                "--allow-insecure-sources",
            ])
            .arg("--cache-dir")
            .arg(self.tmp.path().join(cache))
            .env("KUBECONFIG", self.k.server.kubeconfig_path())
            .envs(self.controller_env())
            .env("SWITCHBACK_LOG", "switchback=info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        command
    }

    /// Stops the controller (as SIGTERM would) and waits for it to finish.
    pub async fn stop_controller(&mut self) {
        if let Some(running) = self.controller.take() {
            let _ = running.stop.send(());
            running
                .task
                .await
                .expect("controller task")
                .expect("controller");
        }
    }

    /// `kubectl get -n edge <what> -o jsonpath=<path>`.
    pub async fn jsonpath(&self, what: &str, path: &str) -> String {
        self.k
            .ok(&["get", "-n", "edge", what, "-o", &format!("jsonpath={path}")])
            .await
            .trim()
            .to_string()
    }

    /// Fails unless every proxy pod is told `digest` (its `switchback.dev/desired-digest`).
    pub async fn assert_all_told(&self, digest: &str, why: &str) {
        let desired = self
            .jsonpath(
                "pods",
                "{.items[*].metadata.annotations.switchback\\.dev/desired-digest}",
            )
            .await;
        assert!(
            !desired.is_empty() && desired.split_whitespace().all(|d| d == digest),
            "{why}: every pod told {digest}, got {desired}"
        );
    }

    /// `kubectl wait -n edge --for=condition=<condition> proxyrollout/edge`.
    pub async fn wait_condition(&self, condition: &str) {
        self.k
            .ok(&[
                "wait",
                "-n",
                "edge",
                &format!("--for=condition={condition}"),
                "proxyrollout/edge",
                "--timeout=60s",
            ])
            .await;
    }

    /// Polls `jsonpath` until `done` holds; fails with the last value after [`PATIENCE`].
    pub async fn wait_for(&self, what: &str, path: &str, done: impl Fn(&str) -> bool) -> String {
        self.wait_for_within(what, path, PATIENCE, done).await
    }

    /// The live config directory (`current`) nginx serves in `pod`, for tests that edit it by
    /// hand as someone with a shell in the pod would.
    pub fn live_config(&self, pod: &str) -> PathBuf {
        let kubelet = self.kubelet.as_ref().expect("the kubelet runs");
        let prefix = format!("edge.{pod}.");
        let dir = std::fs::read_dir(kubelet.state_dir())
            .expect("the kubelet's state dir")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .unwrap_or_else(|| panic!("no state dir for pod {pod}"));
        dir.path().join("current")
    }

    /// The process kubelet running the pods, for tests that fault a pod's agent
    /// ([`ProcessKubelet::kill_agent`]).
    pub fn kubelet(&self) -> &ProcessKubelet {
        self.kubelet.as_ref().expect("the kubelet runs")
    }

    /// Stops the controller and the pods; fails if a process is left behind.
    pub async fn down(mut self) {
        self.stop_controller().await;
        if let Some(kubelet) = self.kubelet.take() {
            let left = kubelet.stop().await;
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

/// With `SWITCHBACK_LOG` set (an `EnvFilter`, e.g. `switchback=info`), the in-process
/// controller's tracing goes to the test's output (shown with `--nocapture` or on failure), so a
/// flaky end-to-end run can be read afterwards. Once per test binary; later calls do nothing.
fn log_controller() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SWITCHBACK_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
