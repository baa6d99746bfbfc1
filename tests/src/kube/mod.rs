//! An in-process Kubernetes API test server that real kubectl can talk to: discovery,
//! OpenAPI, CRUD with the usual semantics, watch, tables and CRDs, all in memory. No real API
//! server can run on the project's machines, so operator tests and kubectl-driven tests use
//! this instead (see docs/kube-test-server.md for what is and is not implemented).

mod api;
pub mod authz;
pub mod error;
pub mod events;
pub mod faults;
#[cfg(test)]
mod faults_tests;
pub mod fixtures;
pub mod identity;
pub mod kubectl;
pub mod kubelet;
mod kubelet_launch;
mod mounts;
pub mod patch;
mod pod_status;
mod protobuf;
pub mod rbac;
pub mod readiness;
pub mod request_info;
pub mod resources;
pub mod schema;
pub mod select;
pub mod ssa;
pub mod store;
pub mod table;
#[cfg(test)]
mod unit_tests;
mod watch;
pub mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use authz::{AuditRecord, Gate, RbacMode};
use resources::ResourceType;
use store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeServerError {
    /// No loopback port could be bound.
    #[error("binding a loopback port for the Kubernetes test server: {0}")]
    Bind(std::io::Error),
    /// The temp dir or kubeconfig file could not be written.
    #[error("writing the kubeconfig for the Kubernetes test server: {0}")]
    Kubeconfig(std::io::Error),
}

/// One request as the server saw it, so tests can assert what a client sent (field manager,
/// patch type, watch parameters) without a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/default/configmaps/x?fieldManager=kubectl`.
    pub uri: String,
    /// The Content-Type header, empty when absent.
    pub content_type: String,
    /// The HTTP status code of the answer.
    pub status: u16,
}

/// State shared by all request handlers.
pub struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<RecordedRequest>>,
    token: String,
    gate: Mutex<Gate>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    faults: Arc<faults::Faults>,
}

impl Shared {
    /// Locks the store; a poisoned lock (a panicked handler) still holds consistent data
    /// because every write completes under the lock before it is observable.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the gate (tokens, RBAC mode, audit log); taken before the store lock when both are
    /// needed. Poisoning is harmless for the same reason as the store's.
    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Built-in kinds plus those of every stored CRD.
    fn types(&self) -> Vec<ResourceType> {
        let mut types = resources::builtins();
        let crds = self
            .lock()
            .list("apiextensions.k8s.io", "customresourcedefinitions", None);
        types.extend(crds.iter().flat_map(resources::from_crd));
        types
    }
}

/// Issues ServiceAccount tokens for one server; see [`KubeServer::token_issuer`].
#[derive(Clone)]
pub struct TokenIssuer {
    shared: Arc<Shared>,
    url: String,
}

impl TokenIssuer {
    /// A kubeconfig (the server's URL, a fresh token for ServiceAccount `namespace/name`), as
    /// text, as [`KubeServer::service_account_kubeconfig`] writes it.
    pub fn kubeconfig(&self, namespace: &str, name: &str) -> String {
        let token = self.shared.gate().issue(namespace, name);
        kubeconfig_text(&self.url, &token)
    }
}

/// A kubeconfig for `url` with bearer `token` (context `switchback-test`, namespace `default`).
fn kubeconfig_text(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: switchback-test\n  cluster:\n    server: {url}\n\
         users:\n- name: switchback-test\n  user:\n    token: {token}\n\
         contexts:\n- name: switchback-test\n  context:\n    cluster: switchback-test\n    user: switchback-test\n    namespace: default\n\
         current-context: switchback-test\n",
    )
}

/// See [`KubeServer::follower`].
#[derive(Clone)]
pub struct Follower {
    shared: Arc<Shared>,
}

impl Follower {
    /// The objects of a resource now and a subscription to every change after them.
    pub fn list_and_subscribe(
        &self,
        group: &str,
        plural: &str,
    ) -> (
        Vec<serde_json::Value>,
        tokio::sync::broadcast::Receiver<Arc<store::Event>>,
    ) {
        let store = self.shared.lock();
        (store.list(group, plural, None), store.subscribe())
    }
}

/// A running test API server on `127.0.0.1`; stops when dropped or on [`KubeServer::stop`].
pub struct KubeServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeServer {
    /// Binds a free loopback port, seeds the `default` namespace and writes a kubeconfig
    /// (bearer token, plain HTTP) into a fresh temp dir.
    pub async fn start() -> Result<KubeServer, KubeServerError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(KubeServerError::Bind)?;
        let addr = listener.local_addr().map_err(KubeServerError::Bind)?;
        let dir = tempfile::tempdir().map_err(KubeServerError::Kubeconfig)?;
        let token = format!("switchback-test-{}", addr.port());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            requests: Mutex::new(Vec::new()),
            gate: Mutex::new(Gate::new(token.clone())),
            token,
            shutdown: shutdown.clone(),
            faults: Arc::default(),
        });
        {
            let mut store = shared.lock();
            let rt = &resources::builtins()[0];
            let ns = json!({"metadata": {"name": "default"}});
            // The default namespace cannot collide in an empty store.
            let _ = write::create(&mut store, rt, None, ns, write::Mode::COMMIT);
        }
        let server = KubeServer {
            addr,
            dir,
            shared: Arc::clone(&shared),
            stop,
            task: tokio::spawn(serve(listener, Arc::clone(&shared), shutdown)),
        };
        std::fs::write(
            server.kubeconfig_path(),
            kubeconfig_text(&server.url(), server.token()),
        )
        .map_err(KubeServerError::Kubeconfig)?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The kubeconfig file pointing at this server (context `switchback-test`, namespace `default`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A kube-rs client for this server, built from its kubeconfig as a controller would be.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig_path()).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("client config from the kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// A directory that lives as long as the server, for caches and manifests.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a token for ServiceAccount `namespace/name` (as a Pod's projected token) and
    /// writes a kubeconfig holding it; requests with it are that account's and RBAC decides them
    /// (see [`KubeServer::set_rbac_mode`]). Each call issues a fresh token and file.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, KubeServerError> {
        let token = self.issue_token(namespace, name);
        // The token is unique (it carries a counter) and made of name characters.
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        std::fs::write(&path, kubeconfig_text(&self.url(), &token))
            .map_err(KubeServerError::Kubeconfig)?;
        Ok(path)
    }

    /// Issues a bearer token for ServiceAccount `namespace/name`
    /// (`system:serviceaccount:<namespace>:<name>`); each call gives a fresh one.
    pub fn issue_token(&self, namespace: &str, name: &str) -> String {
        self.shared.gate().issue(namespace, name)
    }

    /// What a denied ServiceAccount request gets: 403 ([`RbacMode::Enforce`], the default) or
    /// served and only marked in the audit ([`RbacMode::AuditOnly`]).
    pub fn set_rbac_mode(&self, mode: RbacMode) {
        self.shared.gate().set_mode(mode);
    }

    /// Every ServiceAccount request so far, as RBAC judged it, oldest first. Admin (and
    /// token-less) requests are not audited.
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.shared.gate().audit()
    }

    /// A handle that issues ServiceAccount tokens for this server, for tasks that outlive a
    /// borrow of it (the process kubelet gives each Pod's agent its account's token).
    pub fn token_issuer(&self) -> TokenIssuer {
        TokenIssuer {
            shared: Arc::clone(&self.shared),
            url: self.url(),
        }
    }

    /// Every current object of one resource plus a receiver for every later change, taken under
    /// one lock so no change falls between them: in-process controllers (the process kubelet)
    /// follow the store this way instead of reconnecting HTTP watches.
    pub fn list_and_subscribe(
        &self,
        group: &str,
        plural: &str,
    ) -> (
        Vec<serde_json::Value>,
        tokio::sync::broadcast::Receiver<Arc<store::Event>>,
    ) {
        self.follower().list_and_subscribe(group, plural)
    }

    /// A handle that can list and subscribe again from another task: a follower whose
    /// subscription lagged (the change stream is a bounded broadcast) lists again instead of
    /// keeping a stale copy.
    pub fn follower(&self) -> Follower {
        Follower {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests were answered so far: what [`KubeServer::requests`] would list,
    /// without copying the list, so a bench can sample the request rate cheaply.
    pub fn request_count(&self) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The fault switch (issue 16's chaos suite): take the server down, answer errors, cut
    /// watches, answer resumes `410 Gone`; and the tap of annotation writes.
    pub fn faults(&self) -> Arc<faults::Faults> {
        Arc::clone(&self.shared.faults)
    }

    /// Stops serving: ends open watches and closes the listener.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let faults = Arc::clone(&shared.faults);
    // Helm release Secrets and big CRDs exceed axum's 2 MiB default; real servers take 3 MiB+.
    let app = axum::Router::new()
        .fallback(move |method, uri, headers, body| {
            api::handle(Arc::clone(&shared), method, uri, headers, body)
        })
        .layer(axum::extract::DefaultBodyLimit::max(32 << 20));
    let listener = faults::FaultyListener {
        inner: listener,
        faults: Arc::clone(&faults),
    };
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}
