//! Render and validate a generated 5,000-line config with 200 upstreams: the size of a large edge
//! fleet's config. Prints divan's timing table; the goal is parse+lint under 100 ms.
//!
//! `cargo bench -p switchback` (or `make bench`). The `nginx -t` figure is measured apart: it is a
//! process start and dominated by nginx itself.

use switchback::render::{self, Bundle, ConfigTree};
use switchback::validate::sandbox::Nginx;
use switchback::validate::{self, check_static};

const UPSTREAMS: usize = 200;

const NGINX_CONF: &str = "worker_processes 2;\nevents { worker_connections 1024; }\nhttp {\n    include conf.d/*.conf;\n}\n";

const UPSTREAMS_J2: &str = r#"{% for i in range(upstreams) %}
upstream app{{ i }} {
    server 127.0.0.1:{{ 10000 + i }} max_fails=3 fail_timeout=10s;
    server 127.0.0.2:{{ 10000 + i }} max_fails=3 fail_timeout=10s;
    server 127.0.0.3:{{ 10000 + i }} backup;
    keepalive 8;
}
{% endfor %}"#;

const SITES_J2: &str = r#"{% for i in range(upstreams) %}
server {
    listen {{ listen }};
    server_name site{{ i }}.example.test;
    location / {
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 2s;
        proxy_pass http://app{{ i }};
    }
    location /static/ {
        root html;
        expires 1h;
    }
    location = /healthz {
        return 200 "ok\n";
    }
    location ~ ^/api/(v1|v2)/ {
        proxy_pass http://app{{ (i + 1) % upstreams }};
    }
}
{% endfor %}"#;

fn tree() -> ConfigTree {
    let values = format!("upstreams: {UPSTREAMS}\nlisten: 8080\n");
    let mut tree = ConfigTree::new();
    for (path, text) in [
        ("nginx.conf", NGINX_CONF),
        ("values.yaml", values.as_str()),
        ("conf.d/upstreams.conf.j2", UPSTREAMS_J2),
        ("conf.d/sites.conf.j2", SITES_J2),
    ] {
        tree.insert_file(path, text.as_bytes());
    }
    tree
}

fn bundle() -> Bundle {
    render::render(&tree(), &serde_json::Value::Null).expect("the generated config renders")
}

#[divan::bench]
fn render_templates(bencher: divan::Bencher) {
    let tree = tree();
    bencher.bench(|| render::render(&tree, &serde_json::Value::Null));
}

#[divan::bench]
fn parse_and_lint(bencher: divan::Bencher) {
    let bundle = bundle();
    bencher.bench(|| check_static(&bundle, "nginx.conf"));
}

#[divan::bench]
fn render_parse_and_lint(bencher: divan::Bencher) {
    let tree = tree();
    bencher.bench(|| {
        let bundle = render::render(&tree, &serde_json::Value::Null).expect("renders");
        check_static(&bundle, "nginx.conf")
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn parse_lint_and_nginx_t(bencher: divan::Bencher) {
    let bundle = bundle();
    let Some(nginx) = Nginx::find(None).ok().flatten() else {
        eprintln!(
            "parse_lint_and_nginx_t: no nginx binary found; skipped (make tools installs nginx-light)"
        );
        return;
    };
    bencher.bench(|| validate::validate(&bundle, "nginx.conf", Some(&nginx)));
}

fn main() {
    let bundle = bundle();
    let lines: usize = bundle
        .files()
        .values()
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .sum();
    let (_, findings) = check_static(&bundle, "nginx.conf");
    assert!(
        findings.is_empty(),
        "the generated config must be clean: {findings:?}"
    );
    println!(
        "generated config: {lines} lines, {UPSTREAMS} upstreams, {} bytes in {} files",
        bundle.size(),
        bundle.files().len()
    );
    divan::main();
}
