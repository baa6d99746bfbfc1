//! Commit signature verification: only a commit signed by a trusted key may be rolled out, so a
//! stolen git credential (or a compromised git host) is not enough to change every proxy.
//!
//! Trusted keys come from a Secret ([`TrustedKeys::from_secret_data`]): armored OpenPGP public keys
//! (`*.asc`) and SSH signing keys (an `allowed_signers` file as `git` and `ssh-keygen -Y` use it, or
//! `*.pub` files). [`verify_commit`] extracts the commit's signature and signed payload with git2
//! and checks it with `pgp` (rPGP) or `ssh-key` (SSHSIG, namespace `git`), all pure Rust. Every
//! refusal is a [`VerifyError`] naming the commit and what was wrong, fit for a status condition
//! and an Event. Not checked (yet): OpenPGP key expiry and signature creation time against it, SSH
//! certificates and `valid-after`/`valid-before` (entries using them are skipped, so they fail
//! closed), X.509 (`gpgsm`) signatures (refused as unsupported).
//!
//! libgit2 blocks: call this from `spawn_blocking` (see `GitSource::verify`).

use std::collections::BTreeMap;
use std::path::Path;

use pgp::composed::{Deserializable as _, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails as _;

/// Which kind of signature a commit carries, or a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// OpenPGP (`gpg.format openpgp`, git's default).
    OpenPgp,
    /// SSH signatures (`gpg.format ssh`).
    Ssh,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::OpenPgp => "OpenPGP",
            KeyKind::Ssh => "SSH",
        })
    }
}

/// Who signed a verified commit, for status, Events and the deploy history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The commit id that was verified.
    pub commit: String,
    /// The kind of signature.
    pub kind: KeyKind,
    /// The signing key's fingerprint: upper-case hex for OpenPGP (the primary key's, even when a
    /// subkey signed), `SHA256:…` for SSH.
    pub fingerprint: String,
    /// The key's identity: the OpenPGP primary user id, or the SSH principals (comma-separated).
    pub identity: String,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "commit {} signed by {} ({} key {})",
            self.commit, self.identity, self.kind, self.fingerprint
        )
    }
}

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

/// Why a commit is refused. Every variant names the commit; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The repository could not be opened.
    #[error("verifying commit {commit}: cannot open the repository: {message}")]
    Repository {
        /// The commit id as given.
        commit: String,
        /// What went wrong (scrubbed of URLs and secrets by the caller).
        message: String,
    },
    /// No such commit in the repository.
    #[error("commit {commit} is not in the repository; fetch it first")]
    CommitNotFound {
        /// The commit id as given.
        commit: String,
    },
    /// The commit has no signature.
    #[error(
        "commit {commit} is not signed; only signed commits are rolled out (sign with `git commit -S`)"
    )]
    Unsigned {
        /// The commit id.
        commit: String,
    },
    /// The signature is of a kind not supported (X.509) or not recognised.
    #[error("commit {commit} has a signature of an unsupported kind ({what}); use OpenPGP or SSH")]
    Unsupported {
        /// The commit id.
        commit: String,
        /// What it looks like.
        what: String,
    },
    /// The signature could not be parsed.
    #[error("commit {commit} has a malformed {kind} signature: {message}")]
    Malformed {
        /// The commit id.
        commit: String,
        /// The signature's kind.
        kind: KeyKind,
        /// What the parser said.
        message: String,
    },
    /// The signing key is not among the trusted keys.
    #[error(
        "commit {commit} is signed by {kind} key {key}, which is not trusted; add its public key to the verify Secret if it should be"
    )]
    Untrusted {
        /// The commit id.
        commit: String,
        /// The signature's kind.
        kind: KeyKind,
        /// The key's fingerprint or key id, as the signature names it.
        key: String,
    },
    /// The signature names a trusted key but does not verify: the commit was altered after it
    /// was signed, or the signature was copied from another commit.
    #[error(
        "commit {commit} has a bad {kind} signature from trusted key {key}: the signed content does not match (altered or copied signature)"
    )]
    BadSignature {
        /// The commit id.
        commit: String,
        /// The signature's kind.
        kind: KeyKind,
        /// The trusted key's fingerprint.
        key: String,
    },
    /// libgit2 failed reading the commit.
    #[error("reading commit {commit}: {message}")]
    Git {
        /// The commit id.
        commit: String,
        /// libgit2's message.
        message: String,
    },
}

/// One trusted OpenPGP certificate.
#[derive(Debug)]
struct PgpKey {
    key: SignedPublicKey,
    fingerprint: String,
    user_id: String,
}

/// One trusted SSH signing key with its `allowed_signers` principals.
#[derive(Debug)]
struct SshKey {
    key: ssh_key::PublicKey,
    principals: String,
}

/// The keys a rollout trusts to sign the commits it rolls out. Build once per Secret version
/// and share (`Arc`); verification only reads it.
#[derive(Debug, Default)]
pub struct TrustedKeys {
    openpgp: Vec<PgpKey>,
    ssh: Vec<SshKey>,
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

/// Opens the repository at `path` and verifies `commit`; see [`verify_commit`].
pub fn verify_commit_at(
    path: &Path,
    commit: &str,
    keys: &TrustedKeys,
) -> Result<Signer, VerifyError> {
    let repo = git2::Repository::open(path).map_err(|e| VerifyError::Repository {
        commit: commit.to_string(),
        message: e.message().to_string(),
    })?;
    verify_commit(&repo, commit, keys)
}

/// Verifies the signature of `commit` (a full or abbreviated id) in `repo` against `keys`:
/// `Ok` with who signed it, or the reason it must not be rolled out. Blocking (libgit2).
pub fn verify_commit(
    repo: &git2::Repository,
    commit: &str,
    keys: &TrustedKeys,
) -> Result<Signer, VerifyError> {
    let given = commit.trim();
    let object = repo
        .revparse_single(given)
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| VerifyError::CommitNotFound {
            commit: given.to_string(),
        })?;
    let id = object.id();
    let commit = id.to_string();
    let (signature, payload) = match repo.extract_signature(&id, None) {
        Ok(parts) => parts,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(VerifyError::Unsigned { commit });
        }
        Err(e) => {
            return Err(VerifyError::Git {
                commit,
                message: e.message().to_string(),
            });
        }
    };
    let signature = String::from_utf8_lossy(&signature).into_owned();
    let payload: &[u8] = &payload;
    let trimmed = signature.trim_start();
    if trimmed.starts_with("-----BEGIN PGP SIGNATURE-----") {
        verify_openpgp(&commit, &signature, payload, keys)
    } else if trimmed.starts_with("-----BEGIN SSH SIGNATURE-----") {
        verify_ssh(&commit, &signature, payload, keys)
    } else {
        let what = if trimmed.starts_with("-----BEGIN SIGNED MESSAGE-----") {
            "X.509 (gpgsm)".to_string()
        } else {
            trimmed
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect()
        };
        Err(VerifyError::Unsupported { commit, what })
    }
}

fn verify_openpgp(
    commit: &str,
    armored: &str,
    payload: &[u8],
    keys: &TrustedKeys,
) -> Result<Signer, VerifyError> {
    let (signature, _headers) =
        DetachedSignature::from_string(armored).map_err(|e| VerifyError::Malformed {
            commit: commit.to_string(),
            kind: KeyKind::OpenPgp,
            message: e.to_string(),
        })?;
    let fingerprints: Vec<String> = signature
        .signature
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .collect();
    let key_ids: Vec<String> = signature
        .signature
        .issuer()
        .iter()
        .map(|k| hex::encode_upper(k.as_ref()))
        .collect();
    let named = |fingerprint: String, key_id: String| {
        let no_issuer = fingerprints.is_empty() && key_ids.is_empty();
        no_issuer || fingerprints.contains(&fingerprint) || key_ids.contains(&key_id)
    };
    let mut claimed_by: Option<&PgpKey> = None;
    for cert in &keys.openpgp {
        let primary = &cert.key.primary_key;
        if named(
            format!("{:X}", primary.fingerprint()),
            hex::encode_upper(primary.key_id().as_ref()),
        ) {
            claimed_by = claimed_by.or(Some(cert));
            if signature.verify(primary, payload).is_ok() {
                return Ok(pgp_signer(commit, cert));
            }
        }
        for sub in &cert.key.public_subkeys {
            let names_it = named(
                format!("{:X}", sub.key.fingerprint()),
                hex::encode_upper(sub.key.key_id().as_ref()),
            );
            if names_it && sub.verify(primary).is_ok() {
                claimed_by = claimed_by.or(Some(cert));
                if signature.verify(&sub.key, payload).is_ok() {
                    return Ok(pgp_signer(commit, cert));
                }
            }
        }
    }
    match claimed_by {
        Some(cert) if !(fingerprints.is_empty() && key_ids.is_empty()) => {
            Err(VerifyError::BadSignature {
                commit: commit.to_string(),
                kind: KeyKind::OpenPgp,
                key: cert.fingerprint.clone(),
            })
        }
        _ => Err(VerifyError::Untrusted {
            commit: commit.to_string(),
            kind: KeyKind::OpenPgp,
            key: fingerprints
                .first()
                .or(key_ids.first())
                .cloned()
                .unwrap_or_else(|| "(the signature names no key)".to_string()),
        }),
    }
}

fn pgp_signer(commit: &str, cert: &PgpKey) -> Signer {
    Signer {
        commit: commit.to_string(),
        kind: KeyKind::OpenPgp,
        fingerprint: cert.fingerprint.clone(),
        identity: cert.user_id.clone(),
    }
}

fn verify_ssh(
    commit: &str,
    armored: &str,
    payload: &[u8],
    keys: &TrustedKeys,
) -> Result<Signer, VerifyError> {
    let signature = ssh_key::SshSig::from_pem(armored).map_err(|e| VerifyError::Malformed {
        commit: commit.to_string(),
        kind: KeyKind::Ssh,
        message: e.to_string(),
    })?;
    let signing_key = ssh_key::PublicKey::from(signature.public_key().clone());
    let fingerprint = signing_key
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let trusted: Vec<&SshKey> = keys
        .ssh
        .iter()
        .filter(|k| k.key.key_data() == signature.public_key())
        .collect();
    if trusted.is_empty() {
        return Err(VerifyError::Untrusted {
            commit: commit.to_string(),
            kind: KeyKind::Ssh,
            key: fingerprint,
        });
    }
    for key in &trusted {
        if key.key.verify("git", payload, &signature).is_ok() {
            return Ok(Signer {
                commit: commit.to_string(),
                kind: KeyKind::Ssh,
                fingerprint,
                identity: key.principals.clone(),
            });
        }
    }
    Err(VerifyError::BadSignature {
        commit: commit.to_string(),
        kind: KeyKind::Ssh,
        key: fingerprint,
    })
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
