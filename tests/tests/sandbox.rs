//! The `nginx -t` sandbox against the real nginx binary.
//!
//! These tests need nginx (`make test` installs nginx-light). Without it they fail, unless
//! `SWITCHBACK_SKIP_NGINX=1` is set, in which case they say loudly that they skipped.

use std::collections::BTreeMap;
use std::path::Path;

use switchback::render::Bundle;
use switchback::validate::Diagnostic;
use switchback::validate::parser::parse_bundle;
use switchback::validate::sandbox::{Nginx, SandboxError};

/// The nginx under test, or `None` when it is absent and skipping was asked for.
fn nginx() -> Option<Nginx> {
    let skip = std::env::var("SWITCHBACK_SKIP_NGINX").is_ok_and(|v| v == "1");
    match Nginx::find(None) {
        Ok(Some(n)) => Some(n),
        Ok(None) if skip => {
            eprintln!(
                "\n!!!!!!!! SKIPPING an nginx sandbox test: no nginx found and \
                 SWITCHBACK_SKIP_NGINX=1 !!!!!!!!\n"
            );
            None
        }
        Ok(None) => panic!(
            "nginx not found (SWITCHBACK_NGINX, PATH, /usr/sbin/nginx): install nginx-light \
             or set SWITCHBACK_SKIP_NGINX=1 to skip these tests"
        ),
        Err(e) => panic!("nginx found but unusable: {e}"),
    }
}

fn bundle(files: &[(&str, &str)]) -> Bundle {
    Bundle::new(
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Parses and runs `nginx -t` on `files` with `nginx.conf` as entry.
fn check_with(nginx: &Nginx, files: &[(&str, &str)]) -> Vec<Diagnostic> {
    let b = bundle(files);
    let (config, _parse) = parse_bundle(b.files(), "nginx.conf");
    match nginx.test(&b, "nginx.conf", &config) {
        Ok(d) => {
            // Shown by the harness when a test fails.
            eprint!("{}", show(&d));
            d
        }
        Err(e) => panic!("sandbox failed: {e}"),
    }
}

fn check(files: &[(&str, &str)]) -> Option<Vec<Diagnostic>> {
    nginx().map(|n| check_with(&n, files))
}

fn show(d: &[Diagnostic]) -> String {
    d.iter().map(|d| format!("{d}\n")).collect()
}

const MAIN: &str = "events {}
http {
    include conf.d/*.conf;
}
";

#[test]
fn finds_nginx_and_its_version() {
    let Some(n) = nginx() else { return };
    assert!(n.version().starts_with("nginx/"), "{}", n.version());
    assert!(n.path().exists());
}

#[test]
fn an_explicit_path_that_does_not_run_is_an_error() {
    let err = Nginx::find(Some(Path::new("/nonexistent/switchback/nginx")));
    assert!(matches!(err, Err(SandboxError::Spawn { .. })), "{err:?}");
    let not_nginx = Nginx::find(Some(Path::new("/bin/false")));
    assert!(
        matches!(not_nginx, Err(SandboxError::NotNginx { .. })),
        "{not_nginx:?}"
    );
}

#[test]
fn a_valid_bundle_has_no_findings() {
    let Some(d) = check(&[
        ("nginx.conf", MAIN),
        (
            "conf.d/app.conf",
            "upstream app { server 10.0.0.1:8080; server 10.0.0.2:8080 backup; }
server {
    listen 80;
    server_name app.example;
    location / { proxy_pass http://app; }
    location /static/ { root /srv/www; }
}
",
        ),
    ]) else {
        return;
    };
    assert!(d.is_empty(), "{}", show(&d));
}

#[test]
fn an_unknown_directive_in_an_included_file_is_sb900_at_its_line() {
    let Some(d) = check(&[
        ("nginx.conf", MAIN),
        (
            "conf.d/x.conf",
            "server {\n    listen 80;\n\n    proxy_bufferz 4 8k;\n}\n",
        ),
    ]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        d[0].to_string(),
        "conf.d/x.conf:4:5: error[SB900]: unknown directive \"proxy_bufferz\""
    );
}

#[test]
fn a_bad_proxy_pass_is_sb900() {
    let Some(d) = check(&[
        ("nginx.conf", MAIN),
        (
            "conf.d/x.conf",
            "server {\n    listen 80;\n    location / {\n        proxy_pass backend.example:8080;\n    }\n}\n",
        ),
    ]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    let d = &d[0];
    assert_eq!(
        (d.path.as_str(), d.line, d.rule.as_str()),
        ("conf.d/x.conf", 4, "SB900")
    );
    assert_eq!(d.message, "invalid URL prefix");
}

#[test]
fn a_duplicate_location_is_sb900_in_the_entry_file() {
    let Some(d) = check(&[(
        "nginx.conf",
        "events {}\nhttp {\n  server {\n    listen 8080;\n    location /a { }\n    location /a { }\n  }\n}\n",
    )]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        d[0].to_string(),
        "nginx.conf:6:5: error[SB900]: duplicate location \"/a\""
    );
}

#[test]
fn a_conflicting_server_name_is_an_sb901_warning() {
    let Some(d) = check(&[
        ("nginx.conf", MAIN),
        (
            "conf.d/a.conf",
            "server { listen 80; server_name app.example; }\n",
        ),
        (
            "conf.d/b.conf",
            "server {\n    listen 80;\n    server_name app.example;\n}\n",
        ),
    ]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        d[0].to_string(),
        "conf.d/b.conf:3:5: warning[SB901]: conflicting server name \"app.example\" on \
         0.0.0.0:80, ignored"
    );
}

#[test]
fn a_duplicate_default_server_names_the_address_as_written() {
    let Some(d) = check(&[(
        "nginx.conf",
        "events {}\nhttp {\n  server { listen 443 default_server; }\n  server { listen *:443 default_server; }\n}\n",
    )]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(d[0].line, 4, "{}", show(&d));
    assert!(
        d[0].message
            .contains("a duplicate default server for *:443"),
        "{}",
        show(&d)
    );
}

#[test]
fn names_are_never_resolved() {
    let Some(d) = check(&[
        (
            "nginx.conf",
            "events { debug_connection client.invalid; }
http {
    resolver dns.invalid:53 valid=30s;
    set_real_ip_from lb.invalid;
    upstream backend { server backend.invalid:8080; server other.invalid; }
    server {
        listen web.invalid:8080;
        listen 203.0.113.7:80;
        listen [2001:db8::7]:443;
        location / { proxy_pass http://backend; }
        location /api/ { proxy_pass http://api.invalid:9000/v1/; }
        location /php { fastcgi_pass php.invalid:9000; }
        location /g { grpc_pass grpc://grpc.invalid:50051; }
    }
    include conf.d/*.conf;
}
",
        ),
        (
            "conf.d/more.conf",
            "upstream more { server more.invalid:80 max_fails=2; }\n\
         server { listen more.invalid:8081; location / { proxy_pass http://more; } }\n",
        ),
    ]) else {
        return;
    };
    assert!(d.is_empty(), "{}", show(&d));
}

#[test]
fn privileged_ports_and_system_paths_are_kept_inside_the_sandbox() {
    // Paths unique to this test, so their absence afterwards proves nginx did not create them.
    let tag = format!("switchback-sandbox-test-{}", std::process::id());
    let conf = format!(
        "user nonexistent-user-{tag};
pid /run/{tag}.pid;
error_log /var/log/{tag}/error.log warn;
lock_file /var/lock/{tag}.lock;
events {{}}
http {{
    access_log /var/log/{tag}/access.log;
    proxy_cache_path /var/cache/{tag}/cache keys_zone=c:1m;
    client_body_temp_path /var/lib/{tag}/body;
    error_log syslog:server=logs.invalid:514,tag=nginx;
    server {{
        listen 80;
        listen 443 ssl;
        ssl_certificate /etc/ssl/{tag}/site.pem;
        ssl_certificate_key /etc/ssl/{tag}/site.key;
        location / {{ proxy_pass http://127.0.0.1:8080; proxy_cache c; }}
    }}
}}
"
    );
    let Some(n) = nginx() else { return };
    let d = check_with(&n, &[("nginx.conf", &conf)]);
    // Only the two TLS files the bundle does not carry are reported, as warnings.
    assert_eq!(d.len(), 2, "{}", show(&d));
    assert!(
        d.iter()
            .all(|d| d.rule == "SB901" && d.line == 14 || d.line == 15)
    );
    assert!(
        d[0].message.contains(&format!("/etc/ssl/{tag}/site.pem")),
        "{}",
        show(&d)
    );
    for p in [
        format!("/run/{tag}.pid"),
        format!("/var/log/{tag}"),
        format!("/var/lock/{tag}.lock"),
        format!("/var/cache/{tag}"),
        format!("/var/lib/{tag}"),
        format!("/etc/ssl/{tag}"),
    ] {
        assert!(!Path::new(&p).exists(), "nginx -t created {p}");
    }
    let quiet = check_with(
        &n.clone().report_external_files(false),
        &[("nginx.conf", &conf)],
    );
    assert!(quiet.is_empty(), "{}", show(&quiet));
}

#[test]
fn tls_files_in_the_bundle_are_really_checked() {
    let Some(d) = check(&[
        (
            "nginx.conf",
            "events {}\nhttp {\n  server {\n    listen 443 ssl;\n    ssl_certificate certs/site.pem;\n    ssl_certificate_key certs/site.key;\n  }\n}\n",
        ),
        ("certs/site.pem", "not a certificate\n"),
        ("certs/site.key", "not a key\n"),
    ]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    let d = &d[0];
    assert_eq!((d.line, d.rule.as_str()), (5, "SB900"), "{d}");
    assert!(
        d.message
            .contains("cannot load certificate \"certs/site.pem\""),
        "{d}"
    );
}

#[test]
fn includes_outside_the_bundle_are_not_read() {
    let Some(d) = check(&[(
        "nginx.conf",
        "events {}\nhttp {\n    include /etc/nginx/mime.types;\n}\n",
    )]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!((d[0].line, d[0].rule.as_str()), (3, "SB900"));
    assert!(
        d[0].message
            .starts_with("open() \"/etc/nginx/mime.types\" failed (2: No such file or directory)"),
        "{}",
        show(&d)
    );
}

#[test]
fn a_bundle_the_parse_tree_does_not_describe_is_refused() {
    let Some(n) = nginx() else { return };
    let b = bundle(&[("nginx.conf", "events {}\n")]);
    let err = n.test(&b, "nginx.conf", &Default::default());
    assert!(
        matches!(err, Err(SandboxError::ConfigMismatch(_))),
        "{err:?}"
    );
    let err = n.test(&b, "other.conf", &Default::default());
    assert!(matches!(err, Err(SandboxError::NoEntry(_))), "{err:?}");
    // The parser stops at a syntax error; what follows it was never rewritten.
    let broken = bundle(&[("nginx.conf", "events {}\nhttp { server { listen 80 }\n")]);
    let (config, _) = parse_bundle(broken.files(), "nginx.conf");
    let err = n.test(&broken, "nginx.conf", &config);
    assert!(matches!(err, Err(SandboxError::Unparsed(_))), "{err:?}");
}

/// A stand-in `nginx` script: answers `-V` like nginx, and runs `body` for `-t`. No real nginx.
fn fake_nginx(dir: &Path, body: &str) -> Nginx {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("nginx");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = -V ]; then\n  echo 'nginx version: nginx/0.0.0-fake' >&2\n  \
         echo 'configure arguments: --prefix=/nonexistent' >&2\n  exit 0\nfi\n{body}\n"
    );
    std::fs::write(&path, script).expect("write fake nginx");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Another test thread forking while the script was open for writing makes exec fail with
    // ETXTBSY (26) until that child has exec'd; that is momentary, so try again.
    for _ in 0..1000 {
        match Nginx::find(Some(&path)) {
            Err(SandboxError::Spawn { source, .. }) if source.raw_os_error() == Some(26) => {}
            Ok(Some(n)) => return n,
            other => panic!("fake nginx unusable: {other:?}"),
        }
    }
    panic!("fake nginx stayed busy");
}

fn one_file_run(n: &Nginx) -> Result<Vec<Diagnostic>, SandboxError> {
    let b = bundle(&[("nginx.conf", "events {}\n")]);
    let (config, _) = parse_bundle(b.files(), "nginx.conf");
    n.test(&b, "nginx.conf", &config)
}

#[test]
fn a_run_past_the_timeout_is_killed_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = fake_nginx(dir.path(), "exec /usr/bin/tail -f /dev/null")
        .with_timeout(std::time::Duration::from_millis(300));
    assert_eq!(n.version(), "nginx/0.0.0-fake");
    let err = one_file_run(&n);
    assert!(matches!(err, Err(SandboxError::Timeout(_))), "{err:?}");
}

#[test]
fn a_failure_without_an_error_line_is_still_sb900() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = fake_nginx(dir.path(), "echo 'Segmentation fault' >&2\nexit 3");
    let d = one_file_run(&n).expect("run");
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(d[0].rule, "SB900");
    assert!(d[0].message.contains("Segmentation fault"), "{}", d[0]);
}

#[test]
fn modules_that_run_code_are_never_loaded() {
    let Some(d) = check(&[(
        "nginx.conf",
        "load_module modules/ngx_http_perl_module.so;\nevents {}\n\
         http { perl_set $x 'sub { BEGIN { system(\"touch /tmp/pwned\") } 1 }'; }\n",
    )]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        (d[0].line, d[0].rule.as_str()),
        (1, "SB900"),
        "{}",
        show(&d)
    );
    assert!(
        d[0].message.contains("does not load modules that run code"),
        "{}",
        show(&d)
    );
}

#[test]
fn load_module_only_loads_from_the_nginx_module_directory() {
    let Some(d) = check(&[(
        "nginx.conf",
        "load_module /opt/untrusted/ngx_switchback_nope_module.so;\nevents {}\n",
    )]) else {
        return;
    };
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        (d[0].line, d[0].rule.as_str()),
        (1, "SB900"),
        "{}",
        show(&d)
    );
}

#[test]
fn an_entry_in_a_subdirectory_resolves_includes_like_nginx() {
    let Some(n) = nginx() else { return };
    let b = bundle(&[
        ("etc/nginx.conf", MAIN),
        (
            "etc/conf.d/x.conf",
            "server {\n  listen 80;\n  bogus on;\n}\n",
        ),
    ]);
    let (config, parse) = parse_bundle(b.files(), "etc/nginx.conf");
    assert!(parse.is_empty(), "{}", show(&parse));
    let d = n.test(&b, "etc/nginx.conf", &config).expect("run");
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        d[0].to_string(),
        "etc/conf.d/x.conf:3:3: error[SB900]: unknown directive \"bogus\""
    );
}

/// A corpus config (tests/corpus/NAME) as a bundle.
fn corpus(name: &str) -> Bundle {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let entries = std::fs::read_dir(dir).expect("corpus dir");
        for e in entries {
            let p = e.expect("corpus entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                let bytes = std::fs::read(&p).expect("corpus file");
                out.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files = BTreeMap::new();
    walk(&root, &root, &mut files);
    Bundle::new(files)
}

#[test]
fn the_corpus_configs_pass_nginx_t_on_any_machine() {
    let Some(n) = nginx() else { return };
    // Realistic configs: upstreams with internal host names, system log paths, TLS from /etc.
    // (`lua` and `stream` need modules nginx-light does not load; the err-* ones are broken.)
    for name in [
        "basic",
        "comments-crlf",
        "if-rewrite",
        "maps-geo-split",
        "multi-file",
        "quoting",
        "regex-locations",
        "reverse-proxy",
        "types-charset",
    ] {
        let b = corpus(name);
        let (config, parse) = parse_bundle(b.files(), "nginx.conf");
        assert!(parse.is_empty(), "{name}: {}", show(&parse));
        let d = n.test(&b, "nginx.conf", &config).expect("run");
        let errors: Vec<Diagnostic> = d.into_iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{name}: {}", show(&errors));
    }
}

#[test]
fn an_include_cycle_is_refused_rather_than_crashing_nginx() {
    let Some(n) = nginx() else { return };
    let b = corpus("include-cycle");
    let (config, _) = parse_bundle(b.files(), "nginx.conf");
    let err = n.test(&b, "nginx.conf", &config);
    assert!(matches!(err, Err(SandboxError::IncludeCycle(_))), "{err:?}");
}

#[test]
fn a_missing_include_is_reported_by_nginx_too() {
    let Some(n) = nginx() else { return };
    let b = corpus("err-missing-include");
    let (config, _) = parse_bundle(b.files(), "nginx.conf");
    let d = n.test(&b, "nginx.conf", &config).expect("run");
    assert_eq!(d.len(), 1, "{}", show(&d));
    assert_eq!(
        d[0].to_string(),
        "nginx.conf:9:9: error[SB900]: open() \"snippets/ssl-params.conf\" failed \
         (2: No such file or directory)"
    );
}
