//! The parse tree in the JSON shape `crossplane parse` prints.
//!
//! STUB: being written on its own branch. The contract:
//! `to_crossplane(config: &Config, diagnostics: &[Diagnostic], base: &str) -> serde_json::Value`

use super::ast::Config;
use super::diagnostic::Diagnostic;

/// Stub.
pub fn to_crossplane(
    _config: &Config,
    _diagnostics: &[Diagnostic],
    _base: &str,
) -> serde_json::Value {
    serde_json::Value::Null
}
