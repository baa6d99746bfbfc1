//! Git write-back end to end (`spec.rollback.writeBack`): the rollout follows a real bare
//! repository (`origin.git`, by `file://`) that the test pushes to with the git CLI; a commit whose
//! upstream is dead is rolled back, and the controller writes a revert commit back into it, to a
//! new branch or onto `main`. The rollback never waits for git, and a refused push changes
//! nothing but an Event and status.

use std::path::{Path, PathBuf};

use switchback_tests::git_fixture::git_cli as git;
use switchback_tests::load::PER_POD_RPS;
use switchback_tests::operator_fixture::Cluster;

/// The default strategy, untouched (steps `["1", "25%", "50%", "100%"]`, bake 3m,
/// `onInconclusive: Hold`): every commit here is rolled back at its first step, or needs no
/// canary.
const DEFAULTS: &str = "    {}\n";

/// Makes a bare `origin.git` holding the cluster's repository and returns its path.
fn origin(c: &Cluster) -> PathBuf {
    let bare = c.tmp.path().join("origin.git");
    git(
        c.tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    // A reflog in the bare repository, so a failure can show who moved `main` and when.
    git(&bare, &["config", "core.logAllRefUpdates", "always"]);
    let url = bare.display().to_string();
    git(&c.repo, &["remote", "add", "origin", &url]);
    git(&c.repo, &["push", "-q", "origin", "main"]);
    bare
}

/// Commits `location` in the work repository and pushes it to origin's `main`.
fn push(c: &Cluster, location: &str, message: &str) -> String {
    let id = c.commit(location, message);
    git(&c.repo, &["push", "-q", "origin", "main"]);
    id
}

/// `git <args>` in the bare repository, trimmed.
fn in_origin(bare: &Path, args: &[&str]) -> String {
    git(bare, args).trim().to_string()
}

/// Applies the rollout following `origin` with this `writeBack` mode.
async fn apply(c: &Cluster, bare: &Path, mode: &str) {
    let text = format!(
        "apiVersion: switchback.dev/v1alpha1\nkind: ProxyRollout\nmetadata:\n  name: edge\n  namespace: edge\nspec:\n  source:\n    url: file://{}\n    ref: main\n    interval: 1s\n  target:\n    selector:\n      app: edge\n  strategy:\n{DEFAULTS}  rollback:\n    writeBack:\n      mode: {mode}\n",
        bare.display()
    );
    let file = c.k.file("rollout.yaml", &text);
    c.k.ok(&["apply", "-f", &file]).await;
}

/// The notes of the rollout's Events with this reason, one per line.
async fn notes(c: &Cluster, reason: &str) -> String {
    c.jsonpath(
        "events.events.k8s.io",
        &format!("{{range .items[?(@.reason==\"{reason}\")]}}{{.note}}{{\"\\n\"}}{{end}}"),
    )
    .await
}

/// Branch mode: the dead-upstream commit is rolled back and `origin.git` gets the branch
/// `switchback/revert-<short>` whose tree is the stable commit's, with a message naming the bad
/// commit and the incident report; `main` is untouched; status and a `RevertPushed` Event say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_mode_pushes_a_revert_branch_and_leaves_main_alone() {
    let Some(mut c) = Cluster::up(109, &["edge-0", "edge-1"]).await else {
        return;
    };
    let bare = origin(&c);
    apply(&c, &bare, "Branch").await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;
    let stable = c
        .jsonpath("proxyrollout/edge", "{.status.stable.commit}")
        .await;

    let bad = push(&c, "proxy_pass http://app;", "move app");
    c.wait_condition("RolledBack").await;
    let revert = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.lastIncident.revert.result} {.status.lastIncident.revert.branch} {.status.lastIncident.revert.commit}",
            |s| s.split_whitespace().count() == 3,
        )
        .await;
    let fields: Vec<&str> = revert.split_whitespace().collect();
    let branch = format!("switchback/revert-{}", &bad[..12]);
    assert_eq!(fields[..2], ["Pushed", branch.as_str()], "{revert}");
    let commit = fields[2];

    let on_branch = in_origin(&bare, &["rev-parse", &format!("refs/heads/{branch}")]);
    assert_eq!(on_branch, commit);
    assert_eq!(
        in_origin(&bare, &["rev-parse", &format!("{commit}^{{tree}}")]),
        in_origin(&bare, &["rev-parse", &format!("{stable}^{{tree}}")]),
        "the branch has the stable config"
    );
    assert_eq!(
        in_origin(&bare, &["rev-parse", &format!("{commit}^")]),
        bad,
        "built on main's head"
    );
    let message = in_origin(&bare, &["log", "-1", "--format=%B", commit]);
    assert!(
        message.starts_with("Revert \"move app\"")
            && message.contains(&format!("This reverts commit {bad}."))
            && message.contains("edge-incident-1"),
        "{message}"
    );
    assert_eq!(
        in_origin(&bare, &["rev-parse", "refs/heads/main"]),
        bad,
        "main untouched"
    );
    let pushed = c
        .wait_for(
            "events.events.k8s.io",
            "{range .items[?(@.reason==\"RevertPushed\")]}{.note}{\"\\n\"}{end}",
            |out| !out.is_empty(),
        )
        .await;
    assert!(pushed.contains(&branch), "{pushed}");
    // The head still names the bad commit, which stays quarantined: nothing else happens.
    c.wait_condition("Ready").await;
    assert_eq!(
        c.jsonpath("proxyrollout/edge", "{.status.quarantined[*].commit}")
            .await,
        bad
    );
    c.down().await;
}

/// Push mode: `main`'s head becomes the revert commit; the controller sees a new head with the
/// stable config and takes it as the stable revision's new name (no canary; every pod stays told
/// the stable digest). Then a second bad commit whose revert push is refused (origin's `main` is
/// locked by a push in progress): a `RevertFailed` Event and status, and the rollback stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mode_fast_forwards_main_and_a_refused_push_leaves_the_rollback_alone() {
    let Some(mut c) = Cluster::up(110, &["edge-0", "edge-1"]).await else {
        return;
    };
    let bare = origin(&c);
    apply(&c, &bare, "Push").await;
    c.start_controller().await;
    c.wait_condition("Ready").await;
    let _users = c.start_traffic(PER_POD_RPS).await;
    let digest = c
        .jsonpath("proxyrollout/edge", "{.status.stable.digest}")
        .await;

    let bad = push(&c, "proxy_pass http://app;", "move app");
    c.wait_condition("RolledBack").await;
    let revert = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.lastIncident.revert.result} {.status.lastIncident.revert.commit}",
            |s| s.starts_with("Pushed "),
        )
        .await;
    let commit = revert
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(in_origin(&bare, &["rev-parse", "refs/heads/main"]), commit);
    assert_eq!(in_origin(&bare, &["rev-parse", &format!("{commit}^")]), bad);

    let stable = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.stable.commit} {.status.stable.digest}",
            |s| s.starts_with(&commit),
        )
        .await;
    assert_eq!(
        stable,
        format!("{commit} {digest}"),
        "same config, new name"
    );
    c.wait_condition("Ready").await;
    let outcome = c
        .jsonpath(
            "proxyrollout/edge",
            &format!("{{.status.history[?(@.commit==\"{commit}\")].outcome}}"),
        )
        .await;
    assert_eq!(outcome, "Relabelled");
    let validating = notes(&c, "Validating").await;
    assert!(
        !validating.contains(&commit[..12]),
        "no validation or canary of the revert: {validating}"
    );
    let canaries = notes(&c, "CanaryStarted").await;
    assert_eq!(canaries.lines().count(), 1, "one canary only: {canaries}");
    c.assert_all_told(&digest, "after the revert").await;

    // Another bad commit, and origin's main is locked (a push in progress) when the revert goes.
    // The lock is taken before main names the commit, as a pusher holding it would move main,
    // so the controller cannot see the commit (and roll it back and push) before the lock exists.
    git(&c.repo, &["pull", "-q", "--ff-only", "origin", "main"]);
    let second = c.commit("proxy_pass http://app/v2;", "move app again");
    git(
        &c.repo,
        &["push", "-q", "origin", "HEAD:refs/heads/incoming"],
    );
    git(&bare, &["update-ref", "-d", "refs/heads/incoming"]);
    let lock = bare.join("refs/heads/main.lock");
    std::fs::write(&lock, format!("{second}\n")).expect("lock main");
    // Whole or not at all (a rename), so a fetch never reads half a ref.
    let moved = bare.join("main.new");
    std::fs::write(&moved, format!("{second}\n")).expect("write main");
    std::fs::rename(&moved, bare.join("refs/heads/main")).expect("move main");
    let failed = c
        .wait_for(
            "proxyrollout/edge",
            "{.status.lastIncident.commit} {.status.lastIncident.restoredAt} {.status.lastIncident.revert.result}",
            |s| s.starts_with(&second) && s.split_whitespace().count() == 3,
        )
        .await;
    assert!(
        failed.ends_with(" Failed"),
        "{failed}\nlastIncident: {}\norigin's main:\n{}",
        c.jsonpath("proxyrollout/edge", "{.status.lastIncident}")
            .await,
        in_origin(&bare, &["reflog", "show", "--date=iso", "refs/heads/main"]),
    );
    // Nothing of the first incident's write-back is left on the second's (status is applied
    // whole: a field the controller stops writing is gone).
    assert_eq!(
        c.jsonpath(
            "proxyrollout/edge",
            "{.status.lastIncident.revert.commit}{.status.lastIncident.revert.pushedAt}"
        )
        .await,
        "",
        "a refused push has no commit and no push time"
    );
    let error = c
        .jsonpath("proxyrollout/edge", "{.status.lastIncident.revert.error}")
        .await;
    assert!(error.contains("refused the push to main"), "{error}");
    let warnings = c
        .wait_for(
            "events.events.k8s.io",
            "{range .items[?(@.reason==\"RevertFailed\")]}{.note}{\"\\n\"}{end}",
            |out| !out.is_empty(),
        )
        .await;
    assert!(
        warnings.contains(&second[..12]) && warnings.contains("the rollback itself stands"),
        "{warnings}"
    );
    c.wait_condition("Ready").await;
    assert_eq!(
        c.jsonpath("proxyrollout/edge", "{.status.stable.digest}")
            .await,
        digest
    );
    c.assert_all_told(&digest, "the rollback stands").await;
    std::fs::remove_file(&lock).expect("unlock");
    assert_eq!(
        in_origin(&bare, &["rev-parse", "refs/heads/main"]),
        second,
        "nothing forced"
    );
    c.down().await;
}
