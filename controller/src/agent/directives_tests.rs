use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::validate::ast::Directive;
use crate::validate::parser::parse_bundle;
use crate::validate::paths::ConfigRoot;

const SHORT: &str = "0123456789ab";

fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

fn prep(pairs: &[(&str, &str)], root: bool) -> BTreeMap<String, String> {
    let temp = [
        "client_body_temp_path".to_string(),
        "proxy_temp_path".to_string(),
    ];
    let config_root = ConfigRoot::default();
    let d = AgentDirectives {
        log_socket: Path::new("/state/log.sock"),
        short: SHORT,
        temp_dir: Path::new("/state/tmp"),
        temp_paths: &temp,
        user: root.then_some("nobody nogroup"),
        pin_listen: None,
        config_root: &config_root,
        replace_user: false,
    };
    prepare(&files(pairs), "nginx.conf", &d)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect()
}

/// (file, name, line, first arg) of every directive, includes expanded, in document order.
fn shape(files: &BTreeMap<String, String>) -> Vec<(String, String, u32, String)> {
    let bytes = files
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let (config, diags) = parse_bundle(&bytes, "nginx.conf");
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    fn walk(f: &str, ds: &[Directive], out: &mut Vec<(String, String, u32, String)>) {
        for d in ds {
            let arg = d.arg_values().next().unwrap_or("").to_string();
            out.push((f.to_string(), d.name.clone(), d.span.line, arg));
            walk(f, d.children(), out);
        }
    }
    let mut out = Vec::new();
    for f in &config.files {
        walk(&f.path, &f.directives, &mut out);
    }
    out
}

fn lines_of(shape: &[(String, String, u32, String)], name: &str) -> Vec<(String, u32, String)> {
    shape
        .iter()
        .filter(|x| x.1 == name)
        .map(|x| (x.0.clone(), x.2, x.3.clone()))
        .collect()
}

const ACCESS: &str = "syslog:server=unix:/state/log.sock,nohostname,tag=sba0123456789ab";
const ERROR: &str = "syslog:server=unix:/state/log.sock,nohostname,tag=sbe0123456789ab";

#[test]
fn http_gets_format_log_and_temp_paths_on_its_own_line() {
    let src = "events {}\nhttp {\n  server {\n    listen 80;\n  }\n}\n";
    let out = prep(&[("nginx.conf", src)], false);
    let conf = &out["nginx.conf"];
    assert_eq!(conf.matches('\n').count(), src.matches('\n').count());
    let s = shape(&out);
    let user: Vec<_> = s
        .iter()
        .filter(|x| {
            !x.3.starts_with("syslog:") && !x.1.ends_with("temp_path") && x.1 != "log_format"
        })
        .map(|x| (x.1.as_str(), x.2))
        .collect();
    assert_eq!(
        user,
        [("events", 1), ("http", 2), ("server", 3), ("listen", 4)],
        "user directives keep their lines"
    );
    assert_eq!(
        lines_of(&s, "access_log"),
        [("nginx.conf".to_string(), 2, ACCESS.to_string())]
    );
    assert_eq!(
        lines_of(&s, "error_log"),
        [("nginx.conf".to_string(), 1, ERROR.to_string())]
    );
    assert_eq!(lines_of(&s, "log_format")[0].2, LOG_FORMAT);
    assert_eq!(
        lines_of(&s, "proxy_temp_path"),
        [("nginx.conf".to_string(), 2, "/state/tmp/proxy".to_string())]
    );
    assert!(lines_of(&s, "user").is_empty(), "not root: no user");
}

#[test]
fn levels_with_their_own_logs_get_ours_too_unless_off() {
    let src = "events {}\nhttp {\n  access_log /var/log/a.log;\n  server {\n    access_log /var/log/s.log combined;\n    error_log /var/log/e.log;\n    location /x {\n      access_log off;\n    }\n    location /y { return 200; }\n  }\n}\n";
    let out = prep(&[("nginx.conf", src)], false);
    let s = shape(&out);
    let ours: Vec<u32> = lines_of(&s, "access_log")
        .into_iter()
        .filter(|x| x.2 == ACCESS)
        .map(|x| x.1)
        .collect();
    assert_eq!(
        ours,
        [3, 5],
        "after http's and server's access_log, not in the off location"
    );
    let errs: Vec<u32> = lines_of(&s, "error_log").into_iter().map(|x| x.1).collect();
    assert_eq!(
        errs,
        [1, 6, 6],
        "main, then the server's own error_log and ours"
    );
}

#[test]
fn agent_owned_main_directives_are_blanked_and_user_added_for_root() {
    let src = "pid /run/nginx.pid;\ndaemon on; worker_processes 2;\nevents {}\nhttp {}\n";
    let out = prep(&[("nginx.conf", src)], true);
    let s = shape(&out);
    let names: Vec<&str> = s.iter().map(|x| x.1.as_str()).collect();
    assert!(
        !names.contains(&"pid") && !names.contains(&"daemon"),
        "{names:?}"
    );
    assert_eq!(lines_of(&s, "worker_processes")[0].1, 2);
    assert_eq!(
        lines_of(&s, "user"),
        [("nginx.conf".to_string(), 1, "nobody".to_string())]
    );

    let with_user = prep(
        &[("nginx.conf", "user nobody;\nevents {}\nhttp {}\n")],
        true,
    );
    let users = lines_of(&shape(&with_user), "user");
    assert_eq!(users, [("nginx.conf".to_string(), 1, "nobody".to_string())]);
}

#[test]
fn a_bundle_asking_for_root_workers_is_refused_unless_the_agent_allows_it() {
    let src = files(&[("nginx.conf", "events {}\nuser root;\nhttp {}\n")]);
    let root = ConfigRoot::default();
    let d = |user| AgentDirectives {
        log_socket: Path::new("/s"),
        short: SHORT,
        temp_dir: Path::new("/t"),
        temp_paths: &[],
        user,
        pin_listen: None,
        config_root: &root,
        replace_user: false,
    };
    let err = prepare(&src, "nginx.conf", &d(Some("nobody nogroup"))).unwrap_err();
    assert!(
        matches!(&err, PrepareError::RootWorkers { line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nginx.conf:2"), "{err}");
    assert!(prepare(&src, "nginx.conf", &d(Some("root"))).is_ok());
    assert!(prepare(&src, "nginx.conf", &d(None)).is_ok(), "not root");
}

#[test]
fn included_files_are_edited_where_the_log_is() {
    let main = "events {}\nhttp {\n  include conf.d/*.conf;\n}\n";
    let site = "server {\n  listen 80;\n  access_log /var/log/site.log;\n}\n";
    let out = prep(&[("nginx.conf", main), ("conf.d/site.conf", site)], false);
    assert_eq!(out["conf.d/site.conf"].matches('\n').count(), 4);
    let logs = lines_of(&shape(&out), "access_log");
    assert!(
        logs.contains(&("conf.d/site.conf".to_string(), 3, ACCESS.to_string())),
        "{logs:?}"
    );
    assert!(logs.contains(&("nginx.conf".to_string(), 2, ACCESS.to_string())));
}

#[test]
fn temp_paths_the_bundle_sets_are_left_alone() {
    let src = "events {}\nhttp { proxy_temp_path /cache/p; }\n";
    let out = prep(&[("nginx.conf", src)], false);
    let s = shape(&out);
    assert_eq!(lines_of(&s, "proxy_temp_path").len(), 1);
    assert_eq!(lines_of(&s, "client_body_temp_path").len(), 1);
}

/// Found by the default-strategy fleet test: `if ($x) {` has the argument `$x` (parentheses
/// stripped, as crossplane does), so the `{` is after a `)` the parser dropped; every agent
/// refused such a bundle that validation had passed.
#[test]
fn if_blocks_open_after_the_conditions_closing_parenthesis() {
    let src = "events {}\nhttp {\n  server {\n    location / {\n      if ($bad) { return 500; }\n      if ( $a = \"b c\" ) # why\n      {\n        access_log /i.log;\n      }\n      if ($http_x = \"v\")\n{ return 403; }\n    }\n  }\n}\n";
    let out = prep(&[("nginx.conf", src)], false);
    let s = shape(&out);
    let ifs: Vec<u32> = lines_of(&s, "if").into_iter().map(|x| x.1).collect();
    assert_eq!(ifs, [5, 6, 10], "every if kept on its line");
    let ours: Vec<u32> = lines_of(&s, "access_log")
        .into_iter()
        .filter(|x| x.2 == ACCESS)
        .map(|x| x.1)
        .collect();
    assert_eq!(
        ours,
        [2, 8],
        "http's, and after the if block's own access_log"
    );
}

#[test]
fn comments_between_tokens_do_not_confuse_the_ends() {
    let src = "events {}\nhttp # main\n{\n  access_log /a.log # why\n  ;\n}\n";
    let out = prep(&[("nginx.conf", src)], false);
    let logs = lines_of(&shape(&out), "access_log");
    assert_eq!(logs[1], ("nginx.conf".to_string(), 5, ACCESS.to_string()));
}

#[test]
fn unparsable_bundles_are_refused() {
    let root = ConfigRoot::default();
    let d = AgentDirectives {
        log_socket: Path::new("/s"),
        short: SHORT,
        temp_dir: Path::new("/t"),
        temp_paths: &[],
        user: None,
        pin_listen: None,
        config_root: &root,
        replace_user: false,
    };
    let bad = files(&[("nginx.conf", "http {")]);
    assert!(matches!(
        prepare(&bad, "nginx.conf", &d),
        Err(PrepareError::Parse(_))
    ));
    assert!(matches!(
        prepare(&bad, "main.conf", &d),
        Err(PrepareError::NoEntry(_))
    ));
}

#[test]
fn listen_is_pinned_to_the_pod_address_in_local_mode() {
    use super::pin_listen;
    let ip: std::net::IpAddr = "127.0.7.10".parse().expect("ip");
    assert_eq!(pin_listen("8080", ip).as_deref(), Some("127.0.7.10:8080"));
    assert_eq!(pin_listen("*:80", ip).as_deref(), Some("127.0.7.10:80"));
    assert_eq!(
        pin_listen("[::]:443", ip).as_deref(),
        Some("127.0.7.10:443")
    );
    assert_eq!(
        pin_listen("0.0.0.0:8080", ip).as_deref(),
        Some("127.0.7.10:8080")
    );
    assert_eq!(pin_listen("unix:/run/x.sock", ip), None);
    assert_eq!(pin_listen("example.test", ip), None);
}

/// Local mode: the pods share this machine, so `listen 80; listen [::]:80;` pinned to one address
/// would be a duplicate nginx refuses, and the image's `user nginx` may not exist here.
#[test]
fn local_mode_blanks_a_pinned_duplicate_listen_and_replaces_the_bundles_user() {
    let root = ConfigRoot::default();
    let d = AgentDirectives {
        log_socket: Path::new("/s"),
        short: SHORT,
        temp_dir: Path::new("/t"),
        temp_paths: &[],
        user: Some("nobody nogroup"),
        pin_listen: Some("127.0.5.10".parse().unwrap()),
        config_root: &root,
        replace_user: true,
    };
    let src = files(&[(
        "nginx.conf",
        "user  nginx;\nevents {}\nhttp {\n  server {\n    listen 80;\n    listen [::]:80;\n    listen 8080;\n  }\n  server { listen 80; }\n}\n",
    )]);
    let out = prepare(&src, "nginx.conf", &d).unwrap();
    let text = String::from_utf8(out["nginx.conf"].clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("user  nobody nogroup;"), "{}", lines[0]);
    assert_eq!(lines[4], "    listen 127.0.5.10:80;");
    assert_eq!(lines[5].trim(), "", "the duplicate is blanked: {text}");
    assert_eq!(lines[6], "    listen 127.0.5.10:8080;");
    // Another server may listen on the same address: that is virtual hosting, not a duplicate.
    assert!(lines[8].contains("listen 127.0.5.10:80;"), "{}", lines[8]);
    assert_eq!(
        lines.len(),
        src["nginx.conf"].iter().filter(|b| **b == b'\n').count()
    );
}
