//! Bundles as immutable ConfigMaps (DESIGN §3.6): the controller writes each validated bundle once,
//! named from the rollout and the digest, and the agents in the pods read it back and check the
//! digest before applying. Pure: objects in, objects out; the controller does the API calls.
//!
//! ConfigMap keys may not contain `/`, so files are stored under `f0`, `f1`, … with a `manifest`
//! entry listing `key path` pairs; bytes that are not UTF-8 go to `binaryData` (base64 by the API).
//! A ConfigMap holds at most about 1 MiB; a bundle larger than [`MAX_PART_BYTES`] is split over
//! numbered parts (`-p1`, `-p2`, …), each carrying its slice of the manifest.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::render::{Bundle, Digest};

/// Bytes of file data per ConfigMap, well under the API server's ~1 MiB object limit.
pub const MAX_PART_BYTES: usize = 900 * 1024;
/// Most parts one bundle may use; past this the bundle is refused as unreasonably large.
pub const MAX_PARTS: usize = 16;
/// Label carrying the digest (its first 63 hex digits: label values hold at most 63
/// characters), so agents and cleanup can find a bundle's parts.
pub const DIGEST_LABEL: &str = "switchback.dev/digest";
/// Label carrying the owning rollout's name.
pub const ROLLOUT_LABEL: &str = "switchback.dev/rollout";

/// Why a bundle could not be stored or read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The bundle needs more than [`MAX_PARTS`] ConfigMaps.
    #[error(
        "bundle of {bytes} bytes needs more than {MAX_PARTS} ConfigMaps of {MAX_PART_BYTES} bytes"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A ConfigMap is missing its manifest or a file it lists.
    #[error("ConfigMap {name}: {what}")]
    Malformed {
        /// The ConfigMap.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// What was read back does not hash to the digest it was stored under.
    #[error("bundle read back hashes to {got}, not {want}: refusing it")]
    DigestMismatch {
        /// The digest asked for.
        want: Digest,
        /// What the files hash to.
        got: Digest,
    },
}

/// The value of the rollout label for `rollout` (label values are at most 63 characters).
pub fn rollout_label(rollout: &str) -> String {
    rollout.chars().take(63).collect()
}

/// The value of the digest label for `digest` (its hex, cut to a label value's 63 characters).
pub fn digest_label(digest: &Digest) -> String {
    let hex = digest.to_hex();
    hex.get(..63).unwrap_or(&hex).to_string()
}

/// The label selector of every ConfigMap of `rollout` (bundles and incident reports).
pub fn rollout_selector(rollout: &str) -> String {
    format!("{ROLLOUT_LABEL}={}", rollout_label(rollout))
}

/// The label selector of the parts of `digest`'s bundle of `rollout`.
pub fn bundle_selector(rollout: &str, digest: &Digest) -> String {
    format!(
        "{},{DIGEST_LABEL}={}",
        rollout_selector(rollout),
        digest_label(digest)
    )
}

/// The name of part `part` (0-based) of a rollout's bundle: `<rollout>-<12 hex>[-p<n>]`, short
/// enough for any rollout name Kubernetes allows (names are cut to stay within 253 characters).
pub fn part_name(rollout: &str, digest: &Digest, part: usize) -> String {
    let base: String = rollout.chars().take(200).collect();
    let hex = digest.to_hex();
    if part == 0 {
        format!("{base}-{}", &hex[..12])
    } else {
        format!("{base}-{}-p{part}", &hex[..12])
    }
}

/// The ConfigMaps holding `bundle`: immutable, labelled with rollout and digest, owned by the
/// rollout so they go when it goes.
pub fn to_configmaps(
    rollout: &str,
    namespace: &str,
    owner: Option<OwnerReference>,
    bundle: &Bundle,
) -> Result<Vec<ConfigMap>, StoreError> {
    let digest = bundle.digest();
    let mut parts: Vec<Vec<(usize, &String, &Vec<u8>)>> = vec![Vec::new()];
    let mut used = 0;
    for (i, (path, bytes)) in bundle.files().iter().enumerate() {
        if used + bytes.len() > MAX_PART_BYTES && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            used = 0;
        }
        used += bytes.len();
        if let Some(last) = parts.last_mut() {
            last.push((i, path, bytes));
        }
    }
    if parts.len() > MAX_PARTS {
        return Err(StoreError::TooLarge {
            bytes: bundle.size(),
        });
    }
    let count = parts.len();
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(n, files)| {
            let mut data = BTreeMap::new();
            let mut binary = BTreeMap::new();
            let mut manifest = format!("digest {digest}\nparts {count}\n");
            for (i, path, bytes) in files {
                let key = format!("f{i}");
                manifest.push_str(&format!("{key} {path}\n"));
                match std::str::from_utf8(bytes) {
                    Ok(text) => {
                        data.insert(key, text.to_string());
                    }
                    Err(_) => {
                        binary.insert(key, ByteString(bytes.clone()));
                    }
                }
            }
            data.insert("manifest".to_string(), manifest);
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some(part_name(rollout, &digest, n)),
                    namespace: Some(namespace.to_string()),
                    labels: Some(BTreeMap::from([
                        (DIGEST_LABEL.to_string(), digest_label(&digest)),
                        (ROLLOUT_LABEL.to_string(), rollout_label(rollout)),
                    ])),
                    owner_references: owner.clone().map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                binary_data: (!binary.is_empty()).then_some(binary),
                immutable: Some(true),
            }
        })
        .collect())
}

/// Reassembles a bundle from its parts (any order) and checks it hashes to `want`.
pub fn from_configmaps(want: &Digest, parts: &[ConfigMap]) -> Result<Bundle, StoreError> {
    let mut files = BTreeMap::new();
    let mut expected_parts = None;
    for cm in parts {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let malformed = |what: &str| StoreError::Malformed {
            name: name.clone(),
            what: what.to_string(),
        };
        let data = cm.data.as_ref().ok_or_else(|| malformed("no data"))?;
        let manifest = data
            .get("manifest")
            .ok_or_else(|| malformed("no manifest"))?;
        for line in manifest.lines() {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| malformed("bad manifest line"))?;
            match key {
                "digest" => {}
                "parts" => expected_parts = value.parse::<usize>().ok(),
                _ => {
                    let bytes = match data.get(key) {
                        Some(text) => text.clone().into_bytes(),
                        None => cm
                            .binary_data
                            .as_ref()
                            .and_then(|b| b.get(key))
                            .map(|b| b.0.clone())
                            .ok_or_else(|| {
                                malformed(&format!("manifest lists {key}, which is missing"))
                            })?,
                    };
                    files.insert(value.to_string(), bytes);
                }
            }
        }
    }
    if expected_parts != Some(parts.len()) {
        return Err(StoreError::Malformed {
            name: part_name("bundle", want, 0),
            what: format!(
                "{} parts read, manifest says {expected_parts:?}",
                parts.len()
            ),
        });
    }
    let bundle = Bundle::new(files);
    let got = bundle.digest();
    if got != *want {
        return Err(StoreError::DigestMismatch { want: *want, got });
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, Vec<u8>)]) -> Bundle {
        Bundle::new(
            files
                .iter()
                .map(|(p, b)| (p.to_string(), b.clone()))
                .collect(),
        )
    }

    #[test]
    fn a_bundle_round_trips_through_configmaps_including_binary_files() {
        let b = bundle(&[
            ("nginx.conf", b"events {}\n".to_vec()),
            ("conf.d/site.conf", b"server { listen 80; }\n".to_vec()),
            ("certs/dh.der", vec![0xff, 0x00, 0x80]),
        ]);
        let cms = to_configmaps("edge", "proxies", None, &b).expect("store");
        assert_eq!(cms.len(), 1);
        assert_eq!(cms[0].immutable, Some(true));
        assert!(
            cms[0]
                .metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("edge-"))
        );
        let back = from_configmaps(&b.digest(), &cms).expect("read back");
        assert_eq!(back, b);
    }

    #[test]
    fn a_large_bundle_is_split_and_reassembled_in_any_order() {
        let big = vec![b'x'; 600 * 1024];
        let b = bundle(&[
            ("a.conf", big.clone()),
            ("b.conf", big.clone()),
            ("c.conf", big),
        ]);
        let mut cms = to_configmaps("edge", "proxies", None, &b).expect("store");
        assert_eq!(cms.len(), 3);
        cms.reverse();
        assert_eq!(from_configmaps(&b.digest(), &cms).expect("read back"), b);
        assert!(matches!(
            from_configmaps(&b.digest(), &cms[..2]),
            Err(StoreError::Malformed { .. })
        ));
    }

    #[test]
    fn a_tampered_configmap_is_refused() {
        let b = bundle(&[("nginx.conf", b"events {}\n".to_vec())]);
        let mut cms = to_configmaps("edge", "proxies", None, &b).expect("store");
        if let Some(data) = cms[0].data.as_mut() {
            data.insert("f0".to_string(), "events { }\n".to_string());
        }
        assert!(matches!(
            from_configmaps(&b.digest(), &cms),
            Err(StoreError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn an_absurd_bundle_is_refused() {
        let files: Vec<(String, Vec<u8>)> = (0..20)
            .map(|i| (format!("f{i}.conf"), vec![b'x'; 800 * 1024]))
            .collect();
        let b = Bundle::new(files.into_iter().collect());
        assert!(matches!(
            to_configmaps("edge", "proxies", None, &b),
            Err(StoreError::TooLarge { .. })
        ));
    }
}
