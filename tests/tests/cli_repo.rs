//! `switchback render --repo`: the digest names the config at a commit, whatever the machine.
//! Real git repositories in temp dirs, made with the `git` command as a user would.

use std::path::Path;
use std::process::Command;

use switchback_tests::bin::switchback_bin;
use switchback_tests::files::copy_tree;

use switchback_tests::git_fixture::git_cli as git;

/// Renders `--path edge` of `repo` at `rev` and returns (digest, commit) from the JSON output.
fn render(repo: &str, rev: &str) -> (String, String) {
    let out = Command::new(switchback_bin())
        .args([
            "render", "--repo", repo, "--rev", rev, "--path", "edge", "--format", "json",
        ])
        .output()
        .expect("run switchback");
    assert!(
        out.status.success(),
        "switchback render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    (
        v["digest"].as_str().expect("digest").to_string(),
        v["revision"]["commit"]
            .as_str()
            .expect("commit")
            .to_string(),
    )
}

#[test]
fn the_same_commit_gives_the_same_digest_and_a_change_gives_another() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/basic");
    copy_tree(&examples, &work.join("edge"));
    std::fs::write(work.join("README"), "proxy config\n").expect("write");
    git(tmp.path(), &["init", "-q", "-b", "main", "work"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let url = format!("file://{}", work.display());

    let (first, commit1) = render(&url, "main");
    let (again, commit1_again) = render(&url, "main");
    assert_eq!((&first, &commit1), (&again, &commit1_again));

    // A commit outside the config directory changes the commit, not the config.
    std::fs::write(work.join("README"), "proxy config, edited\n").expect("write");
    git(&work, &["commit", "-q", "-am", "docs only"]);
    let (docs_only, commit2) = render(&url, "main");
    assert_ne!(commit2, commit1);
    assert_eq!(
        docs_only, first,
        "a change outside --path must not change the digest"
    );

    // A commit that changes the rendered output changes the digest.
    let values = work.join("edge/values.yaml");
    let text = std::fs::read_to_string(&values).expect("values");
    std::fs::write(&values, text.replace("listen: 8080", "listen: 8081")).expect("write");
    git(&work, &["commit", "-q", "-am", "listen on 8081"]);
    let (changed, _) = render(&url, "main");
    assert_ne!(changed, first);

    // The old commit still renders to the old digest.
    let (old, old_commit) = render(&url, &commit1);
    assert_eq!((old, old_commit), (first, commit1));
}

#[test]
fn a_token_in_the_url_never_appears_in_the_error() {
    let secret = "s3cr3t-t0ken-value";
    let out = Command::new(switchback_bin())
        .args([
            "render",
            "--repo",
            &format!("https://user:{secret}@127.0.0.1:9/proxy.git"),
        ])
        .env("SWITCHBACK_GIT_TOKEN", "another-s3cr3t")
        .output()
        .expect("run switchback");
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(secret), "{all}");
    assert!(!all.contains("another-s3cr3t"), "{all}");
    assert!(
        all.contains("127.0.0.1"),
        "the error should still say where: {all}"
    );
}
