//! A "process kubelet" for the test API server: it follows Pods in the store and runs each one as
//! an in-process Switchback agent (with its real nginx) on its own loopback address, then reports
//! the Pod's IP and readiness through the API's status subresource, as a real kubelet would. This
//! lets operator and kubectl tests see Pods become Ready and answer on their pod IP without any
//! container runtime on the machine.
//!
//! By default every agent runs in Kubernetes mode, as in a real Pod: it reads its own Pod and the
//! bundle ConfigMaps through this server with the Pod's name and namespace, and its API wants its
//! namespace's token ([`ProcessKubelet::agent_token_for`], derived from the kubelet's master
//! [`ProcessKubelet::agent_token`] as the chart derives it), as if mounted from a Secret.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use switchback::agent::{AgentError, Clock, ProbeSpec, Token};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::kubelet_launch::{kube_client, launch};
use super::pod_status::follow_gates;
use super::store::Event;
use super::{KubeServer, TokenIssuer};

/// The port every pod's agent API listens on, like a container port.
pub const AGENT_PORT: u16 = 9180;
/// The port every pod's nginx listens on.
pub const NGINX_PORT: u16 = 8080;
/// Last octets handed out to pods: from 10 (or [`KubeletOptions::first_octet`]) up to 254.
const FIRST_OCTET: u8 = 10;
const LAST_OCTET: u8 = 254;

/// Why the kubelet could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The state directory for the pods' agents could not be created.
    #[error("creating the process kubelet's state dir: {0}")]
    StateDir(std::io::Error),
    /// The agents' token could not be made or written.
    #[error("the agents' token: {0}")]
    Token(String),
}

/// Which Pods the kubelet runs and how; tests pick distinct subnets so kubelets never collide.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// Pods get `127.<subnet[0]>.<subnet[1]>.(first_octet + n)`.
    pub subnet: [u8; 2],
    /// The last octet of the first pod's address (10 by default); two kubelets on one subnet
    /// stay apart by starting far enough from each other.
    pub first_octet: u8,
    /// The nginx binary; `None` finds it as the agent does.
    pub nginx: Option<PathBuf>,
    /// Active health checks every pod's agent runs.
    pub probes: Vec<ProbeSpec>,
    /// A rendered config directory (entry `nginx.conf`) every pod's agent applies at start, so
    /// its nginx runs and serves before any controller pushes a bundle; without one the agent
    /// waits for its first apply before starting nginx.
    pub initial_bundle: Option<PathBuf>,
    /// Only Pods whose `spec.nodeName` is this, when set (a kubelet serves one node).
    pub node_name: Option<String>,
    /// Only Pods carrying every one of these labels, when non-empty.
    pub labels: Vec<(String, String)>,
    /// Run the agents in Kubernetes mode (the default): bundles come from ConfigMaps, the API
    /// wants the kubelet's token. `false` runs them in local mode (bundles posted over HTTP).
    pub kubernetes: bool,
    /// In Kubernetes mode, give each Pod's agent a token for the Pod's ServiceAccount
    /// (`spec.serviceAccountName`, `default` when unset) instead of the admin's, so the server's
    /// RBAC decides what the agent may read, as on a real cluster. Off by default: most tests
    /// create no RBAC for their pods.
    pub service_account_tokens: bool,
    /// Every agent's `--report-to` (the controller's report URL), when set.
    pub report_to: Option<String>,
}

impl KubeletOptions {
    /// Every Pod in every namespace, on `127.<subnet>.*`, nginx found as usual, no probes.
    pub fn new(subnet: [u8; 2]) -> Self {
        KubeletOptions {
            subnet,
            first_octet: FIRST_OCTET,
            nginx: None,
            probes: Vec::new(),
            initial_bundle: None,
            node_name: None,
            labels: Vec::new(),
            kubernetes: true,
            service_account_tokens: false,
            report_to: None,
        }
    }

    /// Whether this kubelet should run `pod`.
    fn wants(&self, pod: &Value) -> bool {
        let node_ok = self
            .node_name
            .as_ref()
            .is_none_or(|n| pod["spec"]["nodeName"].as_str() == Some(n.as_str()));
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, v)| pod["metadata"]["labels"][k].as_str() == Some(v.as_str()));
        node_ok && labels_ok && pod["metadata"]["deletionTimestamp"].is_null()
    }
}

/// A running kubelet; call [`ProcessKubelet::stop`] to stop every pod's agent and nginx.
pub struct ProcessKubelet {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Vec<String>>>,
    dir: tempfile::TempDir,
    token: Token,
    requests: mpsc::UnboundedSender<Request>,
}

/// What a test asks of one Pod's agent, handled by the follow loop that owns the agents.
struct Request {
    key: PodKey,
    /// Start the agent again after the kill (a kubelet restarting the container).
    restart: bool,
    /// The wall clock the restarted agent reads, when it changes (`None`: the one it had).
    clock: Option<Clock>,
    /// Whether the Pod had an agent to kill.
    done: oneshot::Sender<bool>,
}

impl ProcessKubelet {
    /// Starts following `server`'s Pods: every wanted Pod, already stored or created later,
    /// gets an agent; deleted Pods lose theirs.
    pub fn start(server: &KubeServer, options: KubeletOptions) -> Result<Self, KubeletError> {
        // Searchable by others (0711): agents running as root run nginx's workers as `nobody`,
        // which must reach each pod's log socket below it.
        let dir = tempfile::Builder::new()
            .prefix("sb-kubelet-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .tempdir()
            .map_err(KubeletError::StateDir)?;
        // A fresh master token per kubelet, as the chart's Secret would hold; the kernel's random
        // UUID makes it unguessable, the directory name unique either way. Each pod's agent gets
        // its namespace's token derived from it (`launch`), as the chart's per-namespace Secrets.
        let seed = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap_or_default();
        let name = dir.path().file_name().unwrap_or_default().to_string_lossy();
        let text = format!("kubelet-{}-{name}", seed.trim());
        let token =
            Token::new(&text, "process kubelet").map_err(|e| KubeletError::Token(e.to_string()))?;
        let (initial, rx) = server.list_and_subscribe("", "pods");
        let (stop, stopped) = watch::channel(false);
        let (requests, asked) = mpsc::unbounded_channel();
        let ctx = Ctx {
            options,
            url: server.url(),
            token: server.token().to_string(),
            dir: dir.path().to_path_buf(),
            http: reqwest::Client::new(),
            kubeconfig: server.kubeconfig_path(),
            master: token.clone(),
            kube: None,
            issuer: server.token_issuer(),
        };
        let task = tokio::spawn(follow(ctx, initial, rx, stopped, asked));
        Ok(ProcessKubelet {
            stop,
            task: Some(task),
            dir,
            token,
            requests,
        })
    }

    /// The master token, for controllers (`ControllerOptions::agent_token`, the env
    /// `SWITCHBACK_AGENT_TOKEN`), which derive each namespace's token from it. No agent takes it.
    pub fn agent_token(&self) -> Token {
        self.token.clone()
    }

    /// The bearer token the agents of pods in `namespace` want (Kubernetes mode), for tests
    /// that talk to them directly ([`AgentClient::with_token`],
    /// [`switchback::fleet::kube::KubeFleet::with_agent_token`]).
    pub fn agent_token_for(&self, namespace: &str) -> Token {
        self.token.for_namespace(namespace)
    }

    /// Where the pods' agents keep their state (`<dir>/<namespace>.<name>.<octet>`); nginx
    /// command lines mention it, so tests can check that no nginx outlives the kubelet.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the agent of Pod `namespace/name` as SIGKILL would kill an agent process: no
    /// graceful stop, so its nginx (a process group of its own, as in the agent's container)
    /// keeps serving; the agent's tasks are dropped where they stand, mid-apply or not. With
    /// `restart`, starts it again on the same address and state directory, as a kubelet
    /// restarts a crashed container (the agent then adopts the running nginx). Without a
    /// restart the Pod keeps no agent until it is deleted and created again (this kubelet never
    /// restarts an agent that ended by itself: the Pod is reported Failed instead). Returns
    /// whether the Pod had an agent.
    pub async fn kill_agent(&self, namespace: &str, name: &str, restart: bool) -> bool {
        let (done, answer) = oneshot::channel();
        let request = Request {
            key: (namespace.to_string(), name.to_string()),
            restart,
            clock: None,
            done,
        };
        self.requests.send(request).is_ok() && answer.await.unwrap_or(false)
    }

    /// Restarts the agent of Pod `namespace/name` as [`ProcessKubelet::kill_agent`] does, its
    /// wall clock now `clock` (and in any later restart): a pod whose node's clock is off, for
    /// the clock-skew fault. Returns whether the Pod had an agent.
    pub async fn restart_agent_with_clock(
        &self,
        namespace: &str,
        name: &str,
        clock: Clock,
    ) -> bool {
        let (done, answer) = oneshot::channel();
        let request = Request {
            key: (namespace.to_string(), name.to_string()),
            restart: true,
            clock: Some(clock),
            done,
        };
        self.requests.send(request).is_ok() && answer.await.unwrap_or(false)
    }

    /// Stops every agent (each stops its nginx) and waits for all of them; returns the errors
    /// agents ended with, as `namespace/name: error`.
    pub async fn stop(mut self) -> Vec<String> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| vec![format!("kubelet task: {e}")]),
            None => Vec::new(),
        }
    }
}

impl Drop for ProcessKubelet {
    /// Without [`ProcessKubelet::stop`] (a test that panicked), asks the agents to stop and kills
    /// their nginx at once: the runtime ends with the test, before any agent stops its nginx, and
    /// nginx runs in its own process group so it outlives them. A leftover nginx holds its pod's
    /// address, and the next run of the test fails to start its pods (`Address already in use`).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if self.task.is_some() {
            kill_nginx_under(self.dir.path());
        }
    }
}

/// SIGKILLs every process whose command line names `dir`, with its process group (an nginx
/// master leads its group, so its workers, whose titles name nothing, go too). Only this
/// kubelet's processes name its unique state dir.
fn kill_nginx_under(dir: &Path) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mentions = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .is_ok_and(|cmd| cmd.contains(&needle));
        if mentions {
            // Not a group leader: killpg finds no group, and kill still ends the process.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// What the follow loop needs besides its pods.
pub(super) struct Ctx {
    pub(super) options: KubeletOptions,
    pub(super) url: String,
    pub(super) token: String,
    pub(super) dir: PathBuf,
    pub(super) http: reqwest::Client,
    /// The server's kubeconfig, for the agents' kube client.
    pub(super) kubeconfig: PathBuf,
    /// The master the agents' tokens are derived from, one per namespace.
    pub(super) master: Token,
    /// The agents' client to the server (Kubernetes mode), made when following starts.
    pub(super) kube: Option<kube::Client>,
    /// Issues each Pod's ServiceAccount token ([`KubeletOptions::service_account_tokens`]).
    pub(super) issuer: TokenIssuer,
}

/// One Pod's agent.
pub(super) struct PodAgent {
    pub(super) octet: u8,
    /// The ServiceAccount and the Pod as launched, to launch its agent again.
    pub(super) account: String,
    pub(super) pod: Value,
    /// The wall clock its agent reads.
    pub(super) clock: Clock,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) agent: JoinHandle<Result<(), AgentError>>,
    pub(super) ready: JoinHandle<()>,
}

/// `(namespace, name)`.
pub(super) type PodKey = (String, String);

async fn follow(
    ctx: Ctx,
    initial: Vec<Value>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut stopped: watch::Receiver<bool>,
    mut asked: mpsc::UnboundedReceiver<Request>,
) -> Vec<String> {
    let mut ctx = ctx;
    let mut errors = Vec::new();
    if ctx.options.kubernetes {
        match kube_client(&ctx.kubeconfig).await {
            Ok(client) => ctx.kube = Some(client),
            Err(e) => errors.push(format!("process kubelet: kube client: {e}")),
        }
    }
    let ctx = Arc::new(ctx);
    let mut pods: HashMap<PodKey, PodAgent> = HashMap::new();
    for pod in &initial {
        observe(&ctx, &mut pods, pod);
    }
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(request) = asked.recv() => {
                let killed = kill(&ctx, &mut pods, &request.key, request.restart, request.clock).await;
                let _ = request.done.send(killed);
            }
            got = rx.recv() => match got {
                Ok(e) if e.key.group.is_empty() && e.key.plural == "pods" => {
                    let key = (e.key.namespace.clone(), e.key.name.clone());
                    // A Pod marked for deletion (finalizers still held) stops running, as
                    // with a real kubelet; its address is released with it.
                    let terminating = !e.object["metadata"]["deletionTimestamp"].is_null();
                    if e.kind == "DELETED" || terminating {
                        if let Some(p) = pods.remove(&key) {
                            errors.extend(halt(&key, p).await);
                        }
                    } else if pods.contains_key(&key) {
                        follow_gates(&ctx, &key, &e.object);
                    } else {
                        observe(&ctx, &mut pods, &e.object);
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    errors.extend(resync(&ctx, &mut pods).await);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    for (key, p) in pods.drain() {
        errors.extend(halt(&key, p).await);
    }
    errors
}

/// Starts an agent for a wanted Pod not yet running; stops one that stopped being wanted
/// (e.g. marked for deletion).
fn observe(ctx: &Arc<Ctx>, pods: &mut HashMap<PodKey, PodAgent>, pod: &Value) {
    let key = (
        pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    if pods.contains_key(&key) || !ctx.options.wants(pod) {
        return;
    }
    let used: Vec<u8> = pods.values().map(|p| p.octet).collect();
    let first = ctx.options.first_octet.max(1);
    let Some(octet) = (first..=LAST_OCTET).find(|o| !used.contains(o)) else {
        eprintln!(
            "process kubelet: no free address for pod {}/{}",
            key.0, key.1
        );
        return;
    };
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let agent = launch(ctx, &key, account, octet, pod, Clock::system());
    pods.insert(key, agent);
}

/// Stops one Pod's agent and waits for it (it stops its nginx before returning).
async fn halt(key: &PodKey, mut pod: PodAgent) -> Option<String> {
    pod.ready.abort();
    if let Some(stop) = pod.stop.take() {
        let _ = stop.send(());
    }
    match pod.agent.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{}/{}: {e}", key.0, key.1)),
        Err(e) => Some(format!("{}/{}: {e}", key.0, key.1)),
    }
}

/// [`ProcessKubelet::kill_agent`]: aborts the agent's task (and its readiness reporter), waits
/// until its API address can be bound again (the aborted agent's listener is dropped with its
/// tasks, bounded), and with `restart` launches it again as before.
async fn kill(
    ctx: &Arc<Ctx>,
    pods: &mut HashMap<PodKey, PodAgent>,
    key: &PodKey,
    restart: bool,
    clock: Option<Clock>,
) -> bool {
    let Some(p) = pods.remove(key) else {
        return false;
    };
    p.ready.abort();
    p.agent.abort();
    let _ = p.agent.await;
    let [a, b] = ctx.options.subnet;
    let api = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, a, b, p.octet)), AGENT_PORT);
    for _ in 0..200 {
        if std::net::TcpListener::bind(api).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    if restart {
        let agent = launch(
            ctx,
            key,
            &p.account,
            p.octet,
            &p.pod,
            clock.unwrap_or(p.clock),
        );
        pods.insert(key.clone(), agent);
    } else {
        // The Pod keeps its address until it is deleted, as a crashed container's Pod does.
        pods.insert(
            key.clone(),
            PodAgent {
                stop: None,
                agent: tokio::spawn(async { Ok(()) }),
                ready: tokio::spawn(async {}),
                ..p
            },
        );
    }
    true
}

/// After missing events, lists Pods through the API and reconciles: starts missing agents,
/// stops those whose Pods are gone.
async fn resync(ctx: &Arc<Ctx>, pods: &mut HashMap<PodKey, PodAgent>) -> Vec<String> {
    let listed = async {
        ctx.http
            .get(format!("{}/api/v1/pods", ctx.url))
            .bearer_auth(&ctx.token)
            .send()
            .await?
            .json::<Value>()
            .await
    }
    .await;
    let items = match listed {
        Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
        Err(e) => return vec![format!("process kubelet resync: {e}")],
    };
    let present: Vec<PodKey> = items
        .iter()
        .map(|p| {
            (
                p["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let gone: Vec<PodKey> = pods
        .keys()
        .filter(|k| !present.contains(k))
        .cloned()
        .collect();
    let mut errors = Vec::new();
    for key in gone {
        if let Some(p) = pods.remove(&key) {
            errors.extend(halt(&key, p).await);
        }
    }
    for pod in &items {
        observe(ctx, pods, pod);
    }
    errors
}
