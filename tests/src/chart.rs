//! The Helm chart as the tests see it: where it is, `helm` run without a cluster (HOME in a temp
//! dir), and its rendered objects, for `helm_chart.rs` and `chart_controller.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::kube::kubectl::tool_bin;
use crate::manifests::parse_stream;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `charts/switchback`.
pub fn chart_dir() -> String {
    repo_root().join("charts/switchback").display().to_string()
}

/// The chart's `ci/full-values.yaml`: every option set.
pub fn full_values() -> String {
    repo_root()
        .join("charts/switchback/ci/full-values.yaml")
        .display()
        .to_string()
}

/// Runs helm without a cluster (lint, template), HOME in a temp dir; returns (ok, stdout,
/// stderr), or `None` when helm is not installed (the caller skips).
pub fn helm(args: &[&str]) -> Option<(bool, String, String)> {
    let bin = tool_bin("helm")?;
    let home = tempfile::tempdir().expect("helm home");
    let out = std::process::Command::new(bin)
        .args(args)
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .expect("run helm");
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `helm template r1 <chart> -n switchback` with `extra` arguments, parsed; `None` when helm is
/// not installed.
pub fn render(extra: &[&str]) -> Option<Vec<Value>> {
    let chart = chart_dir();
    let mut args = vec!["template", "r1", chart.as_str(), "-n", "switchback"];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = helm(&args)?;
    assert!(ok, "helm {args:?} failed: {stderr}");
    Some(parse_stream(&stdout).unwrap_or_else(|e| panic!("helm {args:?} printed bad YAML: {e}")))
}

/// The objects of `kind`.
pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// `Kind namespace/name`, for messages.
pub fn name(obj: &Value) -> String {
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}
