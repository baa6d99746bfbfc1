//! Globbing an absolute include over [`OutsideFiles`] (the machine's file system for
//! `switchback parse`), with the same per-component matching as globs inside a bundle: glob(3)
//! syntax, a leading `.` matched only explicitly, matches sorted by path as crossplane sorts them.

use std::collections::HashMap;

use super::OutsideFiles;
use super::include::{Component, has_magic};

/// The readable files an absolute glob `pattern` matches, sorted; their contents go into `read`
/// so each is read once. Directories and unreadable files are left out (crossplane lists them
/// and then fails to read them). The work is bounded by the directories listed, one per matched
/// directory per component of the pattern.
pub(super) fn glob(
    outside: &dyn OutsideFiles,
    pattern: &str,
    read: &mut HashMap<String, Vec<u8>>,
) -> Vec<String> {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    // Directories reached so far, as absolute paths without a trailing `/` ("" is the root).
    let mut dirs = vec![String::new()];
    let mut hits = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut next = Vec::new();
        for dir in &dirs {
            if !has_magic(part) {
                next.push(format!("{dir}/{part}"));
                continue;
            }
            let component = Component::new(part);
            let listing = outside.list_dir(if dir.is_empty() { "/" } else { dir });
            for (name, is_dir) in listing {
                if component.matches(&name) && (last || is_dir) {
                    next.push(format!("{dir}/{name}"));
                }
            }
        }
        if last {
            hits = next;
        } else {
            dirs = next;
        }
    }
    hits.sort();
    hits.dedup();
    hits.retain(|path| match outside.read(path) {
        Ok(bytes) => {
            read.insert(path.clone(), bytes);
            true
        }
        Err(_) => false,
    });
    hits
}
