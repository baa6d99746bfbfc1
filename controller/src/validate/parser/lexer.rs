//! The tokenizer, a transcription of nginx's `ngx_conf_read_token` (ngx_conf_file.c) working on
//! bytes, with argument values spelled the way crossplane 0.5.8 reports them.
//!
//! Where the two disagree on *structure* this follows nginx, because nginx is what finally loads
//! the bundle (the corpus compared with crossplane avoids these cases):
//! - only space, tab, CR and LF separate words (crossplane uses Python's `isspace`), and only LF
//!   ends a line (crossplane reads with universal newlines, so a lone CR ends one too);
//! - a `}` or `#` inside an unquoted word is part of the word (crossplane splits at `}`);
//! - `{` right after `$` stays in the word and the word still ends at a space, `;` or `{`
//!   (crossplane reads `${...` up to the `}` or a space);
//! - a closing quote must be followed by a space, `;`, `{` or `)` (crossplane starts a new word);
//! - `;` or `{` with no directive, a `}` in the middle of a directive, and the end of the file in
//!   a directive or a quoted string are errors with a position (crossplane takes `;` as a name,
//!   ends the directive at the `}`, drops an unterminated string, or reports an empty message
//!   with no line);
//! - every `*_by_lua_block` is Lua, even when `{` follows without a space or after a comment, as
//!   in OpenResty (crossplane knows a fixed list and wants whitespace and then `{`).
//!
//! Where they agree on structure, values follow crossplane (the parse tree is compared with it):
//! escapes are kept verbatim (`\n` stays two characters) except that inside a quoted string an
//! escaped quote of the same kind loses its backslash. Comments inside a directive are kept with
//! it, because crossplane 0.5.8 prints those even when asked not to print comments.

use super::{Pos, SyntaxError};
use crate::validate::ast::Span;

/// One token of the nginx grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// A directive name or argument.
    Word(Word),
    /// `;`
    Semi(Span),
    /// `{`
    Open(Span),
    /// `}`
    Close(Span),
    /// A `#` comment ended by a newline; the span covers `#` up to the newline. Its text, as
    /// crossplane reports it, is [`Lexer::comment_text`] (computed only when a comment is kept).
    Comment(Span),
    /// The end of the input.
    Eof(Pos),
}

/// A word with its value as crossplane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Word {
    /// The value, quotes removed.
    pub value: String,
    /// The quote character when quoted.
    pub quote: Option<char>,
    /// Where the word is, quotes included.
    pub span: Span,
}

/// A syntax error and where it is.
pub(super) type LexResult<T> = Result<T, (SyntaxError, Pos)>;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A comment's text as crossplane reports it: crossplane reads the file with universal newlines
/// (so a CR before the LF is gone) and pairs a backslash with the next character, so a backslash
/// right before the newline ends the comment and is not part of it.
fn crossplane_comment(text: &[u8]) -> String {
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let mut end = 0;
    while end < text.len() {
        if text[end] == b'\\' {
            if end + 1 == text.len() {
                break;
            }
            end += 1;
        }
        end += 1;
    }
    String::from_utf8_lossy(&text[..end.min(text.len())]).into_owned()
}

/// The text of `bytes` as a `String`: one copy when it is UTF-8 (nearly always), else decoded
/// lossily as before.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Whether a byte of a bare word needs none of [`Lexer::bare`]'s special handling: ASCII (one
/// byte, one column) and not a separator, `;`, `{`, `$` or a backslash.
fn is_plain(b: u8) -> bool {
    b.is_ascii() && !matches!(b, b'{' | b';' | b'$' | b'\\') && !is_space(b)
}

/// Reads tokens from one file's bytes.
pub(super) struct Lexer<'a> {
    src: &'a [u8],
    /// `src` as text when it is all UTF-8 (checked once here, so a word is copied without
    /// checking it again).
    text: Option<&'a str>,
    at: usize,
    line: u32,
    col: u32,
    /// Where crossplane would say the file ended for an unclosed block: just after the last token,
    /// or the start of the line after a comment (crossplane counts a comment's newline with it).
    after_last: Pos,
}

impl<'a> Lexer<'a> {
    /// Starts at the first byte of `src`.
    pub(super) fn new(src: &'a [u8]) -> Self {
        let start = Pos {
            line: 1,
            col: 1,
            offset: 0,
        };
        Lexer {
            src,
            text: std::str::from_utf8(src).ok(),
            at: 0,
            line: 1,
            col: 1,
            after_last: start,
        }
    }

    /// The current position.
    pub(super) fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
            offset: self.at,
        }
    }

    /// Where an unclosed block is reported (see `after_last`).
    pub(super) fn after_last(&self) -> Pos {
        self.after_last
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        if b == b'\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else if b & 0xC0 != 0x80 {
            // Columns count characters: UTF-8 continuation bytes do not start a new one.
            self.col = self.col.saturating_add(1);
        }
        Some(b)
    }

    fn span_from(&self, start: Pos) -> Span {
        Span {
            line: start.line,
            col: start.col,
            start: start.offset,
            end: self.at,
        }
    }

    fn single(&mut self, start: Pos) -> Span {
        self.bump();
        let span = self.span_from(start);
        self.after_last = self.pos();
        span
    }

    /// The next token, skipping whitespace and comments that crossplane would not report.
    pub(super) fn next_token(&mut self) -> LexResult<Tok> {
        loop {
            self.skip_space();
            let start = self.pos();
            let Some(b) = self.peek() else {
                return Ok(Tok::Eof(start));
            };
            return Ok(match b {
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.bump();
                    }
                    if self.peek().is_none() {
                        // crossplane drops a comment that the end of the file cuts off.
                        continue;
                    }
                    let span = self.span_from(start);
                    self.bump();
                    self.after_last = self.pos();
                    Tok::Comment(span)
                }
                b';' => Tok::Semi(self.single(start)),
                b'{' => Tok::Open(self.single(start)),
                b'}' => Tok::Close(self.single(start)),
                b'"' | b'\'' => Tok::Word(self.quoted(start, b)?),
                _ => Tok::Word(self.bare(start)),
            });
        }
    }

    /// Skips spaces, tabs, CRs and LFs (what `bump` does for each, in one loop).
    fn skip_space(&mut self) {
        while let Some(&b) = self.src.get(self.at) {
            match b {
                b'\n' => {
                    self.line = self.line.saturating_add(1);
                    self.col = 1;
                }
                b' ' | b'\t' | b'\r' => self.col = self.col.saturating_add(1),
                _ => return,
            }
            self.at += 1;
        }
    }

    /// An unquoted word: up to whitespace, `;` or a `{` that does not follow a `$`.
    fn bare(&mut self, start: Pos) -> Word {
        let mut variable = false;
        while let Some(b) = self.peek() {
            // Most of a word is plain ASCII: skip that run at once (no newline in it, one column
            // per byte), then handle the byte that ended it below.
            let plain = self.src[self.at..]
                .iter()
                .take_while(|&&c| is_plain(c))
                .count();
            if plain > 0 {
                self.at += plain;
                self.col = self
                    .col
                    .saturating_add(u32::try_from(plain).unwrap_or(u32::MAX));
                variable = false;
                continue;
            }
            match b {
                b'{' if variable => {
                    self.bump();
                }
                b'\\' => {
                    self.bump();
                    self.bump();
                    variable = false;
                }
                b';' | b'{' => break,
                _ if is_space(b) => break,
                _ => {
                    self.bump();
                    variable = b == b'$';
                }
            }
        }
        // A bare word starts and ends at ASCII bytes or the end, so at character boundaries.
        let value = match self.text.and_then(|t| t.get(start.offset..self.at)) {
            Some(word) => word.to_owned(),
            None => text(&self.src[start.offset..self.at]),
        };
        self.after_last = self.pos();
        Word {
            value,
            quote: None,
            span: self.span_from(start),
        }
    }

    /// A quoted string starting at the opening quote `q`.
    fn quoted(&mut self, start: Pos, q: u8) -> LexResult<Word> {
        self.bump();
        let mut value = Vec::new();
        loop {
            match self.bump() {
                None => return Err((SyntaxError::EofInDirective, self.pos())),
                Some(b'\\') => match self.bump() {
                    None => return Err((SyntaxError::EofInDirective, self.pos())),
                    Some(c) if c == q => value.push(c),
                    Some(c) => value.extend_from_slice(&[b'\\', c]),
                },
                Some(c) if c == q => break,
                Some(c) => value.push(c),
            }
        }
        let span = self.span_from(start);
        self.after_last = self.pos();
        // nginx wants a separator after a closing quote; `)` ends an `if` condition.
        match self.peek() {
            None | Some(b';' | b'{' | b')') => {}
            Some(b) if is_space(b) => {}
            Some(_) => {
                let at = self.pos();
                return Err((SyntaxError::Unexpected(self.char_at(at.offset)), at));
            }
        }
        Ok(Word {
            value: String::from_utf8(value)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            quote: Some(char::from(q)),
            span,
        })
    }

    /// The text of a comment token after its `#`, as crossplane reports it.
    pub(super) fn comment_text(&self, span: Span) -> String {
        let text = self.src.get(span.start + 1..span.end).unwrap_or_default();
        crossplane_comment(text)
    }

    /// The (lossily decoded) character starting at byte `offset`, for messages.
    fn char_at(&self, offset: usize) -> String {
        let end = (offset + 4).min(self.src.len());
        let text = String::from_utf8_lossy(&self.src[offset..end]);
        text.chars().next().map(String::from).unwrap_or_default()
    }

    /// The raw body of a `*_by_lua_block` after its `{`, up to the matching `}`, read as crossplane's
    /// Lua extension reads it: Lua strings and `--` comments may hold braces; everything is kept
    /// verbatim. The span covers both braces.
    pub(super) fn lua_block(&mut self, open: Span) -> LexResult<Word> {
        let body_start = self.at;
        let mut depth = 1u32;
        loop {
            let Some(b) = self.bump() else {
                return Err((SyntaxError::EofInLua, self.pos()));
            };
            match b {
                b'\\' => {
                    self.bump();
                }
                b'-' if self.peek() == Some(b'-') => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        if self.bump() == Some(b'\\') {
                            self.bump();
                        }
                    }
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b'"' | b'\'' => loop {
                    match self.bump() {
                        None => return Err((SyntaxError::EofInLua, self.pos())),
                        Some(b'\\') => {
                            self.bump();
                        }
                        Some(c) if c == b => break,
                        Some(_) => {}
                    }
                },
                _ => {}
            }
        }
        let body = &self.src[body_start..self.at - 1];
        self.after_last = self.pos();
        Ok(Word {
            value: String::from_utf8_lossy(body).into_owned(),
            quote: None,
            span: Span {
                line: open.line,
                col: open.col,
                start: open.start,
                end: self.at,
            },
        })
    }
}
