//! `nginx -t` with the real nginx binary in a throw-away prefix.
//!
//! STUB so the pipeline and CLI compile while the real sandbox is written on its own branch.

use std::path::{Path, PathBuf};

use super::ast::Config;
use super::diagnostic::Diagnostic;
use crate::render::Bundle;

/// Why the sandbox could not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Stub.
    #[error("{0}: nginx sandbox not built yet")]
    NotBuilt(PathBuf),
}

/// An nginx binary.
#[derive(Debug, Clone)]
pub struct Nginx {
    path: PathBuf,
    version: String,
}

impl Nginx {
    /// Finds nginx.
    pub fn find(explicit: Option<&Path>) -> Result<Option<Nginx>, SandboxError> {
        match explicit {
            Some(p) => Err(SandboxError::NotBuilt(p.to_path_buf())),
            None => Ok(None),
        }
    }
    /// Path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Version.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// Runs nginx -t.
    pub fn test(
        &self,
        _bundle: &Bundle,
        _entry: &str,
        _config: &Config,
    ) -> Result<Vec<Diagnostic>, SandboxError> {
        Err(SandboxError::NotBuilt(self.path.clone()))
    }
}
