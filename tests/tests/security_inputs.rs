//! Security suite, inputs of rendering (issue 13, findings 6, 9 and 10): each test runs one attack
//! from the adversarial review through the real `switchback` binary (and the library where the
//! attack reaches it too) and checks it fails, with real git repositories, real files (a sparse
//! file, a FIFO) and real nginx.

#[path = "security_inputs/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;
use switchback::render::{self, ConfigTree, RenderError};
use switchback::source::local;
use switchback::validate::ast::Directive;
use switchback::validate::parser::parse_bundle;
use switchback_tests::agent_harness::nginx_available;
use switchback_tests::files::copy_tree;

use support::{
    both, commit_tree, non_directories, raw_tree, run_bounded, serve, served_conf, switchback,
};

/// The value from the review: it closes `listen`, adds a location serving `/etc/` and opens a new
/// `listen` for what the template writes after the value.
const INJECTION: &str = "8080; location /leak { alias /etc/; autoindex on; } listen 8081";

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/basic")
}

#[test]
fn render_out_never_writes_outside_out_for_a_hand_made_tree_entry() {
    for (mode, name) in [("100644", "../../../x"), ("40000", "..")] {
        let repo_dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init(repo_dir.path()).expect("init");
        let conf = repo.blob(b"events {}\nhttp {}\n").expect("blob");
        let evil = repo.blob(b"written outside --out\n").expect("blob");
        // `..` as a directory holding `x`: the path `../x`.
        let target = if mode == "40000" {
            raw_tree(&repo, &[("100644", "x", evil)])
        } else {
            evil
        };
        let root = raw_tree(
            &repo,
            &[("100644", "nginx.conf", conf), (mode, name, target)],
        );
        let commit = commit_tree(&repo, root).to_string();
        let url = format!("file://{}", repo_dir.path().display());

        let area = tempfile::tempdir().expect("tempdir");
        let out = area.path().join("a/b/c/out");
        fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
        let run = switchback(&[
            "render",
            "--repo",
            &url,
            "--out",
            out.to_str().expect("utf8"),
        ]);
        assert_eq!(run.status.code(), Some(2), "{}", both(&run));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains(&commit) && stderr.contains(&format!("{name:?}")),
            "the error names the commit and the entry: {stderr}"
        );
        assert_eq!(
            non_directories(area.path()),
            Vec::<std::path::PathBuf>::new()
        );

        // Every other reader of the tree refuses it the same way.
        let run = switchback(&["validate", "--repo", &url]);
        assert_eq!(run.status.code(), Some(2), "{}", both(&run));
        assert!(String::from_utf8_lossy(&run.stderr).contains(&commit));
    }
}

#[test]
fn render_out_does_not_follow_a_link_planted_in_out() {
    let area = tempfile::tempdir().expect("tempdir");
    let (config, out, outside) = (
        area.path().join("config"),
        area.path().join("out"),
        area.path().join("outside"),
    );
    fs::create_dir_all(config.join("conf.d")).expect("mkdir");
    fs::write(
        config.join("nginx.conf"),
        "events {}\nhttp { include conf.d/*.conf; }\n",
    )
    .expect("write");
    fs::write(config.join("conf.d/site.conf"), "server { listen 8080; }\n").expect("write");
    fs::create_dir_all(&out).expect("mkdir");
    fs::create_dir_all(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, out.join("conf.d")).expect("symlink");

    let run = switchback(&[
        "render",
        config.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", both(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("not followed"),
        "{}",
        both(&run)
    );
    assert_eq!(non_directories(&outside), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_set_key_of_30000_segments_is_refused_not_a_stack_overflow() {
    let key = vec!["a"; 30_000].join(".");
    let assignment = format!("{key}=1");

    let run = switchback(&[
        "render",
        examples().to_str().expect("utf8"),
        "--set",
        &assignment,
    ]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "a finding, not a crash: {}",
        both(&run)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("--set:0:0: error[SB010]")
            && stdout.contains("30000 segments")
            && stdout.contains("64 levels"),
        "{stdout}"
    );

    // Through the library: the key, and a value that deep handed straight to render.
    let err = render::values::from_assignments([assignment.as_str()]).expect_err("refused");
    assert!(err.to_string().contains("30000 segments"), "{err}");
    let mut deep = json!(1);
    for _ in 0..30_000 {
        // By hand: `json!` would serialize `deep` again, recursively.
        deep = serde_json::Value::Object([("a".to_string(), deep)].into_iter().collect());
    }
    let mut tree = ConfigTree::new();
    tree.insert_file("nginx.conf", b"events {}\n".to_vec());
    let err = render::render(&tree, &deep).expect_err("refused");
    assert!(
        matches!(&err, RenderError::Values { message, .. } if message.contains("30000 levels")),
        "{err}"
    );
    // Dropping a value this deep recurses: take it apart one level at a time.
    while let serde_json::Value::Object(mut map) = deep {
        deep = map.remove("a").unwrap_or_default();
    }
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_sparse_2_gib_file_is_refused_without_being_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("nginx.conf"), "events {}\n").expect("write");
    let big = dir.path().join("big.conf");
    fs::File::create(&big)
        .and_then(|f| f.set_len(2 << 30))
        .expect("sparse file");

    // The real CLI, in an address space too small to hold the file: reading it would fail
    // (or, without the limit, take 2 GiB) instead of saying why it is refused.
    let run = run_bounded(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -v 1572864 && exec \"$0\" \"$@\""])
            .arg(switchback_tests::bin::switchback_bin())
            .args(["validate", dir.path().to_str().expect("utf8")]),
    );
    assert_eq!(run.status.code(), Some(2), "{}", both(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("big.conf")
            && stderr.contains("2147483648 bytes")
            && stderr.contains("it was not read"),
        "{stderr}"
    );

    // The library, in this process: the peak memory does not move by anything like 2 GiB.
    let before = peak_rss_kib();
    let err = local::read_dir(dir.path()).expect_err("refused");
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 256 * 1024,
        "peak RSS grew by {grown} KiB: the file was read"
    );
    let err = err.to_string();
    assert!(
        err.contains("big.conf") && err.contains("it was not read"),
        "{err}"
    );
}

#[test]
fn a_fifo_in_the_config_directory_is_refused_without_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("nginx.conf"), "events {}\n").expect("write");
    let fifo = dir.path().join("upstreams.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    // Nobody ever writes to the FIFO: a reader that opens it blocks for good, and `run_bounded`
    // kills it and fails the test.
    for command in ["validate", "render"] {
        let run = switchback(&[command, dir.path().to_str().expect("utf8")]);
        assert_eq!(run.status.code(), Some(2), "{}", both(&run));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains(&fifo.display().to_string()) && stderr.contains("is a FIFO"),
            "{stderr}"
        );
    }
}

#[test]
fn a_set_value_cannot_add_a_location_with_or_without_the_filter() {
    let basic = examples();
    // The examples pass every value through nginx_token.
    let run = switchback(&[
        "validate",
        basic.to_str().expect("utf8"),
        "--set",
        &format!("site.listen={INJECTION}"),
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", both(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("error[SB010]") && stdout.contains("nginx_token"),
        "{stdout}"
    );

    // A template that forgot the filter: the override may not change the config's structure.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&basic, dir.path());
    let site = dir.path().join("conf.d/site.conf.j2");
    let text = fs::read_to_string(&site).expect("read");
    fs::write(
        &site,
        text.replace("site.listen | nginx_token", "site.listen"),
    )
    .expect("write");
    let run = switchback(&[
        "validate",
        dir.path().to_str().expect("utf8"),
        "--set",
        &format!("site.listen={INJECTION}"),
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", both(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("the override value `site.listen` changes the structure")
            && stdout.contains("`location`"),
        "{stdout}"
    );
}

/// Every `location` anywhere in the parsed bundle, as its arguments joined by spaces.
fn locations(directives: &[Directive], out: &mut Vec<String>) {
    for d in directives {
        if d.name == "location" {
            out.push(d.arg_values().collect::<Vec<_>>().join(" "));
        }
        locations(d.children(), out);
    }
}

#[test]
fn nginx_quote_keeps_the_injection_one_string_for_real_nginx() {
    if !nginx_available() {
        return;
    }
    let config = tempfile::tempdir().expect("tempdir");
    let prefix = tempfile::tempdir().expect("tempdir");
    let body =
        "        location / {\n            return 200 {{ site.body | nginx_quote }};\n        }\n";
    fs::write(
        config.path().join("nginx.conf.j2"),
        served_conf(prefix.path(), body),
    )
    .expect("write");
    fs::write(
        config.path().join("values.yaml"),
        "site:\n  body: welcome\n",
    )
    .expect("write");
    let dir = config.path().to_str().expect("utf8");
    let set = format!("site.body={INJECTION}");

    // nginx -t (in the validation sandbox) accepts the rendered config.
    let run = switchback(&["validate", "--require-nginx", dir, "--set", &set]);
    assert_eq!(run.status.code(), Some(0), "{}", both(&run));

    // The rendered config has one location, and it is not the injected one.
    let out = prefix.path().to_str().expect("utf8");
    let run = switchback(&["render", dir, "--set", &set, "--out", out]);
    assert_eq!(run.status.code(), Some(0), "{}", both(&run));
    let conf = fs::read(prefix.path().join("nginx.conf")).expect("rendered");
    let files: BTreeMap<String, Vec<u8>> = [("nginx.conf".to_string(), conf)].into();
    let (parsed, diagnostics) = parse_bundle(&files, "nginx.conf");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let mut found = Vec::new();
    locations(&parsed.files[0].directives, &mut found);
    assert_eq!(found, vec!["/"]);

    // Real nginx serves the value as text, and /leak/ is no alias of /etc/.
    let nginx = serve(prefix.path());
    assert_eq!(nginx.get("/"), (200, INJECTION.as_bytes().to_vec()));
    let (status, leaked) = nginx.get("/leak/passwd");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&leaked), INJECTION);
}

#[test]
fn nginx_quote_round_trips_arbitrary_strings_through_real_nginx() {
    if !nginx_available() {
        return;
    }
    // Generated by proptest's strategies (arbitrary Unicode, and strings made of the characters
    // nginx's grammar cares about), plus the edges; all served by one nginx.
    let mut runner = TestRunner::deterministic();
    let mut draw = |strategy: BoxedStrategy<String>, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| strategy.new_tree(&mut runner).expect("value").current())
            .collect()
    };
    let mut strings = draw(any::<String>().boxed(), 200);
    strings.extend(draw(
        "[ ;{}#\"'\\\\\n\r\ta-z(),=~*^\u{e9}\u{1F600}]{0,48}".boxed(),
        200,
    ));
    strings.extend(
        [
            "", "\\", "\"", "x\\", "\\\"", "'", "#", "}", "{", ";", "\\n", "a\r\nb", " lead",
            "trail ",
        ]
        .map(String::from),
    );
    strings
        .iter_mut()
        .for_each(|s| s.retain(|c| c != '\0' && c != '$'));

    let prefix = tempfile::tempdir().expect("tempdir");
    let body = "{% for s in strings %}        location = /{{ loop.index }} { return 200 {{ s | nginx_quote }}; }\n{% endfor %}";
    let mut tree = ConfigTree::new();
    tree.insert_file(
        "nginx.conf.j2",
        served_conf(prefix.path(), body).into_bytes(),
    );
    let bundle = render::render(&tree, &json!({ "strings": strings })).expect("render");
    fs::write(
        prefix.path().join("nginx.conf"),
        bundle.get("nginx.conf").expect("nginx.conf"),
    )
    .expect("write");

    let nginx = serve(prefix.path());
    for (i, s) in strings.iter().enumerate() {
        let (status, got) = nginx.get(&format!("/{}", i + 1));
        assert_eq!(status, 200, "{s:?}");
        assert_eq!(
            String::from_utf8_lossy(&got),
            *s,
            "nginx read back another string"
        );
    }
}
