//! `make docs-check`: every shell command of `docs/quickstart.md`, in order, run by bash against
//! the test API server, with real kubectl, helm, git and nginx, and the page's comments checked.
//!
//! What stands in for a cluster is what the page's introduction says: the chart's controller runs
//! as one [`PodProcess`] from the chart's Deployment, the proxy Deployment's pods are created as a
//! ReplicaSet would and run by the process kubelet (their agents read the token Secret they
//! mount, and readiness gates are honoured), "your repository" is a local bare one (so `helm
//! install` also sets `git.allowInsecureSources=true`), "your application" two loopback servers,
//! and the ProxyRollout's `interval`/`bake` are shortened.
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
use switchback_tests::kube::kubelet::{KubeletOptions, ProcessKubelet};
use switchback_tests::operator_fixture::PATIENCE;
use switchback_tests::pod_process::PodProcess;
use switchback_tests::upstream::Upstream;

/// One command of the page: its text (continuation lines joined) and the comment after it.
#[derive(Debug, Clone, PartialEq)]
struct PageCommand {
    section: String,
    line: String,
    comment: String,
}

/// The `sh` blocks of `page`, command by command, with the `## ` section each is under.
fn commands(page: &str) -> Vec<PageCommand> {
    let mut out = Vec::new();
    let (mut section, mut in_block, mut pending) = (String::new(), false, String::new());
    for raw in page.lines() {
        if let Some(title) = raw.strip_prefix("## ") {
            section = title.to_string();
        } else if raw.starts_with("```sh") {
            in_block = true;
        } else if raw.starts_with("```") {
            in_block = false;
        } else if in_block {
            let (code, comment) = split_comment(raw);
            pending.push_str(code.trim_end().trim_end_matches('\\'));
            if code.trim_end().ends_with('\\') {
                pending.push(' ');
                continue;
            }
            let line = pending.split_whitespace().collect::<Vec<_>>().join(" ");
            pending.clear();
            if !line.is_empty() {
                out.push(PageCommand {
                    section: section.clone(),
                    line,
                    comment: comment.trim().to_string(),
                });
            }
        }
    }
    out
}

/// A line's code and its trailing comment (`#` after whitespace, outside quotes).
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev_space => return (&line[..i], &line[i + 1..]),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    (line, "")
}

#[test]
fn the_page_parses_into_commands_with_their_comments() {
    let page = "## 1. A\n\n```sh\nkubectl get x   # shows x\nhelm install a \\\n  --set b={c}\n```\n\ntext # not code\n## 2. B\n```sh\nkubectl get y -o jsonpath='{.a#b}'\n```\n";
    let got = commands(page);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].line, "kubectl get x");
    assert_eq!(got[0].comment, "shows x");
    assert_eq!(got[1].line, "helm install a --set b={c}");
    assert_eq!(got[2].section, "2. B");
    assert_eq!(got[2].line, "kubectl get y -o jsonpath='{.a#b}'");
}

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
    // for speed, its interval and bake shortened).
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
        .replace("bake: 2m", "bake: 2s\n    onInconclusive: Promote");
    assert!(
        edited.matches("file://").count() == 1
            && edited.contains("interval: 1s")
            && edited.contains("bake: 2s\n    onInconclusive"),
        "30-proxyrollout.yaml no longer has the url, interval and bake the quickstart edits:\n{text}"
    );
    std::fs::write(&rollout, edited).expect("write");

    // The proxy Deployment's probe, as its args give it (rate raised so evidence comes quickly).
    let options = KubeletOptions {
        probes: vec![ProbeSpec {
            host: "shop.example.test".to_string(),
            path: "/".to_string(),
            status: 200,
            rate: 20.0,
        }],
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
    })
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
        if cmd.section.starts_with("5.") && pushed.len() == 1 {
            // The prose of step 5: both app servers moved to a port nothing listens on, pushed.
            let upstreams = w.clone.join("examples/basic/conf.d/upstreams.conf");
            let text = std::fs::read_to_string(&upstreams).expect("upstreams.conf");
            let text = text
                .replace(&w.app.0.addr().to_string(), "127.0.0.1:9")
                .replace(&w.app.1.addr().to_string(), "127.0.0.1:9");
            std::fs::write(&upstreams, text).expect("write");
            pushed.push(w.push("move app"));
        }
        if line.starts_with("git commit") {
            // Step 4's "routine change".
            let values = w.clone.join("examples/basic/values.yaml");
            let text = std::fs::read_to_string(&values).expect("values.yaml");
            std::fs::write(
                &values,
                text.replace("read_timeout: 15s", "read_timeout: 20s"),
            )
            .expect("write");
        }
        if line.ends_with(" -w") {
            watch_until_idle_again(&w, line).await;
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
    }
    assert_eq!(pushed.len(), 2, "steps 4 and 5 each pushed a commit");
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

/// What a command's output must show, when the page says (in a comment, or by what the step is
/// for), and a reader would re-run it until it does: (what, check).
type Check = Box<dyn Fn(&str) -> bool>;

fn expectation(cmd: &PageCommand, pushed: &[String], replicas: usize) -> Option<(String, Check)> {
    let line = cmd.line.as_str();
    let outage = pushed.get(1).cloned().unwrap_or_default();
    if line.contains("holderIdentity") {
        return Some(("a Lease holder".into(), Box::new(|o| !o.trim().is_empty())));
    }
    if cmd.comment.starts_with("STABLE") {
        let want = format!("{replicas}/{replicas}");
        return Some((
            format!("Idle and READY {want}"),
            Box::new(move |o| o.contains("Idle") && o.contains(&want)),
        ));
    }
    if line.starts_with("kubectl switchback status") {
        return Some((
            "the rollout's status".into(),
            Box::new(|o| o.contains("edge")),
        ));
    }
    if line.contains("quarantined[*].commit") {
        return Some((
            format!("{outage} quarantined"),
            Box::new(move |o| o.trim() == outage),
        ));
    }
    if line.contains("get events") {
        return Some((
            "a RolledBack event".into(),
            Box::new(|o| o.contains("RolledBack")),
        ));
    }
    if line.contains("report\\.md") {
        let short = outage.get(..12).unwrap_or_default().to_string();
        return Some((
            format!("a report naming {short}"),
            Box::new(move |o| !short.is_empty() && o.contains(&short)),
        ));
    }
    None
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

/// `kubectl get prx -w`, read until the rollout has left Idle and come back to it on the pushed
/// commit (the page's "Validating -> Canary ... -> Idle"), then stopped, as a reader would.
async fn watch_until_idle_again(w: &World, line: &str) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("bash")
        .args(["-c", &format!("exec {line}")])
        .current_dir(&w.work)
        .env("PATH", &w.path)
        .env("KUBECONFIG", w.k.server.kubeconfig_path())
        .env("HOME", w.tmp.path().join("home"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let head = git(&w.clone, &["rev-parse", "HEAD"]).trim().to_string();
    let (mut left_idle, mut seen) = (false, Vec::new());
    let done = tokio::time::timeout(PATIENCE * 2, async {
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("{l}");
            seen.push(l.clone());
            left_idle |= l.contains("Canary") || l.contains("Validating");
            // Idle with the pushed commit as STABLE: it went through (a fast rollout may have
            // left Idle before the watch began).
            if l.contains("Idle") && l.split_whitespace().nth(1) == Some(head.as_str()) {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    assert!(
        matches!(done, Ok(true)),
        "`{line}` never showed Idle on {head} (left Idle: {left_idle}):\n{}",
        seen.join("\n")
    );
}
