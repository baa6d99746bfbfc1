//! The difference between the stable and the bad rendered config, as a unified diff per file.
//!
//! Why the rendered config and not the git diff: what broke the proxies is what nginx read, and a
//! template change can move lines far from where the commit touched them. Why bounded: a report is
//! read at 3 a.m. and stored in status; a regenerated 10,000-line file must not drown the one
//! changed `server` line, so the diff is cut at [`MAX_DIFF_LINES`] with a note saying how much is
//! missing, and overlong lines are shortened.

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

use crate::render::Bundle;

/// Most lines of unified diff kept in a report.
pub const MAX_DIFF_LINES: usize = 400;
/// Longest diff line kept, in characters; longer ones end in `…`.
pub const MAX_LINE_CHARS: usize = 400;
/// Lines of context around each change, as `diff -u`.
const CONTEXT: usize = 3;

/// How a file changed between the two bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// Only in the bad bundle.
    Added,
    /// Only in the stable bundle.
    Removed,
    /// In both, different.
    Modified,
}

/// One changed file, with its line counts, so the summary can list files without the diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    /// Bundle-relative path.
    pub path: String,
    /// Added, removed or modified.
    pub change: ChangeKind,
    /// Lines only in the bad revision (0 for a binary file).
    pub lines_added: usize,
    /// Lines only in the stable revision (0 for a binary file).
    pub lines_removed: usize,
    /// Not UTF-8 text: listed, not diffed.
    pub binary: bool,
}

/// The rendered-config diff of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDiff {
    /// Every changed file, in path order.
    pub files: Vec<FileChange>,
    /// The unified diff (`--- a/…`, `+++ b/…`, hunks), at most [`MAX_DIFF_LINES`] lines.
    pub unified: String,
    /// Whether lines were left out.
    pub truncated: bool,
    /// How many lines were left out.
    pub omitted_lines: usize,
}

/// Diffs `stable` (old) against `bad` (new), file by file in path order.
pub fn diff_bundles<'a>(stable: &'a Bundle, bad: &'a Bundle) -> ConfigDiff {
    let mut paths: Vec<&String> = stable.files().keys().chain(bad.files().keys()).collect();
    paths.sort();
    paths.dedup();
    let mut files = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for path in paths {
        let old = stable.get(path);
        let new = bad.get(path);
        if old == new {
            continue;
        }
        let change = match (old, new) {
            (None, _) => ChangeKind::Added,
            (_, None) => ChangeKind::Removed,
            _ => ChangeKind::Modified,
        };
        let (a, b) = (format!("a/{path}"), format!("b/{path}"));
        let (a, b) = match change {
            ChangeKind::Added => ("/dev/null".to_string(), b),
            ChangeKind::Removed => (a, "/dev/null".to_string()),
            ChangeKind::Modified => (a, b),
        };
        let text = |bytes: Option<&'a [u8]>| std::str::from_utf8(bytes.unwrap_or_default()).ok();
        let mut file = FileChange {
            path: path.clone(),
            change,
            lines_added: 0,
            lines_removed: 0,
            binary: false,
        };
        match (text(old), text(new)) {
            (Some(old), Some(new)) => {
                let diff = TextDiff::from_lines(old, new);
                for c in diff.iter_all_changes() {
                    match c.tag() {
                        ChangeTag::Insert => file.lines_added += 1,
                        ChangeTag::Delete => file.lines_removed += 1,
                        ChangeTag::Equal => {}
                    }
                }
                let unified = diff
                    .unified_diff()
                    .context_radius(CONTEXT)
                    .header(&a, &b)
                    .to_string();
                lines.extend(unified.lines().map(shorten));
            }
            _ => {
                file.binary = true;
                lines.push(format!("Binary files {a} and {b} differ"));
            }
        }
        files.push(file);
    }
    let omitted_lines = lines.len().saturating_sub(MAX_DIFF_LINES);
    lines.truncate(MAX_DIFF_LINES);
    let mut unified = lines.join("\n");
    if !unified.is_empty() {
        unified.push('\n');
    }
    ConfigDiff {
        files,
        unified,
        truncated: omitted_lines > 0,
        omitted_lines,
    }
}

/// Cuts a line to [`MAX_LINE_CHARS`] characters (on a character boundary).
fn shorten(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &[u8])]) -> Bundle {
        Bundle::new(
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn per_file_unified_diff_with_headers_and_counts() {
        let stable = bundle(&[
            (
                "nginx.conf",
                b"events {}\nhttp {\n  include conf.d/*.conf;\n}\n",
            ),
            (
                "conf.d/app.conf",
                b"upstream app {\n  server 127.0.0.1:9001;\n}\n",
            ),
            ("conf.d/old.conf", b"# gone\n"),
        ]);
        let bad = bundle(&[
            (
                "nginx.conf",
                b"events {}\nhttp {\n  include conf.d/*.conf;\n}\n",
            ),
            (
                "conf.d/app.conf",
                b"upstream app {\n  server 127.0.0.1:9011;\n}\n",
            ),
            ("conf.d/new.conf", b"# new\n"),
        ]);
        let d = diff_bundles(&stable, &bad);
        let summary: Vec<_> = d
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.change, f.lines_added, f.lines_removed))
            .collect();
        assert_eq!(
            summary,
            [
                ("conf.d/app.conf", ChangeKind::Modified, 1, 1),
                ("conf.d/new.conf", ChangeKind::Added, 1, 0),
                ("conf.d/old.conf", ChangeKind::Removed, 0, 1),
            ]
        );
        let expected = "\
--- a/conf.d/app.conf
+++ b/conf.d/app.conf
@@ -1,3 +1,3 @@
 upstream app {
-  server 127.0.0.1:9001;
+  server 127.0.0.1:9011;
 }
--- /dev/null
+++ b/conf.d/new.conf
@@ -0,0 +1 @@
+# new
--- a/conf.d/old.conf
+++ /dev/null
@@ -1 +0,0 @@
-# gone
";
        assert_eq!(d.unified, expected);
        assert!(!d.truncated);
    }

    #[test]
    fn long_diffs_are_cut_with_a_count_of_what_is_missing() {
        let old: String = (0..1000).map(|i| format!("line {i};\n")).collect();
        let new: String = (0..1000).map(|i| format!("line {};\n", i * 7)).collect();
        let d = diff_bundles(
            &bundle(&[("big.conf", old.as_bytes())]),
            &bundle(&[("big.conf", new.as_bytes())]),
        );
        assert_eq!(d.unified.lines().count(), MAX_DIFF_LINES);
        assert!(d.truncated && d.omitted_lines > 1000, "{}", d.omitted_lines);
        assert!(d.unified.starts_with("--- a/big.conf\n+++ b/big.conf\n@@ "));
    }

    #[test]
    fn binary_files_are_listed_and_long_lines_shortened() {
        let long = format!("# {}\n", "é".repeat(1000));
        let d = diff_bundles(
            &bundle(&[("a.bin", &[0xff, 0x00]), ("x.conf", b"")]),
            &bundle(&[("a.bin", &[0xfe, 0x00]), ("x.conf", long.as_bytes())]),
        );
        assert!(d.files[0].binary);
        assert!(
            d.unified
                .starts_with("Binary files a/a.bin and b/a.bin differ\n")
        );
        let added = d.unified.lines().find(|l| l.starts_with("+#")).unwrap();
        assert_eq!(added.chars().count(), MAX_LINE_CHARS + 1);
        assert!(added.ends_with('…'));
    }

    #[test]
    fn identical_bundles_give_an_empty_diff() {
        let b = bundle(&[("nginx.conf", b"events {}\n")]);
        let d = diff_bundles(&b, &b.clone());
        assert!(d.files.is_empty() && d.unified.is_empty() && !d.truncated);
    }
}
