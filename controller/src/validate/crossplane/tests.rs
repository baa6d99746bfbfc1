//! `to_crossplane` and its flags on small bundles; the real comparison with crossplane is
//! `tests/tests/crossplane.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::validate::parser::parse_bundle;
use crate::validate::parser::{ParseOptions, parse_bundle_with};

fn run(files: &[(&str, &str)], base: &str) -> Value {
    let files: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    let (config, diags) = parse_bundle(&files, "nginx.conf");
    to_crossplane(&config, &diags, base)
}

#[test]
fn matches_crossplane_for_a_small_bundle() {
    let out = run(
        &[
            (
                "nginx.conf",
                "events {}\nhttp {\n  include conf.d/*.conf;\n  include missing.conf;\n}\n",
            ),
            ("conf.d/a.conf", "server { listen 80; }\n"),
        ],
        "/b",
    );
    let expected = json!({
        "status": "failed",
        "errors": [{"file": "/b/nginx.conf", "error": "[Errno 2] No such file or directory: '/b/missing.conf'", "line": 4}],
        "config": [
            {"file": "/b/nginx.conf", "status": "failed",
             "errors": [{"error": "[Errno 2] No such file or directory: '/b/missing.conf'", "line": 4}],
             "parsed": [
                {"directive": "events", "line": 1, "args": [], "block": []},
                {"directive": "http", "line": 2, "args": [], "block": [
                    {"directive": "include", "line": 3, "args": ["conf.d/*.conf"], "includes": [1]},
                    {"directive": "include", "line": 4, "args": ["missing.conf"], "includes": []},
                ]},
             ]},
            {"file": "/b/conf.d/a.conf", "status": "ok", "errors": [], "parsed": [
                {"directive": "server", "line": 1, "args": [], "block": [
                    {"directive": "listen", "line": 1, "args": ["80"]},
                ]},
            ]},
        ],
    });
    assert_eq!(out, expected);
    // Key order is part of the shape.
    let text = serde_json::to_string(&out).expect("serializes");
    assert!(text.starts_with("{\"status\":\"failed\",\"errors\":[{\"file\":"));
}

#[test]
fn a_syntax_error_empties_the_file_as_crossplane_does() {
    let out = run(&[("nginx.conf", "events {}\nhttp {\n")], "");
    assert_eq!(
        out["errors"],
        json!([{"file": "nginx.conf", "error": "unexpected end of file, expecting \"}\" in nginx.conf:2", "line": 2}])
    );
    assert_eq!(out["config"][0]["parsed"], json!([]));
    assert_eq!(out["config"][0]["status"], json!("failed"));
}

#[test]
fn a_missing_entry_is_reported_like_crossplane() {
    let out = run(&[("other.conf", "")], "/x/");
    assert_eq!(
        out["errors"],
        json!([{"file": "/x/nginx.conf", "error": "[Errno 2] No such file or directory: '/x/nginx.conf'", "line": null}])
    );
}

#[test]
fn warnings_and_cycles_are_not_crossplane_errors() {
    let out = run(
        &[("nginx.conf", "include nginx.conf;\ninclude none/*.conf;\n")],
        "",
    );
    assert_eq!(out["status"], json!("ok"));
    assert_eq!(out["config"][0]["parsed"][0]["includes"], json!([0]));
}

fn run_with(files: &[(&str, &str)], options: &Options, comments: bool) -> Value {
    let files: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    let parse = ParseOptions {
        comments,
        single_file: options.single_file,
        ..ParseOptions::default()
    };
    let (config, diags) = parse_bundle_with(&files, "nginx.conf", &parse);
    to_crossplane_with(&config, &diags, "", options)
}

#[test]
fn no_catch_keeps_the_first_error_and_follows_no_later_include() {
    let files = [
        (
            "nginx.conf",
            "include a.conf;\ninclude missing.conf;\ninclude b.conf;\n",
        ),
        ("a.conf", "gzip on;\n"),
        ("b.conf", "gzip off;\n"),
    ];
    let options = Options {
        no_catch: true,
        ..Options::default()
    };
    let out = run_with(&files, &options, false);
    let names: Vec<&str> = out["config"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["file"].as_str())
        .collect();
    assert_eq!(names, ["nginx.conf", "a.conf"]);
    assert_eq!(out["config"][0]["parsed"], json!([]));
    assert_eq!(
        out["errors"],
        json!([{"file": "nginx.conf", "error": "[Errno 2] No such file or directory: 'missing.conf'", "line": 2}])
    );
    // Caught (the default), every file is read and the tree is kept.
    let out = run_with(&files, &Options::default(), false);
    assert_eq!(out["config"].as_array().map(Vec::len), Some(3));
    assert_eq!(out["config"][0]["parsed"][2]["includes"], json!([2]));
}

#[test]
fn ignore_drops_directives_and_the_includes_inside_them() {
    let files = [
        (
            "nginx.conf",
            "http {\n  server {\n    include s.conf;\n  }\n  gzip on;\n}\n",
        ),
        ("s.conf", "listen 80;\n"),
    ];
    let options = Options {
        ignore: vec!["server".into()],
        ..Options::default()
    };
    let out = run_with(&files, &options, false);
    assert_eq!(out["config"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        out["config"][0]["parsed"],
        json!([{"directive": "http", "line": 1, "args": [], "block": [
            {"directive": "gzip", "line": 5, "args": ["on"]},
        ]}])
    );
}

#[test]
fn strict_names_the_file_crossplane_names_after_an_include() {
    let files = [
        ("nginx.conf", "bogus 1;\ninclude a.conf;\nbogus 2;\n"),
        ("a.conf", ""),
    ];
    let options = Options {
        strict: true,
        ..Options::default()
    };
    let out = run_with(&files, &options, false);
    assert_eq!(
        out["config"][0]["errors"],
        json!([
            {"error": "unknown directive \"bogus\" in nginx.conf:1", "line": 1},
            {"error": "unknown directive \"bogus\" in a.conf:3", "line": 3},
        ])
    );
    assert_eq!(
        out["config"][0]["parsed"],
        json!([{"directive": "include", "line": 2, "args": ["a.conf"], "includes": [1]}])
    );
}

#[test]
fn combine_inlines_includes_and_names_each_statement_file() {
    let files = [
        ("nginx.conf", "# top\nhttp {\n  include a.conf;\n}\n"),
        ("a.conf", "gzip on;\n"),
    ];
    let options = Options {
        combine: true,
        ..Options::default()
    };
    let out = run_with(&files, &options, true);
    assert_eq!(
        out["config"],
        json!([{"file": "nginx.conf", "status": "ok", "errors": [], "parsed": [
            {"file": "nginx.conf", "directive": "#", "line": 1, "args": [], "comment": " top"},
            {"file": "nginx.conf", "directive": "http", "line": 2, "args": [], "block": [
                {"file": "a.conf", "directive": "gzip", "line": 1, "args": ["on"]},
            ]},
        ]}])
    );
}

#[test]
fn single_file_prints_includes_without_includes() {
    let files = [("nginx.conf", "include a.conf;\n")];
    let options = Options {
        single_file: true,
        ..Options::default()
    };
    let out = run_with(&files, &options, false);
    assert_eq!(out["status"], json!("ok"));
    assert_eq!(
        out["config"][0]["parsed"],
        json!([{"directive": "include", "line": 1, "args": ["a.conf"]}])
    );
}
