//! Tests of the sandbox copy planner, through the real parser (no nginx needed).

use super::rewrite::*;
use crate::validate::parser::parse_bundle;
use crate::validate::paths::ConfigRoot;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rewritten entry file of a one-file bundle, and the plan.
fn rewritten(src: &str, as_root: bool) -> (String, Plan) {
    let files = BTreeMap::from([("nginx.conf".to_string(), src.as_bytes().to_vec())]);
    let (config, _) = parse_bundle(&files, "nginx.conf");
    let layout = Layout::new(Path::new("/T"), PathBuf::from("/mods"));
    let root = ConfigRoot::default();
    let temp_paths = ["client_body_temp_path".to_string()];
    let opts = Options {
        layout: &layout,
        entry: "nginx.conf",
        files: &files,
        as_root,
        temp_paths: &temp_paths,
        config_root: &root,
    };
    let Ok(plan) = plan(&config, &opts) else {
        panic!("no plan");
    };
    let edits = plan.edits.get("nginx.conf").cloned().unwrap_or_default();
    let out = super::edit::apply(src.as_bytes(), &edits);
    (String::from_utf8_lossy(&out).into_owned(), plan)
}

#[test]
fn the_sandbox_copy_keeps_every_line_and_rewrites_what_nginx_would_touch() {
    let src = "user www-data;\npid /run/nginx.pid;\nload_module modules/ngx_x.so;\nevents {}\n\
               http { # main\n  upstream app { server app.internal:8080; }\n  \
               map $a $b { default pid.example; }\n  \
               server {\n    listen 80;\n    listen *:80 \"default_server\";\n    \
               location / { proxy_pass http://app; }\n    \
               location /x { proxy_pass http://x.internal/; }\n    \
               ssl_certificate /etc/ssl/site.pem;\n  }\n}\n";
    let (out, plan) = rewritten(src, true);
    assert_eq!(out.lines().count(), src.lines().count());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "user root;");
    assert_eq!(lines[1], "pid /T/root/run/nginx.pid;");
    assert_eq!(lines[2], "load_module /mods/ngx_x.so;");
    assert_eq!(
        lines[4],
        "http { client_body_temp_path /T/root/_default/client_body_temp; \
         access_log /T/root/_default/access.log;  # main"
    );
    assert_eq!(lines[5], "  upstream app { server 127.0.0.1:8080; }");
    assert_eq!(lines[6], "  map $a $b { default pid.example; }");
    assert_eq!(lines[8], "    listen unix:/T/s/1;");
    assert_eq!(lines[9], "    listen unix:/T/s/1 \"default_server\";");
    assert_eq!(lines[10], "    location / { proxy_pass http://app; }");
    assert_eq!(
        lines[11],
        "    location /x { proxy_pass http://127.0.0.1/; }"
    );
    assert_eq!(lines[12], "    ssl_certificate /T/root/etc/ssl/site.pem;");
    assert!(plan.has_pid);
    assert_eq!(
        plan.sockets,
        [("unix:/T/s/1".to_string(), "0.0.0.0:80".to_string())]
    );
    assert_eq!(
        plan.placeholders.get(Path::new("/T/root/etc/ssl/site.pem")),
        Some(&Placeholder::CertAndKey)
    );
    assert_eq!(plan.external.len(), 1);
    assert!(plan.dirs.contains(Path::new("/T/root/run")));
}

#[test]
fn includes_inside_data_blocks_are_still_kept_in_the_bundle() {
    let src = "http {\n  types {\n    include /opt/nginx/mime.types;\n    include /etc/nginx/x.types;\n    text/x-pid pid;\n  }\n}\n";
    let (out, _) = rewritten(src, false);
    let lines: Vec<&str> = out.lines().collect();
    // Outside the config root: the empty mirror. Below it: the sandbox copy of the bundle.
    assert_eq!(lines[2], "    include /T/root/opt/nginx/mime.types;");
    assert_eq!(lines[3], "    include /T/conf/x.types;");
    assert_eq!(lines[4], "    text/x-pid pid;");
}

#[test]
fn without_root_user_stays_and_set_defaults_are_not_pinned_twice() {
    let src = "user www-data;\nevents {}\nhttp {\n  client_body_temp_path /var/tmp/body;\n  access_log off;\n}\n";
    let (out, plan) = rewritten(src, false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "user www-data;");
    assert_eq!(lines[2], "http {");
    assert_eq!(lines[3], "  client_body_temp_path /T/root/var/tmp/body;");
    assert_eq!(lines[4], "  access_log off;");
    assert!(!plan.has_pid);
}

#[test]
fn tls_directives_have_kinds() {
    assert_eq!(
        placeholder_kind("proxy_ssl_certificate_key"),
        Some(Placeholder::CertAndKey)
    );
    assert_eq!(placeholder_kind("ssl_crl"), Some(Placeholder::Crl));
    assert_eq!(placeholder_kind("ssl_protocols"), None);
}

#[test]
fn layered_include_globs_are_planned_once_per_file() {
    // 20 + 400 + 8,000 inclusions of 60 files: nginx reads each file at every include of it,
    // but the rewrite of a file depends only on the file and its context.
    let files = crate::validate::parser::tests_include::layered(3, 20);
    let (config, diags) = parse_bundle(&files, "nginx.conf");
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
    let layout = Layout::new(Path::new("/T"), PathBuf::from("/mods"));
    let root = ConfigRoot::default();
    let opts = Options {
        layout: &layout,
        entry: "nginx.conf",
        files: &files,
        as_root: false,
        temp_paths: &[],
        config_root: &root,
    };
    let Ok(plan) = plan(&config, &opts) else {
        panic!("no plan");
    };
    assert!(
        plan.files_walked <= files.len(),
        "{} file walks for {} files",
        plan.files_walked,
        files.len()
    );
}
