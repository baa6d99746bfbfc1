//! The parse tree of an nginx configuration, shaped like `crossplane`'s output (a list of files, each
//! a list of directives with args and an optional block) so it can be checked against that
//! independent implementation, plus the byte spans the lint rules and the sandbox need.

use serde::Serialize;

/// Where a token sits in its file: 1-based line and column (in characters), and the byte range of
/// the whole token in the source including any quotes, so a tool can rewrite it in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// Byte offset of the first byte of the token.
    pub start: usize,
    /// Byte offset one past the last byte of the token.
    pub end: usize,
}

/// One argument of a directive, with quotes removed as nginx removes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    /// The value nginx sees (quotes removed; escapes as crossplane reports them).
    pub value: String,
    /// The quote character when the argument was quoted (`'` or `"`).
    pub quote: Option<char>,
    /// Where the argument is in the file.
    pub span: Span,
}

/// A directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The directive name, e.g. `proxy_pass`.
    pub name: String,
    /// Where the name is in the file.
    pub span: Span,
    /// The arguments. For `if (...)` the parentheses are removed, as crossplane does. For a
    /// `*_by_lua_block` the single argument is the raw Lua text.
    pub args: Vec<Arg>,
    /// The children when the directive has a block.
    pub block: Option<Vec<Directive>>,
    /// For `include`: indexes into [`Config::files`] of the files it pulled in, in nginx's order.
    pub includes: Vec<usize>,
    /// Comments written between the name and the `;` or `{` (the text after `#`, as crossplane
    /// spells it). nginx ignores them; they are kept only because crossplane 0.5.8 prints them as
    /// `#` entries after the directive even without `--include-comments`, and the crossplane JSON
    /// must match it.
    pub comments: Vec<String>,
}

impl Directive {
    /// The argument values as plain strings.
    pub fn arg_values(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(|a| a.value.as_str())
    }

    /// The children, or an empty slice when there is no block.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// One parsed file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedFile {
    /// Bundle-relative path.
    pub path: String,
    /// Top-level directives of this file.
    pub directives: Vec<Directive>,
    /// Whether the whole file parsed (a syntax error stops a file, as in nginx).
    pub ok: bool,
}

/// A parsed bundle: the entry file first, then every file reached through `include`, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Files in the order they were first reached.
    pub files: Vec<ParsedFile>,
}
