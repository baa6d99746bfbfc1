//! What the security and resolution rules need to know about nginx variables and regexes: which
//! variables a value uses, what a `set` or `map` variable can hold, which regex a `$1` comes from,
//! and whether a capture group can match a given character. Static approximations, documented on
//! each rule's page; nothing here runs a regex.

use std::collections::{HashMap, HashSet};

use super::index::{Ctx, Index, Item};

/// How many `set`/`map` hops are followed when resolving a variable (a chain longer than this is
/// treated as unknown).
const MAX_HOPS: usize = 4;

/// The variables a value refers to, as written (`$arg_x`, `${host}` -> `arg_x`, `host`).
pub fn names(value: &str) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            let braced = bytes.get(i + 1) == Some(&b'{');
            let start = i + 1 + usize::from(braced);
            let len = bytes[start.min(bytes.len())..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            i = start + len.max(1);
            if len > 0 {
                return Some(&value[start..start + len]);
            }
        }
        None
    })
}

/// A variable a client sets to anything it likes (the request line, a header, a cookie, the query).
pub fn client_controlled(name: &str) -> bool {
    ["arg_", "http_", "cookie_"]
        .iter()
        .any(|p| name.starts_with(p))
        || matches!(
            name,
            "args"
                | "query_string"
                | "request_uri"
                | "uri"
                | "document_uri"
                | "request"
                | "request_body"
                | "host"
                | "is_args"
        )
}

/// A capture (`$1`..`$9`), by number.
pub fn capture_number(name: &str) -> Option<usize> {
    (name.len() == 1)
        .then(|| name.parse::<usize>().ok())
        .flatten()
        .filter(|n| *n > 0)
}

/// Where `set` and `map` define variables, gathered once per lint so resolving a variable costs
/// a walk of its enclosing blocks, not a scan of the whole bundle (built-ins, most variables in
/// practice, cost nothing).
pub struct Assignments<'a> {
    /// Names some `set` assigns (without `$`).
    sets: HashSet<&'a str>,
    /// The values of each top-level `map`'s result variable (without `$`).
    maps: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Assignments<'a> {
    /// Collects every `set` target and `map` of the bundle.
    pub fn new(index: &Index<'a>) -> Self {
        let mut sets = HashSet::new();
        let mut maps: HashMap<&'a str, Vec<&'a str>> = HashMap::new();
        for (i, item) in index.items().iter().enumerate() {
            let target = item
                .dir
                .args
                .get(if item.dir.name == "map" { 1 } else { 0 });
            let Some(name) = target.and_then(|a| a.value.strip_prefix('$')) else {
                continue;
            };
            match (item.ctx, item.dir.name.as_str()) {
                (Ctx::Http, "map") => {
                    let values = maps.entry(name).or_default();
                    for &c in index.child_ids(i) {
                        let Some(entry) = index.get(c) else { continue };
                        if matches!(
                            entry.dir.name.as_str(),
                            "hostnames" | "volatile" | "include"
                        ) {
                            continue;
                        }
                        if let Some(v) = entry.dir.args.first() {
                            values.push(v.value.as_str());
                        }
                    }
                }
                (Ctx::Opaque, _) => {}
                (_, "set") => {
                    sets.insert(name);
                }
                _ => {}
            }
        }
        Assignments { sets, maps }
    }

    /// The values a `set` or `map` in scope may give `$name` at item `i`: every `set $name` in
    /// `i`'s block and the blocks around it, and every value of a top-level `map ... $name`.
    /// Empty when the variable is set nowhere (a built-in, or defined by a module).
    pub fn assigned(&self, index: &Index<'a>, i: usize, name: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        if self.sets.contains(name) {
            for (block, _) in index.ancestors(i) {
                for &c in index.child_ids(block) {
                    let Some(item) = index.get(c) else { continue };
                    let [target, value, ..] = item.dir.args.as_slice() else {
                        continue;
                    };
                    if item.dir.name == "set" && target.value.strip_prefix('$') == Some(name) {
                        out.push(value.value.as_str());
                    }
                }
            }
        }
        if let Some(values) = self.maps.get(name) {
            out.extend(values.iter().copied());
        }
        out
    }

    /// Whether `value` at item `i` can hold something matching `bad`, following `set` and `map`
    /// variables up to [`MAX_HOPS`]. Returns the name of the first variable found to be bad.
    pub fn find_tainted(
        &self,
        index: &Index<'a>,
        i: usize,
        value: &str,
        bad: &dyn Fn(&str) -> bool,
    ) -> Option<String> {
        self.walk(index, i, value, bad, 0)
    }

    fn walk(
        &self,
        index: &Index<'a>,
        i: usize,
        value: &str,
        bad: &dyn Fn(&str) -> bool,
        hops: usize,
    ) -> Option<String> {
        for name in names(value) {
            if bad(name) {
                return Some(format!("${name}"));
            }
            if hops < MAX_HOPS {
                for v in self.assigned(index, i, name) {
                    if let Some(found) = self.walk(index, i, v, bad, hops + 1) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }
}

/// The regex whose captures `$1`..`$9` refer to at item `i`: a `rewrite`'s own pattern, else the
/// nearest enclosing `if` with a regex, else the nearest enclosing regex `location`. Returns the
/// pattern and, for an `if`, the variable it tests (`None` for a location or rewrite: the URI).
pub fn capture_source<'a>(
    index: &Index<'a>,
    i: usize,
    item: &Item<'a>,
) -> Option<(&'a str, Option<&'a str>)> {
    if item.dir.name == "rewrite" {
        return item.dir.args.first().map(|a| (a.value.as_str(), None));
    }
    for (_, block) in index.ancestors(i) {
        let args = &block.dir.args;
        match block.dir.name.as_str() {
            "if" if args.len() == 3 && args[1].value.contains('~') => {
                return Some((args[2].value.as_str(), Some(args[0].value.as_str())));
            }
            "location" if args.len() == 2 && args[0].value.starts_with('~') => {
                return Some((args[1].value.as_str(), None));
            }
            "location" => return None,
            _ => {}
        }
    }
    None
}

/// The text of capture group `n` (1-based) of a PCRE pattern, named groups counted as nginx does.
pub fn group(pattern: &str, n: usize) -> Option<&str> {
    let bytes = pattern.as_bytes();
    let mut stack: Vec<(usize, Option<usize>)> = Vec::new();
    let mut count = 0;
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => {
                in_class = true;
                // `[]...]` and `[^]...]` take the `]` literally.
                if bytes.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'(' if !in_class => {
                let rest = &pattern[i + 1..];
                let capturing = !rest.starts_with('?')
                    || rest.starts_with("?<")
                        && !rest.starts_with("?<=")
                        && !rest.starts_with("?<!")
                    || rest.starts_with("?P<")
                    || rest.starts_with("?'");
                let number = capturing.then(|| {
                    count += 1;
                    count
                });
                stack.push((i + 1, number));
            }
            b')' if !in_class => {
                if let Some((start, Some(number))) = stack.pop() {
                    if number == n {
                        let text = &pattern[start..i];
                        // Drop the `?<name>` of a named group.
                        return Some(match text.strip_prefix('?') {
                            Some(named) => named
                                .find(['>', '\''])
                                .map(|e| &named[e + 1..])
                                .unwrap_or(named),
                            None => text,
                        });
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether a regex fragment can match the character `ch` somewhere (an over-approximation: it
/// looks at the atoms, not at how they are combined).
pub fn can_match(fragment: &str, ch: char) -> bool {
    let chars: Vec<char> = fragment.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if let Some(&e) = chars.get(i + 1) {
                    if escape_matches(e, ch) {
                        return true;
                    }
                }
                i += 2;
            }
            '[' => {
                let (matches, end) = class_matches(&chars, i, ch);
                if matches {
                    return true;
                }
                i = end;
            }
            '.' => {
                if ch != '\n' {
                    return true;
                }
                i += 1;
            }
            c => {
                if c == ch {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
}

/// Whether the escape `\e` (outside or inside a class) matches `ch`.
fn escape_matches(e: char, ch: char) -> bool {
    let space = matches!(ch, ' ' | '\t' | '\r' | '\n' | '\x0b' | '\x0c');
    let vertical = matches!(ch, '\r' | '\n' | '\x0b' | '\x0c');
    let word = ch.is_ascii_alphanumeric() || ch == '_';
    match e {
        's' => space,
        'S' => !space,
        'w' => word,
        'W' => !word,
        'd' => ch.is_ascii_digit(),
        'D' => !ch.is_ascii_digit(),
        'v' | 'R' => vertical,
        'V' => !vertical,
        'h' => matches!(ch, ' ' | '\t'),
        'H' => !matches!(ch, ' ' | '\t'),
        'N' => ch != '\n',
        'r' => ch == '\r',
        'n' => ch == '\n',
        't' => ch == '\t',
        other => other == ch,
    }
}

/// Whether the class starting at `chars[start] == '['` matches `ch`, and the index after it.
fn class_matches(chars: &[char], start: usize, ch: char) -> (bool, usize) {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < chars.len() && (first || chars[i] != ']') {
        first = false;
        let c = chars[i];
        if c == '\\' {
            if let Some(&e) = chars.get(i + 1) {
                hit |= escape_matches(e, ch);
            }
            i += 2;
            continue;
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&h| h != ']') {
            let hi = chars[i + 2];
            hit |= (c..=hi).contains(&ch);
            i += 3;
            continue;
        }
        hit |= c == ch;
        i += 1;
    }
    (hit != negated, i + 1)
}

/// Variables whose value always starts with `/`: where one follows the host, the path begins.
const PATH_VARIABLES: &[&[u8]] = &[b"$request_uri", b"$document_uri", b"$uri"];

/// The scheme-and-host part of a URL as written in a `*_pass` directive (`$scheme://$host:8080`
/// of `$scheme://$host:8080/path`), and the rest starting at the path (possibly empty). A value
/// with no `://` is taken to be a host (or a variable holding the whole URL) up to the first `/`.
/// `$request_uri`, `$uri` and `$document_uri` start the path too (`http://api$request_uri`).
///
/// One byte scan (every `*_pass` of a bundle comes through here, several times for some rules):
/// all the markers are ASCII, so byte offsets are character boundaries.
pub fn split_url(value: &str) -> (&str, &str) {
    let bytes = value.as_bytes();
    let after = bytes
        .windows(3)
        .position(|w| w == b"://")
        .map(|p| p + 3)
        .unwrap_or(0);
    let rest = &bytes[after..];
    let mut end = 0;
    while end < rest.len() && !matches!(rest[end], b'/' | b'?' | b'#') {
        if rest[end] == b'$' && starts_path_variable(&rest[end..]) {
            break;
        }
        end += 1;
    }
    value.split_at(after + end)
}

/// Whether `text` starts with one of [`PATH_VARIABLES`] as a whole name (`$uri`, not `$uri_x`).
fn starts_path_variable(text: &[u8]) -> bool {
    PATH_VARIABLES.iter().any(|var| {
        text.starts_with(var)
            && !text
                .get(var.len())
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_found_plain_and_braced() {
        assert_eq!(
            names("http://${host}$uri?x=$arg_a$").collect::<Vec<_>>(),
            vec!["host", "uri", "arg_a"]
        );
    }

    #[test]
    fn groups_are_numbered_like_pcre() {
        let p = r"^/(?:a|b)/(?<id>[0-9]+)/(x(.*))$";
        assert_eq!(group(p, 1), Some("[0-9]+"));
        assert_eq!(group(p, 2), Some("x(.*)"));
        assert_eq!(group(p, 3), Some(".*"));
        assert_eq!(group(p, 4), None);
        assert_eq!(group(r"^/[(]x(y)", 1), Some("y"));
    }

    #[test]
    fn fragments_match_what_pcre_would() {
        assert!(can_match(".*", '\r'));
        assert!(!can_match(".*", '\n'));
        assert!(can_match("[^/]+", '\n'));
        assert!(!can_match("[^/\\s]+", '\n'));
        assert!(!can_match("[a-z0-9_-]+", '.'));
        assert!(can_match("[a-z.]+", '.'));
        assert!(can_match("\\S+", '.'));
        assert!(!can_match("\\w+", '.'));
        assert!(!can_match("v1|v2", '\r'));
    }

    #[test]
    fn urls_split_at_the_path() {
        assert_eq!(
            split_url("http://$arg_h:80/x?y"),
            ("http://$arg_h:80", "/x?y")
        );
        assert_eq!(split_url("$arg_url"), ("$arg_url", ""));
        assert_eq!(split_url("http://app"), ("http://app", ""));
        assert_eq!(
            split_url("http://api$request_uri"),
            ("http://api", "$request_uri")
        );
        assert_eq!(
            split_url("http://$uri_host$uri"),
            ("http://$uri_host", "$uri")
        );
    }

    #[test]
    fn urls_split_at_the_first_path_marker_of_any_kind() {
        // The earliest of `/`, `?`, `#` and a whole path variable wins, whichever comes first.
        assert_eq!(
            split_url("http://h$document_urix$uri/a"),
            ("http://h$document_urix", "$uri/a")
        );
        assert_eq!(
            split_url("http://h?q=$request_uri"),
            ("http://h", "?q=$request_uri")
        );
        assert_eq!(split_url("http://h#x$uri"), ("http://h", "#x$uri"));
        assert_eq!(
            split_url("grpc://é$request_uri"),
            ("grpc://é", "$request_uri")
        );
        assert_eq!(split_url("$uri://h/p"), ("$uri://h", "/p"));
        assert_eq!(split_url("unix:/run/a.sock"), ("unix:", "/run/a.sock"));
        assert_eq!(split_url("http://"), ("http://", ""));
        assert_eq!(split_url(""), ("", ""));
    }
}
