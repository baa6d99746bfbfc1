//! The renderer (`render`): a config directory's `values.yaml`, its templates and partials, the
//! `--set` style overrides, rendered to a bundle.

use crate::render::values::{depth, from_assignments};
use crate::render::{ConfigTree, TreeEntry, VALUES_FILE};

/// The file of an input holding override assignments, one `key.path=value` a line; not part of
/// the tree.
pub const SET_FILE: &str = "--set";

/// A file whose content starts with this is a symbolic link to the rest of its first line.
pub const LINK_PREFIX: &[u8] = b"-> ";

/// One input: a config directory in the framing of [`super::split_files`] (the default file is
/// `nginx.conf.j2`), optionally with a [`SET_FILE`] of overrides.
///
/// Checks: overrides from assignments stay within the values depth limit; rendering is
/// deterministic (twice, the same bundle or the same error) and a bundle's digest is that of its
/// files.
pub fn render(data: &[u8]) {
    let mut files = super::split_files(data, "nginx.conf.j2");
    let overrides = match files.remove(SET_FILE) {
        Some(set) => {
            let text = String::from_utf8_lossy(&set);
            match from_assignments(text.lines()) {
                Ok(v) => {
                    assert!(
                        depth(&v) <= crate::render::values::MAX_DEPTH,
                        "overrides deeper than allowed"
                    );
                    v
                }
                Err(_) => serde_json::Value::Null,
            }
        }
        None => serde_json::Value::Null,
    };
    let mut tree = ConfigTree::new();
    for (path, body) in files {
        match body.strip_prefix(LINK_PREFIX) {
            Some(target) => {
                let target = String::from_utf8_lossy(target);
                let target = target.lines().next().unwrap_or("").to_string();
                tree.insert(path, TreeEntry::Symlink(target));
            }
            None => tree.insert_file(path, body),
        }
    }
    let run = || super::with_caught_panics_quiet(|| crate::render::render(&tree, &overrides));
    let (first, second) = (run(), run());
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.digest(), b.digest(), "render is not deterministic");
            let again = crate::render::Bundle::new(a.files().clone());
            assert_eq!(
                again.digest(),
                a.digest(),
                "digest is not that of the files"
            );
            assert!(
                a.get(VALUES_FILE).is_none(),
                "values.yaml leaked into the bundle"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors differ"),
        _ => panic!("render is not deterministic: {first:?} then {second:?}"),
    }
    if let Err(e) = &first {
        let _ = e.to_diagnostic();
    }
}
