//! Rule tests on real text through the real parser, so they also pin the parser's positions.

use std::collections::BTreeMap;

use super::lint;
use crate::validate::diagnostic::{Diagnostic, Severity};
use crate::validate::parser::parse_bundle;

pub(super) fn lint_files(files: &[(&str, &str)]) -> Vec<Diagnostic> {
    let files: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    let (config, parse_diags) = parse_bundle(&files, "nginx.conf");
    assert!(parse_diags.is_empty(), "parse: {parse_diags:?}");
    lint(&config)
}

pub(super) fn lint_http(body: &str) -> Vec<Diagnostic> {
    lint_files(&[("nginx.conf", &format!("events {{}}\nhttp {{\n{body}\n}}\n"))])
}

pub(super) fn rules(diags: &[Diagnostic]) -> Vec<(&str, u32)> {
    diags.iter().map(|d| (d.rule.as_str(), d.line)).collect()
}

const GOOD: &str = "upstream app {\n  server 127.0.0.1:8081;\n  server 127.0.0.1:8082 weight=2 max_fails=3 fail_timeout=10s;\n  keepalive 16;\n}\nserver {\n  listen 80;\n  server_name example.test;\n  location / {\n    proxy_set_header Host $host;\n    proxy_pass http://app;\n  }\n  location /ext/ {\n    proxy_pass http://127.0.0.1:8443/;\n  }\n  location /dyn/ {\n    proxy_pass http://$pool;\n  }\n}\nmap $cookie_canary $pool {\n  default app;\n  1 127.0.0.1:8083;\n}";

#[test]
fn a_good_config_has_no_findings() {
    assert_eq!(lint_http(GOOD), vec![]);
}

#[test]
fn proxy_pass_to_an_undefined_upstream_is_sb101_with_a_suggestion() {
    let d = lint_http(
        "upstream app-backend { server 127.0.0.1:8081; }\nserver {\n  listen 80;\n  location / { proxy_pass http://app_backend; }\n}",
    );
    assert_eq!(rules(&d), vec![("SB101", 6)]);
    assert_eq!(d[0].col, 27);
    assert!(
        d[0].message.contains("did you mean \"app-backend\""),
        "{}",
        d[0]
    );
}

#[test]
fn every_pass_directive_is_checked() {
    let d = lint_http(
        "server {\n  listen 80;\n  location /a { fastcgi_pass php; }\n  location /b { grpc_pass grpc://grpcsvc; }\n  location /c { uwsgi_pass py; }\n}",
    );
    assert_eq!(rules(&d), vec![("SB101", 5), ("SB101", 6), ("SB101", 7)]);
}

#[test]
fn port_on_an_upstream_name_is_sb101() {
    let d = lint_http(
        "upstream app { server 127.0.0.1:1; }\nserver { listen 80; location / { proxy_pass http://app:8080; } }",
    );
    assert_eq!(rules(&d), vec![("SB101", 4)]);
    assert!(d[0].message.contains("may not have port 8080"));
}

#[test]
fn proxy_pass_without_scheme_is_sb101() {
    let d = lint_http("server { listen 80; location / { proxy_pass app; } }");
    assert_eq!(rules(&d), vec![("SB101", 3)]);
    assert!(d[0].message.contains("invalid URL prefix"));
}

#[test]
fn empty_upstream_is_sb102() {
    let d = lint_http(
        "upstream app {\n  keepalive 4;\n}\nserver { listen 80; location / { proxy_pass http://app; } }",
    );
    assert_eq!(rules(&d), vec![("SB102", 3)]);
}

#[test]
fn bad_server_lines_are_sb103() {
    let d = lint_http(
        "upstream app {\n  server 127.0.0.1:80800;\n  server 10.0.0.300:80;\n  server 127.0.0.1:81 weight=0;\n  server 127.0.0.1:82 flaky;\n  server 127.0.0.1:83 fail_timeout=soon;\n  server 127.0.0.1:84;\n}",
    );
    assert_eq!(
        rules(&d),
        vec![
            ("SB103", 4),
            ("SB103", 5),
            ("SB103", 6),
            ("SB103", 7),
            ("SB103", 8)
        ]
    );
    assert!(
        d[0].message.contains("port 80800 is out of range"),
        "{}",
        d[0]
    );
    assert_eq!(d[0].col, 10);
}

#[test]
fn backup_with_hash_is_sb103() {
    let d = lint_http(
        "upstream app {\n  hash $remote_addr;\n  server 127.0.0.1:1;\n  server 127.0.0.1:2 backup;\n}",
    );
    assert_eq!(rules(&d), vec![("SB103", 6)]);
}

#[test]
fn all_down_or_backup_is_sb104() {
    let d =
        lint_http("upstream app {\n  server 127.0.0.1:1 down;\n  server 127.0.0.1:2 backup;\n}");
    assert_eq!(rules(&d), vec![("SB104", 3)]);
}

#[test]
fn stream_upstreams_need_ports_and_are_their_own_namespace() {
    let d = lint_files(&[(
        "nginx.conf",
        "events {}\nstream {\n  upstream db { server 127.0.0.1; }\n  server { listen 5432; proxy_pass db; }\n  server { listen 5433; proxy_pass dbx; }\n}\nhttp { server { listen 80; location / { proxy_pass http://db; } } }\n",
    )]);
    assert_eq!(rules(&d), vec![("SB103", 3), ("SB101", 5), ("SB101", 7)]);
}

#[test]
fn duplicate_server_name_on_same_listen_is_sb105() {
    let d = lint_http(
        "server { listen 80; server_name a.test b.test; }\nserver { listen 0.0.0.0:80; server_name b.test; }\nserver { listen 8080; server_name b.test; }",
    );
    assert_eq!(rules(&d), vec![("SB105", 4)]);
    assert!(d[0].message.contains("nginx.conf:3"));
}

#[test]
fn two_default_servers_is_sb105() {
    let d = lint_http(
        "server { listen 80 default_server; server_name a; }\nserver { listen 80 default_server; server_name b; }",
    );
    assert_eq!(rules(&d), vec![("SB105", 4)]);
}

#[test]
fn directive_in_wrong_context_is_sb106() {
    let d = lint_http(
        "server {\n  listen 80;\n  location / {\n    if ($http_x) {\n      proxy_set_header X 1;\n    }\n    proxy_pass http://127.0.0.1:1;\n  }\n}\nlisten 81;",
    );
    assert_eq!(rules(&d), vec![("SB106", 7), ("SB106", 12)]);
    assert!(d[0].message.contains("if (in location)"));
}

#[test]
fn unknown_directive_is_a_warning() {
    let d = lint_http("server { listen 80; more_set_headers \"X: 1\"; }");
    assert_eq!(rules(&d), vec![("SB107", 3)]);
    assert_eq!(d[0].severity, Severity::Warning);
}

#[test]
fn wrong_argument_count_and_block_shape_are_sb108() {
    let d = lint_http(
        "server { listen 80; proxy_set_header Host; location / { root /a /b; } }\nserver_tokens { }",
    );
    assert_eq!(rules(&d), vec![("SB108", 3), ("SB108", 3), ("SB108", 4)]);
}

#[test]
fn includes_are_linted_in_the_context_they_are_included_in() {
    let d = lint_files(&[
        (
            "nginx.conf",
            "events {}\nhttp {\n  include upstreams/*.conf;\n  include sites/*.conf;\n}\n",
        ),
        (
            "upstreams/app.conf",
            "upstream app { server 127.0.0.1:8081; }\n",
        ),
        (
            "sites/a.conf",
            "server {\n  listen 80;\n  location / { proxy_pass http://app; }\n  location /b { proxy_pass http://missing; }\n}\n",
        ),
    ]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].path, "sites/a.conf");
    assert_eq!((d[0].rule.as_str(), d[0].line), ("SB101", 4));
}

#[test]
fn map_and_types_bodies_are_not_linted_as_directives() {
    let d = lint_http(
        "map $host $backend {\n  default app;\n  a.test other;\n}\ntypes {\n  text/html html;\n}\nsplit_clients \"${remote_addr}\" $variant {\n  50% a;\n  * b;\n}",
    );
    assert_eq!(d, vec![]);
}

#[test]
fn includes_that_double_at_every_level_are_refused_quickly() {
    let mut files = vec![(
        "nginx.conf".to_string(),
        "events {}\nhttp { include f0.conf; }\n".to_string(),
    )];
    for i in 0..30 {
        let next = format!("f{}.conf", i + 1);
        files.push((
            format!("f{i}.conf"),
            format!("include {next};\ninclude {next};\n"),
        ));
    }
    files.push(("f30.conf".to_string(), "server_tokens off;\n".to_string()));
    let files: BTreeMap<String, Vec<u8>> = files
        .into_iter()
        .map(|(p, c)| (p, c.into_bytes()))
        .collect();
    // The parser refuses it first (2^30 file reads)...
    let (config, parse) = parse_bundle(&files, "nginx.conf");
    assert!(
        parse
            .iter()
            .any(|d| d.rule == "SB002" && d.message.contains("file reads")),
        "{parse:?}"
    );
    // ...and the lint bounds its own expansion, should a caller skip the parser's verdict.
    let d = lint(&config);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].rule, "SB002");
    assert!(d[0].message.contains("more than"), "{}", d[0]);
}
