//! Filters for splicing values into nginx config: `nginx_quote` and `nginx_token`.
//!
//! A template splices a value as raw text, so a value is as powerful as the template around it:
//! `listen {{ site.listen }};` with `site.listen` set to `8080; location /leak { alias /etc/; }`
//! adds a location. Templates and `values.yaml` come from the config repository, whose authors are
//! trusted with the config; override values often do not (`spec.render.values` of a ProxyRollout,
//! `--set` in a pipeline). These filters let a template say what a value may be:
//!
//! - `{{ v | nginx_quote }}`: one double-quoted nginx string that nginx reads back as exactly `v`,
//!   whatever `v` holds (`;`, `{`, `}`, `#`, quotes, backslashes, newlines). `$` is refused by
//!   default, because nginx expands variables inside quoted strings and has no escape for `$`;
//!   `nginx_quote(variables=true)` lets it through when the template means it;
//! - `{{ v | nginx_token }}`: `v` as a bare word, refused unless it holds only characters that
//!   mean nothing to nginx's grammar (letters, digits and `. _ - : / @ = + , ~ * ^ % [ ] ? & !`).
//!   For ports, addresses, host names, sizes and times.
//!
//! Both accept strings and numbers and refuse anything else (a list, a mapping, none), with an
//! error naming the filter, the value and what to do; rendering stops on it like on any template
//! error. Pure: no I/O.

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};

/// The longest quoted string `nginx_quote` produces. nginx reads a config in 4096-byte buffers and
/// refuses a token that fills one ("too long parameter"); this stays clear of that.
pub const MAX_QUOTED: usize = 4000;

/// Characters a bare token may hold besides ASCII letters and digits.
const TOKEN_PUNCTUATION: &str = "._-:/@=+,~*^%[]?&!";

/// Adds the filters to a template environment.
pub fn register(env: &mut Environment<'_>) {
    env.add_filter("nginx_quote", nginx_quote_filter);
    env.add_filter("nginx_token", nginx_token_filter);
}

fn nginx_quote_filter(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let variables: Option<bool> = kwargs.get("variables")?;
    kwargs.assert_all_used()?;
    let text = scalar_text("nginx_quote", value)?;
    quote(&text, variables.unwrap_or(false)).map_err(|why| refusal("nginx_quote", &text, &why))
}

fn nginx_token_filter(value: &Value) -> Result<String, Error> {
    let text = scalar_text("nginx_token", value)?;
    token(&text).map_err(|why| refusal("nginx_token", &text, &why))?;
    Ok(text)
}

/// `text` as one double-quoted nginx string that nginx reads back as `text`: `\` and `"` are
/// escaped, newline, CR and tab are written as `\n`, `\r`, `\t` (nginx turns them back), every
/// other byte stands for itself inside the quotes. Errors say why `text` cannot be quoted.
pub fn quote(text: &str, variables: bool) -> Result<String, String> {
    if text.contains('\0') {
        return Err("contains a NUL byte, which nginx cannot carry in a string".to_string());
    }
    if !variables && text.contains('$') {
        return Err(
            "contains `$`, which nginx expands as a variable inside a quoted string and \
             which no quoting can escape; remove it, or use nginx_quote(variables=true) if the \
             template means variables to be expanded"
                .to_string(),
        );
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    if out.len() > MAX_QUOTED {
        return Err(format!(
            "is {} bytes quoted, more than the {MAX_QUOTED} nginx reads as one string",
            out.len()
        ));
    }
    Ok(out)
}

/// Checks that `text` can stand as a bare nginx word that means only itself.
pub fn token(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("is empty; an empty value cannot be a bare word (use nginx_quote)".to_string());
    }
    match text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(*c)))
    {
        None => Ok(()),
        Some((at, c)) => Err(format!(
            "contains {c:?} at byte {at}; a bare nginx word may hold only letters, digits and \
             {TOKEN_PUNCTUATION} (use nginx_quote for text)"
        )),
    }
}

/// The text of a string or number; anything else is an error naming the filter.
fn scalar_text(filter: &str, value: &Value) -> Result<String, Error> {
    if let Some(s) = value.as_str() {
        return Ok(s.to_string());
    }
    if value.is_number() {
        return Ok(value.to_string());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{filter} takes a string or a number, not {} ({value})",
            value.kind()
        ),
    ))
}

fn refusal(filter: &str, text: &str, why: &str) -> Error {
    const SHOWN: usize = 60;
    let shown = match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}", format!("{}...", &text[..end])),
    };
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{filter}: the value {shown} {why}"),
    )
}

#[cfg(test)]
#[path = "filters_tests.rs"]
mod tests;
