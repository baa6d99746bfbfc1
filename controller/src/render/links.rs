//! Symbolic links in a config directory. Git stores a link as its target text; this resolves such
//! a target against the directory itself and refuses anything that would leave it, so rendering
//! can never read a file the config repository does not contain.

use super::error::RenderError;
use super::tree::{ConfigTree, TreeEntry};

/// How many links may be chained before the chain is called a loop (Linux uses 40 too).
const MAX_HOPS: usize = 40;

/// Returns the bytes a path stands for, following links inside the tree only.
pub fn resolve<'t>(tree: &'t ConfigTree, path: &str) -> Result<&'t [u8], RenderError> {
    let mut current = path.to_string();
    for _ in 0..MAX_HOPS {
        match tree.get(&current) {
            Some(TreeEntry::File(bytes)) => return Ok(bytes),
            Some(TreeEntry::Symlink(target)) => {
                current =
                    join_inside(&current, target).ok_or_else(|| RenderError::SymlinkEscapes {
                        path: path.to_string(),
                        target: target.clone(),
                    })?;
            }
            None => {
                let is_dir = tree
                    .iter()
                    .any(|(p, _)| p.starts_with(&format!("{current}/")));
                return Err(RenderError::SymlinkBroken {
                    path: path.to_string(),
                    target: current,
                    why: if is_dir {
                        "points at a directory; link the files instead"
                    } else {
                        "points at nothing in the config directory"
                    }
                    .to_string(),
                });
            }
        }
    }
    Err(RenderError::SymlinkBroken {
        path: path.to_string(),
        target: current,
        why: "is part of a loop of links".to_string(),
    })
}

/// Resolves `target` relative to the directory holding `link`; `None` when it is absolute or
/// climbs above the root.
fn join_inside(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.starts_with('\\') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop(); // the link's own name; what is left is its directory
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, TreeEntry)]) -> ConfigTree {
        entries
            .iter()
            .map(|(p, e)| (p.to_string(), e.clone()))
            .collect()
    }

    fn link(t: &str) -> TreeEntry {
        TreeEntry::Symlink(t.to_string())
    }

    #[test]
    fn links_inside_resolve() {
        let t = tree(&[
            ("shared/common.conf", TreeEntry::File(b"x".to_vec())),
            ("conf.d/common.conf", link("../shared/common.conf")),
            ("alias.conf", link("conf.d/common.conf")),
        ]);
        assert_eq!(resolve(&t, "alias.conf").unwrap(), b"x");
    }

    #[test]
    fn links_leaving_are_refused() {
        let t = tree(&[
            ("a.conf", link("../../etc/passwd")),
            ("b.conf", link("/etc/passwd")),
        ]);
        assert!(matches!(
            resolve(&t, "a.conf"),
            Err(RenderError::SymlinkEscapes { .. })
        ));
        assert!(matches!(
            resolve(&t, "b.conf"),
            Err(RenderError::SymlinkEscapes { .. })
        ));
    }

    #[test]
    fn loops_and_dangling_links_are_errors() {
        let t = tree(&[("a", link("b")), ("b", link("a")), ("c", link("nope"))]);
        assert!(matches!(
            resolve(&t, "a"),
            Err(RenderError::SymlinkBroken { why, .. }) if why.contains("loop")
        ));
        assert!(matches!(
            resolve(&t, "c"),
            Err(RenderError::SymlinkBroken { .. })
        ));
    }
}
