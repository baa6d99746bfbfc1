//! Git credentials from the Secret named by `spec.source.secretRef`, with the keys Flux users
//! already know: `bearerToken` (or `token`) for an https token, `username` + `password` for basic
//! auth, `identity` (+ optional `passphrase`) for an ssh key. The secret's values are never
//! logged; an error names the Secret and the keys it lacks, never a value.

use std::io::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::source::git::Credentials;

/// Why the Secret could not give credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret could not be read (missing, forbidden, API down).
    #[error("secret {namespace}/{name}: {message}")]
    Read {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API said.
        message: String,
    },
    /// The Secret has none of the known key sets.
    #[error(
        "secret {namespace}/{name} has none of: bearerToken, token, username+password, identity (keys present: {keys})"
    )]
    NoKnownKeys {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The key names it has.
        keys: String,
    },
    /// The ssh key could not be written for libgit2 to read.
    #[error("writing the ssh key from secret {name}: {source}")]
    KeyFile {
        /// The Secret.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Reads `name` in `namespace` and turns it into credentials. An ssh key is written, mode 0600,
/// under `key_dir` (the rollout's own cache directory), because libgit2 reads keys from files.
pub async fn from_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    key_dir: &Path,
) -> Result<Credentials, CredentialsError> {
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| CredentialsError::Read {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message: e.to_string(),
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key).map(|v| {
            String::from_utf8_lossy(&v.0)
                .trim_end_matches('\n')
                .to_string()
        })
    };
    if let Some(token) = text("bearerToken").or_else(|| text("token")) {
        return Ok(Credentials::Token(token));
    }
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Ok(Credentials::Basic { username, password });
    }
    if let Some(identity) = data.get("identity") {
        let path = key_dir.join("identity");
        write_private(&path, &identity.0).map_err(|source| CredentialsError::KeyFile {
            name: name.to_string(),
            source,
        })?;
        return Ok(Credentials::SshKey {
            username: text("username").unwrap_or_default(),
            private_key: path,
            passphrase: text("passphrase"),
        });
    }
    Err(CredentialsError::NoKnownKeys {
        namespace: namespace.to_string(),
        name: name.to_string(),
        keys: data.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}
