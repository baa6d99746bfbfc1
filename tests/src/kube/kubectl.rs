//! Test support: running real kubectl against a [`KubeServer`]; found on PATH, then in
//! `.tools/bin` (installed by scripts/install-kubectl.sh).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::KubeServer;

/// Finds kubectl on PATH, then in `.tools/bin`; `None` only for a loud, requested skip.
pub fn kubectl_bin() -> Option<PathBuf> {
    tool_bin("kubectl")
}

/// Finds a client tool (`kubectl`, `helm`) on PATH, then in `.tools/bin`. Missing tools fail
/// the test with what to run, unless SWITCHBACK_SKIP_KUBECTL=1 asks for a loud skip (`None`).
pub fn tool_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/bin")
        .join(name);
    let found = on_path.or_else(|| tools.is_file().then_some(tools));
    if found.is_none() {
        if std::env::var("SWITCHBACK_SKIP_KUBECTL").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: {name} not found and SWITCHBACK_SKIP_KUBECTL=1; this test did not run"
            );
            return None;
        }
        panic!(
            "{name} not found on PATH or in .tools/bin: run `make tools` (or bash scripts/install-kubectl.sh), or set SWITCHBACK_SKIP_KUBECTL=1 to skip"
        );
    }
    found
}

/// Real kubectl bound to a fresh [`KubeServer`] and its own discovery cache, so each test
/// sees a repeatable request sequence.
pub struct Kubectl {
    bin: PathBuf,
    /// The server kubectl talks to.
    pub server: KubeServer,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// Starts a server and finds kubectl; `None` only for a requested, loud skip.
    pub async fn up() -> Option<Kubectl> {
        let bin = kubectl_bin()?;
        let server = KubeServer::start()
            .await
            .expect("start the test API server");
        let cache = tempfile::tempdir().expect("kubectl cache dir");
        Some(Kubectl { bin, server, cache })
    }

    /// A kubectl command with the kubeconfig and cache dir set, for spawning long-running verbs.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.server.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env("HOME", self.cache.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().await.expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and insists it succeeds; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(
            ok,
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    /// Runs kubectl with `-o json` appended and parses what it prints.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let out = self.ok(&args).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {args:?} printed no JSON ({e}): {out}"))
    }

    /// Writes a manifest next to the kubeconfig and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.server.dir().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.to_string_lossy().into_owned()
    }

    /// A direct HTTP request to the server, for what kubectl cannot do (status writes, stale PUTs).
    pub fn http(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.server.url()))
            .bearer_auth(self.server.token())
    }

    /// Runs helm (`bin`) against the same server, with HOME in the server's temp dir so its
    /// discovery cache is fresh; insists it succeeds and returns stdout.
    pub async fn helm(&self, bin: &Path, args: &[&str]) -> String {
        let out = tokio::process::Command::new(bin)
            .arg("--kubeconfig")
            .arg(self.server.kubeconfig_path())
            .args(args)
            .env("HOME", self.server.dir())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run helm");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "helm {args:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}
