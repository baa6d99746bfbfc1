//! Every relative link in the user-facing Markdown (README, docs/, the chart's README, the rule
//! pages) points at a file that exists, so a renamed page or example cannot leave a dead link.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// The targets of `[text](target)` links in `text`, without `#anchors`, skipping URLs.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split('#').next().unwrap_or_default().trim();
            if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                links.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    links
}

#[test]
fn links_are_found_outside_code_blocks_only() {
    let text = "see [a](docs/a.md#x) and [b](https://x.test)\n```\n[c](nope.md)\n```\n[d](../d.md)";
    assert_eq!(relative_links(text), vec!["docs/a.md", "../d.md"]);
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    markdown_files(&root.join("docs"), &mut files);
    markdown_files(&root.join("charts"), &mut files);
    let mut dead = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let dir = file.parent().expect("a parent");
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                dead.push(format!(
                    "{}: {link}",
                    file.strip_prefix(&root).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(files.len() > 20, "too few pages found: {}", files.len());
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}
