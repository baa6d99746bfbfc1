use proptest::prelude::*;

use super::*;
use crate::validate::parser::parse_file;

/// nginx's unescaping of a token's text (`ngx_conf_read_token`, ngx_conf_file.c, after a word is
/// found): `\"`, `\'` and `\\` lose the backslash, `\t`, `\r`, `\n` become the control character,
/// any other backslash stays.
fn nginx_unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(b'"' | b'\'' | b'\\') => i += 1,
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Puts `quoted` where a value lands in a config, parses it with the validator's parser (a
/// transcription of nginx's tokenizer) and returns what nginx reads as the argument, or why not.
fn read_back(quoted: &str) -> Result<String, String> {
    let src = format!("location / {{\n    return 200 {quoted};\n}}\n");
    let (directives, error) = parse_file("t.conf", src.as_bytes());
    if let Some(e) = error {
        return Err(e.to_string());
    }
    let [location] = directives.as_slice() else {
        return Err(format!("{} top-level directives", directives.len()));
    };
    let [ret] = location.children() else {
        return Err(format!(
            "{} directives in the block",
            location.children().len()
        ));
    };
    let [_, arg] = ret.args.as_slice() else {
        return Err(format!("{} arguments", ret.args.len()));
    };
    if arg.quote != Some('"') {
        return Err("not one double-quoted argument".to_string());
    }
    let inner = &src.as_bytes()[arg.span.start + 1..arg.span.end - 1];
    String::from_utf8(nginx_unescape(inner)).map_err(|e| e.to_string())
}

fn render_with(template: &str, value: serde_json::Value) -> Result<String, String> {
    let mut env = Environment::new();
    register(&mut env);
    env.add_template("t", template).map_err(|e| e.to_string())?;
    let tmpl = env.get_template("t").map_err(|e| e.to_string())?;
    tmpl.render(
        minijinja::context! { v => minijinja::Value::from(minijinja::value::Serde(&value)) },
    )
    .map_err(|e| format!("{e:#}"))
}

const INJECTION: &str = "8080; location /leak { alias /etc/; autoindex on; }";

#[test]
fn the_injection_stays_one_string() {
    let quoted = quote(INJECTION, false).unwrap();
    assert_eq!(
        quoted,
        "\"8080; location /leak { alias /etc/; autoindex on; }\""
    );
    assert_eq!(read_back(&quoted).unwrap(), INJECTION);
}

#[test]
fn quotes_backslashes_and_newlines_are_escaped() {
    let text = "a\"b\\c\nd\re\tf'g#h{i}j;k";
    let quoted = quote(text, false).unwrap();
    assert_eq!(quoted, "\"a\\\"b\\\\c\\nd\\re\\tf'g#h{i}j;k\"");
    assert_eq!(read_back(&quoted).unwrap(), text);
    // A value ending in a backslash cannot escape the closing quote.
    assert_eq!(read_back(&quote("x\\", false).unwrap()).unwrap(), "x\\");
}

#[test]
fn dollar_nul_and_oversize_are_refused() {
    assert!(quote("$http_cookie", false).unwrap_err().contains('$'));
    assert_eq!(quote("$1", true).unwrap(), "\"$1\"");
    assert!(quote("a\0b", true).unwrap_err().contains("NUL"));
    assert!(quote(&"x".repeat(MAX_QUOTED), false).is_err());
    assert!(quote(&"x".repeat(MAX_QUOTED - 2), false).is_ok());
}

#[test]
fn tokens_are_plain_words_only() {
    for good in [
        "8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "shop.example.test",
        "15s",
        "logs/access.log",
        "*.example.test",
    ] {
        assert_eq!(token(good), Ok(()), "{good}");
    }
    for bad in [
        INJECTION, "", "a b", "a;", "{", "}", "#x", "$host", "\"x\"", "'x'", "a\\b",
    ] {
        assert!(token(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn filters_in_a_template() {
    let quoted = render_with("return 200 {{ v | nginx_quote }};", INJECTION.into()).unwrap();
    assert_eq!(
        quoted,
        format!("return 200 {};", quote(INJECTION, false).unwrap())
    );
    let err = render_with("listen {{ v | nginx_token }};", INJECTION.into()).unwrap_err();
    assert!(
        err.contains("nginx_token") && err.contains("contains ';' at byte 4"),
        "{err}"
    );
    assert_eq!(
        render_with("listen {{ v | nginx_token }};", 8080.into()).unwrap(),
        "listen 8080;"
    );
    assert_eq!(
        render_with(
            "set $x {{ v | nginx_quote(variables=true) }};",
            "$host".into()
        )
        .unwrap(),
        "set $x \"$host\";"
    );
    let err = render_with("{{ v | nginx_quote }}", serde_json::json!([1])).unwrap_err();
    assert!(err.contains("takes a string or a number"), "{err}");
    let err = render_with("{{ v | nginx_quote(varz=true) }}", "x".into()).unwrap_err();
    assert!(err.contains("varz"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the string, nginx's tokenizer reads exactly one quoted argument and its unescaping
    /// gives the string back.
    #[test]
    fn quoting_round_trips_through_the_nginx_tokenizer(text in any::<String>()) {
        let text = text.replace('\0', "");
        let quoted = quote(&text, true).unwrap();
        prop_assert_eq!(read_back(&quoted), Ok(text));
    }

    /// Strings made mostly of the characters that matter to nginx's grammar.
    #[test]
    fn quoting_round_trips_grammar_characters(text in "[ ;{}#\"'\\\\\n\r\t$a-z]{0,64}") {
        let quoted = quote(&text, true).unwrap();
        prop_assert_eq!(read_back(&quoted), Ok(text));
    }

    /// A token that passes is one bare word that reads back unchanged.
    #[test]
    fn accepted_tokens_are_one_word(text in "[ -~]{1,24}") {
        if token(&text).is_ok() {
            let src = format!("listen {text};\n");
            let (directives, error) = parse_file("t.conf", src.as_bytes());
            prop_assert!(error.is_none());
            prop_assert_eq!(directives.len(), 1);
            prop_assert_eq!(directives[0].args.len(), 1);
            prop_assert_eq!(&directives[0].args[0].value, &text);
            prop_assert_eq!(directives[0].args[0].quote, None);
        }
    }
}
