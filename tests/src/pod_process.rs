//! Runs the pod of a Deployment stored in the test API server as a local process, the way a
//! kubelet would start its container: the container's args, its env resolved (downward API
//! `fieldRef`, `secretKeyRef` read from the server), emptyDir volumes as temp dirs, the pod's
//! address on loopback, and a token for the pod's ServiceAccount, so RBAC applies to it. This is how the chart's own Deployment (`switchback controller ...`) is
//! run against the test server, so a test goes helm install → ProxyRollout → Ready through what
//! the chart renders rather than through flags the test picked.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::kube::kubectl::Kubectl;

/// Why a Deployment's pod could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PodProcessError {
    /// The Deployment's pod template lacks something a kubelet would need.
    #[error("deployment {deployment}: {what}")]
    Template {
        /// `namespace/name`.
        deployment: String,
        /// What is missing or unsupported.
        what: String,
    },
    /// The process could not be spawned.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary started.
        binary: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One running pod process; killed when dropped.
pub struct PodProcess {
    /// The pod's name (what `POD_NAME` was set to).
    pub name: String,
    /// The user its API requests are made as: `system:serviceaccount:<namespace>:<account>`.
    pub user: String,
    /// Where the container's first port is reachable: the pod's loopback IP and that port.
    pub addr: SocketAddr,
    child: Child,
}

impl PodProcess {
    /// Starts the first container of `namespace/deployment` as `binary` with the container's args.
    /// An arg `--flag=0.0.0.0:PORT` binds `ip` instead (the pod's address); `HOME` and every
    /// emptyDir mount point are replaced by directories under `scratch`; `KUBECONFIG` points at
    /// the test server with a token issued for the pod's `serviceAccountName` (`default` when
    /// unset), as the in-cluster config would, so the server's RBAC decides what it may do.
    pub async fn start_deployment(
        k: &Kubectl,
        namespace: &str,
        deployment: &str,
        binary: &Path,
        ip: IpAddr,
        scratch: &Path,
    ) -> Result<PodProcess, PodProcessError> {
        let obj = k
            .json(&["get", "-n", namespace, "deployment", deployment])
            .await;
        let fail = |what: String| PodProcessError::Template {
            deployment: format!("{namespace}/{deployment}"),
            what,
        };
        let pod = &obj["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let name = format!("{deployment}-0");
        let port = container["ports"][0]["containerPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| fail("the first container has no port".to_string()))?;
        let addr = SocketAddr::new(ip, port);

        // emptyDir volumes become fresh directories; their mount paths are rewritten in args.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == m["name"]));
            if volume.is_some_and(|v| v["emptyDir"].is_object()) {
                let dir = scratch.join(m["name"].as_str().unwrap_or("volume"));
                std::fs::create_dir_all(&dir).map_err(|e| fail(format!("emptyDir: {e}")))?;
                let path = m["mountPath"].as_str().unwrap_or_default().to_string();
                mounts.push((path, dir));
            }
        }
        let rewrite = |arg: &str| -> String {
            if let Some((flag, value)) = arg.split_once('=') {
                if let Some(port) = value.strip_prefix("0.0.0.0:") {
                    return format!("{flag}={ip}:{port}");
                }
                if let Some((_, dir)) = mounts.iter().find(|(path, _)| path == value) {
                    return format!("{flag}={}", dir.display());
                }
            }
            arg.to_string()
        };
        let args: Vec<String> = container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(rewrite)
            .collect();

        // The pod's ServiceAccount token, as the kubelet mounts it: the process talks to the
        // server as `system:serviceaccount:<namespace>:<account>`, so RBAC decides its requests.
        if pod["automountServiceAccountToken"] == false {
            return Err(fail(
                "automountServiceAccountToken is false: the pod would have no API credentials"
                    .to_string(),
            ));
        }
        let account = pod["serviceAccountName"].as_str().unwrap_or("default");
        let kubeconfig = k
            .server
            .service_account_kubeconfig(namespace, account)
            .map_err(|e| fail(format!("service account token: {e}")))?;
        let mut cmd = Command::new(binary);
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for var in container["env"].as_array().into_iter().flatten() {
            let key = var["name"].as_str().unwrap_or_default();
            let value = if key == "HOME" {
                let home = scratch.join("home");
                std::fs::create_dir_all(&home).map_err(|e| fail(format!("HOME: {e}")))?;
                home.display().to_string()
            } else if let Some(v) = var["value"].as_str() {
                v.to_string()
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => namespace.to_string(),
                    "status.podIP" => ip.to_string(),
                    other => return Err(fail(format!("env {key}: fieldRef {other}"))),
                }
            } else if var["valueFrom"]["secretKeyRef"].is_object() {
                let r = &var["valueFrom"]["secretKeyRef"];
                let secret = r["name"].as_str().unwrap_or_default();
                let data_key = r["key"].as_str().unwrap_or_default();
                let encoded = k
                    .ok(&[
                        "get",
                        "-n",
                        namespace,
                        "secret",
                        secret,
                        "-o",
                        &format!("jsonpath={{.data.{data_key}}}"),
                    ])
                    .await;
                let bytes = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    encoded.trim(),
                )
                .map_err(|e| fail(format!("secret {secret} key {data_key}: {e}")))?;
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                return Err(fail(format!("env {key}: unsupported source {var}")));
            };
            cmd.env(key, value);
        }
        let child = cmd.spawn().map_err(|source| PodProcessError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
        Ok(PodProcess {
            name,
            user: format!("system:serviceaccount:{namespace}:{account}"),
            addr,
            child,
        })
    }

    /// Polls `GET http://addr{path}` (the readiness probe) until it answers 200; fails the test
    /// with the last answer after `within`, or at once if the process exits.
    pub async fn wait_ready(&mut self, path: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let url = format!("http://{}{path}", self.addr);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "pod {} exited with {status} before {path} answered 200",
                    self.name
                );
            }
            let last = match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {}: {url} not ready within {within:?}; last: {last}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process with SIGTERM (as a kubelet does) and waits for it to exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}
