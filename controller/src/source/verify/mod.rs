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

mod keys;

use std::path::Path;

use pgp::composed::{Deserializable as _, DetachedSignature};
use pgp::types::KeyDetails as _;

pub use keys::{KeysError, TrustedKeys};
use keys::{PgpKey, SshKey};

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
