//! Includes below the config root: absolute paths that name bundle files, the image's files as
//! the fallback, and what still leaves (SB003).

use std::collections::BTreeMap;

use super::{ParseOptions, parse_bundle_with};
use crate::validate::ast::Config;
use crate::validate::diagnostic::Diagnostic;
use crate::validate::paths::{ConfigRoot, ImageFiles};

fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    list.iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

fn image() -> ImageFiles {
    ImageFiles {
        source: "/usr/share/img".to_string(),
        files: files(&[
            ("mime.types", "types { text/html html; }\n"),
            ("fastcgi_params", "fastcgi_param A b;\n"),
            (
                "modules-enabled/50-echo.conf",
                "load_module modules/echo.so;\n",
            ),
            ("conf.d/default.conf", "server { listen 80; }\n"),
        ])
        .into(),
    }
}

fn parse_with(
    bundle: &[(&str, &str)],
    entry: &str,
    image: Option<&ImageFiles>,
    pod: bool,
) -> (Config, Vec<Diagnostic>) {
    let root = ConfigRoot::default();
    let options = ParseOptions {
        config_root: Some(&root),
        image,
        pod_files: pod,
        ..ParseOptions::default()
    };
    parse_bundle_with(&files(bundle), entry, &options)
}

fn paths(config: &Config) -> Vec<&str> {
    config.files.iter().map(|f| f.path.as_str()).collect()
}

fn rules(diags: &[Diagnostic]) -> Vec<(&str, u32, &str)> {
    diags
        .iter()
        .map(|d| (d.rule.as_str(), d.line, d.message.as_str()))
        .collect()
}

#[test]
fn absolute_paths_below_the_config_root_are_the_bundles_files() {
    let image = image();
    let (config, diags) = parse_with(
        &[
            (
                "nginx.conf",
                "http {\n include /etc/nginx/conf.d/*.conf;\n include /etc/nginx//x/../a.conf;\n include a.conf;\n}\n",
            ),
            ("conf.d/site.conf", "server { listen 8080; }\n"),
            ("a.conf", "sendfile on;\n"),
        ],
        "nginx.conf",
        Some(&image),
        false,
    );
    assert_eq!(rules(&diags), []);
    // The bundle has conf.d/, so the image's conf.d/default.conf is not the glob's.
    assert_eq!(paths(&config), ["nginx.conf", "conf.d/site.conf", "a.conf"]);
}

#[test]
fn the_entrys_directory_stands_for_the_config_root() {
    let (config, diags) = parse_with(
        &[
            ("edge/nginx.conf", "include /etc/nginx/x.conf;\n"),
            ("edge/x.conf", "worker_processes 1;\n"),
        ],
        "edge/nginx.conf",
        None,
        false,
    );
    assert_eq!(rules(&diags), []);
    assert_eq!(paths(&config), ["edge/nginx.conf", "edge/x.conf"]);
}

#[test]
fn files_the_bundle_lacks_come_from_the_image_under_their_absolute_paths() {
    let image = image();
    let (config, diags) = parse_with(
        &[
            (
                "nginx.conf",
                "include /etc/nginx/modules-enabled/*.conf;\nhttp {\n include /etc/nginx/mime.types;\n include fastcgi_params;\n}\n",
            ),
            ("fastcgi_params", "fastcgi_param OWN yes;\n"),
        ],
        "nginx.conf",
        Some(&image),
        false,
    );
    assert_eq!(rules(&diags), []);
    // The bundle's own fastcgi_params wins over the image's.
    assert_eq!(
        paths(&config),
        [
            "nginx.conf",
            "/etc/nginx/modules-enabled/50-echo.conf",
            "/etc/nginx/mime.types",
            "fastcgi_params"
        ]
    );
    assert_eq!(config.files[2].directives[0].name, "types");
}

#[test]
fn a_glob_is_the_images_only_over_an_image_directory() {
    let image = image();
    // The image list has conf.d/default.conf, but conf.d is not one of the image's directories:
    // the official image's default server is never included unseen.
    let (config, diags) = parse_with(
        &[("nginx.conf", "http { include /etc/nginx/conf.d/*.conf; }\n")],
        "nginx.conf",
        Some(&image),
        false,
    );
    assert_eq!(paths(&config), ["nginx.conf"]);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].severity, crate::validate::Severity::Warning);
}

#[test]
fn a_file_in_neither_is_an_error_that_names_both() {
    let image = image();
    let (_, diags) = parse_with(
        &[("nginx.conf", "include /etc/nginx/uwsgi_params;\n")],
        "nginx.conf",
        Some(&image),
        false,
    );
    assert_eq!(
        rules(&diags),
        [(
            "SB002",
            1,
            "include \"/etc/nginx/uwsgi_params\" matches no file in the bundle nor among the \
             image's files (from /usr/share/img)"
        )]
    );
}

#[test]
fn paths_outside_the_config_root_or_climbing_out_still_leave() {
    let image = image();
    let (config, diags) = parse_with(
        &[(
            "nginx.conf",
            "include /etc/nginx/../passwd;\ninclude /usr/share/nginx/x.conf;\ninclude ../up.conf;\n",
        )],
        "nginx.conf",
        Some(&image),
        false,
    );
    let got = rules(&diags);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|(rule, _, _)| *rule == "SB003"), "{got:?}");
    assert!(
        got[0].2.contains("outside the config root /etc/nginx"),
        "{}",
        got[0].2
    );
    assert_eq!(got[2].2, "include \"../up.conf\" leaves the bundle");
    assert_eq!(paths(&config), ["nginx.conf"]);
}

#[test]
fn in_the_pod_files_the_bundle_lacks_are_the_pods_own_and_not_followed() {
    let (config, diags) = parse_with(
        &[(
            "nginx.conf",
            "http { include /etc/nginx/mime.types; include fastcgi_params; }\ninclude /srv/x.conf;\n",
        )],
        "nginx.conf",
        None,
        true,
    );
    let got = rules(&diags);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "SB003");
    assert_eq!(paths(&config), ["nginx.conf"]);
}
