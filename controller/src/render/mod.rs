//! Render: a config directory plus values becomes a [`Bundle`] (DESIGN §3.1). Pure and
//! deterministic: the same tree and values always give the same digest.
//!
//! Rules of the directory:
//! - `values.yaml` holds the template values; it is input, not output, so it is not in the bundle;
//! - a file ending `.j2` is a minijinja template, rendered to the same path without `.j2`;
//! - a template whose file name starts with `_` (e.g. `_macros.j2`) is a partial: other templates
//!   may `include`/`import` it, it produces no file of its own;
//! - every other file is copied as is; symbolic links are followed only inside the directory.
//!
//! The commit is deliberately not a template value: two commits with the same config must render
//! to the same digest (DESIGN §3.2).

pub mod bundle;
pub mod error;
pub mod filters;
mod links;
mod shape;
mod template;
pub mod tree;
pub mod values;

use std::collections::BTreeMap;

pub use bundle::{Bundle, Digest};
pub use error::RenderError;
pub use tree::{ConfigTree, TreeEntry};

use template::Templates;

/// The values file inside a config directory.
pub const VALUES_FILE: &str = "values.yaml";

/// Template file suffix.
const TEMPLATE_SUFFIX: &str = ".j2";

/// Renders a config directory. `overrides` is a mapping deep-merged over `values.yaml`
/// (use `serde_json::Value::Null` or an empty object for none).
///
/// Overrides come from outside the repository and are not trusted with the config's structure:
/// when one of their strings holds nginx syntax characters, the bundle must have the same
/// directives and blocks as with a plain word in its place (see [`shape`]).
pub fn render(tree: &ConfigTree, overrides: &serde_json::Value) -> Result<Bundle, RenderError> {
    render_with(tree, overrides, &mut |_| {})
}

/// [`render`], calling `started` with each template's path before rendering it, so a confined
/// render killed by a limit can say which template it was in (`crate::confine::render`).
pub fn render_with(
    tree: &ConfigTree,
    overrides: &serde_json::Value,
    started: &mut dyn FnMut(&str),
) -> Result<Bundle, RenderError> {
    let base = match tree.get(VALUES_FILE) {
        Some(_) => {
            let bytes = links::resolve(tree, VALUES_FILE)?;
            let text = utf8(VALUES_FILE, bytes)?;
            values::parse_values(VALUES_FILE, text)?
        }
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    if !overrides.is_null() {
        values::check_depth("render.values", overrides)?;
    }
    let with = |overrides: &serde_json::Value| {
        let mut values = base.clone();
        if !overrides.is_null() {
            values::merge(&mut values, overrides);
        }
        values
    };

    let mut sources = BTreeMap::new();
    let mut plain = BTreeMap::new();
    for (path, _) in tree.iter() {
        if !tree::is_plain_path(path) {
            return Err(RenderError::UnsafePath {
                path: path.to_string(),
            });
        }
        if path == VALUES_FILE {
            continue;
        }
        let bytes = links::resolve(tree, path)?;
        if path.ends_with(TEMPLATE_SUFFIX) {
            sources.insert(path.to_string(), utf8(path, bytes)?.to_string());
        } else {
            plain.insert(path.to_string(), bytes.to_vec());
        }
    }

    let templates = Templates::new(sources.clone())?;
    let bundle = produce(&templates, &sources, &plain, &with(overrides), started)?;
    if let Some((masked, keys)) = shape::mask(overrides) {
        let without = produce(&templates, &sources, &plain, &with(&masked), started)
            .map_err(|e| shape::uncheckable(&keys, &e))?;
        shape::compare(&bundle, &without, &keys)?;
    }
    Ok(bundle)
}

/// The bundle of `plain` files and rendered templates for one set of values.
fn produce(
    templates: &Templates,
    sources: &BTreeMap<String, String>,
    plain: &BTreeMap<String, Vec<u8>>,
    values: &serde_json::Value,
    started: &mut dyn FnMut(&str),
) -> Result<Bundle, RenderError> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for (path, bytes) in plain {
        origin.insert(path.clone(), path.clone());
        files.insert(path.clone(), bytes.clone());
    }
    for name in sources.keys() {
        if is_partial(name) {
            continue;
        }
        let output = name
            .strip_suffix(TEMPLATE_SUFFIX)
            .unwrap_or(name)
            .to_string();
        if let Some(first) = origin.get(&output) {
            return Err(RenderError::Collision {
                path: output,
                first: first.clone(),
                second: name.clone(),
            });
        }
        started(name);
        let text = templates.render(name, values)?;
        origin.insert(output.clone(), name.clone());
        files.insert(output, text.into_bytes());
    }
    Ok(Bundle::new(files))
}

/// Checks that the bundle has its entry point, so a missing `nginx.conf` is reported as such and
/// not as a confusing parse error later.
pub fn require_entry(bundle: &Bundle, entry: &str) -> Result<(), RenderError> {
    if bundle.get(entry).is_some() {
        return Ok(());
    }
    Err(RenderError::MissingEntry {
        entry: entry.to_string(),
        files: bundle
            .files()
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn is_partial(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with('_'))
}

fn utf8<'a>(path: &str, bytes: &'a [u8]) -> Result<&'a str, RenderError> {
    std::str::from_utf8(bytes).map_err(|e| RenderError::NotUtf8 {
        path: path.to_string(),
        offset: e.valid_up_to(),
    })
}

#[cfg(test)]
mod tests;
