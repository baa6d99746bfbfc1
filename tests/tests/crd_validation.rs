//! `kubectl apply --dry-run=server` of the committed CRD's examples against the test API server:
//! the shipped example is accepted, and specs that break the schema are refused with the schema's
//! own message, before anything is stored.

use std::path::Path;

use switchback_tests::kube::kubectl::Kubectl;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The shipped example with one line replaced.
fn variant(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples/kubernetes/proxyrollout.yaml"))
        .expect("example");
    assert!(text.contains(from), "the example has {from:?}");
    text.replace(from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_is_accepted_and_bad_specs_are_refused_with_the_schema_message() {
    let Some(k) = Kubectl::up().await else { return };
    let crd = root().join("crds/proxyrollout.yaml");
    k.ok(&["apply", "-f", &crd.display().to_string()]).await;
    k.ok(&["create", "namespace", "proxies"]).await;

    let example = root().join("examples/kubernetes/proxyrollout.yaml");
    let out = k
        .ok(&[
            "apply",
            "--dry-run=server",
            "-f",
            &example.display().to_string(),
        ])
        .await;
    assert!(out.contains("server dry run"), "{out}");
    let (stored, _, _) = k.run(&["get", "-n", "proxies", "prx", "edge"]).await;
    assert!(!stored, "a dry run stored the object");

    let cases = [
        (
            "    interval: 30s\n",
            "    interval: soon\n",
            "spec.source.interval in body should match",
        ),
        (
            "      method: sequential\n",
            "      method: magic\n",
            "spec.strategy.analysis.method: Unsupported value: \"magic\"",
        ),
        (
            "      alpha: 0.001\n",
            "      alpha: 0.5\n",
            "spec.strategy.analysis.alpha in body should be less than or equal to 0.1",
        ),
        (
            "    container: nginx\n",
            "    container: nginx\n    agentPort: 70000\n",
            "spec.target.agentPort in body should be less than or equal to 65535",
        ),
        (
            "    url: https://git.example.test/platform/edge-config.git\n",
            "",
            "spec.source.url: Required value",
        ),
    ];
    for (i, (from, to, message)) in cases.into_iter().enumerate() {
        let file = k.file(&format!("bad-{i}.yaml"), &variant(from, to));
        let (ok, _, stderr) = k.run(&["apply", "--dry-run=server", "-f", &file]).await;
        assert!(!ok, "accepted a spec with {to:?}");
        assert!(
            stderr.contains(message),
            "{to:?}: wanted {message:?} in {stderr}"
        );
    }
}
