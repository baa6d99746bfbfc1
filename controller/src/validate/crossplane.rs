//! The parse tree in the JSON shape `crossplane parse` prints.
//!
//! STUB: being written on its own branch. The contract:
//! `to_crossplane(config: &Config, diagnostics: &[Diagnostic], base: &str) -> serde_json::Value`
