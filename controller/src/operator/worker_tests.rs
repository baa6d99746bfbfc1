//! The worker's read of the source, on its own task beside the runner.

use super::*;
use crate::source::git::Credentials;

/// A bare repository with one commit of `nginx.conf` on `main`, and a rollout following it.
fn followed() -> (tempfile::TempDir, ProxyRollout) {
    let remote = tempfile::tempdir().expect("tempdir");
    let repo = git2::Repository::init_bare(remote.path()).expect("init");
    repo.set_head("refs/heads/main").expect("head");
    let blob = repo.blob(b"events {}\n").expect("blob");
    let mut tree = repo.treebuilder(None).expect("tree");
    tree.insert("nginx.conf", blob, 0o100644).expect("insert");
    let tree = repo.find_tree(tree.write().expect("write")).expect("tree");
    let who = git2::Signature::now("Dev", "dev@example.invalid").expect("signature");
    repo.commit(Some("refs/heads/main"), &who, &who, "c", &tree, &[])
        .expect("commit");
    let url = remote.path().to_str().expect("utf-8").to_string();
    let object = serde_json::from_value(serde_json::json!({
        "apiVersion": "switchback.dev/v1alpha1",
        "kind": "ProxyRollout",
        "metadata": {"name": "edge", "namespace": "prod"},
        "spec": {
            "source": {"url": url, "path": ""},
            "target": {"selector": {"app": "edge"}},
        }
    }))
    .expect("a ProxyRollout");
    (remote, object)
}

/// The read runs on its own task and hands its render memo back, so the next read knows the
/// head it handed on (else every fetch would hand the engine the same head again).
#[tokio::test]
async fn a_read_on_its_own_task_hands_its_memo_back() {
    let (remote, object) = followed();
    let cache = tempfile::tempdir().expect("tempdir");
    let url = remote.path().to_str().expect("utf-8");
    let source = GitSource::new(url, Credentials::None, cache.path()).expect("source");
    let object = Arc::new(object);
    let (first, memo, _) = spawn_read(
        source.clone(),
        Arc::clone(&object),
        None,
        RenderMemo::default(),
    )
    .await
    .expect("the read task");
    assert!(first.expect("read").is_some(), "a new head is handed on");
    let (again, _, _) = spawn_read(source, object, None, memo)
        .await
        .expect("the read task");
    assert!(
        again.expect("read").is_none(),
        "the same head is nothing new"
    );
}
