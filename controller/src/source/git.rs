//! Git repositories read with git2, never checked out.
//!
//! STUB so the CLI compiles while the real source is written on its own branch.

use std::path::Path;

use crate::render::ConfigTree;

/// Stub.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Stub.
    #[error("git source not built yet")]
    NotBuilt,
}

/// Stub.
#[derive(Clone)]
pub enum Credentials {
    /// None.
    None,
    /// Token.
    Token(String),
    /// Basic.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// Key.
    SshKey {
        /// User.
        username: String,
        /// Key file.
        private_key: std::path::PathBuf,
        /// Passphrase.
        passphrase: Option<String>,
    },
}

/// Stub.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Revision {
    /// Commit.
    pub commit: String,
    /// Time.
    pub committed_at: jiff::Timestamp,
    /// Author.
    pub author: String,
    /// Message.
    pub message: String,
}

/// Stub.
#[derive(Clone)]
pub struct GitSource;

impl GitSource {
    /// Stub.
    pub fn new(_url: &str, _c: Credentials, _cache: &Path) -> Result<Self, GitError> {
        Err(GitError::NotBuilt)
    }
    /// Stub.
    pub fn fetch_blocking(&self, _rev: &str) -> Result<Revision, GitError> {
        Err(GitError::NotBuilt)
    }
    /// Stub.
    pub fn read_tree_blocking(&self, _commit: &str, _path: &str) -> Result<ConfigTree, GitError> {
        Err(GitError::NotBuilt)
    }
}

/// Stub.
pub fn redact_url(url: &str) -> String {
    url.to_string()
}
