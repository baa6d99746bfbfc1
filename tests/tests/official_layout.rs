//! A repository laid out like the official nginx image's `/etc/nginx` (`examples/official-layout`:
//! absolute includes of `/etc/nginx/mime.types` and `/etc/nginx/conf.d/*.conf`, `user nginx`,
//! logs under `/var/log/nginx`, `listen 80` and `[::]:80`, plus two site files) validates with no
//! edits, with the image's own files (`mime.types`, `fastcgi_params`) taken from the nginx that
//! runs `nginx -t` or from a named directory, and rolls out through `switchback local` on the
//! default strategy (only the bake shortened) with users on every pod.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::bin::switchback_bin;
use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::load::{Load, LoadSpec, PER_POD_RPS};
use switchback_tests::local_run::{Running, wait_for};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/official-layout")
}

/// `switchback validate DIR --format json` with `extra` flags: its JSON and exit code.
fn validate(dir: &Path, extra: &[&str]) -> (Value, i32) {
    let out = Command::new(switchback_bin())
        .arg("validate")
        .arg(dir)
        .args(["--format", "json"])
        .args(if extra.contains(&"--no-nginx") {
            &[][..]
        } else {
            &["--require-nginx"][..]
        })
        .args(extra)
        .output()
        .expect("run switchback validate");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out.status.code().unwrap_or(-1))
}

fn image_paths(report: &Value) -> Vec<&str> {
    report["image_files"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["path"].as_str()).collect())
        .unwrap_or_default()
}

/// The nginx build's configuration directory (`--conf-path`'s), where its packaged files are.
fn nginx_conf_dir() -> PathBuf {
    let out = Command::new("nginx").arg("-V").output().expect("nginx -V");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.split_whitespace()
        .find_map(|a| a.strip_prefix("--conf-path="))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
        .expect("nginx -V names --conf-path")
}

#[test]
fn the_official_layout_validates_unedited_and_says_which_files_came_from_the_image() {
    if !nginx_available() {
        return;
    }
    let (report, code) = validate(&example(), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["nginx"]["status"], "ran", "{report:#}");
    assert_eq!(report["config_root"], "/etc/nginx");
    assert_eq!(
        image_paths(&report),
        ["/etc/nginx/mime.types", "/etc/nginx/fastcgi_params"],
        "{report:#}"
    );
    let conf_dir = nginx_conf_dir().display().to_string();
    for used in report["image_files"].as_array().into_iter().flatten() {
        let from = used["from"].as_str().unwrap_or_default();
        assert!(from.starts_with(&conf_dir), "{used}");
    }

    // A full copy of /etc/nginx (the image's files committed too): nothing comes from the image.
    let tmp = tempfile::tempdir().expect("tempdir");
    switchback_tests::files::copy_tree(&example(), tmp.path());
    for name in ["mime.types", "fastcgi_params"] {
        std::fs::copy(nginx_conf_dir().join(name), tmp.path().join(name)).expect("copy");
    }
    let (report, code) = validate(tmp.path(), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(image_paths(&report), Vec::<&str>::new(), "{report:#}");
}

#[test]
fn image_files_from_a_named_directory_are_read_and_checked_like_the_bundle() {
    if !nginx_available() {
        return;
    }
    let image = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        image.path().join("mime.types"),
        "types {\n  text/html html\n",
    )
    .expect("w");
    std::fs::copy(
        nginx_conf_dir().join("fastcgi_params"),
        image.path().join("fastcgi_params"),
    )
    .expect("copy");
    let dir = image.path().display().to_string();
    let (report, code) = validate(&example(), &["--image-files", &dir]);
    assert_eq!(code, 1, "{report:#}");
    let errors: Vec<(&str, &str, u64)> = report["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["rule"].as_str().unwrap_or_default(),
                d["path"].as_str().unwrap_or_default(),
                d["line"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [("SB001", "/etc/nginx/mime.types", 3)],
        "{report:#}"
    );
    assert!(
        report["image_files"][0]["from"]
            .as_str()
            .is_some_and(|f| f == dir),
        "{report:#}"
    );
}

#[test]
fn paths_outside_the_config_root_are_still_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    switchback_tests::files::copy_tree(&example(), tmp.path());
    let site = tmp.path().join("conf.d/app.conf");
    let text = std::fs::read_to_string(&site).expect("read");
    std::fs::write(
        &site,
        text.replace(
            "include /etc/nginx/snippets/proxy.conf;",
            "include /etc/nginx/../shadow;",
        ),
    )
    .expect("write");
    let (report, code) = validate(tmp.path(), &["--no-nginx"]);
    assert_eq!(code, 1, "{report:#}");
    let first = &report["diagnostics"][0];
    assert_eq!(first["rule"], "SB003", "{report:#}");
    assert_eq!(first["path"], "conf.d/app.conf");
    // Another config root: the same files no longer stand for /etc/nginx.
    let (report, code) = validate(&example(), &["--no-nginx", "--config-root", "/opt/nginx"]);
    assert_eq!(code, 1, "{report:#}");
    assert!(
        report["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|d| d["rule"] == "SB003"),
        "{report:#}"
    );
}

/// The response head of `GET /` from `addr`.
fn head_of(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn switchback_local_rolls_the_official_layout_out_and_promotes_a_site_edit() {
    if !nginx_available() {
        return;
    }
    let tmp = switchback_tests::files::searchable_tempdir();
    let repo = tmp.path().join("repo");
    switchback_tests::files::copy_tree(&example(), &repo);
    switchback_tests::files::official_layout_port_unless_root(&repo);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &["commit", "-q", "-m", "the image's layout, two sites"],
    );

    let child = Command::new(switchback_bin())
        .args(["local", "--repo"])
        .arg(&repo)
        .args([
            "--pods",
            "3",
            "--subnet",
            "0.22",
            // The default bake (3m) shortened, every policy at its default.
            "--bake",
            "8",
            "--poll",
            "0.3",
            "--events",
            "json",
            "--upstream",
            "app-1=127.0.22.2:9001",
            "--dir",
        ])
        .arg(tmp.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start switchback local");
    let mut child = Running(child);
    let lines = child.lines();
    let mut seen = Vec::new();
    wait_for(&lines, "\"adopted\"", &mut seen);
    let pods: Vec<SocketAddr> = (10..13)
        .map(|octet| SocketAddr::from(([127, 0, 22, octet], 8080)))
        .collect();
    // The snippet included by its absolute path reached the pods: nginx proxies to the app.
    assert!(
        head_of(pods[0]).starts_with("HTTP/1.1 200"),
        "{}",
        head_of(pods[0])
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the users");
    let users = {
        let _in = runtime.enter();
        Load::fixed(pods.clone(), LoadSpec::new(PER_POD_RPS))
    };
    runtime.block_on(users.wait_flowing(3, 150, Duration::from_secs(60)));

    let snippet = repo.join("snippets/proxy.conf");
    let mut text = std::fs::read_to_string(&snippet).expect("read");
    text.push_str("add_header X-Layout official always;\n");
    std::fs::write(&snippet, text).expect("write");
    git(&repo, &["commit", "-q", "-am", "a header from the snippet"]);
    wait_for(&lines, "\"Promoted\"", &mut seen);
    let answered = runtime.block_on(users.stop());
    assert_eq!(answered.tally.status_5xx, 0, "{answered:?}");
    for pod in pods {
        let head = head_of(pod).to_ascii_lowercase();
        assert!(head.contains("x-layout: official"), "{pod}: {head}");
    }
}
