//! `parse_bundle` tests: include resolution, globs, file order, cycles, SB002 and SB003.

use std::collections::BTreeMap;

use super::parse_bundle;
use super::tests::render;
use crate::validate::ast::{Config, Directive};
use crate::validate::diagnostic::{Diagnostic, Severity};

fn bundle(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

fn parse(files: &[(&str, &str)]) -> (Config, Vec<Diagnostic>) {
    parse_bundle(&bundle(files), "nginx.conf")
}

fn paths(config: &Config) -> Vec<&str> {
    config.files.iter().map(|f| f.path.as_str()).collect()
}

/// Every `include` directive of a file, in document order, with its file indexes.
fn includes(dirs: &[Directive]) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for d in dirs {
        if d.name == "include" {
            out.push((
                d.arg_values().collect::<Vec<_>>().join(" "),
                d.includes.clone(),
            ));
        }
        out.extend(includes(d.children()));
    }
    out
}

fn diag(d: &Diagnostic) -> (&str, Severity, &str, u32, u32) {
    (d.rule.as_str(), d.severity, d.path.as_str(), d.line, d.col)
}

#[test]
fn globs_match_sorted_and_files_come_in_crossplanes_order() {
    let (config, diags) = parse(&[
        (
            "nginx.conf",
            "http {\n  include conf.d/*.conf;\n  server { include snippets/common.conf; }\n}\n",
        ),
        ("conf.d/b.conf", "include snippets/deep.conf;\n"),
        ("conf.d/a.conf", "a;\n"),
        ("conf.d/.hidden.conf", "hidden;\n"),
        ("conf.d/c.conf.bak", "bak;\n"),
        ("conf.d/sub/x.conf", "sub;\n"),
        ("snippets/common.conf", "include snippets/deep.conf;\n"),
        ("snippets/deep.conf", "deep;\n"),
    ]);
    assert_eq!(diags, vec![]);
    // Entry, then the entry's includes in order, then theirs: crossplane's queue.
    assert_eq!(
        paths(&config),
        vec![
            "nginx.conf",
            "conf.d/a.conf",
            "conf.d/b.conf",
            "snippets/common.conf",
            "snippets/deep.conf"
        ]
    );
    assert_eq!(
        includes(&config.files[0].directives),
        vec![
            ("conf.d/*.conf".to_string(), vec![1, 2]),
            ("snippets/common.conf".to_string(), vec![3])
        ]
    );
    // A file included twice is parsed once; both includes point at it.
    assert_eq!(includes(&config.files[2].directives)[0].1, vec![4]);
    assert_eq!(includes(&config.files[3].directives)[0].1, vec![4]);
    assert!(config.files.iter().all(|f| f.ok));
}

#[test]
fn glob_syntax_is_glob3s() {
    let files = [
        ("nginx.conf", ""),
        ("s/a1.conf", ""),
        ("s/b2.conf", ""),
        ("s/{x}.conf", ""),
        ("s/.dot.conf", ""),
        ("s/ab.conf", ""),
        ("t/a/x.conf", ""),
        ("t/b/x.conf", ""),
    ];
    let cases: &[(&str, &[&str])] = &[
        ("s/?1.conf", &["s/a1.conf"]),
        ("s/[ab]?.conf", &["s/a1.conf", "s/ab.conf", "s/b2.conf"]),
        ("s/[!a]*.conf", &["s/b2.conf", "s/{x}.conf"]),
        ("s/{x}*", &["s/{x}.conf"]),
        ("s/.*.conf", &["s/.dot.conf"]),
        (
            "s/**.conf",
            &["s/a1.conf", "s/ab.conf", "s/b2.conf", "s/{x}.conf"],
        ),
        ("*/*/x.conf", &["t/a/x.conf", "t/b/x.conf"]),
        ("./s/../t/*/x.conf", &["t/a/x.conf", "t/b/x.conf"]),
        ("s//a*", &["s/a1.conf", "s/ab.conf"]),
    ];
    for (pattern, expected) in cases {
        let mut files = files.to_vec();
        let entry = format!("include \"{pattern}\";");
        files[0] = ("nginx.conf", &entry);
        let (config, diags) = parse(&files);
        assert_eq!(diags, vec![], "{pattern}");
        assert_eq!(&paths(&config)[1..], *expected, "{pattern}");
    }
}

#[test]
fn missing_files_and_empty_globs_are_sb002() {
    let (config, diags) = parse(&[(
        "nginx.conf",
        "http {\n  include  missing.conf;\n  include \"sites/*.conf\";\n  include;\n  include a b;\n}\n",
    )]);
    let got: Vec<_> = diags.iter().map(diag).collect();
    assert_eq!(
        got,
        vec![
            ("SB002", Severity::Error, "nginx.conf", 2, 12),
            ("SB002", Severity::Warning, "nginx.conf", 3, 11),
        ]
    );
    assert_eq!(
        diags[0].message,
        "include \"missing.conf\" matches no file in the bundle"
    );
    assert_eq!(
        diags[1].message,
        "include \"sites/*.conf\" matches no file in the bundle"
    );
    assert_eq!(config.files.len(), 1);
}

#[test]
fn paths_leaving_the_bundle_are_sb003() {
    let (config, diags) = parse(&[
        (
            "nginx.conf",
            "include /etc/nginx/mime.types;\ninclude ../x.conf;\ninclude a/../../x.conf;\ninclude a/../ok.conf;\n",
        ),
        ("ok.conf", ""),
    ]);
    let got: Vec<_> = diags.iter().map(diag).collect();
    assert_eq!(
        got,
        vec![
            ("SB003", Severity::Error, "nginx.conf", 1, 9),
            ("SB003", Severity::Error, "nginx.conf", 2, 9),
            ("SB003", Severity::Error, "nginx.conf", 3, 9),
        ]
    );
    assert_eq!(
        diags[0].message,
        "include \"/etc/nginx/mime.types\" leaves the bundle"
    );
    assert_eq!(paths(&config), vec!["nginx.conf", "ok.conf"]);
}

#[test]
fn relative_paths_resolve_against_the_entrys_directory() {
    let files = bundle(&[
        (
            "conf/nginx.conf",
            "include sites/a.conf;\ninclude ../shared/b.conf;\n",
        ),
        ("conf/sites/a.conf", "include sites/c.conf;\n"),
        ("conf/sites/c.conf", ""),
        ("shared/b.conf", ""),
    ]);
    let (config, diags) = parse_bundle(&files, "conf/nginx.conf");
    assert_eq!(diags, vec![]);
    assert_eq!(
        paths(&config),
        vec![
            "conf/nginx.conf",
            "conf/sites/a.conf",
            "shared/b.conf",
            "conf/sites/c.conf"
        ]
    );
}

#[test]
fn cycles_terminate_and_are_reported() {
    let (config, diags) = parse(&[
        ("nginx.conf", "http { include a.conf; }\n"),
        ("a.conf", "include b.conf;\n"),
        (
            "b.conf",
            "server {\n  include a.conf;\n}\ninclude nginx.conf;\n",
        ),
    ]);
    assert_eq!(paths(&config), vec!["nginx.conf", "a.conf", "b.conf"]);
    assert_eq!(includes(&config.files[2].directives)[0].1, vec![1]);
    let got: Vec<_> = diags.iter().map(diag).collect();
    assert_eq!(
        got,
        vec![
            ("SB002", Severity::Error, "b.conf", 2, 11),
            ("SB002", Severity::Error, "b.conf", 4, 9),
        ]
    );
    assert_eq!(
        diags[0].message,
        "include cycle: include \"a.conf\" comes back to \"a.conf\" (a.conf -> b.conf -> a.conf); nginx would include it forever"
    );
    // A glob that matches the file it is in is a cycle too.
    let (_, diags) = parse(&[("nginx.conf", "include *.conf;\n")]);
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.starts_with(super::INCLUDE_CYCLE));
}

#[test]
fn includes_are_followed_in_any_context_and_in_files_with_errors() {
    let (config, diags) = parse(&[
        (
            "nginx.conf",
            "http {\n  map $a $b { include map.conf; }\n  types { include mime.types; }\n  include broken.conf;\n  server {\n",
        ),
        ("map.conf", "default 0;\n"),
        ("mime.types", "text/html html;\n"),
        ("broken.conf", "include after.conf;\n}\n"),
        ("after.conf", "x;\n"),
    ]);
    assert_eq!(
        paths(&config),
        vec![
            "nginx.conf",
            "map.conf",
            "mime.types",
            "broken.conf",
            "after.conf"
        ]
    );
    let got: Vec<_> = diags.iter().map(diag).collect();
    assert_eq!(
        got,
        vec![
            ("SB001", Severity::Error, "broken.conf", 2, 1),
            ("SB001", Severity::Error, "nginx.conf", 5, 11),
        ]
    );
    let ok: Vec<bool> = config.files.iter().map(|f| f.ok).collect();
    assert_eq!(ok, vec![false, true, true, false, true]);
    assert_eq!(
        render(&config.files[3].directives),
        r#"include ["after.conf"];"#
    );
}

#[test]
fn a_missing_entry_is_sb002_at_line_zero() {
    let (config, diags) = parse(&[("other.conf", "")]);
    assert!(config.files.is_empty());
    assert_eq!(
        diags.iter().map(diag).collect::<Vec<_>>(),
        vec![("SB002", Severity::Error, "nginx.conf", 0, 0)]
    );
    assert_eq!(
        diags[0].message,
        "entry file \"nginx.conf\" is not in the bundle"
    );
}

/// Layered globs: `levels` directories of `width` files, each file including the next level's
/// glob; nginx reads `width + width^2 + ... + width^levels` files.
pub(crate) fn layered(levels: usize, width: usize) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "nginx.conf".to_string(),
        b"events {}\nhttp {\n  include l1/*.conf;\n}\n".to_vec(),
    );
    for level in 1..=levels {
        for i in 0..width {
            let body = if level < levels {
                format!("include l{}/*.conf;\n", level + 1)
            } else {
                "gzip_types text/plain;\n".to_string()
            };
            files.insert(format!("l{level}/f{i:03}.conf"), body.into_bytes());
        }
    }
    files
}

#[test]
fn includes_that_expand_past_the_limit_are_refused_at_the_include_that_crossed_it() {
    // 60 + 3,600 + 216,000 reads.
    let (config, diags) = parse_bundle(&layered(3, 60), "nginx.conf");
    assert_eq!(
        config.files.len(),
        1 + 3 * 60,
        "each file is still parsed once"
    );
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{diags:?}");
    let e = errors[0];
    assert_eq!((e.rule.as_str(), e.line, e.col), ("SB002", 1, 9), "{e}");
    assert!(e.path.starts_with("l2/"), "{e}");
    assert!(e.message.contains("past 50000 file reads"), "{e}");
    assert!(e.message.contains("include \"l3/*.conf\""), "{e}");

    // Just under it: 30 + 900 + 27,000.
    let (_, diags) = parse_bundle(&layered(3, 30), "nginx.conf");
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
}

#[test]
fn includes_nested_deeper_than_the_limit_are_refused() {
    let mut files = BTreeMap::new();
    files.insert("nginx.conf".to_string(), b"include c0.conf;\n".to_vec());
    for i in 0..40 {
        files.insert(
            format!("c{i}.conf"),
            format!("include c{}.conf;\n", i + 1).into_bytes(),
        );
    }
    files.insert("c40.conf".to_string(), b"events {}\n".to_vec());
    let (_, diags) = parse_bundle(&files, "nginx.conf");
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{diags:?}");
    assert_eq!((errors[0].path.as_str(), errors[0].line), ("c31.conf", 1));
    assert!(
        errors[0].message.contains("deeper than 32"),
        "{}",
        errors[0]
    );
    files.insert("c20.conf".to_string(), b"events {}\n".to_vec());
    let (_, diags) = parse_bundle(&files, "nginx.conf");
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
}
