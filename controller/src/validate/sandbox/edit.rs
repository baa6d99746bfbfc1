//! Rewriting a file by byte ranges without moving any token to another line, and writing values
//! back as nginx tokens: the two operations the sandbox copy is made of (the agent's copy too).

/// Replace bytes `start..end` of a file with `text`. Ordered by position, so a set of edits is
/// applied front to back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edit {
    /// First byte replaced.
    pub start: usize,
    /// One past the last byte replaced (equal to `start` for an insertion).
    pub end: usize,
    /// The new text (never contains a newline).
    pub text: String,
}

/// Where a block's `{` sits: skips blanks and `#` comments from `from`.
pub fn find_brace(src: &[u8], from: usize) -> Option<usize> {
    skip_to(src, from, b'{')
}

/// The position of `want` after `from`, when only blanks and `#` comments come between: where
/// the `;` or `{` that ends a directive is, given the end of its last token.
pub fn skip_to(src: &[u8], from: usize, want: u8) -> Option<usize> {
    let mut i = from;
    while let Some(&b) = src.get(i) {
        if b == want {
            return Some(i);
        }
        match b {
            b'#' => {
                while src.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => return None,
        }
    }
    None
}

/// A value as an nginx token: bare when it is plain, else double-quoted with `"` and `\` escaped.
pub fn token(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:[]=,@+~%$*".contains(c));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Applies edits to a file. Each replaced range keeps its newlines (appended after the new text),
/// so every following token stays on its line. Overlapping edits after the first are dropped.
pub fn apply(src: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.start, e.end));
    let mut out = Vec::with_capacity(src.len() + 256);
    let mut pos = 0;
    for e in sorted {
        if e.start < pos || e.end > src.len() || e.start > e.end {
            continue;
        }
        out.extend_from_slice(&src[pos..e.start]);
        out.extend_from_slice(e.text.as_bytes());
        let newlines = src[e.start..e.end].iter().filter(|&&b| b == b'\n').count();
        out.extend(std::iter::repeat_n(b'\n', newlines));
        pos = e.end;
    }
    out.extend_from_slice(&src[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_line_numbers() {
        let src = b"a \"x\ny\" b;\nc;";
        let edits = [Edit {
            start: 2,
            end: 7,
            text: "z".into(),
        }];
        let out = apply(src, &edits);
        assert_eq!(out, b"a z\n b;\nc;");
        let ins = [Edit {
            start: 1,
            end: 1,
            text: " q;".into(),
        }];
        assert_eq!(apply(b"{\n}", &ins), b"{ q;\n}");
    }

    #[test]
    fn tokens_are_quoted_only_when_needed() {
        assert_eq!(token("/tmp/x/a.log"), "/tmp/x/a.log");
        assert_eq!(token("/tmp/a b"), "\"/tmp/a b\"");
        assert_eq!(token("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn brace_is_found_past_comments() {
        assert_eq!(find_brace(b"http # {x\n  {", 4), Some(12));
        assert_eq!(find_brace(b"http x {", 4), None);
    }
}
