//! `nginx -t` with the real nginx binary in a throw-away prefix.
//!
//! STUB: being written on its own branch. The contract:
//! - `Nginx::find(explicit: Option<&Path>) -> Result<Option<Nginx>, SandboxError>`
//! - `Nginx::path(&self) -> &Path`, `Nginx::version(&self) -> &str`
//! - `Nginx::test(&self, bundle: &Bundle, entry: &str, config: &Config) -> Result<Vec<Diagnostic>, SandboxError>`
