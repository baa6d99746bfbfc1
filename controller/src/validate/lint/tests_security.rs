//! Tests of the gixy-family rules (SB110-SB116): for each, a config it must flag and the fixed
//! config it must leave alone, through the real parser.

use super::tests::{lint_http, rules};
use crate::validate::diagnostic::Severity;

fn server(body: &str) -> String {
    format!("server {{\n  listen 80;\n{body}\n}}")
}

#[test]
fn sb110_alias_with_slash_under_a_location_without_one_is_an_error() {
    let d = lint_http(&server("  location /img {\n    alias /data/img/;\n  }"));
    assert_eq!(rules(&d), vec![("SB110", 6)]);
    assert_eq!(d[0].severity, Severity::Error);
    assert!(d[0].message.contains("/img../x"), "{}", d[0]);
    assert_eq!(d[0].path, "nginx.conf");
}

#[test]
fn sb110_matching_slashes_and_regex_locations_pass() {
    let d = lint_http(&server(
        "  location /img/ { alias /data/img/; }\n  location ^~ /css { alias /data/css; }\n  location ~ ^/js/(.*)$ { alias /data/js/$1; }",
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn sb111_location_add_header_dropping_server_security_headers_warns() {
    let d = lint_http(&server(
        "  add_header X-Frame-Options DENY;\n  add_header Strict-Transport-Security max-age=31536000;\n  location / {\n    add_header X-Request-Id $request_id;\n  }",
    ));
    assert_eq!(rules(&d), vec![("SB111", 8)]);
    assert_eq!(d[0].severity, Severity::Warning);
    assert!(
        d[0].message
            .contains("strict-transport-security, x-frame-options"),
        "{}",
        d[0]
    );
    assert!(d[0].message.contains("nginx.conf:3"), "{}", d[0]);
}

#[test]
fn sb111_repeated_headers_or_no_own_headers_pass() {
    let d = lint_http(&server(
        "  add_header X-Frame-Options DENY;\n  location / {\n    add_header X-Frame-Options DENY;\n    add_header X-Request-Id $request_id;\n  }\n  location /b { proxy_pass http://127.0.0.1:1; }",
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn sb111_if_inside_a_location_drops_the_locations_headers() {
    let d = lint_http(&server(
        "  location / {\n    add_header Content-Security-Policy \"default-src 'self'\";\n    if ($arg_x) {\n      add_header X-Debug 1;\n    }\n  }",
    ));
    assert_eq!(rules(&d), vec![("SB111", 8)]);
}

#[test]
fn sb112_host_from_http_host_or_query_warns() {
    let d = lint_http(&server(
        "  location / {\n    proxy_set_header Host $http_host;\n    proxy_pass http://127.0.0.1:1;\n  }\n  location /b {\n    proxy_set_header host $arg_h;\n    proxy_pass http://127.0.0.1:1;\n  }\n  return 301 https://$http_host$request_uri;",
    ));
    assert_eq!(rules(&d), vec![("SB112", 6), ("SB112", 10), ("SB112", 13)]);
}

#[test]
fn sb112_host_variable_passes() {
    let d = lint_http(&server(
        "  location / {\n    proxy_set_header Host $host;\n    proxy_set_header X-Original-Host $http_host;\n    proxy_pass http://127.0.0.1:1;\n  }\n  return 301 https://$host$request_uri;",
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn sb113_client_variable_in_the_proxy_pass_host_warns() {
    let d = lint_http(&format!(
        "resolver 127.0.0.53;\n{}",
        server(
            "  location /a { proxy_pass http://$arg_host; }\n  location /b { proxy_pass $http_x_target; }\n  location ~ ^/c/([^/]+)/(.*)$ { proxy_pass http://$1/$2; }\n  location /d {\n    set $target $cookie_backend;\n    proxy_pass https://$target;\n  }"
        )
    ));
    // The capture of `[^/]+` can also hold a newline: SB114 too, as gixy reports it.
    assert_eq!(
        rules(&d),
        vec![
            ("SB113", 6),
            ("SB113", 7),
            ("SB113", 8),
            ("SB114", 8),
            ("SB113", 11)
        ]
    );
    assert!(d[4].message.contains("$cookie_backend"), "{}", d[4]);
}

#[test]
fn sb113_variables_only_in_the_path_internal_or_narrow_captures_pass() {
    let d = lint_http(&format!(
        "resolver 127.0.0.53;\nupstream v1 {{ server 127.0.0.1:1; }}\nupstream v2 {{ server 127.0.0.1:2; }}\n{}",
        server(
            "  location /a { proxy_pass http://127.0.0.1:1/$arg_path; }\n  location ~ ^/api/(v1|v2)/ { proxy_pass http://$1; }\n  location /internal/ {\n    internal;\n    proxy_pass http://$arg_host;\n  }"
        )
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn sb114_uri_or_dot_capture_into_a_header_warns() {
    let d = lint_http(&server(
        "  location / {\n    add_header X-Uri $uri;\n    return 302 https://example.test$document_uri;\n  }\n  location ~ ^/go/(.*)$ {\n    proxy_set_header X-Path $1;\n    proxy_pass http://127.0.0.1:1;\n  }\n  rewrite ^/old/(.*)$ https://example.test/$1 permanent;",
    ));
    assert_eq!(
        rules(&d),
        vec![("SB114", 6), ("SB114", 7), ("SB114", 10), ("SB114", 13)]
    );
}

#[test]
fn sb114_request_uri_narrow_captures_and_internal_rewrites_pass() {
    let d = lint_http(&server(
        "  location / {\n    add_header X-Uri $request_uri;\n    return 302 https://example.test$request_uri;\n  }\n  location ~ ^/go/([a-z0-9]+)$ {\n    proxy_set_header X-Id $1;\n    proxy_pass http://127.0.0.1:1;\n  }\n  rewrite ^/old/(.*)$ /new/$1 last;",
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn sb115_valid_referers_none_warns_and_without_none_passes() {
    let d = lint_http(&server(
        "  location /a { valid_referers none server_names; }\n  location /b { valid_referers server_names *.example.test; }",
    ));
    assert_eq!(rules(&d), vec![("SB115", 5)]);
}

#[test]
fn sb116_unanchored_origin_and_referer_regexes_warn() {
    let d = lint_http(&server(
        "  if ($http_origin ~ \"example.test\") { set $cors 1; }\n  if ($http_origin ~* ^https://example\\.test) { set $cors 1; }\n  if ($http_referer !~ ^https://.*\\.example\\.test/) { return 403; }",
    ));
    assert_eq!(rules(&d), vec![("SB116", 5), ("SB116", 6), ("SB116", 7)]);
    assert!(d[0].message.contains("not anchored"), "{}", d[0]);
    assert!(d[1].message.contains("does not end the host"), "{}", d[1]);
    assert!(d[2].message.contains("unescaped"), "{}", d[2]);
}

#[test]
fn sb116_anchored_escaped_regexes_pass() {
    let d = lint_http(&server(
        "  if ($http_origin ~* \"^https://([a-z0-9-]+\\.)?example\\.test(:[0-9]+)?$\") { set $cors 1; }\n  if ($http_referer ~ ^https://example\\.test/) { set $ok 1; }\n  if ($http_user_agent ~ bot) { return 403; }",
    ));
    assert_eq!(d, vec![]);
}
