//! The bearer token of the agent API in Kubernetes mode. Anyone who can reach a pod IP can reach
//! the agent, so every endpoint but `/healthz` wants `Authorization: Bearer <token>`; the token is
//! mounted from a Secret (`--token-file`) or given in `$SWITCHBACK_AGENT_TOKEN`.
//!
//! The token never appears in `Debug` output, errors or logs, and a presented token is compared in
//! constant time (over SHA-256 digests of both, so even the length does not leak).
//!
//! One token per namespace, not one for the whole cluster: the controller holds a master token,
//! and the agents of namespace N hold only [`Token::for_namespace`] of it, the lowercase hex of
//! `SHA-256(master ":" N)`. Whoever can read a Secret or a proxy pod in one namespace (or points a
//! ProxyRollout's selector at a pod of their own, which then receives the nudges) learns that
//! namespace's token and nothing that works against the agents of another. SHA-256 rather than
//! an HMAC because Helm can compute it (`sha256sum`), so the chart writes each namespace's Secret
//! and the controller needs no write access to Secrets; a length extension of one namespace's
//! token gives the token of a "namespace" containing SHA-256 padding bytes, which no namespace
//! name can be.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::Digest as _;

/// The environment variable holding the token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "SWITCHBACK_AGENT_TOKEN";

/// A shared secret between the controller and the agents. Cloning is cheap; `Debug` prints no
/// secret, and there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why no usable token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("reading the agent token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty, or not printable ASCII (it goes in an HTTP header).
    #[error("the agent token from {from} is empty or not printable ASCII")]
    Unusable {
        /// Where it came from (a path or the variable's name; never the value).
        from: String,
    },
    /// Neither a file nor the variable gave a token.
    #[error("Kubernetes mode needs a token: --token-file or ${TOKEN_ENV}")]
    Missing,
}

impl Token {
    /// A token from its text; surrounding whitespace (a trailing newline in a Secret) is dropped.
    pub fn new(text: &str, from: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Unusable {
                from: from.to_string(),
            });
        }
        Ok(Token(Arc::from(text)))
    }

    /// Reads the token from `file` when given, else from `$SWITCHBACK_AGENT_TOKEN`.
    pub fn load(file: Option<&Path>) -> Result<Token, TokenError> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Token::new(&text, &path.display().to_string())
            }
            None => match std::env::var(TOKEN_ENV) {
                Ok(text) => Token::new(&text, TOKEN_ENV),
                Err(_) => Err(TokenError::Missing),
            },
        }
    }

    /// The token of the agents in `namespace`, when this is the controller's master token: the
    /// lowercase hex of SHA-256 over the master, `:` and the namespace name. `charts/switchback`
    /// computes the same with `sha256sum` for each namespace's Secret; by hand it is
    /// `printf '%s:%s' "$MASTER" "$NAMESPACE" | sha256sum | cut -d' ' -f1`.
    pub fn for_namespace(&self, namespace: &str) -> Token {
        let digest = sha2::Sha256::digest(format!("{}:{namespace}", self.0).as_bytes());
        Token(Arc::from(hex::encode(digest)))
    }

    /// The secret itself, for the one place that sends it (the client's `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ and of
    /// their lengths.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let want = sha2::Sha256::digest(self.0.as_bytes());
        let got = sha2::Sha256::digest(presented);
        constant_time_eq(&want, &got)
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else { return false };
        match value.strip_prefix(b"Bearer ") {
            Some(presented) => self.matches(presented),
            None => false,
        }
    }
}

/// Equality of two byte slices that looks at every byte whatever the contents: the XOR of each
/// pair folded with OR, so the time taken does not say where the first difference is. Slices of
/// different lengths are unequal (callers compare fixed-size digests, so no length leaks).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fold_xor_compare_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"a", b""));
        for i in 0..32 {
            let a = [0u8; 32];
            let mut b = [0u8; 32];
            b[i] = 1 << (i % 8);
            assert!(!constant_time_eq(&a, &b), "difference at byte {i}");
        }
    }

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        let t = Token::new("s3cret-token\n", "test").expect("token");
        assert!(t.authorizes(Some(b"Bearer s3cret-token")));
        assert!(!t.authorizes(Some(b"Bearer s3cret-token ")));
        assert!(!t.authorizes(Some(b"Bearer s3cret-toke")));
        assert!(!t.authorizes(Some(b"bearer s3cret-token")));
        assert!(!t.authorizes(Some(b"Basic s3cret-token")));
        assert!(!t.authorizes(Some(b"Bearer ")));
        assert!(!t.authorizes(None));
    }

    #[test]
    fn each_namespace_gets_its_own_token_from_the_master() {
        let master = Token::new("m4ster\n", "test").expect("token");
        let a = master.for_namespace("team-a");
        let b = master.for_namespace("team-b");
        // printf '%s:%s' m4ster team-a | sha256sum
        assert_eq!(
            a.expose(),
            hex::encode(sha2::Sha256::digest(b"m4ster:team-a"))
        );
        assert_ne!(a, b);
        assert_ne!(a, master);
        assert!(!b.authorizes(Some(format!("Bearer {}", a.expose()).as_bytes())));
        assert!(
            Token::new(a.expose(), "derived").is_ok(),
            "usable in a header"
        );
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn a_token_is_never_printed_and_must_be_usable() {
        let t = Token::new("s3cret", "test").expect("token");
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(Token::new("  \n", "test").is_err());
        assert!(Token::new("two words", "test").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").expect("write");
        assert_eq!(
            Token::load(Some(&path)).expect("load").expose(),
            "from-file"
        );
        let missing = Token::load(Some(&dir.path().join("nope"))).expect_err("missing file");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
