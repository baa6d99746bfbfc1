//! The few pieces of Python behaviour crossplane's output depends on: `os.path.join`,
//! `os.path.dirname`, `repr` of a string, the text of an `OSError` and `json.dumps`.

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter, Serializer};

/// The JSON text crossplane prints for `value`: Python's `json.dumps` with `ensure_ascii`, on one
/// line with `,` and `:` as separators when `indent` is `None` (crossplane's default), else
/// indented by that many spaces with `,` and `: `, as `crossplane parse -i N` prints it.
pub fn json_text(value: &Value, indent: Option<usize>) -> String {
    let spaces = " ".repeat(indent.unwrap_or(0));
    let text = match indent {
        None => write(value, CompactFormatter),
        Some(_) => write(value, PrettyFormatter::with_indent(spaces.as_bytes())),
    };
    // Everything outside printable ASCII is inside a string (JSON's own syntax is ASCII), so it
    // can be escaped after the fact, as Python's `ensure_ascii` does: `\uXXXX` per UTF-16 unit.
    let mut out = String::with_capacity(text.len());
    let mut units = [0u16; 2];
    for c in text.chars() {
        // serde_json escapes control characters inside strings, so a raw newline is the pretty
        // printer's own.
        if (' '..='~').contains(&c) || c == '\n' {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn write<F: Formatter>(value: &Value, formatter: F) -> String {
    let mut buf = Vec::new();
    let mut ser = Serializer::with_formatter(&mut buf, formatter);
    // Serializing a `Value` into memory cannot fail (no I/O, string keys only).
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Python's `os.path.join` for two parts.
pub(super) fn join(base: &str, path: &str) -> String {
    if base.is_empty() || path.starts_with('/') {
        path.to_string()
    } else if base.ends_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

/// Python's `os.path.dirname`.
pub(super) fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        None => "",
        Some(i) => {
            let head = &path[..=i];
            let trimmed = head.trim_end_matches('/');
            if trimmed.is_empty() { head } else { trimmed }
        }
    }
}

/// Python's `str(OSError)` for opening `path`: `[Errno N] <strerror>: '<path>'`. `why` is a Rust
/// `io::Error`'s text (`<strerror> (os error N)`, the same C `strerror` Python uses); without one
/// the file is missing (`ENOENT`).
pub(super) fn os_error(why: Option<&str>, path: &str) -> String {
    let parsed = why.and_then(|w| {
        let (text, rest) = w.rsplit_once(" (os error ")?;
        let errno: i32 = rest.strip_suffix(')')?.parse().ok()?;
        Some((errno, text))
    });
    let (errno, text) = parsed.unwrap_or((2, "No such file or directory"));
    format!("[Errno {errno}] {text}: {}", py_repr(path))
}

/// Python's `repr` of a string, as it appears in an `OSError` message.
pub(super) fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_helpers() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("/a/", "b"), "/a/b");
        assert_eq!(join("/a", "/b"), "/b");
        assert_eq!(dirname("/a/b"), "/a");
        assert_eq!(dirname("/b"), "/");
        assert_eq!(dirname("b"), "");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a\tb'\""), "'a\\tb\\'\"'");
    }

    #[test]
    fn json_text_is_pythons() {
        let v = serde_json::json!({"a": ["caf\u{e9}", "\u{1f600}", "x\u{7f}\n"], "b": []});
        assert_eq!(
            json_text(&v, None),
            r#"{"a":["caf\u00e9","\ud83d\ude00","x\u007f\n"],"b":[]}"#
        );
        assert_eq!(
            json_text(&v, Some(1)),
            "{\n \"a\": [\n  \"caf\\u00e9\",\n  \"\\ud83d\\ude00\",\n  \"x\\u007f\\n\"\n ],\n \"b\": []\n}"
        );
    }

    #[test]
    fn os_errors_read_like_python() {
        assert_eq!(
            os_error(None, "/x"),
            "[Errno 2] No such file or directory: '/x'"
        );
        assert_eq!(
            os_error(Some("Is a directory (os error 21)"), "/d"),
            "[Errno 21] Is a directory: '/d'"
        );
    }
}
