//! Builds the directive tree from tokens, as `ngx_conf_parse` does: a word starts a directive, the
//! following words are its arguments, `;` ends it, `{` opens its block and `}` closes the block.
//! Iterative (an explicit stack), so hostile nesting cannot overflow the call stack.

use super::lexer::{LexResult, Lexer, Tok, Word};
use super::{COMMENT, MAX_DEPTH, Pos, SyntaxError};
use crate::validate::ast::{Arg, Directive, Span};

/// A block being read: its directive and where its children start in the pending list.
struct Frame {
    dir: Directive,
    start: usize,
}

/// What has been read: every directive not yet placed in a closed block, in order (the top level
/// first, then the children of each open block), and the open blocks. One list for all levels,
/// so a block's children are moved once, into a vector of their exact number, when it closes.
struct Tree {
    pending: Vec<Directive>,
    stack: Vec<Frame>,
}

impl Tree {
    /// Adds a finished directive to the innermost open block (or the top level).
    fn push(&mut self, dir: Directive) {
        self.pending.push(dir);
    }

    /// Closes the innermost open block, if any, with the children read since it opened.
    fn close(&mut self) -> bool {
        let Some(frame) = self.stack.pop() else {
            return false;
        };
        let mut dir = frame.dir;
        dir.block = Some(self.pending.split_off(frame.start));
        self.push(dir);
        true
    }
}

/// The directives of one file and, when it is not valid, the first syntax error.
///
/// With `comments`, each comment that stands between directives becomes a [`COMMENT`] entry where
/// it is written (crossplane's `--include-comments`); without it (validation) they cost nothing.
pub(super) fn build(src: &[u8], comments: bool) -> (Vec<Directive>, Option<(SyntaxError, Pos)>) {
    let mut lexer = Lexer::new(src);
    let mut tree = Tree {
        pending: Vec::new(),
        stack: Vec::new(),
    };
    let error = read(&mut lexer, &mut tree, comments).err();
    // On an error keep what was read: close every open block around its partial children.
    while tree.close() {}
    (tree.pending, error)
}

fn read(lexer: &mut Lexer<'_>, tree: &mut Tree, comments: bool) -> LexResult<()> {
    loop {
        match lexer.next_token()? {
            Tok::Word(name) => directive(lexer, name, tree)?,
            Tok::Comment(span) if comments => {
                let text = lexer.comment_text(span);
                tree.push(comment(span, text));
            }
            Tok::Comment(_) => {}
            Tok::Semi(span) => return Err(unexpected(";", span)),
            Tok::Open(span) => return Err(unexpected("{", span)),
            Tok::Close(span) => {
                if !tree.close() {
                    return Err(unexpected("}", span));
                }
            }
            Tok::Eof(_) => {
                return match tree.stack.last() {
                    None => Ok(()),
                    Some(frame) => Err((
                        SyntaxError::EofInBlock {
                            name: frame.dir.name.clone(),
                            line: frame.dir.span.line,
                        },
                        lexer.after_last(),
                    )),
                };
            }
        }
    }
}

/// Reads one directive whose name has been read, up to its `;` or `{`.
fn directive(lexer: &mut Lexer<'_>, name: Word, tree: &mut Tree) -> LexResult<()> {
    let mut dir = Directive {
        name: name.value,
        span: name.span,
        args: Vec::new(),
        block: None,
        includes: Vec::new(),
        comments: Vec::new(),
    };
    loop {
        match lexer.next_token()? {
            Tok::Word(w) => dir.args.push(Arg {
                value: w.value,
                quote: w.quote,
                span: w.span,
            }),
            Tok::Comment(span) => dir.comments.push(lexer.comment_text(span)),
            Tok::Semi(_) if is_lua_block(&dir.name) => {
                return Err((SyntaxError::NoOpeningBrace(dir.name), start(dir.span)));
            }
            Tok::Semi(_) => {
                finish(&mut dir);
                tree.push(dir);
                return Ok(());
            }
            Tok::Open(span) if is_lua_block(&dir.name) => {
                let body = lexer.lua_block(span)?;
                dir.args.push(Arg {
                    value: body.value,
                    quote: None,
                    span: body.span,
                });
                tree.push(dir);
                return Ok(());
            }
            Tok::Open(span) => {
                if tree.stack.len() >= MAX_DEPTH {
                    return Err((SyntaxError::TooDeep(MAX_DEPTH), start(span)));
                }
                finish(&mut dir);
                let start = tree.pending.len();
                tree.stack.push(Frame { dir, start });
                return Ok(());
            }
            Tok::Close(span) => return Err(unexpected("}", span)),
            Tok::Eof(pos) => return Err((SyntaxError::EofInDirective, pos)),
        }
    }
}

/// A comment kept as an entry of the tree: the name [`COMMENT`], no arguments, the text (after
/// the `#`) as its one element of `comments`.
fn comment(span: Span, text: String) -> Directive {
    Directive {
        name: COMMENT.to_string(),
        span,
        args: Vec::new(),
        block: None,
        includes: Vec::new(),
        comments: vec![text],
    }
}

fn unexpected(what: &str, span: Span) -> (SyntaxError, Pos) {
    (SyntaxError::Unexpected(what.to_string()), start(span))
}

fn start(span: Span) -> Pos {
    Pos {
        line: span.line,
        col: span.col,
        offset: span.start,
    }
}

/// OpenResty's `*_by_lua_block` directives take raw Lua as their body (crossplane's Lua extension
/// knows a fixed list of them; every `*_by_lua_block` is Lua to nginx).
fn is_lua_block(name: &str) -> bool {
    name.ends_with("_by_lua_block")
}

/// Per-directive touches before the directive is stored.
fn finish(dir: &mut Directive) {
    if dir.name == "if" {
        strip_if_parens(&mut dir.args);
    }
}

/// Removes the parentheses around an `if` condition exactly as crossplane's `_prepare_if_args`
/// does: `if ($a = b)` has the arguments `$a`, `=`, `b`. Spans of unquoted arguments shrink with
/// their values so they still point at the text.
fn strip_if_parens(args: &mut Vec<Arg>) {
    let (Some(first), Some(last)) = (args.first(), args.last()) else {
        return;
    };
    if !(first.value.starts_with('(') && last.value.ends_with(')')) {
        return;
    }
    if let Some(first) = args.first_mut() {
        let rest = first.value.strip_prefix('(').unwrap_or(&first.value);
        let rest = rest.trim_start().to_string();
        let cut = first.value.len() - rest.len();
        if first.quote.is_none() {
            let removed = &first.value[..cut];
            first.span.start += cut;
            let chars = u32::try_from(removed.chars().count()).unwrap_or(u32::MAX);
            first.span.col = first.span.col.saturating_add(chars);
        }
        first.value = rest;
    }
    if let Some(last) = args.last_mut() {
        let rest = last.value.strip_suffix(')').unwrap_or(&last.value);
        let rest = rest.trim_end().to_string();
        let cut = last.value.len() - rest.len();
        if last.quote.is_none() {
            last.span.end = last.span.end.saturating_sub(cut).max(last.span.start);
        }
        last.value = rest;
    }
    if args.last().is_some_and(|a| a.value.is_empty()) {
        args.pop();
    }
    if args.first().is_some_and(|a| a.value.is_empty()) {
        args.remove(0);
    }
}
