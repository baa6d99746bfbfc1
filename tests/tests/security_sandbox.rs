//! Security suite, validation sandbox (issue 13, items 1, 2 and the include globs of 9): each
//! test runs an attack from the adversarial review with the real parts (real nginx, a real shared
//! object built with gcc, real git, the real agent, the real `switchback` binary) and checks it
//! fails.
//!
//! Needs nginx and gcc (`make test` installs both). Without nginx the nginx tests fail unless
//! `SWITCHBACK_SKIP_NGINX=1`, which makes them say loudly that they skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchback::agent::wire::{ApplyOutcome, ApplyStep};
use switchback::render::Bundle;
use switchback::validate::parser::parse_bundle;
use switchback::validate::sandbox::Nginx;
use switchback_tests::agent_harness::{
    InProcess, Site, applied, free_addr, get, nginx_available, shutdown_leaves_nothing,
};
use switchback_tests::bin::switchback_bin;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::hostile::{Evil, run_measured};

/// The directive forms that load the bundle's library through the sandbox's working directory
/// (`/proc/self/cwd/conf/` is the bundle copy): (what, nginx.conf, line of the finding).
fn forms() -> Vec<(&'static str, String, u32)> {
    let so = "/proc/self/cwd/conf/evil.so";
    let tls = |directive: &str, quote: &str, prefix: &str| {
        format!(
            "events {{}}\nhttp {{\n  server {{\n    listen 443 ssl;\n    \
             ssl_certificate /etc/tls/site.pem;\n    \
             {directive} {quote}{prefix}{so}:key{quote};\n  }}\n}}\n"
        )
    };
    vec![
        ("ssl_engine", format!("ssl_engine {so};\nevents {{}}\n"), 1),
        (
            "ssl_engine, quoted",
            format!("events {{}}\nssl_engine \"{so}\";\n"),
            2,
        ),
        (
            "ssl_certificate_key engine:",
            tls("ssl_certificate_key", "\"", "engine:"),
            6,
        ),
        (
            "ssl_certificate_key ENGINE:, single quotes",
            tls("ssl_certificate_key", "'", "ENGINE:"),
            6,
        ),
        (
            "proxy_ssl_certificate_key engine:",
            format!(
                "events {{}}\nhttp {{\n  server {{\n    listen 80;\n    location / {{\n      \
                 proxy_pass https://127.0.0.1:9;\n      \
                 proxy_ssl_certificate /etc/tls/c.pem;\n      \
                 proxy_ssl_certificate_key \"engine:{so}:k\";\n    }}\n  }}\n}}\n"
            ),
            8,
        ),
        (
            "grpc_ssl_certificate_key Engine:",
            format!(
                "events {{}}\nhttp {{\n  server {{\n    listen 80 http2;\n    location / {{\n      \
                 grpc_pass grpcs://127.0.0.1:9;\n      \
                 grpc_ssl_certificate /etc/tls/c.pem;\n      \
                 grpc_ssl_certificate_key Engine:{so}:k;\n    }}\n  }}\n}}\n"
            ),
            8,
        ),
        (
            "load_module through /proc",
            format!("load_module {so};\nevents {{}}\n"),
            1,
        ),
        (
            "load_module of the bundle's file",
            "load_module evil.so;\nevents {}\n".to_string(),
            1,
        ),
    ]
}

fn nginx_here() -> bool {
    let skip = std::env::var("SWITCHBACK_SKIP_NGINX").is_ok_and(|v| v == "1");
    match Nginx::find(None) {
        Ok(Some(_)) => true,
        Ok(None) if skip => {
            eprintln!(
                "\n!!!!!!!! SKIPPING a security test: no nginx and SWITCHBACK_SKIP_NGINX=1 !!!!!!!!\n"
            );
            false
        }
        other => panic!("nginx is needed for the security suite: {other:?}"),
    }
}

fn write_bundle(dir: &Path, conf: &str, so: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    std::fs::write(dir.join("evil.so"), so).expect("write evil.so");
}

/// `switchback ARGS`: (exit code, stdout, stderr).
fn switchback(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(switchback_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run switchback");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(what: &str, out: &(Option<i32>, String, String), path: &str, line: u32) {
    let (code, stdout, stderr) = out;
    assert_eq!(*code, Some(1), "{what}: exit code\n{stdout}{stderr}");
    let want = format!("{path}:{line}:");
    let finding = stdout
        .lines()
        .find(|l| l.contains("error[SB109]"))
        .unwrap_or_else(|| panic!("{what}: no SB109 finding\n{stdout}{stderr}"));
    assert!(finding.contains(&want), "{what}: not at {want}: {finding}");
    assert!(
        finding.contains("evil.so"),
        "{what}: names no file: {finding}"
    );
    assert!(stdout.contains("nginx -t not run"), "{what}: {stdout}");
}

#[test]
fn ssl_engine_and_engine_keys_in_a_local_bundle_never_run_code() {
    if !nginx_here() {
        return;
    }
    let evil = Evil::build();
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (what, conf, line)) in forms().into_iter().enumerate() {
        let dir = tmp.path().join(format!("b{i}"));
        write_bundle(&dir, &conf, &evil.so);
        let out = switchback(&["validate", dir.to_str().expect("utf-8")]);
        assert!(!evil.ran(), "{what}: the library's constructor ran");
        let shown = format!("{}/nginx.conf", dir.display());
        assert_refused(what, &out, &shown, line);
    }
}

#[test]
fn ssl_engine_and_engine_keys_from_a_git_repo_never_run_code() {
    if !nginx_here() {
        return;
    }
    let evil = Evil::build();
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    let url = format!("file://{}", work.display());
    for (what, conf, line) in forms() {
        write_bundle(&work.join("edge"), &conf, &evil.so);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", what]);
        let out = switchback(&[
            "validate", "--repo", &url, "--rev", "main", "--path", "edge",
        ]);
        assert!(!evil.ran(), "{what}: the library's constructor ran");
        assert_refused(what, &out, "nginx.conf", line);
    }
}

#[test]
fn the_sandbox_refuses_code_loading_bundles_even_when_called_without_the_lint() {
    if !nginx_here() {
        return;
    }
    let nginx = Nginx::find(None)
        .expect("nginx usable")
        .expect("nginx found");
    let evil = Evil::build();
    for (what, conf, line) in forms() {
        let mut files = BTreeMap::new();
        files.insert("nginx.conf".to_string(), conf.into_bytes());
        files.insert("evil.so".to_string(), evil.so.clone());
        let bundle = Bundle::new(files);
        let (config, _) = parse_bundle(bundle.files(), "nginx.conf");
        let found = nginx
            .test(&bundle, "nginx.conf", &config)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!evil.ran(), "{what}: the library's constructor ran");
        assert!(
            found
                .iter()
                .any(|d| d.rule == "SB109" && d.line == line && d.path == "nginx.conf"),
            "{what}: {found:?}"
        );
    }
}

/// A certificate and key (outside any bundle), so that nginx gets as far as loading the key.
fn tls_pair(dir: &Path) -> PathBuf {
    let pem = dir.join("site.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=t",
            "-keyout",
        ])
        .arg(&pem)
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("cert.pem")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_refuses_bundles_that_load_code_before_its_nginx_test() {
    if !nginx_available() {
        return;
    }
    let evil = Evil::build();
    let site = Site::new();
    let cert = tls_pair(site.dir.path());
    let agent = InProcess::start(site.config(free_addr(), vec![])).await;
    let page = |version: &str| {
        format!(
            "events {{}}\nhttp {{\n  server {{\n    listen {};\n    \
             location / {{ return 200 \"{version}\\n\"; }}\n  }}\n}}\n",
            site.nginx
        )
    };
    // v1 carries the library but loads nothing: harmless, applied, and kept on the proxy.
    let mut files = BTreeMap::new();
    files.insert("nginx.conf".to_string(), page("v1").into_bytes());
    files.insert("evil.so".to_string(), evil.so.clone());
    let v1 = Bundle::new(files);
    let out = agent
        .client
        .apply(&v1, "c1", "nginx.conf")
        .await
        .expect("apply");
    assert!(applied(&out), "{out:?}");

    // Later bundles reach v1's copy by the state directory's paths.
    let kept = site
        .state
        .join("versions")
        .join(v1.digest().to_hex())
        .join("evil.so");
    let current = site.state.join("current").join("evil.so");
    let body = page("v2");
    let forms: Vec<(&str, String, &str)> = vec![
        (
            "ssl_engine, kept version",
            format!("ssl_engine {};\n{body}", kept.display()),
            "nginx.conf:1:1:",
        ),
        (
            "ssl_engine, current",
            format!("ssl_engine \"{}\";\n{body}", current.display()),
            "nginx.conf:1:1:",
        ),
        (
            "ssl_certificate_key engine:",
            format!(
                "events {{}}\nhttp {{\n  server {{\n    listen {} ssl;\n    \
                 ssl_certificate {};\n    ssl_certificate_key \"engine:{}:k\";\n  }}\n}}\n",
                site.nginx,
                cert.display(),
                current.display()
            ),
            "nginx.conf:6:",
        ),
        (
            "load_module relative to the prefix",
            format!("load_module current/evil.so;\n{body}"),
            "nginx.conf:1:1:",
        ),
        (
            "load_module, absolute path into the state directory",
            format!("load_module {};\n{body}", kept.display()),
            "nginx.conf:1:1:",
        ),
    ];
    for (i, (what, conf, at)) in forms.into_iter().enumerate() {
        let mut files = BTreeMap::new();
        files.insert("nginx.conf".to_string(), conf.into_bytes());
        let v2 = Bundle::new(files);
        let out = agent
            .client
            .apply(&v2, &format!("c{}", i + 2), "nginx.conf")
            .await
            .expect("apply");
        assert!(
            !evil.ran(),
            "{what}: the library's constructor ran in the agent"
        );
        let ApplyOutcome::ApplyFailed { step, reason, .. } = &out else {
            panic!("{what}: accepted: {out:?}");
        };
        assert_eq!(*step, ApplyStep::Prepare, "{what}: {reason}");
        assert!(
            reason.contains(at) && reason.contains("SB109") && reason.contains("evil.so"),
            "{what}: {reason}"
        );
        assert_eq!(
            get(site.nginx, "/").await,
            Some((200, "v1\n".into())),
            "{what}: nginx left v1"
        );
    }
    shutdown_leaves_nothing(agent).await;
}

/// A fake nginx that records the environment, the limits and the process group it runs with.
fn recording_nginx(dir: &Path, record: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("nginx");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = -V ]; then\n  echo 'nginx version: nginx/0.0.0-fake' >&2\n  \
         echo 'configure arguments: --prefix=/nonexistent' >&2\n  exit 0\nfi\n\
         {{ echo '== env'; env; echo '== limits'; cat /proc/self/limits; \
         echo '== group'; echo \"$$ $(cut -d' ' -f5 /proc/$$/stat)\"; }} > {}\n",
        record.display()
    );
    std::fs::write(&path, script).expect("write fake nginx");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The soft limit of a `/proc/<pid>/limits` row.
fn soft_limit(limits: &str, row: &str) -> String {
    let line = limits
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row:?} in\n{limits}"));
    line[row.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn nginx_test_runs_without_the_callers_secrets_and_under_limits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let record = tmp.path().join("record.txt");
    let fake = recording_nginx(tmp.path(), &record);
    let dir = tmp.path().join("conf");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("nginx.conf"), "events {}\n").expect("write");
    let secret = "tok-3e1f0c-never-leak";
    let out = Command::new(switchback_bin())
        .args(["validate", "--nginx"])
        .arg(&fake)
        .arg(&dir)
        .env("SWITCHBACK_AGENT_TOKEN", secret)
        .env("SWITCHBACK_GIT_TOKEN", secret)
        .env("SWITCHBACK_GIT_PASSWORD", secret)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .expect("run switchback");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&record).expect("the fake nginx ran");
    let env = text
        .split("== env\n")
        .nth(1)
        .and_then(|t| t.split("== limits\n").next())
        .expect("env section");
    assert!(!text.contains(secret), "a secret reached nginx -t:\n{env}");
    assert!(!env.contains("SWITCHBACK_"), "{env}");
    let tmpdir = env
        .lines()
        .find_map(|l| l.strip_prefix("TMPDIR="))
        .unwrap_or_else(|| panic!("no TMPDIR of its own:\n{env}"));
    assert!(
        tmpdir.contains("sb-nginx-"),
        "TMPDIR {tmpdir} is not the sandbox's"
    );
    for line in env.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(
            ["TMPDIR", "PWD", "SHLVL", "OLDPWD", "_"].contains(&name),
            "nginx -t inherited {name}:\n{env}"
        );
    }
    assert_eq!(soft_limit(&text, "Max cpu time"), "30");
    assert_eq!(soft_limit(&text, "Max data size"), (1u64 << 30).to_string());
    assert_eq!(
        soft_limit(&text, "Max file size"),
        (64u64 << 20).to_string()
    );
    assert_eq!(soft_limit(&text, "Max core file size"), "0");
    let group = text.split("== group\n").nth(1).expect("group section");
    let ids: Vec<&str> = group.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{group}");
    assert_eq!(ids[0], ids[1], "nginx -t leads its own process group");
}

/// The render child's address-space limit: no process of the run may get past it.
const RENDER_LIMIT_KIB: u64 = 512 * 1024;

fn render_bomb(template: &str) -> (String, u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("nginx.conf.j2"), template).expect("write");
    let mut cmd = Command::new(switchback_bin());
    cmd.arg("render").arg(tmp.path());
    run_measured(cmd, RENDER_LIMIT_KIB, Duration::from_secs(120))
}

#[test]
fn a_namespace_doubling_template_is_stopped_by_the_cpu_limit_with_bounded_memory() {
    let (stdout, peak) = render_bomb(
        "{% set ns = namespace(l=[\"x\"]) %}\n\
         {% for i in range(33) %}{% set ns.l = ns.l + ns.l %}{% endfor %}\nevents {}\n",
    );
    assert!(
        stdout.contains(
            "nginx.conf.j2:0:0: error[SB010]: rendering stopped: it reached the CPU limit"
        ),
        "{stdout}"
    );
    assert!(peak <= RENDER_LIMIT_KIB, "peak {peak} KiB");
}

#[test]
fn a_string_repetition_bomb_is_stopped_by_the_memory_limit() {
    let (stdout, peak) = render_bomb(
        "{% set ns = namespace(l=[]) %}{% set s = \"x\" * 5000000 %}\n\
         {% for i in range(100000) %}{% set ns.l = ns.l + [s ~ i] %}{% endfor %}\nevents {}\n",
    );
    assert!(
        stdout.contains("nginx.conf.j2:0:0: error[SB010]: rendering stopped: it reached the memory limit (512 MiB)"),
        "{stdout}"
    );
    assert!(peak <= RENDER_LIMIT_KIB, "peak {peak} KiB");
}

#[test]
fn layered_include_globs_are_refused_before_nginx_reads_them() {
    // 40 files, each including a glob of 40 files, each including a glob of 40 files: 65,640
    // file reads for nginx, from 121 files.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("nginx.conf"),
        "events {}\nhttp {\n  include l1/*.conf;\n}\n",
    )
    .expect("write");
    for level in 1..=3 {
        std::fs::create_dir_all(dir.join(format!("l{level}"))).expect("mkdir");
        for i in 0..40 {
            let body = if level < 3 {
                format!("include l{}/*.conf;\n", level + 1)
            } else {
                "gzip_types text/plain;\n".to_string()
            };
            std::fs::write(dir.join(format!("l{level}/f{i:02}.conf")), body).expect("write");
        }
    }
    let (code, stdout, stderr) = switchback(&["validate", dir.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let finding = stdout
        .lines()
        .find(|l| l.contains("error[SB002]"))
        .unwrap_or_else(|| panic!("no SB002\n{stdout}"));
    assert!(
        finding.contains("/l2/f")
            && finding.contains(".conf:1:9: error[SB002]: include \"l3/*.conf\""),
        "{finding}"
    );
    assert!(finding.contains("past 50000 file reads"), "{finding}");
    assert!(stdout.contains("nginx -t not run"), "{stdout}");
}
