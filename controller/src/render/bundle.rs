//! The unit of configuration that moves through the pipeline. Pods are told a [`Digest`], never a
//! commit, so two commits that render to the same bytes are one config and cause no rollout
//! (DESIGN §3.2).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Domain separator so a bundle digest can never collide with the SHA-256 of some other framing.
const DIGEST_DOMAIN: &[u8] = b"switchback-bundle-v1\0";

/// SHA-256 over a bundle's paths and contents; the identity of a rendered config.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex characters, for people and for names with length limits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// The full lowercase hex form without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error)]
#[error("not a bundle digest {0:?}: expected `sha256:` followed by 64 hex characters")]
pub struct ParseDigestError(String);

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| ParseDigestError(s.to_string()))?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A rendered config: relative path -> bytes, in path order, with its digest.
///
/// Immutable once built so the digest always describes the files.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
    digest: Digest,
}

impl Bundle {
    /// Builds a bundle and computes its digest.
    pub fn new(files: BTreeMap<String, Vec<u8>>) -> Self {
        let digest = digest_of(&files);
        Bundle { files, digest }
    }

    /// The identity of this config.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The files in path order.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// One file's bytes.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Total size of all file contents in bytes.
    pub fn size(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("digest", &self.digest)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Length-prefixed framing of every (path, content) pair, so no two different bundles share an
/// input to the hash (e.g. moving bytes from the end of one file to the start of the next).
fn digest_of(files: &BTreeMap<String, Vec<u8>>) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_DOMAIN);
    hasher.update((files.len() as u64).to_be_bytes());
    for (path, bytes) in files {
        hasher.update((path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    Digest(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(pairs: &[(&str, &str)]) -> Bundle {
        Bundle::new(
            pairs
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn same_files_same_digest() {
        let a = bundle(&[("nginx.conf", "events {}"), ("b.conf", "x;")]);
        let b = bundle(&[("b.conf", "x;"), ("nginx.conf", "events {}")]);
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn moving_bytes_between_files_changes_digest() {
        let a = bundle(&[("a", "xy"), ("b", "z")]);
        let b = bundle(&[("a", "x"), ("b", "yz")]);
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn renaming_a_file_changes_digest() {
        let a = bundle(&[("a.conf", "x")]);
        let b = bundle(&[("b.conf", "x")]);
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = bundle(&[("a", "b")]).digest();
        let parsed: Digest = d.to_string().parse().unwrap();
        assert_eq!(parsed, d);
        assert!("sha256:zz".parse::<Digest>().is_err());
    }
}
