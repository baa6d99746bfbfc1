//! SB109 (loads-code): directives that make nginx load a shared object, whose constructor runs the
//! moment it is loaded, on every machine that reads the config: the validator (`switchback
//! validate` in CI, the controller's `nginx -t`) and every proxy's agent. A bundle may carry any
//! bytes, so a library shipped in the bundle and loaded by the config is code execution for
//! anyone who can open a pull request or push to a followed branch.
//!
//! Refused, in any file, any block (data blocks such as `map` included: their values end up in
//! directives at request time) and any letter case:
//! - `ssl_engine`: OpenSSL loads the named engine, and a path is loaded as a library;
//! - every argument whose value starts with `engine:` (`ssl_certificate_key "engine:/x.so:key"`
//!   and its `proxy_`, `grpc_`, `uwsgi_`, stream and mail forms): OpenSSL loads the engine to read
//!   the key;
//! - a `load_module` that could load a file of the bundle: a path with `.` or `..` parts, through
//!   `/proc`, `/dev` or `/sys` (`/proc/self/cwd/…` reaches the bundle), relative other than
//!   `modules/NAME` (relative paths resolve against the prefix, which holds the bundle), or naming
//!   a file the bundle carries.
//!
//! The same check runs again in the `nginx -t` sandbox and in the agent before its own `nginx -t`
//! (defence in depth); both also load modules only from the nginx build's module directory.
//! Pure: the parse tree and the file names in, diagnostics out.

use std::collections::{BTreeMap, BTreeSet};

use crate::validate::ast::{Config, Directive};
use crate::validate::diagnostic::Diagnostic;

/// The rule id.
pub const RULE: &str = "SB109";

/// What to do instead, appended to every finding.
const FIX: &str = "the bundle must not load code: keep TLS keys in files, and load modules \
                   only from the nginx build's module directory (`load_module \
                   modules/ngx_stream_module.so;`)";

/// Every SB109 finding of a parsed bundle. `files` are the bundle's paths (to refuse a
/// `load_module` of a file it carries).
pub fn check<V>(config: &Config, files: &BTreeMap<String, V>) -> Vec<Diagnostic> {
    let names: BTreeSet<&str> = files.keys().filter_map(|p| p.rsplit('/').next()).collect();
    let mut out = Vec::new();
    for file in &config.files {
        visit(&file.path, &file.directives, &names, &mut out);
    }
    out
}

fn visit(file: &str, dirs: &[Directive], names: &BTreeSet<&str>, out: &mut Vec<Diagnostic>) {
    for d in dirs {
        let at = |message: String| {
            Diagnostic::error(
                RULE,
                file,
                d.span.line,
                d.span.col,
                format!("{message}; {FIX}"),
            )
        };
        if d.name.eq_ignore_ascii_case("ssl_engine") {
            let named: Vec<&str> = d.arg_values().collect();
            out.push(at(format!(
                "`{} {}` makes nginx load an OpenSSL engine, a shared library that runs as soon \
                 as it is loaded, on the validator and on every proxy",
                d.name,
                shorten(&named.join(" "))
            )));
        }
        for a in &d.args {
            if is_engine_value(&a.value) {
                out.push(Diagnostic::error(
                    RULE,
                    file,
                    a.span.line,
                    a.span.col,
                    format!(
                        "`{}` value {:?} makes OpenSSL load an engine, a shared library that \
                         runs as soon as it is loaded; {FIX}",
                        d.name,
                        shorten(&a.value)
                    ),
                ));
            }
        }
        if d.name.eq_ignore_ascii_case("load_module")
            && let Some(arg) = d.args.first()
            && let Some(why) = load_module_problem(&arg.value, names)
        {
            out.push(at(format!("`load_module {}`: {why}", arg.value)));
        }
        visit(file, d.children(), names, out);
    }
}

/// Whether nginx (OpenSSL) would read `value` as an engine reference. nginx compares the prefix
/// exactly; any letter case is refused here, and leading blanks too.
pub fn is_engine_value(value: &str) -> bool {
    let v = value.trim_start().as_bytes();
    v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"engine:")
}

/// Why a `load_module` path could load something other than a module of the nginx build, if it
/// could. `bundle_names` are the file names (last path part) the bundle carries.
pub fn load_module_problem(value: &str, bundle_names: &BTreeSet<&str>) -> Option<String> {
    let v = value.trim();
    let parts: Vec<&str> = v.split('/').filter(|p| !p.is_empty()).collect();
    let Some(&name) = parts.last() else {
        return Some("an empty path".to_string());
    };
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Some("the path has `.` or `..` parts, which can lead anywhere".to_string());
    }
    if v.starts_with('/') {
        if matches!(parts[0], "proc" | "dev" | "sys") {
            return Some(format!(
                "/{} reaches any file, the bundle included (e.g. /proc/self/cwd)",
                parts[0]
            ));
        }
    } else if !(parts.len() == 2 && parts[0] == "modules") {
        return Some(
            "a relative path other than `modules/NAME` resolves inside the prefix, which holds \
             the bundle"
                .to_string(),
        );
    }
    if bundle_names.contains(name) {
        return Some(format!(
            "the bundle carries a file named {name:?}; a module must come from the nginx build"
        ));
    }
    None
}

/// A value for a message: at most 120 characters, the start and the end (the file name) kept.
fn shorten(v: &str) -> String {
    let n = v.chars().count();
    if n <= 120 {
        return v.to_string();
    }
    let head: String = v.chars().take(40).collect();
    let tail: String = v.chars().skip(n - 77).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::parser::parse_bundle;

    fn findings(files: &[(&str, &str)]) -> Vec<Diagnostic> {
        let files: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        let (config, _) = parse_bundle(&files, "nginx.conf");
        check(&config, &files)
    }

    fn lines(d: &[Diagnostic]) -> Vec<(String, u32)> {
        d.iter().map(|d| (d.path.clone(), d.line)).collect()
    }

    #[test]
    fn engines_are_refused_in_every_spelling_and_place() {
        let d = findings(&[
            (
                "nginx.conf",
                "ssl_engine /proc/self/cwd/conf/evil.so;\nSSL_Engine x;\nevents {}\n\
                 http {\n include conf.d/*.conf;\n}\n",
            ),
            (
                "conf.d/a.conf",
                "server {\n ssl_certificate_key \"engine:/x/evil.so:k\";\n\
                 proxy_ssl_certificate_key 'ENGINE:e:k';\n\
                 grpc_ssl_certificate_key   \"  Engine:e:k\";\n\
                 ssl_certificate engine:e:k;\n}\n\
                 map $ssl_server_name $key {\n default \"engine:/x.so:k\";\n}\n",
            ),
        ]);
        assert_eq!(
            lines(&d),
            [
                ("nginx.conf".to_string(), 1),
                ("nginx.conf".to_string(), 2),
                ("conf.d/a.conf".to_string(), 2),
                ("conf.d/a.conf".to_string(), 3),
                ("conf.d/a.conf".to_string(), 4),
                ("conf.d/a.conf".to_string(), 5),
                ("conf.d/a.conf".to_string(), 8),
            ],
            "{d:?}"
        );
        assert!(d.iter().all(|d| d.rule == RULE && d.is_error()));
        assert!(
            d[0].message
                .contains("`ssl_engine /proc/self/cwd/conf/evil.so`"),
            "{}",
            d[0]
        );
        assert!(d[2].message.contains("engine:/x/evil.so:k"), "{}", d[2]);
    }

    #[test]
    fn ordinary_tls_and_module_lines_pass() {
        let d = findings(&[
            (
                "nginx.conf",
                "load_module modules/ngx_stream_module.so;\n\
                 load_module /usr/lib/nginx/modules/ngx_mail_module.so;\nevents {}\n\
                 http { server { ssl_certificate_key /etc/tls/engine.key;\n\
                 ssl_certificate data:$cert; add_header X-Why \"search engine: x\"; } }\n",
            ),
            ("tls/site.key", "k"),
        ]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn load_module_that_can_reach_the_bundle_is_refused() {
        let names: BTreeSet<&str> = ["evil.so", "nginx.conf"].into_iter().collect();
        for bad in [
            "/proc/self/cwd/conf/x.so",
            "/dev/fd/3",
            "/sys/x.so",
            "/usr/lib/nginx/modules/../../../tmp/x.so",
            "./modules/x.so",
            "x.so",
            "conf/modules/x.so",
            "current/x.so",
            "versions/abc/x.so",
            "/usr/lib/nginx/modules/evil.so",
            "modules/evil.so",
            "",
        ] {
            assert!(load_module_problem(bad, &names).is_some(), "{bad:?} passed");
        }
        for good in [
            "modules/ngx_stream_module.so",
            "/usr/lib/nginx/modules/ngx_stream_module.so",
            "/etc/nginx/modules/ngx_http_geoip_module.so",
        ] {
            assert_eq!(load_module_problem(good, &names), None, "{good:?}");
        }
    }

    #[test]
    fn long_values_keep_their_file_name() {
        let long = format!("/state/versions/{}/evil.so", "a".repeat(200));
        let short = shorten(&long);
        assert!(
            short.chars().count() <= 120 && short.ends_with("/evil.so"),
            "{short}"
        );
        assert_eq!(shorten("/x/evil.so"), "/x/evil.so");
    }

    #[test]
    fn engine_values_are_recognised_only_as_a_prefix() {
        assert!(is_engine_value("engine:pkcs11:key"));
        assert!(is_engine_value(" EnGiNe:x"));
        assert!(!is_engine_value("engine"));
        assert!(!is_engine_value("/etc/engine:x"));
        assert!(!is_engine_value("data:engine:"));
    }
}
