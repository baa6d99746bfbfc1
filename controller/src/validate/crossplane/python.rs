//! The few pieces of Python behaviour crossplane's output depends on: `os.path.join`,
//! `os.path.dirname`, `repr` of a string and the text of an `OSError`.

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
