//! Git credentials from the Secret named by `spec.source.secretRef`, with the keys Flux users
//! already know: `bearerToken` (or `token`) for an https token, `username` + `password` for basic
//! auth, `identity` (+ optional `passphrase`) for an ssh key. The secret's values are never
//! logged; an error names the Secret and the keys it lacks, never a value.
//!
//! Whoever may create a ProxyRollout could otherwise name any Secret of the namespace and have
//! the controller send it to a server of their choosing (issue 13). So a Secret is used only
//! when it says so itself, in two annotations set by whoever owns it:
//!
//! - [`ALLOWED_ROLLOUTS_ANNOTATION`] (every Secret a rollout names: git credentials, trusted keys,
//!   webhook secret): the ProxyRollouts of its namespace that may use it, comma-separated, or `*`
//!   for all. This is Argo CD's model (a repository Secret opts in with a label and is scoped to
//!   projects) at the grain a namespace-scoped resource has; Flux lets any object of the namespace
//!   name any Secret, which is exactly the confused deputy being closed here.
//! - [`GIT_HOST_ANNOTATION`] (git credentials): the one server, `host` or `host:port`, the
//!   credentials are for. A rollout whose URL is on another server is refused before anything is
//!   fetched, and the git source never offers them to another server, even after a redirect.
//!
//! A Secret without them is refused with a Warning Event saying which annotation to add.

use std::io::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::source::git::{Credentials, Remote, Transport};

/// The annotation a Secret names the ProxyRollouts allowed to use it in (comma-separated, or `*`).
pub const ALLOWED_ROLLOUTS_ANNOTATION: &str = "switchback.dev/allowed-rollouts";
/// The annotation naming the git server (`host` or `host:port`) a credentials Secret is for.
pub const GIT_HOST_ANNOTATION: &str = "switchback.dev/git-host";

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
    /// The Secret does not name this rollout in its opt-in annotation.
    #[error(
        "secret {namespace}/{name} does not allow ProxyRollout {rollout} to use it{detail}: add the \
         annotation {ALLOWED_ROLLOUTS_ANNOTATION}: \"{rollout}\" to the Secret (a comma-separated \
         list of ProxyRollouts in {namespace}, or \"*\" for all), e.g. `kubectl -n {namespace} \
         annotate secret {name} {ALLOWED_ROLLOUTS_ANNOTATION}={rollout}`"
    )]
    NotAllowed {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The rollout that named it.
        rollout: String,
        /// What the annotation says now, if anything.
        detail: String,
    },
    /// A credentials Secret that does not say which server it is for.
    #[error(
        "secret {namespace}/{name} does not say which git server its credentials are for: if they \
         are meant for {server} (the server of spec.source.url), add the annotation \
         {GIT_HOST_ANNOTATION}: \"{server}\" to the Secret"
    )]
    NoHost {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The server of the rollout's URL, as the annotation would name it.
        server: String,
    },
    /// A credentials Secret for another server than the rollout's URL.
    #[error(
        "secret {namespace}/{name} holds credentials for {pinned} ({GIT_HOST_ANNOTATION}), and \
         spec.source.url is on {asked}: credentials are only used with the server the Secret names"
    )]
    OtherHost {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the annotation names.
        pinned: String,
        /// The server of the rollout's URL.
        asked: String,
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

/// Reads `name` in `namespace` and turns it into credentials for `rollout`, whose source is on
/// `server` (`None` for a URL with no network server, which no credentials are for). The Secret
/// must allow the rollout ([`allowed`]) and be for that server ([`GIT_HOST_ANNOTATION`]). An ssh
/// key is written, mode 0600, under `key_dir` (the rollout's own cache directory), because
/// libgit2 reads keys from files.
pub async fn from_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    rollout: &str,
    server: Option<&Remote>,
    key_dir: &Path,
) -> Result<Credentials, CredentialsError> {
    let secret = read(secrets, namespace, name).await?;
    allowed(&secret, namespace, name, rollout)?;
    pinned(&secret, namespace, name, server)?;
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

/// Reads Secret `name`; an error names it and what the API said.
pub async fn read(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Secret, CredentialsError> {
    secrets.get(name).await.map_err(|e| CredentialsError::Read {
        namespace: namespace.to_string(),
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// Whether `secret` allows ProxyRollout `rollout` to use it: its [`ALLOWED_ROLLOUTS_ANNOTATION`]
/// lists the rollout's name or is `*`.
pub fn allowed(
    secret: &Secret,
    namespace: &str,
    name: &str,
    rollout: &str,
) -> Result<(), CredentialsError> {
    let value = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOWED_ROLLOUTS_ANNOTATION));
    let names = value.map(|v| v.split(',').map(str::trim).collect::<Vec<_>>());
    if names
        .as_ref()
        .is_some_and(|n| n.iter().any(|n| *n == "*" || *n == rollout))
    {
        return Ok(());
    }
    Err(CredentialsError::NotAllowed {
        namespace: namespace.to_string(),
        name: name.to_string(),
        rollout: rollout.to_string(),
        detail: value
            .map(|v| format!(" (its {ALLOWED_ROLLOUTS_ANNOTATION} is {v:?})"))
            .unwrap_or_default(),
    })
}

/// Whether the credentials in `secret` are for `server`, the server of the rollout's URL.
fn pinned(
    secret: &Secret,
    namespace: &str,
    name: &str,
    server: Option<&Remote>,
) -> Result<(), CredentialsError> {
    let value = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GIT_HOST_ANNOTATION))
        .map(|v| v.trim());
    let shown = |r: &Remote| match r.transport.default_port() {
        Some(port) if port == r.port => r.host.clone(),
        _ => r.to_string(),
    };
    let other = |pinned: &str, asked: String| CredentialsError::OtherHost {
        namespace: namespace.to_string(),
        name: name.to_string(),
        pinned: pinned.to_string(),
        asked,
    };
    let Some(server) = server else {
        let pinned = value.unwrap_or("(none)");
        return Err(other(pinned, "no network server".to_string()));
    };
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(CredentialsError::NoHost {
            namespace: namespace.to_string(),
            name: name.to_string(),
            server: shown(server),
        });
    };
    // Read as the same kind of URL, so a host without a port means that transport's default.
    let scheme = match server.transport {
        Transport::Ssh => "ssh",
        Transport::Http => "http",
        Transport::Git => "git",
        _ => "https",
    };
    let same = !value.contains(['/', '@'])
        && Remote::parse(&format!("{scheme}://{value}/")).is_ok_and(|p| p.same_server(server));
    if same {
        Ok(())
    } else {
        Err(other(value, shown(server)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(annotations: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    }

    #[test]
    fn a_secret_is_used_only_by_the_rollouts_it_names() {
        let check = |value: Option<&str>, rollout: &str| {
            let s = secret(
                &value
                    .map(|v| vec![(ALLOWED_ROLLOUTS_ANNOTATION, v)])
                    .unwrap_or_default(),
            );
            allowed(&s, "edge", "git", rollout)
        };
        assert!(check(Some("edge"), "edge").is_ok());
        assert!(check(Some("api, edge"), "edge").is_ok());
        assert!(check(Some("*"), "anything").is_ok());
        let missing = check(None, "edge").err().map(|e| e.to_string());
        assert_eq!(
            missing.as_deref(),
            Some(
                "secret edge/git does not allow ProxyRollout edge to use it: add the annotation \
                 switchback.dev/allowed-rollouts: \"edge\" to the Secret (a comma-separated list \
                 of ProxyRollouts in edge, or \"*\" for all), e.g. `kubectl -n edge annotate \
                 secret git switchback.dev/allowed-rollouts=edge`"
            )
        );
        let other = check(Some("api"), "edge").err().map(|e| e.to_string());
        assert!(
            other.is_some_and(|e| e.contains("(its switchback.dev/allowed-rollouts is \"api\")")),
        );
        assert!(check(Some("edge-2"), "edge").is_err());
        assert!(check(Some(""), "edge").is_err());
    }

    #[test]
    fn credentials_are_for_the_server_the_secret_names() {
        let server = |url: &str| Remote::parse(url).expect("a server");
        let check = |value: Option<&str>, url: &str| {
            let s = secret(
                &value
                    .map(|v| vec![(GIT_HOST_ANNOTATION, v)])
                    .unwrap_or_default(),
            );
            pinned(&s, "edge", "git", Some(&server(url))).map_err(|e| e.to_string())
        };
        assert!(check(Some("github.com"), "https://github.com/org/x.git").is_ok());
        assert!(check(Some("GitHub.com:443"), "https://github.com/x").is_ok());
        assert!(check(Some("github.com"), "git@github.com:org/x.git").is_ok());
        assert!(check(Some("127.0.0.1:8443"), "https://127.0.0.1:8443/x").is_ok());
        let no_host = check(None, "https://git.example:8443/x").err();
        assert!(
            no_host
                .as_deref()
                .is_some_and(|e| e
                    .contains("add the annotation switchback.dev/git-host: \"git.example:8443\"")),
            "{no_host:?}"
        );
        for (value, url) in [
            ("github.com", "https://evil.example/x"),
            ("github.com", "https://github.com:8443/x"),
            ("127.0.0.1:8443", "https://127.0.0.2:8443/x"),
            ("github.com/org", "https://github.com/org/x"),
            ("x@github.com", "https://github.com/x"),
        ] {
            let err = check(Some(value), url).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("only used with the server")),
                "{value} for {url}: {err:?}"
            );
        }
        let local = pinned(&secret(&[(GIT_HOST_ANNOTATION, "h")]), "edge", "git", None);
        assert!(local.is_err());
    }
}
