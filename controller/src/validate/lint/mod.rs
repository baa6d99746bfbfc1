//! Lint rules: the mistakes behind proxy outages that can be known without running nginx.

use super::ast::Config;
use super::diagnostic::Diagnostic;

/// Runs every rule over a parsed bundle.
pub fn lint(config: &Config) -> Vec<Diagnostic> {
    let _ = config;
    Vec::new()
}
