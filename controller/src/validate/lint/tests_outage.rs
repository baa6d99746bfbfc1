//! Tests of the outage rules gixy does not have (SB120-SB123): for each, a config it must flag and
//! the fixed config it must leave alone, through the real parser.

use super::tests::{lint_http, rules};
use crate::validate::diagnostic::Severity;

fn server(body: &str) -> String {
    format!("server {{\n  listen 80;\n{body}\n}}")
}

#[test]
fn sb120_variable_proxy_pass_without_resolver_warns() {
    let d = lint_http(&server(
        "  location / { proxy_pass http://api.example.test$request_uri; }\n  location /b {\n    set $svc search.example.test;\n    grpc_pass grpc://$svc:9000;\n  }",
    ));
    assert_eq!(rules(&d), vec![("SB120", 5), ("SB120", 8)]);
    assert_eq!(d[0].severity, Severity::Warning);
    assert!(d[0].message.contains("no resolver defined"), "{}", d[0]);
}

#[test]
fn sb120_resolver_in_scope_or_variables_naming_upstreams_pass() {
    let with_resolver = lint_http(&format!(
        "resolver 127.0.0.53;\n{}",
        server("  location / { proxy_pass http://api.example.test$request_uri; }")
    ));
    assert_eq!(with_resolver, vec![]);
    let in_location = lint_http(&server(
        "  location / {\n    resolver 127.0.0.53;\n    proxy_pass http://api.example.test$request_uri;\n  }",
    ));
    assert_eq!(in_location, vec![]);
    let to_upstreams = lint_http(&format!(
        "upstream blue {{ server 127.0.0.1:1; }}\nupstream green {{ server 127.0.0.1:2; }}\nmap $cookie_v $pool {{\n  default blue;\n  2 green;\n}}\n{}",
        server(
            "  location / { proxy_pass http://$pool$request_uri; }\n  location /b {\n    set $ip 127.0.0.1:8080;\n    proxy_pass http://$ip;\n  }\n  location /c { proxy_pass http://blue/$arg_x; }"
        )
    ));
    assert_eq!(to_upstreams, vec![]);
}

#[test]
fn sb121_uri_part_in_regex_named_or_if_is_an_error() {
    let d = lint_http(&server(
        "  location ~ ^/api/ { proxy_pass http://127.0.0.1:1/; }\n  location @fallback { proxy_pass http://127.0.0.1:1/x; }\n  location /c {\n    if ($arg_v) { proxy_pass http://127.0.0.1:1/v2/; }\n  }",
    ));
    assert_eq!(rules(&d), vec![("SB121", 5), ("SB121", 6), ("SB121", 8)]);
    assert_eq!(d[0].severity, Severity::Error);
    assert!(d[0].message.contains("regex location"), "{}", d[0]);
}

#[test]
fn sb121_no_uri_or_a_variable_in_a_regex_location_passes() {
    let d = lint_http(&server(
        "  location ~ ^/api/ { proxy_pass http://127.0.0.1:1; }\n  location ~ ^/v/(.*)$ { proxy_pass http://127.0.0.1:1/v2/$1; }\n  location @fallback { proxy_pass http://127.0.0.1:1; }",
    ));
    assert!(!rules(&d).iter().any(|(r, _)| *r == "SB121"), "{d:?}");
}

#[test]
fn sb122_prefix_and_uri_disagreeing_on_the_slash_warn() {
    let d = lint_http(&server(
        "  location /api { proxy_pass http://127.0.0.1:1/; }\n  location /v1/ { proxy_pass http://127.0.0.1:1/v1; }",
    ));
    assert_eq!(rules(&d), vec![("SB122", 5), ("SB122", 6)]);
    assert!(d[0].message.contains("/api/x becomes //x"), "{}", d[0]);
    assert!(d[1].message.contains("/v1/x becomes /v1x"), "{}", d[1]);
}

#[test]
fn sb122_agreeing_slashes_no_uri_and_exact_locations_pass() {
    let d = lint_http(&server(
        "  location /api/ { proxy_pass http://127.0.0.1:1/; }\n  location /v1 { proxy_pass http://127.0.0.1:1/v2; }\n  location /app { proxy_pass http://127.0.0.1:1; }\n  location = /login { proxy_pass http://127.0.0.1:1/auth/login; }",
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn sb123_host_names_resolved_once_warn() {
    let d = lint_http(&format!(
        "upstream api {{\n  server api.example.test:8080;\n  server 127.0.0.1:8080;\n}}\n{}",
        server(
            "  location / { proxy_pass http://search.example.test:9200; }\n  location /php { fastcgi_pass php-fpm:9000; }"
        )
    ));
    assert_eq!(rules(&d), vec![("SB123", 4), ("SB123", 9), ("SB123", 10)]);
    assert!(d[0].message.contains("resolve"), "{}", d[0]);
}

#[test]
fn sb123_ips_upstream_names_resolve_and_variables_pass() {
    let d = lint_http(&format!(
        "resolver 127.0.0.53;\nupstream api {{\n  zone api 64k;\n  server api.example.test:8080 resolve;\n  server localhost:8081;\n}}\n{}",
        server(
            "  location / { proxy_pass http://api; }\n  location /s {\n    set $s search.example.test;\n    proxy_pass http://$s:9200;\n  }\n  location /u { proxy_pass http://unix:/run/app.sock:/; }\n  location /six { proxy_pass http://[::1]:8080; }"
        )
    ));
    assert_eq!(d, vec![]);
}

/// The edge proxies Switchback deploys mostly pass to ClusterIP Services, whose address is fixed
/// for the Service's life: no warning there, or every Kubernetes config would carry one.
#[test]
fn sb123_leaves_kubernetes_service_names_alone() {
    let d = lint_http(&format!(
        "upstream api {{\n  server api.shop.svc.cluster.local:8080;\n}}\n{}",
        server("  location / { proxy_pass http://search.shop.svc:9200; }")
    ));
    assert_eq!(d, vec![]);
}

#[test]
fn the_new_rules_keep_their_severity_under_the_catalogue() {
    for rule in super::rules::RULES
        .iter()
        .filter(|r| r.id >= "SB110" && r.id < "SB900")
    {
        let certain = matches!(rule.id, "SB110" | "SB121");
        assert_eq!(
            rule.severity == Severity::Error,
            certain,
            "{} should be an error only when the finding is certain",
            rule.id
        );
    }
}
