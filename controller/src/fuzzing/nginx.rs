//! The nginx lexer, parser and include resolution (`validate::parser`), then the pure gates
//! (`validate::check_static`, parse and lint) over the same bundle.

use crate::render::Bundle;
use crate::validate::ast::Directive;
use crate::validate::parser::{parse_bundle, parse_file};
use crate::validate::{DEFAULT_ENTRY, ProxyLayout, check_static, check_static_with};

/// One input: a bundle in the framing of [`super::split_files`] whose entry is `nginx.conf`.
///
/// Checks: spans lie inside their file on character boundaries; include indexes are in range
/// and each file is listed once; a file that parses, printed back from its own tokens with
/// single spaces, parses again to the same tree (names, values, blocks).
pub fn parse(data: &[u8]) {
    let files = super::split_files(data, DEFAULT_ENTRY);
    let Some(entry) = files.get(DEFAULT_ENTRY) else {
        return;
    };

    let (dirs, error) = parse_file(DEFAULT_ENTRY, entry);
    let text = String::from_utf8_lossy(entry);
    check_spans(&dirs, entry.len(), None);
    if error.is_none() && text.len() == entry.len() {
        check_spans(&dirs, entry.len(), Some(&text));
        round_trip(&dirs, &text);
    }

    let (config, _) = parse_bundle(&files, DEFAULT_ENTRY);
    let n = config.files.len();
    let mut seen: Vec<&str> = config.files.iter().map(|f| f.path.as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n, "a file listed twice");
    for file in &config.files {
        check_includes(&file.directives, n);
    }

    let bundle = Bundle::new(files);
    let _ = check_static(&bundle, DEFAULT_ENTRY);
    let _ = check_static_with(&bundle, DEFAULT_ENTRY, &ProxyLayout::default());
}

fn check_includes(dirs: &[Directive], n_files: usize) {
    for d in dirs {
        assert!(d.includes.iter().all(|&i| i < n_files), "include index");
        check_includes(d.children(), n_files);
    }
}

/// Spans are ordered, inside the file and, when the source is valid UTF-8, on character
/// boundaries (the sandbox and the agent slice the source with them).
fn check_spans(dirs: &[Directive], len: usize, text: Option<&str>) {
    for d in dirs {
        let spans = std::iter::once(&d.span).chain(d.args.iter().map(|a| &a.span));
        for s in spans {
            assert!(
                s.start <= s.end && s.end <= len,
                "span {s:?} outside 0..{len}"
            );
            assert!(s.line >= 1 && s.col >= 1, "span {s:?} not 1-based");
            if let Some(text) = text {
                assert!(
                    text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
                    "span {s:?} splits a character"
                );
            }
        }
        check_spans(d.children(), len, text);
    }
}

/// Prints each directive from its tokens' source text, one space apart, and parses that again.
/// An `if` gets its parentheses back glued to its first and last arguments (the parser strips
/// them, shrinking unquoted spans); a Lua block's one argument is its whole `{ ... }` source. An
/// `if` whose stripped parenthesis was inside quotes cannot be reprinted this way and is skipped.
fn round_trip(dirs: &[Directive], text: &str) {
    let mut out = String::new();
    if !print(dirs, text, &mut out) {
        return;
    }
    let (again, error) = parse_file(DEFAULT_ENTRY, out.as_bytes());
    assert!(
        error.is_none(),
        "reprinted config does not parse: {error:?}\n{out}"
    );
    assert_eq!(
        shape(&again),
        shape(dirs),
        "reprinted config differs:\n{out}"
    );
}

/// Whether the parser stripped parentheses from this `if`: its source has them where the
/// values do not.
fn stripped_parens(d: &Directive, text: &str) -> Option<bool> {
    let (first, last) = (d.args.first()?, d.args.last()?);
    let before = text[..first.span.start].trim_end();
    let opened = first.quote.is_none() && before.ends_with('(') && before.len() > d.span.end;
    let after = &text[last.span.end..];
    let closed = last.quote.is_none() && after.trim_start().starts_with(')');
    match (opened, closed) {
        (true, true) => Some(true),
        (false, false) => Some(false),
        _ => None,
    }
}

fn print(dirs: &[Directive], text: &str, out: &mut String) -> bool {
    for d in dirs {
        out.push_str(&text[d.span.start..d.span.end]);
        let parens = if d.name == "if" {
            match stripped_parens(d, text) {
                Some(p) => p,
                None if d.args.is_empty() => false,
                None => return false,
            }
        } else {
            false
        };
        for (i, a) in d.args.iter().enumerate() {
            out.push(' ');
            if parens && i == 0 {
                out.push('(');
            }
            out.push_str(&text[a.span.start..a.span.end]);
            if parens && i + 1 == d.args.len() {
                out.push(')');
            }
        }
        match &d.block {
            None if d.name.ends_with("_by_lua_block") => out.push('\n'),
            None => out.push_str(";\n"),
            Some(children) => {
                out.push_str(" {\n");
                if !print(children, text, out) {
                    return false;
                }
                out.push_str("}\n");
            }
        }
    }
    true
}

/// What must survive a reprint: names, argument values and the block structure.
fn shape(dirs: &[Directive]) -> Vec<(String, Vec<String>, Option<usize>)> {
    let mut out = Vec::new();
    flatten(dirs, &mut out);
    out
}

fn flatten(dirs: &[Directive], out: &mut Vec<(String, Vec<String>, Option<usize>)>) {
    for d in dirs {
        let args = d.arg_values().map(str::to_string).collect();
        out.push((d.name.clone(), args, d.block.as_ref().map(Vec::len)));
        flatten(d.children(), out);
    }
}
