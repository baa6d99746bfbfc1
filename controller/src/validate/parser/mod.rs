//! A hand-written nginx configuration parser (no maintained crate exists).
//!
//! The grammar is nginx's own (`ngx_conf_read_token` and `ngx_conf_parse` in ngx_conf_file.c); the
//! tree and the spelling of values follow crossplane 0.5.8, the reference parser the output is
//! compared with (`tests/tests/crossplane.rs`). The module notes in `lexer` list where the two
//! differ and which one is followed. Pure: bytes in, tree and diagnostics out, no I/O.
//!
//! Diagnostics:
//! - `SB001` a syntax error; it stops that file (as in nginx) but what was read before it is kept;
//! - `SB002` an `include` of a file that is not in the bundle (an error), a glob matching nothing
//!   (a warning, nginx accepts it), an include cycle (an error: nginx would include forever),
//!   includes that expand past [`MAX_INCLUDE_EXPANSIONS`] file reads (an error), or a missing
//!   entry file (an error at line 0 of the entry's path);
//! - `SB003` an `include` path that climbs out of the bundle, or is absolute and not below the
//!   config root ([`ParseOptions::config_root`]; an absolute one is read through [`OutsideFiles`]
//!   instead when the caller gives one: `switchback parse`).
//!
//! Includes differ from crossplane's on purpose in three ways: paths are normalized (crossplane
//! keys files by the joined string, so `./a.conf` and `a.conf` are two files to it), a path that
//! leaves the bundle is reported instead of read from the machine's disk, and a glob only matches
//! files of the bundle (crossplane also lists directories, then fails to read them).

mod include;
mod lexer;
mod outside;
mod tree;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_include;
#[cfg(test)]
mod tests_options;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_root;

use std::collections::BTreeMap;

use super::ast::{Config, Directive};
use super::diagnostic::Diagnostic;
use super::paths::{ConfigRoot, ImageFiles};

/// Blocks nested deeper than this are a syntax error. nginx has no such limit, but no real
/// configuration comes near it and it bounds the work (and the stack of every later tree walk) on
/// hostile input.
pub const MAX_DEPTH: usize = 100;

/// Most file reads the includes of a bundle may expand to (nginx reads a file again at every
/// include of it). Layered globs multiply: 300 files that each include a glob of 300 files that
/// each include a glob of 300 files are 27 million reads, minutes of `nginx -t`. Past this the
/// bundle gets an `SB002` error at the include that crossed it and no later gate runs.
pub const MAX_INCLUDE_EXPANSIONS: usize = 50_000;

/// Deepest include nesting accepted (a file including a file including … this many levels).
/// Real configs nest three or four; every later walk (lint, sandbox, agent) stops here too, so
/// deeper files would go unchecked.
pub const MAX_INCLUDE_DEPTH: usize = 32;

/// The message of the `SB002` diagnostic for an include cycle starts with this, so consumers that
/// mirror crossplane (which silently parses each file once) can tell it apart.
pub const INCLUDE_CYCLE: &str = "include cycle";

/// The name of a comment entry in a tree parsed with [`ParseOptions::comments`] (crossplane's
/// `"directive": "#"`); the comment's text is the entry's one element of `comments`. No real
/// directive has this name: a word starting with `#` is always a comment to the lexer.
pub const COMMENT: &str = "#";

/// Files outside the bundle, for `switchback parse` run on a plain file as crossplane is: an
/// absolute `include` is read from here instead of being refused with `SB003`. The parser stays
/// pure; the caller decides what "the file system" is (the real one, or a map in tests).
pub trait OutsideFiles {
    /// The contents of the file at an absolute path, or the error message when it cannot be read
    /// (an `std::io::Error`'s text, e.g. `No such file or directory (os error 2)`).
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
    /// The entries of a directory, each a name and whether it is a directory; empty when it
    /// cannot be listed.
    fn list_dir(&self, dir: &str) -> Vec<(String, bool)>;
}

/// How [`parse_bundle_with`] reads a bundle. The default is what validation uses.
#[derive(Clone, Copy, Default)]
pub struct ParseOptions<'a> {
    /// Keep comments that stand between directives as [`COMMENT`] entries
    /// (crossplane's `--include-comments`).
    pub comments: bool,
    /// Parse only the entry file: includes are not followed (crossplane's `--single-file`).
    pub single_file: bool,
    /// Where absolute includes are read from; `None` refuses them with `SB003`, as validation does.
    pub outside: Option<&'a dyn OutsideFiles>,
    /// With `outside`: the bundle's directory as an absolute path prefix ending in `/`. An absolute
    /// include under it resolves inside the bundle, so a file named both ways is read once, as
    /// crossplane (which keys files by the joined path) reads it.
    pub bundle_prefix: Option<&'a str>,
    /// The directory the bundle stands for (validation's `/etc/nginx`): an absolute include below
    /// it names bundle files, as the relative path below it would. `None` in `switchback parse`,
    /// which reads absolute paths as crossplane does.
    pub config_root: Option<&'a ConfigRoot>,
    /// Files the proxy's image provides below the config root: an include the bundle cannot
    /// satisfy is looked up here, and the file is listed under its absolute path.
    pub image: Option<&'a ImageFiles>,
    /// The agent's parse in the pod: an include below the config root that the bundle does not
    /// carry is the pod's own file (the image's, or a mounted Secret's); it is neither followed nor
    /// reported. Validation, which saw the image's files, has already judged it.
    pub pod_files: bool,
}

/// A position in a file: 1-based line and column (in characters) and the byte offset; where a
/// syntax error is reported and where tokens start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: u32,
    col: u32,
    offset: usize,
}

/// Why a file is not valid nginx syntax. Messages are nginx's own where nginx has one, so a person
/// who knows `nginx -t` recognises them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// A token where nginx does not accept it: `;` or `{` with no directive, a `}` that closes
    /// nothing or interrupts a directive, a character glued to a closing quote.
    #[error("unexpected \"{0}\"")]
    Unexpected(String),
    /// The file ends inside a directive (no `;` or `{` yet) or inside a quoted string.
    #[error("unexpected end of file, expecting \";\" or \"}}\"")]
    EofInDirective,
    /// The file ends with a block still open; says which one, since nginx's own message does not.
    #[error(
        "unexpected end of file, expecting \"}}\" (the \"{name}\" block opened on line {line} is not closed)"
    )]
    EofInBlock {
        /// The innermost open block.
        name: String,
        /// Its line.
        line: u32,
    },
    /// The file ends inside a `*_by_lua_block` body.
    #[error("unexpected end of file, expecting \"}}\" to close the Lua block")]
    EofInLua,
    /// A `*_by_lua_block` ended with `;`: its body must be a `{ ... }` block.
    #[error("directive \"{0}\" has no opening \"{{\"")]
    NoOpeningBrace(String),
    /// Blocks nested deeper than [`MAX_DEPTH`].
    #[error("blocks are nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Parses one file. On a syntax error returns the directives read before it and the error.
///
/// `path` only labels the diagnostic. Bytes that are not UTF-8 are read lossily.
pub fn parse_file(path: &str, src: &[u8]) -> (Vec<Directive>, Option<Diagnostic>) {
    parse_file_with(path, src, false)
}

/// [`parse_file`], keeping comments as [`COMMENT`] entries when `comments` is set.
pub fn parse_file_with(
    path: &str,
    src: &[u8],
    comments: bool,
) -> (Vec<Directive>, Option<Diagnostic>) {
    let (directives, error) = tree::build(src, comments);
    let diagnostic =
        error.map(|(e, pos)| Diagnostic::error("SB001", path, pos.line, pos.col, e.to_string()));
    (directives, diagnostic)
}

/// Parses `entry` and every file it includes (globs resolved inside `files`), each file once.
/// Include problems (nothing matched, path leaves the bundle) come back as diagnostics.
///
/// `files` maps bundle-relative paths (`/`-separated, no `.` or `..`) to contents. Relative include
/// paths are resolved against the directory of `entry`, as nginx resolves them against its
/// configuration prefix. Files are listed in [`Config::files`] in the order crossplane lists them
/// (the entry, then each newly included file in the order its `include` was read), and each
/// `include` directive's [`Directive::includes`] holds their indexes, glob matches sorted by name.
pub fn parse_bundle(files: &BTreeMap<String, Vec<u8>>, entry: &str) -> (Config, Vec<Diagnostic>) {
    include::parse_bundle(files, entry, &ParseOptions::default())
}

/// [`parse_bundle`] with options: comments kept, includes not followed, or absolute includes read
/// through [`OutsideFiles`] (their files are listed under their absolute paths).
pub fn parse_bundle_with(
    files: &BTreeMap<String, Vec<u8>>,
    entry: &str,
    options: &ParseOptions<'_>,
) -> (Config, Vec<Diagnostic>) {
    include::parse_bundle(files, entry, options)
}
