//! The keys a rollout trusts, read from a Secret's data: armored OpenPGP certificates and SSH
//! signing keys (`allowed_signers` lines or `*.pub` files). Parsing is strict where a mistake would
//! silently shrink the trusted set (a key that does not parse is an error) and fails closed where
//! a feature is not supported (such entries are skipped and reported).

use std::collections::BTreeMap;

use pgp::composed::{Deserializable as _, SignedPublicKey};
use pgp::types::KeyDetails as _;

use super::KeyKind;

/// Why the trusted keys in a Secret could not be read. Names the Secret key (file) and line, never
/// key material beyond what a public key is.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A value is not UTF-8 text.
    #[error(
        "trusted key {name:?} is not text (expected an armored OpenPGP key or an OpenSSH public key)"
    )]
    NotText {
        /// The Secret key.
        name: String,
    },
    /// An armored OpenPGP key could not be read or its self-signatures do not verify.
    #[error("trusted key {name:?}: not a usable OpenPGP public key: {message}")]
    OpenPgp {
        /// The Secret key.
        name: String,
        /// What rPGP said.
        message: String,
    },
    /// An SSH public key line could not be read.
    #[error("trusted key {name:?} line {line}: not an SSH public key: {message}")]
    Ssh {
        /// The Secret key.
        name: String,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No key at all: verification with nothing trusted would refuse every commit.
    #[error(
        "no trusted keys found (expected *.asc OpenPGP keys, an allowed_signers file or *.pub SSH keys; keys present: {keys})"
    )]
    Empty {
        /// The Secret's key names.
        keys: String,
    },
}

/// One trusted OpenPGP certificate.
#[derive(Debug)]
pub(super) struct PgpKey {
    pub(super) key: SignedPublicKey,
    pub(super) fingerprint: String,
    pub(super) user_id: String,
}

/// One trusted SSH signing key with its `allowed_signers` principals.
#[derive(Debug)]
pub(super) struct SshKey {
    pub(super) key: ssh_key::PublicKey,
    pub(super) principals: String,
}

/// The keys a rollout trusts to sign the commits it rolls out. Build once per Secret version
/// and share (`Arc`); verification only reads it.
#[derive(Debug, Default)]
pub struct TrustedKeys {
    pub(super) openpgp: Vec<PgpKey>,
    pub(super) ssh: Vec<SshKey>,
    skipped: Vec<String>,
}

impl TrustedKeys {
    /// Reads a Secret's `data`: `*.asc` values are armored OpenPGP public keys (one or more per
    /// value), a value named `allowed_signers` (or ending in it) is an SSH allowed-signers file,
    /// `*.pub` values hold OpenSSH public keys (principal: the comment, else the Secret key). Other
    /// keys are ignored. A key that does not parse is an error (a typo must not silently shrink
    /// the trusted set); an allowed-signers entry with options not supported here is skipped and
    /// listed in [`TrustedKeys::skipped`].
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<TrustedKeys, KeysError> {
        let mut keys = TrustedKeys::default();
        for (name, value) in data {
            let text = || {
                std::str::from_utf8(value).map_err(|_| KeysError::NotText { name: name.clone() })
            };
            if name.ends_with(".asc") {
                keys.add_openpgp(name, text()?)?;
            } else if name.ends_with("allowed_signers") {
                keys.add_allowed_signers(name, text()?)?;
            } else if name.ends_with(".pub") {
                keys.add_ssh_pub(name, text()?)?;
            }
        }
        if keys.openpgp.is_empty() && keys.ssh.is_empty() {
            let names: Vec<&str> = data.keys().map(String::as_str).collect();
            return Err(KeysError::Empty {
                keys: names.join(", "),
            });
        }
        Ok(keys)
    }

    /// Keeps only the keys of `kind` (a spec's `mode: openpgp` or `ssh`; `any` keeps both), so a
    /// commit signed the other way is refused as untrusted even when such keys are in the Secret.
    pub fn only(mut self, kind: KeyKind) -> TrustedKeys {
        match kind {
            KeyKind::OpenPgp => self.ssh.clear(),
            KeyKind::Ssh => self.openpgp.clear(),
        }
        self
    }

    /// How many OpenPGP certificates and SSH keys are trusted, for logs and status.
    pub fn counts(&self) -> (usize, usize) {
        (self.openpgp.len(), self.ssh.len())
    }

    /// Entries that were left out and why (unsupported allowed-signers options), so the
    /// controller can warn about them once.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn add_openpgp(&mut self, name: &str, text: &str) -> Result<(), KeysError> {
        let bad = |message: String| KeysError::OpenPgp {
            name: name.to_string(),
            message,
        };
        let (certs, _headers) =
            SignedPublicKey::from_string_many(text).map_err(|e| bad(e.to_string()))?;
        let before = self.openpgp.len();
        for cert in certs {
            let key = cert.map_err(|e| bad(e.to_string()))?;
            key.verify().map_err(|e| bad(e.to_string()))?;
            let fingerprint = format!("{:X}", key.primary_key.fingerprint());
            if !key.details.revocation_signatures.is_empty() {
                self.skipped
                    .push(format!("{name}: OpenPGP key {fingerprint} is revoked"));
                continue;
            }
            let user_id = key
                .details
                .users
                .first()
                .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                .unwrap_or_default();
            self.openpgp.push(PgpKey {
                key,
                fingerprint,
                user_id,
            });
        }
        if self.openpgp.len() == before && self.skipped.is_empty() {
            return Err(bad("no public key in it".to_string()));
        }
        Ok(())
    }

    fn add_ssh_pub(&mut self, name: &str, text: &str) -> Result<(), KeysError> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = ssh_key::PublicKey::from_openssh(line).map_err(|e| KeysError::Ssh {
                name: name.to_string(),
                line: index + 1,
                message: e.to_string(),
            })?;
            let principals = if key.comment().is_empty() {
                name.to_string()
            } else {
                key.comment().to_string()
            };
            self.ssh.push(SshKey { key, principals });
        }
        Ok(())
    }

    fn add_allowed_signers(&mut self, name: &str, text: &str) -> Result<(), KeysError> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| KeysError::Ssh {
                name: name.to_string(),
                line: index + 1,
                message: message.to_string(),
            };
            let tokens = split_quoted(line);
            let Some(at) = tokens.iter().position(|t| is_key_type(t)) else {
                return Err(bad(
                    "no key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-…) on the line",
                ));
            };
            if at == 0 {
                return Err(bad("no principals before the key"));
            }
            let Some(blob) = tokens.get(at + 1) else {
                return Err(bad("the key type is not followed by the key"));
            };
            let options: Vec<String> = tokens[1..at]
                .iter()
                .flat_map(|t| split_outside_quotes(t, ','))
                .filter(|o| !o.is_empty())
                .collect();
            match signer_options(&options) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(option) => {
                    self.skipped.push(format!(
                        "{name} line {}: option {option:?} is not supported; entry skipped",
                        index + 1
                    ));
                    continue;
                }
            }
            let key = ssh_key::PublicKey::from_openssh(&format!("{} {blob}", tokens[at]))
                .map_err(|e| bad(&e.to_string()))?;
            self.ssh.push(SshKey {
                key,
                principals: tokens[0].clone(),
            });
        }
        Ok(())
    }
}

/// Whether an allowed-signers entry with these options may sign git commits: `Ok(false)` when its
/// `namespaces` exclude `git`, `Err(option)` for an option not supported here.
fn signer_options(options: &[String]) -> Result<bool, String> {
    let mut git_allowed = true;
    for option in options {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        match key.to_ascii_lowercase().as_str() {
            "namespaces" => {
                git_allowed = value
                    .trim_matches('"')
                    .split(',')
                    .any(|n| n.trim() == "git");
            }
            _ => return Err(option.clone()),
        }
    }
    Ok(git_allowed)
}

/// Splits `text` at `sep` where it is not inside `"…"`.
fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Splits on whitespace, keeping `"…"` (with spaces or commas inside) in one token; the quotes are
/// kept so `namespaces="git,file"` is one option.
fn split_quoted(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Whether a token is an OpenSSH public key type.
fn is_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|p| token.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn allowed_signers_lines() {
        let text = format!(
            "# team\nalice@example.com {ED25519}\nbob@example.com,carol@example.com namespaces=\"git,file\" {ED25519} bob\nfile-only namespaces=\"file\" {ED25519}\ncert cert-authority {ED25519}\n"
        );
        let keys = TrustedKeys::from_secret_data(&data(&[("allowed_signers", &text)]));
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(keys.counts(), (0, 2));
        let principals: Vec<&str> = keys.ssh.iter().map(|k| k.principals.as_str()).collect();
        assert_eq!(
            principals,
            ["alice@example.com", "bob@example.com,carol@example.com"]
        );
        assert_eq!(keys.skipped().len(), 1, "{:?}", keys.skipped());
    }

    #[test]
    fn bad_or_missing_keys_are_errors_naming_the_entry() {
        let err = TrustedKeys::from_secret_data(&data(&[("a.pub", "ssh-ed25519 AAAAnope")]));
        assert!(
            matches!(&err, Err(KeysError::Ssh { name, line: 1, .. }) if name == "a.pub"),
            "{err:?}"
        );
        let err = TrustedKeys::from_secret_data(&data(&[("k.asc", "not armored")]));
        assert!(matches!(&err, Err(KeysError::OpenPgp { .. })), "{err:?}");
        let err = TrustedKeys::from_secret_data(&data(&[("token", "x")]));
        assert!(
            matches!(&err, Err(KeysError::Empty { keys }) if keys == "token"),
            "{err:?}"
        );
        let keys = TrustedKeys::from_secret_data(&data(&[("a.pub", &format!("{ED25519} ann"))]));
        assert!(matches!(keys.as_ref().map(|k| k.counts()), Ok((0, 1))));
        let only_pgp = keys.map(|k| k.only(KeyKind::OpenPgp).counts());
        assert!(matches!(only_pgp, Ok((0, 0))));
    }
}
