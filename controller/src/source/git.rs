//! Git repositories read with git2, never checked out.
//!
//! STUB: being written on its own branch. The contract:
//! - `Credentials { None | Token(String) | Basic { username, password } | SshKey { username, private_key: PathBuf, passphrase: Option<String> } }`
//! - `Revision { commit: String, committed_at: jiff::Timestamp, author: String, message: String }`
//! - `GitSource::new(url, Credentials, cache_dir: &Path) -> Result<GitSource, GitError>` (Clone)
//! - `GitSource::fetch(&self, rev: &str) -> Result<Revision, GitError>` (async, spawn_blocking)
//! - `GitSource::read_tree(&self, commit: &str, path: &str) -> Result<ConfigTree, GitError>` (async)
//! - blocking twins `fetch_blocking`, `read_tree_blocking`
//! - `redact_url(&str) -> String`
