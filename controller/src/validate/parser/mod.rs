//! A hand-written nginx configuration parser (no maintained crate exists).
//!
//! STUB: being written on its own branch; the signatures below are the contract.

use std::collections::BTreeMap;

use super::ast::{Config, Directive};
use super::diagnostic::Diagnostic;

/// Parses one file. On a syntax error returns the directives read before it and the error.
pub fn parse_file(path: &str, src: &[u8]) -> (Vec<Directive>, Option<Diagnostic>) {
    let _ = (path, src);
    (Vec::new(), None)
}

/// Parses `entry` and every file it includes (globs resolved inside `files`), each file once.
/// Include problems (nothing matched, path leaves the bundle) come back as diagnostics.
pub fn parse_bundle(files: &BTreeMap<String, Vec<u8>>, entry: &str) -> (Config, Vec<Diagnostic>) {
    let _ = (files, entry);
    (Config::default(), Vec::new())
}
