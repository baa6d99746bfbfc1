//! The cluster side: the repository, the CRD, the pods, the ProxyRollouts, and a mirror of what the API server stores.

use super::*;

/// The nginx config of version `v`.
pub(crate) fn site(v: &str) -> String {
    format!(
        "events {{}}\nhttp {{\n    upstream app {{ server 127.0.0.1:9001; }}\n    server {{\n        listen 8080;\n        location / {{ return 200 \"{v}\\n\"; }}\n        location /app {{ proxy_pass http://app; }}\n    }}\n}}\n"
    )
}

/// The digest the controller will compute for `text` as `nginx.conf` (no values): the farm is
/// told which digest is bad before the commit exists, so no read ever sees it good.
pub(crate) fn digest_of(text: &str) -> Digest {
    let mut tree = ConfigTree::new();
    tree.insert_file("nginx.conf", text.as_bytes().to_vec());
    render::render(&tree, &Value::Null)
        .expect("the bench's config renders")
        .digest()
}

pub(crate) struct Repo {
    pub(crate) path: PathBuf,
}

impl Repo {
    pub(crate) fn new(dir: &Path) -> Repo {
        let path = dir.join("repo");
        std::fs::create_dir(&path).expect("mkdir repo");
        git(&path, &["init", "-q", "-b", "main"]);
        Repo { path }
    }

    pub(crate) fn commit(&self, text: &str, message: &str) -> String {
        std::fs::write(self.path.join("nginx.conf"), text).expect("write nginx.conf");
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", message]);
        git(&self.path, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

/// What every run starts from: the API test server with the CRD installed, a client, a temp dir
/// and a git repository whose first commit (v0) is made.
pub(crate) struct Stage {
    pub(crate) server: KubeServer,
    pub(crate) client: kube::Client,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) repo: Repo,
    pub(crate) v0: String,
}

impl Stage {
    pub(crate) async fn set() -> Stage {
        let server = KubeServer::start().await.expect("the API test server");
        let client = server.client().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repo::new(dir.path());
        let v0 = repo.commit(&site("v0"), "v0");
        install_crd(&client).await;
        Stage {
            server,
            client,
            dir,
            repo,
            v0,
        }
    }
}

pub(crate) async fn install_crd(client: &kube::Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/proxyrollout.yaml");
    let text = std::fs::read_to_string(&path).expect("read crds/proxyrollout.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("the CRD parses");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create the CRD");
}

/// Creates the namespace and one Pod per address (labels from `labels(i)`), then reports each
/// Running and Ready on its address through the status subresource, as a kubelet would.
pub(crate) async fn create_pods(
    client: &kube::Client,
    namespace: &str,
    addrs: &[SocketAddr],
    labels: impl Fn(usize) -> BTreeMap<String, String>,
) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    for chunk in addrs.iter().enumerate().collect::<Vec<_>>().chunks(64) {
        let mut writes = tokio::task::JoinSet::new();
        for &(i, addr) in chunk {
            let (pods, addr, labels) = (pods.clone(), *addr, labels(i));
            writes.spawn(async move {
                let name = format!("pod-{i:05}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &pod)
                    .await
                    .expect("create a pod");
                let now = jiff::Timestamp::now().to_string();
                let ip = addr.ip().to_string();
                let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let status = json!({"status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": "127.0.0.1",
                    "startTime": now,
                    "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                }});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .expect("report the pod Ready");
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("pod write task");
        }
    }
    println!(
        "  {} pods created and Ready in {}",
        addrs.len(),
        secs(started.elapsed())
    );
}

/// How a run's rollouts learn of a commit.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Source {
    /// The push webhook ([`PUSH_SECRET`]) and the default interval (1m): what a user who wants
    /// fast delivery sets up, and what the idle figures are measured with.
    Push,
    /// Polling every second, no webhook: the sharded run's, since a push reaches one replica
    /// and each replica acts only on its own rollouts' pushes (docs/operations.md).
    Poll,
}

/// The Secret every rollout's push webhook names, and the key it holds.
pub(crate) const PUSH_SECRET: &str = "push";
pub(crate) const PUSH_KEY: &str = "bench-push-key";

/// Creates [`PUSH_SECRET`] in `namespace`, usable by every rollout there.
pub(crate) async fn create_push_secret(client: &kube::Client, namespace: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {
            "name": PUSH_SECRET,
            "namespace": namespace,
            "annotations": {"switchback.dev/allowed-rollouts": "*"},
        },
        "stringData": {"token": PUSH_KEY},
    }))
    .expect("a Secret");
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the push Secret");
}

/// The hook a git host would call for a push to `repo`, on `controller`'s webhook address.
pub(crate) fn push_hook(controller: &Controller, namespace: &str, repo: &Repo) -> GenericHook {
    GenericHook::new(
        controller.webhook,
        namespace,
        PUSH_SECRET,
        PUSH_KEY,
        &format!("file://{}", repo.path.display()),
    )
}

pub(crate) fn rollout(
    name: &str,
    namespace: &str,
    repo: &Path,
    selector: Value,
    strategy: Value,
    source: Source,
) -> ProxyRollout {
    let url = format!("file://{}", repo.display());
    let source = match source {
        Source::Push => {
            json!({"url": url, "ref": "main", "webhook": {"secretRef": {"name": PUSH_SECRET}}})
        }
        Source::Poll => json!({"url": url, "ref": "main", "interval": "1s"}),
    };
    serde_json::from_value(json!({
        "apiVersion": "switchback.dev/v1alpha1",
        "kind": "ProxyRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": source,
            "target": {"selector": selector},
            "strategy": strategy,
        },
    }))
    .expect("a ProxyRollout")
}

/// The objects of one resource as the API server holds them, followed in-process (no HTTP, so
/// watching costs the controller nothing); `changed` is when the last change arrived.
#[derive(Clone)]
pub(crate) struct Mirror {
    pub(crate) objects: Arc<Mutex<HashMap<String, Value>>>,
    pub(crate) task: Arc<tokio::task::JoinHandle<()>>,
}

impl Mirror {
    pub(crate) fn follow(server: &KubeServer, group: &'static str, plural: &'static str) -> Mirror {
        let follower = server.follower();
        let (initial, mut rx) = follower.list_and_subscribe(group, plural);
        let objects: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let name = |o: &Value| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let fill = move |map: &mut HashMap<String, Value>, list: Vec<Value>| {
            map.clear();
            for o in list {
                map.insert(name(&o), o);
            }
        };
        fill(&mut objects.lock().expect("mirror lock"), initial);
        let map = Arc::clone(&objects);
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.key.group == group && e.key.plural == plural => {
                        let mut map = map.lock().expect("mirror lock");
                        if e.kind == "DELETED" {
                            map.remove(&e.key.name);
                        } else {
                            map.insert(e.key.name.clone(), e.object.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        // Changes were dropped, perhaps an object's last one: a mirror that
                        // waited for "the next change" could wait forever (the stuck full-size
                        // runs of issue 15). List again, as a watch client relists on 410.
                        eprintln!("  (mirror of {plural} lagged by {n} events: listed again)");
                        let (list, fresh) = follower.list_and_subscribe(group, plural);
                        rx = fresh;
                        fill(&mut map.lock().expect("mirror lock"), list);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Mirror {
            objects,
            task: Arc::new(task),
        }
    }

    pub(crate) fn all(&self, pred: impl Fn(&Value) -> bool) -> bool {
        let map = self.objects.lock().expect("mirror lock");
        !map.is_empty() && map.values().all(pred)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Value> {
        self.objects.lock().expect("mirror lock").get(name).cloned()
    }

    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// Polls `done` every [`poll_interval`] until it holds; panics with `what` after [`patience`].
pub(crate) async fn wait_until(what: &str, done: impl FnMut() -> bool) -> Instant {
    wait_until_explained(what, done, String::new).await
}

/// [`wait_until`], whose panic also says what `explain` finds (what is not done yet, where the
/// controller's log was kept), so a run that does not converge can be diagnosed afterwards.
pub(crate) async fn wait_until_explained(
    what: &str,
    mut done: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) -> Instant {
    let patience = patience();
    let deadline = Instant::now() + patience;
    loop {
        if done() {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            panic!(
                "gave up after {patience:?} waiting for {what}\n{}",
                explain()
            );
        }
        tokio::time::sleep(poll_interval()).await;
    }
}

/// What a wait for "every rollout stable on `commit`, every pod on `digest`" still lacks: the
/// rollouts that are not (their status as the mirror and as the server hold it), the pods that
/// have not applied it, and the controller's log copied to `/tmp/operator-scale-<pid>.log`.
pub(crate) fn explain_unconverged(
    server: &KubeServer,
    mirror: &Mirror,
    farm: &Farm,
    commit: &str,
    digest: &Digest,
    log: &Path,
) -> String {
    let stable = |o: &Value| status_str(o, &["stable", "commit"]) == Some(commit);
    let mut out = String::new();
    let (listed, _) = server.list_and_subscribe("switchback.dev", "proxyrollouts");
    let in_server: HashMap<String, Value> = listed
        .into_iter()
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o,
            )
        })
        .collect();
    let mirrored = mirror.objects.lock().expect("mirror lock").clone();
    let behind: Vec<&String> = in_server
        .iter()
        .filter(|(_, o)| !stable(o))
        .map(|(n, _)| n)
        .collect();
    out.push_str(&format!(
        "rollouts not stable on {commit}: {} in the server, {} in the mirror ({} mirrored of {})\n",
        behind.len(),
        mirrored.values().filter(|o| !stable(o)).count(),
        mirrored.len(),
        in_server.len()
    ));
    for name in behind.iter().take(3) {
        let o = &in_server[*name];
        out.push_str(&format!(
            "  {name}: resourceVersion {}, finalizers {}, status {}\n",
            o["metadata"]["resourceVersion"], o["metadata"]["finalizers"], o["status"]
        ));
    }
    // The controller's requests about these objects and its watches of them: a change the
    // watch never delivered shows as a write with no reconcile after it.
    for r in server.requests().iter().filter(|r| {
        r.uri.contains("proxyrollouts")
            && (r.uri.contains("watch")
                || behind.iter().take(3).any(|n| r.uri.contains(n.as_str())))
    }) {
        out.push_str(&format!("  {} {} -> {}\n", r.method, r.uri, r.status));
    }
    out.push_str(&format!(
        "pods on {}: {} of {}\n",
        digest.short(),
        farm.count_applied(digest),
        farm.addresses().len()
    ));
    let keep = PathBuf::from(format!("/tmp/operator-scale-{}.log", std::process::id()));
    match std::fs::copy(log, &keep) {
        Ok(_) => out.push_str(&format!("the controller's log: {}\n", keep.display())),
        Err(e) => out.push_str(&format!("the controller's log could not be kept: {e}\n")),
    }
    out
}
