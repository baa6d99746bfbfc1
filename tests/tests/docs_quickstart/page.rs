//! The page as commands: its `sh` blocks split into commands with their comments and sections,
//! and what the comments say each command's output must show.

/// One command of the page: its text (continuation lines joined) and the comment after it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PageCommand {
    pub(crate) section: String,
    pub(crate) line: String,
    pub(crate) comment: String,
}

/// The `sh` blocks of `page`, command by command, with the `## ` section each is under.
pub(crate) fn commands(page: &str) -> Vec<PageCommand> {
    let mut out = Vec::new();
    let (mut section, mut in_block, mut pending) = (String::new(), false, String::new());
    for raw in page.lines() {
        if let Some(title) = raw.strip_prefix("## ") {
            section = title.to_string();
        } else if raw.starts_with("```sh") {
            in_block = true;
        } else if raw.starts_with("```") {
            in_block = false;
        } else if in_block {
            let (code, comment) = split_comment(raw);
            pending.push_str(code.trim_end().trim_end_matches('\\'));
            if code.trim_end().ends_with('\\') {
                pending.push(' ');
                continue;
            }
            let line = pending.split_whitespace().collect::<Vec<_>>().join(" ");
            pending.clear();
            if !line.is_empty() {
                out.push(PageCommand {
                    section: section.clone(),
                    line,
                    comment: comment.trim().to_string(),
                });
            }
        }
    }
    out
}

/// A line's code and its trailing comment (`#` after whitespace, outside quotes).
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev_space => return (&line[..i], &line[i + 1..]),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    (line, "")
}

#[test]
fn the_page_parses_into_commands_with_their_comments() {
    let page = "## 1. A\n\n```sh\nkubectl get x   # shows x\nhelm install a \\\n  --set b={c}\n```\n\ntext # not code\n## 2. B\n```sh\nkubectl get y -o jsonpath='{.a#b}'\n```\n";
    let got = commands(page);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].line, "kubectl get x");
    assert_eq!(got[0].comment, "shows x");
    assert_eq!(got[1].line, "helm install a --set b={c}");
    assert_eq!(got[2].section, "2. B");
    assert_eq!(got[2].line, "kubectl get y -o jsonpath='{.a#b}'");
}

/// What a command's output must show, when the page says (in a comment, or by what the step is
/// for), and a reader would re-run it until it does: (what, check).
pub(crate) type Check = Box<dyn Fn(&str) -> bool>;

pub(crate) fn expectation(
    cmd: &PageCommand,
    pushed: &[String],
    replicas: usize,
) -> Option<(String, Check)> {
    let line = cmd.line.as_str();
    let outage = pushed.get(2).cloned().unwrap_or_default();
    if line.contains("holderIdentity") {
        return Some(("a Lease holder".into(), Box::new(|o| !o.trim().is_empty())));
    }
    if cmd.comment.starts_with("STABLE") {
        let want = format!("{replicas}/{replicas}");
        return Some((
            format!("Idle and READY {want}"),
            Box::new(move |o| o.contains("Idle") && o.contains(&want)),
        ));
    }
    if line.starts_with("kubectl switchback status") && cmd.comment.contains("HELD") {
        return Some((
            "step 1/4 Inconclusive and HELD, with what the analysis saw".into(),
            Box::new(|o| {
                o.lines().any(|l| {
                    l.contains("step") && l.contains("1/4") && l.contains("Inconclusive  <- HELD")
                }) && o.contains("only the agents' health probes reached the canary")
                    && o.contains("Reconciling  True   StepHeld")
            }),
        ));
    }
    if line.starts_with("kubectl switchback status") {
        return Some((
            "the rollout's status".into(),
            Box::new(|o| o.contains("edge")),
        ));
    }
    if line.contains("describe prx") {
        return Some((
            "heldSince, the message and the StepHeld Warning".into(),
            Box::new(|o| {
                o.contains("Held Since:")
                    && o.contains("StepHeld")
                    && o.contains("only the agents' health probes reached the canary")
                    && o.contains("need 200 requests in each")
            }),
        ));
    }
    if line.starts_with("kubectl switchback history") {
        let short = pushed.get(1).and_then(|c| c.get(..12)).unwrap_or_default();
        let short = short.to_string();
        return Some((
            format!("{short} Promoted"),
            Box::new(move |o| {
                !short.is_empty()
                    && o.lines()
                        .any(|l| l.contains(&short) && l.contains("Promoted"))
            }),
        ));
    }
    if line.contains("quarantined[*].commit") {
        return Some((
            format!("{outage} quarantined"),
            Box::new(move |o| o.trim() == outage),
        ));
    }
    if line.contains("get events") {
        return Some((
            "a RolledBack event".into(),
            Box::new(|o| o.contains("RolledBack")),
        ));
    }
    if line.contains("report\\.md") {
        let short = outage.get(..12).unwrap_or_default().to_string();
        return Some((
            format!("a report naming {short}"),
            Box::new(move |o| !short.is_empty() && o.contains(&short)),
        ));
    }
    None
}
