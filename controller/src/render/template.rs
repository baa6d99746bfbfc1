//! minijinja, configured for config files rather than HTML: no auto-escaping, trailing newlines
//! kept, block tags trimmed the way Ansible users expect, strict undefined (a typo in a value name is
//! an error, not an empty string in `proxy_pass`), bounded work (fuel), and no loader that can reach
//! the filesystem or the environment: the only templates are the ones in the config directory.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use super::error::RenderError;

/// Upper bound on template work (instructions, and bytes produced), so a buggy template (deep
/// loops) ends with a precise error. Generous: a 5,000-line config uses well under 1% of it. Fuel
/// does not count the work of minijinja's lazy sequences (`ns.l = ns.l + ns.l` doubled 33 times
/// runs for minutes) and allows ~640 MB of strings, so the edges that render untrusted commits do
/// it in a confined child with CPU, memory and time limits (`crate::confine::render`).
const FUEL: u64 = 10_000_000;

/// A set of templates ready to render.
pub struct Templates {
    env: Environment<'static>,
    sources: BTreeMap<String, String>,
}

impl Templates {
    /// Compiles every template; the first syntax error is returned with its file and line.
    pub fn new(sources: BTreeMap<String, String>) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| to_render_error(&e, "<syntax>", &sources))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        super::filters::register(&mut env);
        for (name, source) in &sources {
            add(&mut env, name, source)?.map_err(|e| to_render_error(&e, name, &sources))?;
        }
        Ok(Templates { env, sources })
    }

    /// Renders one template with the given values as its top-level variables.
    pub fn render(&self, name: &str, values: &serde_json::Value) -> Result<String, RenderError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| to_render_error(&e, name, &self.sources))?;
        template
            .render(Value::from(Serde(values)))
            .map_err(|e| to_render_error(&e, name, &self.sources))
    }
}

/// Compiles one template into `env`. minijinja 3.1.0 panics (`unreachable!` in its code
/// generator) on an `import` whose alias is not a plain name (`{% import "m.j2" as m(x) %}`),
/// which the `render` fuzz target found; the panic is caught here and becomes this template's
/// error, so a commit's template can never take the renderer down. The environment is dropped
/// with the error, so whatever state the panic left it in is never used.
fn add(
    env: &mut Environment<'static>,
    name: &str,
    source: &str,
) -> Result<Result<(), minijinja::Error>, RenderError> {
    let compile = std::panic::AssertUnwindSafe(|| {
        env.add_template_owned(name.to_string(), source.to_string())
    });
    std::panic::catch_unwind(compile).map_err(|_| RenderError::Template {
        path: name.to_string(),
        line: 0,
        message: "the template engine could not compile this template; an `import ... as` must \
                  name a plain variable (`as m`), not an expression"
            .to_string(),
    })
}

/// Turns a minijinja error into one that names the template, the line and, for undefined values,
/// the expression that was undefined (minijinja reports the span; the text is taken from the source).
fn to_render_error(
    err: &minijinja::Error,
    fallback_name: &str,
    sources: &BTreeMap<String, String>,
) -> RenderError {
    let path = err.name().unwrap_or(fallback_name).to_string();
    let line = err.line().unwrap_or(0);
    let snippet = err
        .range()
        .and_then(|range| sources.get(&path).and_then(|src| src.get(range)))
        .map(str::trim);
    let message = match (err.kind(), snippet) {
        (ErrorKind::UndefinedError, Some(expr)) => format!(
            "undefined value `{expr}` (rendering is strict: define it in values.yaml or the \
             rollout's render.values)"
        ),
        (ErrorKind::UndefinedError, None) => {
            "undefined value (rendering is strict: define it in values.yaml or the rollout's \
             render.values)"
                .to_string()
        }
        (ErrorKind::OutOfFuel, _) => {
            "template did too much work (loop too large?); rendering stopped".to_string()
        }
        (_, Some(expr)) if !expr.is_empty() => format!("{} in `{expr}`", describe(err)),
        _ => describe(err),
    };
    RenderError::Template {
        path,
        line,
        message,
    }
}

fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}
