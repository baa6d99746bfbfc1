//! Property tests: any bytes give a tree or diagnostics, never a panic; the tree's indexes and
//! spans are always in range; printing a tree and reading it back gives the same tree.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::render;
use super::{parse_bundle, parse_file};
use crate::validate::ast::{Config, Directive};
use crate::validate::diagnostic::Diagnostic;

/// The pieces token soup is made of: the characters that matter to the tokenizer, and words that
/// lead to the interesting paths (includes, `if`, Lua).
const PIECES: &[&str] = &[
    "{",
    "}",
    ";",
    "\"",
    "'",
    "\\",
    "$",
    "${",
    "#",
    "(",
    ")",
    " ",
    "\n",
    "\t",
    "--",
    "é",
    "if",
    "include",
    "content_by_lua_block",
    "a.conf",
    "*.conf",
    "../x",
    "/abs",
    "server",
    "x",
];

/// Text made of [`PIECES`], so the interesting paths are hit (indexes keep generation cheap).
fn soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(0..PIECES.len(), 0..200)
        .prop_map(|v| v.into_iter().map(|i| PIECES[i]).collect())
}

/// Checks what must hold for any input: indexes in range, spans inside their file, rules known.
fn check_invariants(files: &BTreeMap<String, Vec<u8>>, config: &Config, diags: &[Diagnostic]) {
    fn walk(dirs: &[Directive], len: usize, n_files: usize) {
        for d in dirs {
            assert!(d.span.start <= d.span.end && d.span.end <= len);
            assert!(d.span.line >= 1 && d.span.col >= 1);
            for a in &d.args {
                assert!(a.span.start <= a.span.end && a.span.end <= len);
            }
            assert!(d.includes.iter().all(|&i| i < n_files));
            walk(d.children(), len, n_files);
        }
    }
    let n = config.files.len();
    for f in &config.files {
        let len = files.get(&f.path).map_or(0, Vec::len);
        walk(&f.directives, len, n);
    }
    let mut seen: Vec<&str> = config.files.iter().map(|f| f.path.as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n, "each file once");
    for d in diags {
        assert!(
            ["SB001", "SB002", "SB003"].contains(&d.rule.as_str()),
            "{d}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_parse_without_panicking(src in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let files = BTreeMap::from([("nginx.conf".to_string(), src)]);
        let (config, diags) = parse_bundle(&files, "nginx.conf");
        check_invariants(&files, &config, &diags);
    }

    #[test]
    fn token_soup_parses_without_panicking(src in soup()) {
        let files = BTreeMap::from([("nginx.conf".to_string(), src.into_bytes())]);
        let (config, diags) = parse_bundle(&files, "nginx.conf");
        check_invariants(&files, &config, &diags);
        // A file either parsed or has exactly one syntax error.
        let syntax = diags.iter().filter(|d| d.rule == "SB001").count();
        prop_assert_eq!(syntax, usize::from(!config.files[0].ok));
    }

    #[test]
    fn bundles_of_soup_terminate(
        parts in proptest::collection::vec(soup(), 1..5),
        names in proptest::collection::vec(
            prop_oneof![Just("a.conf"), Just("b.conf"), Just("d/c.conf"), Just("d/.e.conf")], 0..4),
    ) {
        let mut files = BTreeMap::new();
        let mut bodies = parts.into_iter();
        if let Some(entry) = bodies.next() {
            files.insert("nginx.conf".to_string(), entry.into_bytes());
        }
        for (name, body) in names.into_iter().zip(bodies) {
            files.insert(name.to_string(), format!("include *.conf;\ninclude d/*;\n{body}").into_bytes());
        }
        let (config, diags) = parse_bundle(&files, "nginx.conf");
        check_invariants(&files, &config, &diags);
    }

    #[test]
    fn printed_trees_read_back_the_same(tree in trees(), seps in proptest::collection::vec(sep(), 64)) {
        let mut out = String::new();
        let mut seps = seps.iter().cycle();
        print(&tree, &mut out, &mut seps);
        let (dirs, err) = parse_file("t.conf", out.as_bytes());
        prop_assert_eq!(err, None, "{}", out);
        prop_assert_eq!(render(&dirs), render_gen(&tree), "{}", out);
        check_spans(&dirs, &out);
    }
}

/// A generated directive: name, args (value, quoted) and an optional block.
#[derive(Debug, Clone)]
struct Gen {
    name: String,
    args: Vec<(String, bool)>,
    block: Option<Vec<Gen>>,
}

fn trees() -> impl Strategy<Value = Vec<Gen>> {
    let name = "[a-z_][a-z0-9_]{0,10}".prop_filter("not special", |n| {
        n != "if" && !n.ends_with("_by_lua_block")
    });
    let arg = prop_oneof![
        "[a-zA-Z0-9_./:$=~^*-]{1,12}".prop_map(|v| (v, false)),
        "[a-zA-Z0-9 {};#$()/.*~^|'-]{0,12}".prop_map(|v| (v, true)),
    ];
    let leaf = (name, proptest::collection::vec(arg, 0..4)).prop_map(|(name, args)| Gen {
        name,
        args,
        block: None,
    });
    let tree = leaf.prop_recursive(4, 48, 6, |inner| {
        (inner.clone(), proptest::collection::vec(inner, 0..6)).prop_map(|(mut head, kids)| {
            head.block = Some(kids);
            head
        })
    });
    proptest::collection::vec(tree, 0..6)
}

/// What goes between tokens: some whitespace, maybe a comment.
fn sep() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("\t \r\n".to_string()),
        " #[ a-z;{}\"]{0,8}\n",
    ]
}

fn print<'a>(dirs: &[Gen], out: &mut String, seps: &mut impl Iterator<Item = &'a String>) {
    for d in dirs {
        out.push_str(&d.name);
        for (v, quoted) in &d.args {
            out.push_str(seps.next().map_or(" ", String::as_str));
            if *quoted {
                out.push('"');
                out.push_str(v);
                out.push('"');
            } else {
                out.push_str(v);
            }
        }
        out.push_str(seps.next().map_or(" ", String::as_str));
        match &d.block {
            None => out.push(';'),
            Some(kids) => {
                out.push('{');
                out.push_str(seps.next().map_or(" ", String::as_str));
                print(kids, out, seps);
                out.push('}');
            }
        }
        out.push_str(seps.next().map_or(" ", String::as_str));
    }
}

fn render_gen(dirs: &[Gen]) -> String {
    fn to_dir(g: &Gen) -> Directive {
        use crate::validate::ast::{Arg, Span};
        Directive {
            name: g.name.clone(),
            span: Span::default(),
            args: g
                .args
                .iter()
                .map(|(v, _)| Arg {
                    value: v.clone(),
                    quote: None,
                    span: Span::default(),
                })
                .collect(),
            block: g.block.as_ref().map(|b| b.iter().map(to_dir).collect()),
            includes: Vec::new(),
            comments: Vec::new(),
        }
    }
    render(&dirs.iter().map(to_dir).collect::<Vec<_>>())
}

/// Each span covers exactly the token's text: the value, or the value in its quotes.
fn check_spans(dirs: &[Directive], src: &str) {
    for d in dirs {
        assert_eq!(&src[d.span.start..d.span.end], d.name);
        for a in &d.args {
            let text = &src[a.span.start..a.span.end];
            match a.quote {
                None => assert_eq!(text, a.value),
                Some(q) => assert_eq!(text, format!("{q}{}{q}", a.value)),
            }
            let before = &src[..a.span.start];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            assert_eq!((a.span.line as usize, a.span.col as usize), (line, col));
        }
        check_spans(d.children(), src);
    }
}
