//! `make docs-check`: every shell command of `docs/quickstart.md`, in order, run by bash against
//! the test API server, with real kubectl, helm, git and nginx, and the page's comments checked.
//!
//! What stands in for a cluster is what the page's introduction says: the chart's controller runs
//! as one [`PodProcess`] from the chart's Deployment, the proxy Deployment's pods are created as a
//! ReplicaSet would and run by the process kubelet (their agents read the token Secret they
//! mount, and readiness gates are honoured), "your repository" is a local bare one (so `helm
//! install` also sets `git.allowInsecureSources=true`), "your application" two loopback servers,
//! "your users" the test's own load generator (50 requests/s to each proxy pod, while the page's
//! `load` pod exists: nothing runs that pod here), and the ProxyRollout's `interval`/`bake` are
//! shortened.
//! Everything else (the chart install, the example manifests, the plugin, the waits) is the page's
//! own text, so a command that stops working, or a comment that stops being true, fails here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchback::agent::ProbeSpec;
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::bin::switchback_bin;
use switchback_tests::files::copy_tree;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::kube::kubectl::{Kubectl, tool_bin};
use switchback_tests::kube::kubelet::{KubeletOptions, NGINX_PORT, ProcessKubelet};
use switchback_tests::load::{Load, LoadSpec, PER_POD_RPS};
use switchback_tests::operator_fixture::PATIENCE;
use switchback_tests::pod_process::PodProcess;
use switchback_tests::upstream::Upstream;

#[path = "docs_quickstart/page.rs"]
mod page;
#[path = "docs_quickstart/watch.rs"]
mod watch;

use page::{PageCommand, commands, expectation};
use watch::watch_says;

/// The page's world: a server, kubelet, tools on PATH, a work directory holding the chart and the
/// examples, a clone of "your repository" and its bare origin.
struct World {
    k: Kubectl,
    _kubelet: ProcessKubelet,
    tmp: tempfile::TempDir,
    work: PathBuf,
    clone: PathBuf,
    path: String,
    controller: Option<PodProcess>,
    app: (Upstream, Upstream),
    /// The stand-in users, while the page's `load` pod exists.
    users: Option<Load>,
}

impl World {
    /// Runs `line` with bash as a reader of the page would, in the work directory, and returns
    /// (success, stdout, stderr).
    async fn sh(&self, line: &str) -> (bool, String, String) {
        let out = tokio::process::Command::new("bash")
            .args(["-o", "pipefail", "-c", line])
            .current_dir(&self.work)
            .env("PATH", &self.path)
            .env("KUBECONFIG", self.k.server.kubeconfig_path())
            .env("HOME", self.tmp.path().join("home"))
            .env("GIT_DIR", self.clone.join(".git"))
            .env("GIT_WORK_TREE", &self.clone)
            .output()
            .await
            .expect("run bash");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `line` until `check` holds of its output (a reader re-running a `get` until it shows
    /// what the page says), failing with the last output after [`PATIENCE`].
    async fn until(&self, line: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (ok, out, err) = self.sh(line).await;
            if ok && check(&out) {
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{line}` never showed {what}:\nstdout: {out}\nstderr: {err}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Commits everything in the clone and pushes it, as the page's step 4 does.
    fn push(&self, message: &str) -> String {
        git(&self.clone, &["commit", "-qam", message]);
        git(&self.clone, &["push", "-q", "origin", "main"]);
        git(&self.clone, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn world() -> Option<World> {
    if !nginx_available() {
        return None;
    }
    let helm = tool_bin("helm")?;
    let k = Kubectl::up().await?;
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(tmp.path().join("home")).expect("mkdir");
    // The reader's git knows who they are.
    std::fs::write(
        tmp.path().join("home/.gitconfig"),
        "[user]\n\tname = Quick Start\n\temail = reader@example.test\n",
    )
    .expect("write .gitconfig");
    let kubectl = tool_bin("kubectl")?;
    for (name, target) in [
        ("kubectl", kubectl.as_path()),
        ("helm", helm.as_path()),
        ("kubectl-switchback", switchback_bin().as_path()),
    ] {
        std::os::unix::fs::symlink(target, bin.join(name)).expect("symlink");
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // "Your application": two servers the `app` upstream points at.
    let app = (
        Upstream::start("app\n").await,
        Upstream::start("app\n").await,
    );
    // "Your repository": examples/basic at examples/basic, upstreams pointed at the app.
    let origin = tmp.path().join("origin.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    let clone = tmp.path().join("config");
    copy_tree(
        &root().join("examples/basic"),
        &clone.join("examples/basic"),
    );
    let upstreams = clone.join("examples/basic/conf.d/upstreams.conf");
    let text = std::fs::read_to_string(&upstreams).expect("upstreams.conf");
    let text = text
        .replace("127.0.0.1:9001", &app.0.addr().to_string())
        .replace("127.0.0.1:9002", &app.1.addr().to_string());
    std::fs::write(&upstreams, text).expect("write");
    git(&clone, &["init", "-q", "-b", "main"]);
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-qm", "examples/basic"]);
    git(
        &clone,
        &["remote", "add", "origin", &origin.display().to_string()],
    );
    git(&clone, &["push", "-q", "-u", "origin", "main"]);

    // The reader's checkout: the chart and the examples, with the ProxyRollout's URL set (and,
    // for speed, its interval and bake shortened: the default 3m bake to 8s, in which the test's
    // users give a step's canary pod enough for a verdict, and the probes alone do not).
    let work = tmp.path().join("switchback");
    copy_tree(&root().join("charts"), &work.join("charts"));
    copy_tree(&root().join("examples"), &work.join("examples"));
    let rollout = work.join("examples/kubernetes/proxy/30-proxyrollout.yaml");
    let text = std::fs::read_to_string(&rollout).expect("30-proxyrollout.yaml");
    let edited = text
        .replace(
            "https://git.example.test/platform/switchback.git",
            &format!("file://{}", origin.display()),
        )
        .replace("interval: 30s", "interval: 1s")
        .replace("bake: 3m", "bake: 8s");
    assert!(
        edited.matches("file://").count() == 1
            && edited.contains("interval: 1s")
            && edited.contains("bake: 8s")
            && !edited
                .lines()
                .any(|l| l.trim_start().starts_with("onInconclusive:")),
        "30-proxyrollout.yaml no longer has the url, interval and bake the quickstart edits:\n{text}"
    );
    std::fs::write(&rollout, edited).expect("write");

    // The proxy Deployment's probe, as its args give it.
    let options = KubeletOptions {
        probes: vec![deployment_probe()],
        labels: vec![(
            "app.kubernetes.io/name".to_string(),
            "edge-nginx".to_string(),
        )],
        ..KubeletOptions::new([0, 106])
    };
    let kubelet = ProcessKubelet::start(&k.server, options).expect("kubelet");
    Some(World {
        k,
        _kubelet: kubelet,
        tmp,
        work,
        clone,
        path,
        controller: None,
        app,
        users: None,
    })
}

/// The `--probe` of the example proxy Deployment, as its agents run it.
fn deployment_probe() -> ProbeSpec {
    let text = std::fs::read_to_string(root().join("examples/kubernetes/proxy/20-deployment.yaml"))
        .expect("20-deployment.yaml");
    let arg = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --probe="))
        .expect("the Deployment's --probe argument");
    arg.parse()
        .unwrap_or_else(|e| panic!("the Deployment's --probe={arg} does not parse: {e}"))
}

/// Creates the Deployment's pods from its template, as its ReplicaSet would.
async fn create_deployment_pods(w: &World, namespace: &str, deployment: &str) -> usize {
    let d =
        w.k.json(&["get", "-n", namespace, "deployment", deployment])
            .await;
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    for i in 0..replicas {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{deployment}-{i}"),
                "namespace": namespace,
                "labels": d["spec"]["template"]["metadata"]["labels"],
            },
            "spec": d["spec"]["template"]["spec"],
        });
        let file =
            w.k.file(&format!("{deployment}-{i}.json"), &pod.to_string());
        w.k.ok(&["apply", "-f", &file]).await;
    }
    replicas
}

/// The page, run. Each command must succeed; the comments that state a result are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quickstart_command_does_what_the_page_says() {
    let page = std::fs::read_to_string(root().join("docs/quickstart.md")).expect("the page");
    let steps = commands(&page);
    assert!(steps.len() >= 12, "too few commands found: {steps:?}");
    let Some(mut w) = world().await else { return };
    let mut replicas = 0;
    let mut pushed = Vec::new();
    for cmd in &steps {
        let run = substituted(&cmd.line);
        let line = run.as_str();
        eprintln!("$ {line}");
        if cmd.section.starts_with("6.") && pushed.len() == 2 {
            // The prose of step 6: both app servers moved to a port nothing listens on, pushed.
            let upstreams = w.clone.join("examples/basic/conf.d/upstreams.conf");
            let text = std::fs::read_to_string(&upstreams).expect("upstreams.conf");
            let text = text
                .replace(&w.app.0.addr().to_string(), "127.0.0.1:9")
                .replace(&w.app.1.addr().to_string(), "127.0.0.1:9");
            std::fs::write(&upstreams, text).expect("write");
            pushed.push(w.push("move app"));
        }
        if line.starts_with("git commit") {
            // Steps 4 and 5's routine changes: the proxy's read timeout, 5 s longer each time.
            longer_read_timeout(&w.clone);
        }
        if line.ends_with(" -w") {
            watch_says(&w, cmd).await;
            continue;
        }
        let out = match expectation(cmd, &pushed, replicas) {
            Some((what, check)) => w.until(line, &what, check).await,
            None => {
                let (ok, out, err) = w.sh(line).await;
                assert!(ok, "`{line}` failed:\nstdout: {out}\nstderr: {err}");
                out
            }
        };
        eprintln!("{out}");
        if line.starts_with("helm install") {
            start_controller(&mut w).await;
        }
        if line.contains("20-deployment.yaml") {
            replicas = create_deployment_pods(&w, "proxies", "edge-nginx").await;
        }
        if cmd.comment.contains("not Ready") {
            assert_pods_ready(&w, false).await;
        }
        if line.contains("wait --for=condition=Ready pod") {
            assert_pods_ready(&w, true).await;
        }
        if line.starts_with("git commit") {
            pushed.push(git(&w.clone, &["rev-parse", "HEAD"]).trim().to_string());
        }
        if line.starts_with("kubectl switchback promote") {
            // "the change becomes stable on every pod now".
            let want = format!("{} Idle {replicas}/{replicas}", pushed[0]);
            let get = "kubectl -n proxies get prx edge -o jsonpath='{.status.stable.commit} {.status.phase} {.status.pods.ready}'";
            w.until(get, &want.clone(), move |o| o.trim() == want).await;
        }
        if line.contains(" run load ") {
            // Nothing runs the `load` pod here: the test's users stand in for it, at 50
            // requests/s to each proxy pod, with the page's Host, while the pod exists.
            let client = w.k.server.client().await;
            let spec = LoadSpec::new(PER_POD_RPS).host("shop.example.test");
            let selector = "app.kubernetes.io/name=edge-nginx";
            let users = Load::follow_pods(client, "proxies", selector, NGINX_PORT, spec);
            users.wait_flowing(replicas, 100, PATIENCE).await;
            w.users = Some(users);
        }
        if line.contains("delete pod load") {
            let users = w.users.take().expect("the users came with the load pod");
            let seen = users.stop().await;
            assert!(
                seen.tally.status_502 > 0 && seen.tally.requests > 10 * seen.tally.failed,
                "the users were served, and got the outage's 502s until the rollback: {seen:?}"
            );
        }
    }
    assert_eq!(pushed.len(), 3, "steps 4, 5 and 6 each pushed a commit");
    if let Some(pod) = w.controller.take() {
        pod.stop().await;
    }
}

/// The command as run here: `helm install` also allows local sources, since "your repository"
/// is a local bare one (`file://`), which the controller follows only when told to (issue 13).
fn substituted(line: &str) -> String {
    if line.starts_with("helm install") {
        format!("{line} --set git.allowInsecureSources=true")
    } else {
        line.to_string()
    }
}

/// The reader's routine change: `proxy.read_timeout` in `values.yaml`, 5 s longer.
fn longer_read_timeout(clone: &Path) {
    let values = clone.join("examples/basic/values.yaml");
    let text = std::fs::read_to_string(&values).expect("values.yaml");
    let (before, after) = text
        .split_once("read_timeout: ")
        .expect("values.yaml sets proxy.read_timeout");
    let (secs, rest) = after.split_once("s\n").expect("read_timeout: <n>s");
    let secs: u32 = secs.parse().expect("read_timeout in seconds");
    let text = format!("{before}read_timeout: {}s\n{rest}", secs + 5);
    std::fs::write(&values, text).expect("write values.yaml");
}

/// Runs the chart's controller Deployment as its pod would run, once `helm install` made it.
async fn start_controller(w: &mut World) {
    let scratch = w.tmp.path().join("controller-pod");
    let ip: std::net::IpAddr = "127.0.106.250".parse().expect("an address");
    let mut pod = PodProcess::start_deployment(
        &w.k,
        "switchback",
        "switchback",
        &switchback_bin(),
        ip,
        &scratch,
    )
    .await
    .expect("start the chart's controller pod");
    let probe =
        w.k.ok(&[
            "get",
            "-n",
            "switchback",
            "deploy",
            "switchback",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].readinessProbe.httpGet.path}",
        ])
        .await;
    pod.wait_ready(&probe, PATIENCE).await;
    w.controller = Some(pod);
}

/// Every proxy pod's `Ready` condition is `ready` (the readiness gate decides it).
async fn assert_pods_ready(w: &World, ready: bool) {
    let want = if ready { "True" } else { "False" };
    let path = "{range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let out =
            w.k.ok(&[
                "get",
                "pods",
                "-n",
                "proxies",
                "-o",
                &format!("jsonpath={path}"),
            ])
            .await;
        if !out.trim().is_empty() && out.split_whitespace().all(|s| s == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "proxy pods' Ready never became {want}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
