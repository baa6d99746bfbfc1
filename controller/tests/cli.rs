//! The `switchback` binary as a user runs it: exit codes, what it prints, on the shipped examples.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn switchback(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchback"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run switchback")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_basic_example_validates_clean_without_nginx() {
    let out = switchback(&["validate", "--no-nginx", "examples/basic"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("ok: 0 error(s), 0 warning(s)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_broken_example_is_rejected_naming_file_line_and_rule() {
    let out = switchback(&["validate", "--no-nginx", "examples/broken"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("examples/broken/conf.d/upstreams.conf:17:12: error[SB103]:"),
        "{text}"
    );
    assert!(text.contains("91020"), "{text}");
}

#[test]
fn json_output_carries_the_diagnostics_for_scripts() {
    let out = switchback(&[
        "validate",
        "--no-nginx",
        "--format",
        "json",
        "examples/broken",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["passed"], false);
    let d = &report["diagnostics"][0];
    assert_eq!(
        (d["path"].as_str(), d["line"].as_u64(), d["rule"].as_str()),
        (Some("conf.d/upstreams.conf"), Some(17), Some("SB103"))
    );
}

#[test]
fn a_render_error_is_a_finding_with_template_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("nginx.conf.j2"),
        "events {}\nhttp {\n  server { listen {{ site.port }}; }\n}\n",
    )
    .expect("write");
    let out = switchback(&["validate", "--no-nginx", dir.path().to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("nginx.conf.j2:3:0: error[SB010]:"), "{text}");
    assert!(text.contains("site.port"), "{text}");
}

#[test]
fn set_overrides_values_and_changes_the_digest() {
    let digest = |extra: &[&str]| {
        let mut args = vec!["render", "--format", "json", "examples/basic"];
        args.extend_from_slice(extra);
        let out = switchback(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["digest"].as_str().expect("digest").to_string()
    };
    let base = digest(&[]);
    assert_eq!(base, digest(&[]));
    assert_ne!(base, digest(&["--set", "site.listen=8081"]));
}

#[test]
fn render_out_writes_the_bundle() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = switchback(&[
        "render",
        "examples/basic",
        "--out",
        out_dir.path().to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let site = std::fs::read_to_string(out_dir.path().join("conf.d/site.conf")).expect("site");
    assert!(site.contains("listen 8080 default_server;"), "{site}");
    assert!(!out_dir.path().join("values.yaml").exists());
}

#[test]
fn usage_and_environment_errors_exit_2() {
    assert_eq!(switchback(&["validate", "--bogus"]).status.code(), Some(2));
    assert_eq!(
        switchback(&["validate", "no/such/dir"]).status.code(),
        Some(2)
    );
    assert_eq!(
        switchback(&["validate", "--nginx", "/no/such/nginx", "examples/basic"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn rules_lists_every_rule_and_prints_a_page() {
    let list = stdout(&switchback(&["rules"]));
    assert!(list.lines().count() >= 14, "{list}");
    let page = switchback(&["rules", "sb103"]);
    assert_eq!(page.status.code(), Some(0));
    assert!(stdout(&page).starts_with("# SB103 bad-upstream-server"));
    assert_eq!(switchback(&["rules", "SB999"]).status.code(), Some(2));
}

/// Tests that need the real nginx fail without it (`make test` installs nginx-light), unless
/// `SWITCHBACK_SKIP_NGINX=1` says to skip them, loudly.
fn nginx_available() -> bool {
    let present = switchback(&["version", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&present.stdout).expect("json");
    if !v["nginx"].is_null() {
        return true;
    }
    if std::env::var("SWITCHBACK_SKIP_NGINX").as_deref() == Ok("1") {
        eprintln!("SKIPPED: no nginx binary and SWITCHBACK_SKIP_NGINX=1");
        return false;
    }
    panic!("no nginx binary: run `make tools` (or set SWITCHBACK_SKIP_NGINX=1 to skip)");
}

#[test]
fn the_basic_example_passes_the_real_nginx_t() {
    if !nginx_available() {
        return;
    }
    let out = switchback(&["validate", "--require-nginx", "examples/basic"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("nginx -t passed"), "{}", stdout(&out));
}

#[test]
fn what_only_nginx_knows_is_reported_as_sb900_at_the_bundle_line() {
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
    std::fs::write(
        dir.path().join("nginx.conf"),
        "events {}\nhttp {\n    include conf.d/*.conf;\n}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("conf.d/site.conf"),
        "upstream app { server 127.0.0.1:9001; }\nserver {\n    listen 8080;\n    location / {\n        proxy_pass http://app;\n    }\n    location ~ ^/v1/(x {\n        return 200;\n    }\n}\n",
    )
    .expect("write");
    let path = dir.path().to_str().expect("utf8");
    let out = switchback(&["validate", "--require-nginx", path]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{path}/conf.d/site.conf:7:5: error[SB900]:")),
        "{text}"
    );
    assert!(text.contains("missing closing parenthesis"), "{text}");
}
