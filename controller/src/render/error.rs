//! Why a config directory could not be rendered. Every variant names the file (and the line where
//! one is known) so the person who pushed the commit can fix it without reading Switchback's code.

/// A render failure. Serialisable, because a confined render (`crate::confine::render`) sends it
/// back from its child process.
#[derive(Debug, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RenderError {
    /// `values.yaml` (or a values override) is not valid YAML or not a mapping.
    #[error("{path}:{line}:{col}: invalid values: {message}")]
    Values {
        /// The values file.
        path: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        col: u64,
        /// What the YAML parser said.
        message: String,
    },
    /// A template failed: syntax error, undefined variable (rendering is strict), a failing filter.
    #[error("{path}:{line}: template error: {message}")]
    Template {
        /// The template file (a `.j2` path inside the config directory).
        path: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// What went wrong, naming the variable for undefined values.
        message: String,
    },
    /// A symbolic link points outside the config directory (or is absolute).
    #[error(
        "{path}: symbolic link to {target:?} leaves the config directory; only links to files inside it are followed"
    )]
    SymlinkEscapes {
        /// The link.
        path: String,
        /// Its target as stored.
        target: String,
    },
    /// A symbolic link points at nothing in the directory, at a directory, or loops.
    #[error("{path}: symbolic link to {target:?} {why}")]
    SymlinkBroken {
        /// The link.
        path: String,
        /// Its target as stored.
        target: String,
        /// What is wrong with it.
        why: String,
    },
    /// A rendered template and a plain file would produce the same output path.
    #[error("{path}: produced both by {first} and by {second}; rename one of them")]
    Collision {
        /// The output path.
        path: String,
        /// The first source file.
        first: String,
        /// The second source file.
        second: String,
    },
    /// The entry point (e.g. `nginx.conf`) is not among the rendered files.
    #[error("the entry point {entry:?} is not in the rendered config (files: {files})")]
    MissingEntry {
        /// The expected entry file.
        entry: String,
        /// The files that were produced, comma separated.
        files: String,
    },
    /// Rendering was stopped by a resource limit of the confined render (CPU time, memory, wall
    /// time, output size): a template that needs that much is refused, whatever it would produce.
    #[error(
        "{path}: rendering stopped: it reached {limit}; a template (or values) needing that much \
         work is refused: look for loops that grow lists or strings"
    )]
    Limit {
        /// The template being rendered (or `values.yaml` when no template had started).
        path: String,
        /// Which limit, for people.
        limit: String,
        /// Whether trying again may succeed (wall time depends on the machine's load); CPU and
        /// memory limits are a property of the commit, so it is not rendered again.
        retry: bool,
    },
    /// The confined render crashed without hitting a limit (e.g. a stack overflow on values nested
    /// too deeply).
    #[error("{path}: rendering crashed: {why}")]
    Crashed {
        /// The template being rendered (or `values.yaml`).
        path: String,
        /// The exit status and the first lines the renderer printed.
        why: String,
    },
    /// A path of the tree is not a plain relative path (`..`, `.`, an empty part...). The readers
    /// of git trees and directories already refuse such names; this guards every other way a
    /// [`super::ConfigTree`] can be built, so no bundle path can leave a directory it is joined to.
    #[error(
        "{path:?} is not a plain relative path (no `.`, `..`, empty part, `\\` or NUL); it would \
         leave the directory the bundle is written to"
    )]
    UnsafePath {
        /// The path as it was in the tree.
        path: String,
    },
    /// A value from outside the repository (`render.values`, `--set`, `--values`) adds, removes
    /// or moves directives or blocks of the rendered config (see `render::shape`).
    #[error(
        "{path}:{line}: the override value {keys} changes the structure of the config: {detail}. \
         Values from render.values, --set or --values may fill in arguments, not add directives \
         or blocks; in the template, pass the value through `nginx_quote` (text) or \
         `nginx_token` (a port, an address, a name)"
    )]
    OverrideChangesStructure {
        /// The rendered file.
        path: String,
        /// 1-based line in the rendered file, 0 when unknown.
        line: u32,
        /// The override keys whose strings hold nginx syntax characters.
        keys: String,
        /// What differs.
        detail: String,
    },
    /// Override strings hold nginx syntax characters and the templates cannot be rendered with a
    /// plain word in their place, so whether they change the config's structure cannot be checked.
    #[error(
        "the override value {keys} holds nginx syntax characters (; {{ }} # quotes or \\), and \
         the templates fail when it is replaced by a plain word ({why}), so Switchback cannot \
         check that it only fills in arguments; drop those characters from the value"
    )]
    OverrideUncheckable {
        /// The override keys whose strings hold nginx syntax characters.
        keys: String,
        /// The render error with the plain word in place.
        why: String,
    },
    /// A template is not UTF-8.
    #[error("{path}: template is not valid UTF-8 (byte {offset})")]
    NotUtf8 {
        /// The template.
        path: String,
        /// Offset of the first invalid byte.
        offset: usize,
    },
}

impl RenderError {
    /// The failure as an SB010 diagnostic, so a render problem is reported in the same
    /// `path:line:col: error[rule]` shape as every other finding and scripts see one format.
    pub fn to_diagnostic(&self) -> crate::validate::Diagnostic {
        use crate::validate::Diagnostic;
        let (path, line, col, message) = match self {
            RenderError::Values {
                path,
                line,
                col,
                message,
            } => (
                path.clone(),
                *line,
                *col,
                format!("invalid values: {message}"),
            ),
            RenderError::Template {
                path,
                line,
                message,
            } => (
                path.clone(),
                *line as u64,
                0,
                format!("template error: {message}"),
            ),
            RenderError::SymlinkEscapes { path, .. }
            | RenderError::SymlinkBroken { path, .. }
            | RenderError::Collision { path, .. }
            | RenderError::Limit { path, .. }
            | RenderError::Crashed { path, .. }
            | RenderError::NotUtf8 { path, .. }
            | RenderError::UnsafePath { path } => (path.clone(), 0, 0, self.to_string()),
            RenderError::MissingEntry { entry, .. } => (entry.clone(), 0, 0, self.to_string()),
            RenderError::OverrideChangesStructure { path, line, .. } => {
                let text = self.to_string();
                let message = text
                    .strip_prefix(&format!("{path}:{line}: "))
                    .map_or(text.clone(), str::to_owned);
                (path.clone(), u64::from(*line), 0, message)
            }
            RenderError::OverrideUncheckable { .. } => {
                ("render.values".to_string(), 0, 0, self.to_string())
            }
        };
        let message = message
            .strip_prefix(&format!("{path}: "))
            .map(str::to_owned)
            .unwrap_or(message);
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        let col = u32::try_from(col).unwrap_or(u32::MAX);
        Diagnostic::error("SB010", path, line, col, message)
    }
}
