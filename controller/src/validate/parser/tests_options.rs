//! [`ParseOptions`]: comments kept only when asked, includes not followed, absolute includes read
//! through [`OutsideFiles`] (a map here, the file system in `switchback parse`).

use std::collections::{BTreeMap, HashMap};

use super::{COMMENT, OutsideFiles, ParseOptions, parse_bundle, parse_bundle_with};

fn bundle(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

/// A file system of absolute paths; a directory is any proper prefix of a path.
struct FakeDisk(HashMap<String, String>);

impl OutsideFiles for FakeDisk {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        match self.0.get(path) {
            Some(text) => Ok(text.as_bytes().to_vec()),
            None if self.0.keys().any(|k| k.starts_with(&format!("{path}/"))) => {
                Err("Is a directory (os error 21)".into())
            }
            None => Err("No such file or directory (os error 2)".into()),
        }
    }

    fn list_dir(&self, dir: &str) -> Vec<(String, bool)> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut out: Vec<(String, bool)> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| match rest.split_once('/') {
                Some((name, _)) => (name.to_string(), true),
                None => (rest.to_string(), false),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn disk(files: &[(&str, &str)]) -> FakeDisk {
    FakeDisk(
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect(),
    )
}

#[test]
fn comments_become_entries_only_when_asked() {
    let files = bundle(&[(
        "nginx.conf",
        "# a\nhttp { # b\n  gzip on; # c\n}\n# cut off",
    )]);
    let (config, _) = parse_bundle(&files, "nginx.conf");
    assert!(config.files[0].directives.iter().all(|d| d.name != COMMENT));
    let options = ParseOptions {
        comments: true,
        ..ParseOptions::default()
    };
    let (config, _) = parse_bundle_with(&files, "nginx.conf", &options);
    let top = &config.files[0].directives;
    assert_eq!(top[0].name, COMMENT);
    assert_eq!(top[0].comments, [" a"]);
    assert_eq!(top[0].span.line, 1);
    let http: Vec<(&str, u32)> = top[1]
        .children()
        .iter()
        .map(|d| (d.name.as_str(), d.span.line))
        .collect();
    assert_eq!(http, [("#", 2), ("gzip", 3), ("#", 3)]);
    // A comment the end of the file cuts off is dropped, as crossplane drops it.
    assert_eq!(top.len(), 2);
}

#[test]
fn single_file_reads_no_include() {
    let files = bundle(&[("nginx.conf", "include a.conf;\ninclude missing.conf;\n")]);
    let options = ParseOptions {
        single_file: true,
        ..ParseOptions::default()
    };
    let (config, diags) = parse_bundle_with(&files, "nginx.conf", &options);
    assert_eq!(config.files.len(), 1);
    assert!(diags.is_empty(), "{diags:?}");
}

#[test]
fn absolute_includes_are_refused_without_an_outside_source() {
    let files = bundle(&[("nginx.conf", "include /etc/nginx/mime.types;\n")]);
    let (_, diags) = parse_bundle(&files, "nginx.conf");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].rule, "SB003");
}

#[test]
fn absolute_includes_are_read_through_the_outside_source() {
    let files = bundle(&[(
        "nginx.conf",
        "include /etc/mime.types;\ninclude /etc/conf.d/*.conf;\ninclude /etc/gone.conf;\n\
         include /etc/conf.d;\ninclude /etc/none/*.conf;\n",
    )]);
    let fs = disk(&[
        ("/etc/mime.types", "types { text/html html; }\n"),
        ("/etc/conf.d/b.conf", "gzip on;\n"),
        ("/etc/conf.d/a.conf", "include /etc/mime.types;\n"),
        ("/etc/conf.d/.hidden.conf", "hidden on;\n"),
        ("/etc/conf.d/sub.conf/x", "not a file to include\n"),
    ]);
    let options = ParseOptions {
        outside: Some(&fs),
        ..ParseOptions::default()
    };
    let (config, diags) = parse_bundle_with(&files, "nginx.conf", &options);
    let paths: Vec<&str> = config.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "nginx.conf",
            "/etc/mime.types",
            "/etc/conf.d/a.conf",
            "/etc/conf.d/b.conf"
        ]
    );
    assert_eq!(config.files[0].directives[1].includes, [2, 3]);
    assert_eq!(config.files[2].directives[0].includes, [1]);
    let found: Vec<(&str, u32, &str)> = diags
        .iter()
        .map(|d| (d.rule.as_str(), d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "SB002",
                3,
                "include \"/etc/gone.conf\" cannot be read: No such file or directory (os error 2)"
            ),
            (
                "SB002",
                4,
                "include \"/etc/conf.d\" cannot be read: Is a directory (os error 21)"
            ),
            (
                "SB002",
                5,
                "include \"/etc/none/*.conf\" matches no file in the bundle"
            ),
        ]
    );
    assert!(!diags[2].is_error());
}

#[test]
fn an_absolute_include_under_the_bundle_prefix_is_a_bundle_file() {
    let files = bundle(&[
        (
            "nginx.conf",
            "include /srv/site/a.conf;\ninclude a.conf;\ninclude /srv/site/*.types;\n",
        ),
        ("a.conf", "gzip on;\n"),
        ("mime.types", "types {}\n"),
    ]);
    let fs = disk(&[]);
    let options = ParseOptions {
        outside: Some(&fs),
        bundle_prefix: Some("/srv/site/"),
        ..ParseOptions::default()
    };
    let (config, diags) = parse_bundle_with(&files, "nginx.conf", &options);
    assert!(diags.is_empty(), "{diags:?}");
    let paths: Vec<&str> = config.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["nginx.conf", "a.conf", "mime.types"]);
}
