//! Tokenizer and tree tests: positions, quoting, escapes, Lua, `if`, data blocks, syntax errors.

use super::parse_file;
use crate::validate::ast::{Directive, Span};
use crate::validate::diagnostic::Diagnostic;

/// A compact rendering of a tree: `name ["arg", ...];` or `name [...] { ... }`.
pub(super) fn render(dirs: &[Directive]) -> String {
    dirs.iter()
        .map(|d| {
            let args: Vec<&str> = d.arg_values().collect();
            match &d.block {
                None => format!("{} {args:?};", d.name),
                Some(b) => format!("{} {args:?} {{ {} }}", d.name, render(b)),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ok(src: &str) -> Vec<Directive> {
    let (dirs, err) = parse_file("t.conf", src.as_bytes());
    assert_eq!(err, None, "unexpected error for {src:?}");
    dirs
}

fn tree(src: &str) -> String {
    render(&ok(src))
}

fn err(src: &str) -> (Diagnostic, Vec<Directive>) {
    let (dirs, err) = parse_file("t.conf", src.as_bytes());
    let err = err.unwrap_or_else(|| panic!("expected an error for {src:?}, got {}", render(&dirs)));
    assert_eq!(err.rule, "SB001");
    assert_eq!(err.path, "t.conf");
    (err, dirs)
}

fn err_at(src: &str) -> (u32, u32, String) {
    let (e, _) = err(src);
    (e.line, e.col, e.message)
}

#[test]
fn directives_and_nested_blocks() {
    assert_eq!(
        tree("events {}\nhttp {\n  server { listen 80; }\n}\n"),
        r#"events [] {  } http [] { server [] { listen ["80"]; } }"#
    );
    assert_eq!(tree(""), "");
    assert_eq!(tree("  \n\t\r\n"), "");
    assert_eq!(tree("a;b;"), r#"a []; b [];"#);
    assert_eq!(tree("events{}http{}"), r#"events [] {  } http [] {  }"#);
}

#[test]
fn positions_are_one_based_characters_and_byte_spans() {
    let src = "events {}\nhttp {\n  proxy_pass  \"http://a\";\n\té x 'y';\n}";
    let dirs = ok(src);
    let http = &dirs[1];
    assert_eq!(http.span, span(2, 1, 10, 14));
    let kids = http.children();
    assert_eq!(kids[0].span, span(3, 3, 19, 29));
    assert_eq!(kids[0].args[0].span, span(3, 15, 31, 41));
    assert_eq!(&src[31..41], "\"http://a\"");
    assert_eq!(kids[0].args[0].quote, Some('"'));
    // A tab is one column; `é` is two bytes but one column.
    assert_eq!(kids[1].span, span(4, 2, 44, 46));
    assert_eq!(kids[1].args[0].span, span(4, 4, 47, 48));
    assert_eq!(kids[1].args[1].span, span(4, 6, 49, 52));
    assert_eq!(kids[1].args[1].quote, Some('\''));
}

fn span(line: u32, col: u32, start: usize, end: usize) -> Span {
    Span {
        line,
        col,
        start,
        end,
    }
}

#[test]
fn quotes_and_escapes_are_spelled_as_crossplane_spells_them() {
    // Inside quotes only an escaped quote of the same kind loses its backslash.
    assert_eq!(
        tree(r#"a "x\"y" 'it\'s' "q\'" "t\tn\n" "b\\";"#),
        r#"a ["x\"y", "it's", "q\\'", "t\\tn\\n", "b\\\\"];"#
    );
    // Outside quotes escapes stay verbatim, and an escaped separator does not separate.
    assert_eq!(
        tree(r#"a b\;c \"d e\ f;"#),
        r#"a ["b\\;c", "\\\"d", "e\\ f"];"#
    );
    // Quotes inside a word are ordinary characters; quoted text may hold separators.
    assert_eq!(
        tree(r#"a b"c"d "{ } ; #" '';"#),
        r#"a ["b\"c\"d", "{ } ; #", ""];"#
    );
    // A quoted string may span lines and name a directive.
    assert_eq!(tree("\"a b\" \"x\ny\";"), r#"a b ["x\ny"];"#);
}

#[test]
fn variables_and_braces_inside_words() {
    assert_eq!(
        tree("set $x a${b}c;\nsplit_clients \"${remote_addr}AAA\" $v { 50% a; }"),
        r#"set ["$x", "a${b}c"]; split_clients ["${remote_addr}AAA", "$v"] { 50% ["a"]; }"#
    );
    assert_eq!(
        tree("return 200 ${host}x;"),
        r#"return ["200", "${host}x"];"#
    );
    // nginx keeps a `}` or `#` inside a word (crossplane would split at the `}`).
    assert_eq!(tree("a b}c d#e;"), r#"a ["b}c", "d#e"];"#);
}

#[test]
fn comments_are_skipped() {
    assert_eq!(
        tree("# top\nevents { # inside\n}\na b # c ;\n d;#x\n# end"),
        r#"events [] {  } a ["b", "d"];"#
    );
    assert_eq!(tree("a \"#x\" '#';"), r##"a ["#x", "#"];"##);
}

#[test]
fn comments_inside_a_directive_are_kept_for_crossplane() {
    let dirs = ok("a b # one\r\n c # two\\\n { x; # not inside\n}\n# top\n");
    assert_eq!(dirs[0].comments, vec![" one", " two"]);
    assert_eq!(dirs[0].children()[0].comments, Vec::<String>::new());
}

#[test]
fn if_conditions_lose_their_parentheses() {
    assert_eq!(
        tree("if ($a = b) { return 404; }"),
        r#"if ["$a", "=", "b"] { return ["404"]; }"#
    );
    assert_eq!(
        tree("if ( $a ~* \"^x y$\" ) {}"),
        r#"if ["$a", "~*", "^x y$"] {  }"#
    );
    assert_eq!(tree("if (-f $x){}"), r#"if ["-f", "$x"] {  }"#);
    assert_eq!(tree("if ($a) {}"), r#"if ["$a"] {  }"#);
    assert_eq!(tree("if () {}"), r#"if [] {  }"#);
    assert_eq!(
        tree("if ($http_x ~ \"(a)\") {}"),
        r#"if ["$http_x", "~", "(a)"] {  }"#
    );
    // Only `if` is touched.
    assert_eq!(tree("x (a) (b);"), r#"x ["(a)", "(b)"];"#);
    // The span of a stripped argument points at what is left.
    let dirs = ok("if ($a = b) {}");
    assert_eq!(dirs[0].args[0].span, span(1, 5, 4, 6));
    assert_eq!(dirs[0].args[2].span, span(1, 10, 9, 10));
}

#[test]
fn regex_locations() {
    assert_eq!(
        tree(r#"location ~ ^/(a|b)\.php$ { } location ~* "\.(gif|jpg){1,3}$" { } location = / {}"#),
        r#"location ["~", "^/(a|b)\\.php$"] {  } location ["~*", "\\.(gif|jpg){1,3}$"] {  } location ["=", "/"] {  }"#
    );
    assert_eq!(
        tree("location ~ ^/u/(?<id>\\d+)$ {}"),
        r#"location ["~", "^/u/(?<id>\\d+)$"] {  }"#
    );
}

#[test]
fn data_blocks_hold_arbitrary_words() {
    assert_eq!(
        tree(
            "map $host $b {\n  default 0;\n  ~*^www\\. 1;\n  \"\" 2;\n}\ntypes { text/html html htm; }\ngeo $g { 10.0.0.0/8 lan; }\nsplit_clients $x $y { 0.5% a; * \"\"; }"
        ),
        r#"map ["$host", "$b"] { default ["0"]; ~*^www\. ["1"];  ["2"]; } types [] { text/html ["html", "htm"]; } geo ["$g"] { 10.0.0.0/8 ["lan"]; } split_clients ["$x", "$y"] { 0.5% ["a"]; * [""]; }"#
    );
}

#[test]
fn lua_blocks_are_one_raw_argument_without_a_block() {
    assert_eq!(
        tree(r#"content_by_lua_block { ngx.say("hi") }"#),
        r#"content_by_lua_block [" ngx.say(\"hi\") "];"#
    );
    let src = "access_by_lua_block {\n  local t = { a = \"}\", b = '{' } -- }\n  if x then ngx.exit(403) end\n}\nset_by_lua_block $v { return \"\\\"\" }\nnext;";
    let dirs = ok(src);
    assert_eq!(
        dirs[0].args[0].value,
        "\n  local t = { a = \"}\", b = '{' } -- }\n  if x then ngx.exit(403) end\n"
    );
    assert!(dirs[0].block.is_none());
    assert_eq!(dirs[0].args[0].span, span(1, 21, 20, 91));
    assert_eq!(&src[90..91], "}");
    assert_eq!(
        render(&dirs[1..]),
        r#"set_by_lua_block ["$v", " return \"\\\"\" "]; next [];"#
    );
    assert_eq!(
        tree("init_by_lua_block{a{}b}"),
        r#"init_by_lua_block ["a{}b"];"#
    );
}

#[test]
fn syntax_errors_point_where_nginx_stops() {
    assert_eq!(
        err_at("events {}\n}\nfoo;"),
        (2, 1, "unexpected \"}\"".into())
    );
    assert_eq!(err_at("a b }"), (1, 5, "unexpected \"}\"".into()));
    assert_eq!(err_at("  ;"), (1, 3, "unexpected \";\"".into()));
    assert_eq!(err_at("x;\n {}"), (2, 2, "unexpected \"{\"".into()));
    assert_eq!(
        err_at("worker_processes 1"),
        (
            1,
            19,
            "unexpected end of file, expecting \";\" or \"}\"".into()
        )
    );
    assert_eq!(
        err_at("a \"b;\n"),
        (
            2,
            1,
            "unexpected end of file, expecting \";\" or \"}\"".into()
        )
    );
    assert_eq!(err_at("a \"b\"c;"), (1, 6, "unexpected \"c\"".into()));
    assert_eq!(err_at("a 'b'#c;"), (1, 6, "unexpected \"#\"".into()));
    assert_eq!(err_at("a \"b\"é;"), (1, 6, "unexpected \"é\"".into()));
    assert_eq!(
        err_at("content_by_lua_block;"),
        (
            1,
            1,
            "directive \"content_by_lua_block\" has no opening \"{\"".into()
        )
    );
    assert_eq!(
        err_at("content_by_lua_block { \"}"),
        (
            1,
            26,
            "unexpected end of file, expecting \"}\" to close the Lua block".into()
        )
    );
}

#[test]
fn an_unclosed_block_is_reported_after_the_last_token_and_names_the_block() {
    let (line, col, msg) = err_at("events {}\nhttp {\n  server {\n    listen 80;\n  }\n\n");
    assert_eq!((line, col), (5, 4));
    assert_eq!(
        msg,
        "unexpected end of file, expecting \"}\" (the \"http\" block opened on line 2 is not closed)"
    );
    // After a trailing comment, crossplane counts the comment's newline: the next line.
    let (line, col, _) = err_at("http {\n  a;\n  # c\n");
    assert_eq!((line, col), (4, 1));
}

#[test]
fn a_syntax_error_keeps_what_was_read_before_it() {
    let (_, dirs) = err("events {}\nhttp {\n  include a.conf;\n  server { listen 80 }\n}\n");
    assert_eq!(
        render(&dirs),
        r#"events [] {  } http [] { include ["a.conf"]; server [] {  } }"#
    );
}

#[test]
fn nesting_is_bounded() {
    let deep = "a {".repeat(super::MAX_DEPTH) + &"}".repeat(super::MAX_DEPTH);
    ok(&deep);
    let (e, _) = err(&("a {".repeat(100_000)));
    assert_eq!(e.message, "blocks are nested deeper than 100 levels");
    assert_eq!((e.line, e.col), (1, 3 * 100 + 3));
    let (_, _) = err(&"{".repeat(100_000));
}

#[test]
fn bytes_that_are_not_utf8_are_read_lossily() {
    let (dirs, err) = parse_file("t.conf", b"a \xff\xfe \"\xc3\";\n\xff {}");
    assert_eq!(err, None);
    assert_eq!(
        render(&dirs),
        "a [\"\u{fffd}\u{fffd}\", \"\u{fffd}\"]; \u{fffd} [] {  }"
    );
}
