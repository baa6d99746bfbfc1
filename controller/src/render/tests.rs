use serde_json::json;

use super::*;

fn tree(files: &[(&str, &str)]) -> ConfigTree {
    let mut t = ConfigTree::new();
    for (p, c) in files {
        t.insert_file(*p, c.as_bytes());
    }
    t
}

fn text(bundle: &Bundle, path: &str) -> String {
    String::from_utf8(bundle.get(path).expect(path).to_vec()).unwrap()
}

const NGINX_J2: &str = "events {}\nhttp {\n{% for u in upstreams %}\n  upstream {{ u.name }} {\n{% for s in u.servers %}\n    server {{ s }};\n{% endfor %}\n  }\n{% endfor %}\n}\n";

#[test]
fn renders_templates_copies_files_and_drops_values() {
    let t = tree(&[
        ("nginx.conf.j2", NGINX_J2),
        ("mime.types", "types { text/html html; }\n"),
        (
            "values.yaml",
            "upstreams:\n  - name: app\n    servers: [\"127.0.0.1:8081\", \"127.0.0.1:8082\"]\n",
        ),
    ]);
    let b = render(&t, &serde_json::Value::Null).unwrap();
    assert_eq!(
        b.files().keys().collect::<Vec<_>>(),
        vec!["mime.types", "nginx.conf"]
    );
    assert_eq!(
        text(&b, "nginx.conf"),
        "events {}\nhttp {\n  upstream app {\n    server 127.0.0.1:8081;\n    server 127.0.0.1:8082;\n  }\n}\n"
    );
    assert_eq!(text(&b, "mime.types"), "types { text/html html; }\n");
}

#[test]
fn same_input_same_digest_and_overrides_change_it() {
    let t = tree(&[
        ("nginx.conf.j2", "listen {{ port }};\n"),
        ("values.yaml", "port: 80\n"),
    ]);
    let a = render(&t, &serde_json::Value::Null).unwrap();
    let b = render(&t, &serde_json::Value::Null).unwrap();
    assert_eq!(a.digest(), b.digest());
    let c = render(&t, &json!({"port": 8080})).unwrap();
    assert_ne!(a.digest(), c.digest());
    assert_eq!(text(&c, "nginx.conf"), "listen 8080;\n");
}

#[test]
fn undefined_value_names_template_line_and_variable() {
    let t = tree(&[(
        "conf.d/app.conf.j2",
        "server {\n  listen 80;\n  proxy_pass http://{{ upstream_name }};\n}\n",
    )]);
    let err = render(&t, &serde_json::Value::Null).unwrap_err();
    match &err {
        RenderError::Template {
            path,
            line,
            message,
        } => {
            assert_eq!(path, "conf.d/app.conf.j2");
            assert_eq!(*line, 3);
            assert!(message.contains("upstream_name"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().starts_with("conf.d/app.conf.j2:3:"),
        "{err}"
    );
}

#[test]
fn undefined_attribute_is_an_error_too() {
    let t = tree(&[
        ("nginx.conf.j2", "x {{ app.prot }};\n"),
        ("values.yaml", "app:\n  port: 1\n"),
    ]);
    let err = render(&t, &serde_json::Value::Null).unwrap_err();
    assert!(err.to_string().contains("app.prot"), "{err}");
}

#[test]
fn syntax_error_names_template_and_line() {
    let t = tree(&[("nginx.conf.j2", "a;\nb {{ oops ;\n")]);
    let err = render(&t, &serde_json::Value::Null).unwrap_err();
    assert!(
        matches!(&err, RenderError::Template { path, line: 2, .. } if path == "nginx.conf.j2"),
        "{err:?}"
    );
}

#[test]
fn partials_are_includable_but_not_output() {
    let t = tree(&[
        (
            "_proxy.j2",
            "proxy_set_header Host $host;\nproxy_pass http://{{ up }};\n",
        ),
        (
            "nginx.conf.j2",
            "location / {\n{% include \"_proxy.j2\" %}\n}\n",
        ),
        ("values.yaml", "up: app\n"),
    ]);
    let b = render(&t, &serde_json::Value::Null).unwrap();
    assert_eq!(b.files().keys().collect::<Vec<_>>(), vec!["nginx.conf"]);
    assert!(text(&b, "nginx.conf").contains("proxy_pass http://app;"));
}

#[test]
fn no_html_escaping_in_config() {
    let t = tree(&[
        ("nginx.conf.j2", "return 200 \"{{ body }}\";\n"),
        ("values.yaml", "body: \"<ok> & 'fine'\"\n"),
    ]);
    let b = render(&t, &serde_json::Value::Null).unwrap();
    assert_eq!(text(&b, "nginx.conf"), "return 200 \"<ok> & 'fine'\";\n");
}

#[test]
fn template_and_plain_file_colliding_is_an_error() {
    let t = tree(&[("a.conf", "x;"), ("a.conf.j2", "y;")]);
    assert!(matches!(
        render(&t, &serde_json::Value::Null),
        Err(RenderError::Collision { .. })
    ));
}

#[test]
fn symlink_leaving_the_directory_is_refused() {
    let mut t = tree(&[("nginx.conf", "events {}")]);
    t.insert("secret.conf", TreeEntry::Symlink("../../etc/shadow".into()));
    let err = render(&t, &serde_json::Value::Null).unwrap_err();
    assert!(matches!(err, RenderError::SymlinkEscapes { .. }), "{err:?}");
}

#[test]
fn symlink_inside_is_followed() {
    let mut t = tree(&[("shared/a.conf", "x;")]);
    t.insert(
        "conf.d/a.conf",
        TreeEntry::Symlink("../shared/a.conf".into()),
    );
    let b = render(&t, &serde_json::Value::Null).unwrap();
    assert_eq!(text(&b, "conf.d/a.conf"), "x;");
}

#[test]
fn environment_is_not_reachable() {
    // minijinja has no env access; make sure no global like `env` was added by accident.
    let t = tree(&[("nginx.conf.j2", "{{ env.HOME }}")]);
    assert!(render(&t, &serde_json::Value::Null).is_err());
}

#[test]
fn runaway_template_is_stopped() {
    let t = tree(&[(
        "nginx.conf.j2",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    )]);
    let err = render(&t, &serde_json::Value::Null).unwrap_err();
    assert!(err.to_string().contains("too much work"), "{err}");
}

#[test]
fn missing_entry_lists_files() {
    let b = render(&tree(&[("other.conf", "x;")]), &serde_json::Value::Null).unwrap();
    let err = require_entry(&b, "nginx.conf").unwrap_err();
    assert!(err.to_string().contains("other.conf"));
}

#[test]
fn a_tree_path_that_climbs_out_is_refused_whoever_built_the_tree() {
    for bad in ["../../../x", "conf.d/../../x", "a//b.conf", "a\\b.conf"] {
        let t = tree(&[("nginx.conf", "events {}\n"), (bad, "x")]);
        assert_eq!(
            render(&t, &serde_json::Value::Null),
            Err(RenderError::UnsafePath {
                path: bad.to_string()
            }),
            "{bad}"
        );
    }
}

const SITE_J2: &str = "server {\n    listen {{ site.listen }};\n    add_header X-Site \"{{ site.name }}\";\n    return 200 {{ site.body | nginx_quote }};\n}\n";

fn site_tree() -> ConfigTree {
    tree(&[
        ("nginx.conf.j2", SITE_J2),
        (
            "values.yaml",
            "site:\n  listen: 8080\n  name: shop\n  body: \"ok; { fine }\"\n",
        ),
    ])
}

#[test]
fn an_override_that_adds_a_location_is_refused() {
    let injection = "8080; location /leak { alias /etc/; autoindex on; } listen 8081";
    let err = render(&site_tree(), &json!({"site": {"listen": injection}})).unwrap_err();
    assert!(
        matches!(&err, RenderError::OverrideChangesStructure { path, line: 2, keys, .. }
            if path == "nginx.conf" && keys == "`site.listen`"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`location`") && text.contains("nginx_quote"),
        "{text}"
    );
    // The same text in values.yaml is the repository's own config: trusted, rendered as written.
    let trusted = tree(&[
        ("nginx.conf.j2", SITE_J2),
        (
            "values.yaml",
            &format!("site:\n  listen: \"{injection}\"\n  name: shop\n  body: x\n"),
        ),
    ]);
    assert!(text_of(&trusted).contains("location /leak"));
}

fn text_of(t: &ConfigTree) -> String {
    text(&render(t, &serde_json::Value::Null).unwrap(), "nginx.conf")
}

#[test]
fn overrides_with_syntax_characters_that_stay_arguments_are_fine() {
    let b = render(
        &site_tree(),
        &json!({"site": {"name": "default-src 'self'; img-src *", "body": "}; location /x {"}}),
    )
    .unwrap();
    let conf = text(&b, "nginx.conf");
    assert!(
        conf.contains("add_header X-Site \"default-src 'self'; img-src *\";"),
        "{conf}"
    );
    assert!(conf.contains("return 200 \"}; location /x {\";"), "{conf}");
    // ... unless they break out of the quotes the template put around them.
    let err = render(
        &site_tree(),
        &json!({"site": {"name": "x\"; location /leak { alias /etc/; } #"}}),
    )
    .unwrap_err();
    assert!(
        matches!(err, RenderError::OverrideChangesStructure { .. }),
        "{err:?}"
    );
}

#[test]
fn an_override_the_check_cannot_replace_is_refused() {
    let t = tree(&[(
        "nginx.conf.j2",
        "events {}\n{% set parts = v | split(';') | list %}\nworker_processes {{ parts[1] }};\n",
    )]);
    let err = render(&t, &json!({"v": "a;2"})).unwrap_err();
    assert!(
        matches!(&err, RenderError::OverrideUncheckable { keys, .. } if keys == "`v`"),
        "{err:?}"
    );
}

/// Found by the `render` fuzz target: minijinja 3.1.0 panics (`unreachable!` in its code
/// generator) on an `import` whose alias is not a plain name. A commit's template must get an
/// error naming it, never take the renderer down.
#[test]
fn an_import_aliased_to_a_call_is_a_template_error_not_a_panic() {
    let t = tree(&[
        ("nginx.conf.j2", "{% import \"_m.j2\" as m(u) %}events {}\n"),
        ("_m.j2", "{% macro x() %}{% endmacro %}"),
    ]);
    let err = render(&t, &serde_json::Value::Null).unwrap_err();
    let RenderError::Template { path, message, .. } = &err else {
        panic!("expected a template error, got {err:?}");
    };
    assert_eq!(path, "nginx.conf.j2");
    assert!(message.contains("import"), "{message}");
}
