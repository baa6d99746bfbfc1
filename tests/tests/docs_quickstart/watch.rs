//! `kubectl get prx -w`, read as a reader reads it: until it shows what the page's comment says.

use super::*;

/// `kubectl get prx -w`, read as a reader would until it shows what the comment says, then
/// stopped. Step 4's watch: the pushed commit's first step, `Waiting` while it bakes, then
/// `Inconclusive` (held). Step 5's: every step of the pushed commit, then `Idle` on it.
pub(crate) async fn watch_says(w: &World, cmd: &PageCommand) {
    let head = git(&w.clone, &["rev-parse", "HEAD"]).trim().to_string();
    if cmd.comment.contains("then PHASE Idle") {
        let seen = watch_until(w, &cmd.line, |l| {
            // Idle with the pushed commit as STABLE.
            l.contains("Idle") && l.split_whitespace().nth(1) == Some(head.as_str())
        })
        .await;
        let on_head: Vec<&String> = seen.iter().filter(|l| l.contains(&head)).collect();
        for step in ["1/4", "2/4", "3/4", "4/4"] {
            assert!(
                on_head
                    .iter()
                    .any(|l| l.contains("Canary") && l.contains(step)),
                "`{}` never showed step {step}:\n{}",
                cmd.line,
                seen.join("\n")
            );
        }
    } else {
        assert!(
            cmd.comment.contains("VERDICT Waiting, then Inconclusive"),
            "{cmd:?}"
        );
        let seen = watch_until(w, &cmd.line, |l| {
            l.contains(&head)
                && l.contains("Canary")
                && l.contains("1/4")
                && l.contains("Inconclusive")
        })
        .await;
        assert!(
            seen.iter()
                .any(|l| l.contains(&head) && l.contains("1/4") && l.contains("Waiting")),
            "`{}` never showed the bake Waiting before the step was held:\n{}",
            cmd.line,
            seen.join("\n")
        );
    }
}

/// Runs the watch `line` until a line satisfies `done`; returns every line seen. Fails with them
/// if the watch ends or [`PATIENCE`] × 3 passes first.
async fn watch_until(w: &World, line: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("bash")
        .args(["-c", &format!("exec {line}")])
        .current_dir(&w.work)
        .env("PATH", &w.path)
        .env("KUBECONFIG", w.k.server.kubeconfig_path())
        .env("HOME", w.tmp.path().join("home"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(PATIENCE * 3, async {
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("{l}");
            let hit = done(&l);
            seen.push(l);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    assert!(
        matches!(found, Ok(true)),
        "`{line}` never showed what its comment says:\n{}",
        seen.join("\n")
    );
    seen
}
