//! Decoding of the few protobuf bodies kubectl's and helm's typed clients send
//! (`kubectl create namespace|configmap|secret`, helm's release Secrets), into the JSON the rest
//! of the server works on. Replying in JSON is accepted by those clients.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::error::ApiError;

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn next(&mut self) -> Option<Result<(u64, Field<'a>), ApiError>> {
        if self.buf.is_empty() {
            return None;
        }
        let bad = || ApiError::BadRequest("malformed protobuf body".into());
        let Some(tag) = self.varint() else {
            return Some(Err(bad()));
        };
        let field = match tag & 7 {
            0 => self.varint().map(Field::Varint),
            2 => self.varint().and_then(|len| {
                let len = usize::try_from(len).ok()?;
                (len <= self.buf.len()).then(|| {
                    let (b, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    Field::Bytes(b)
                })
            }),
            5 => (self.buf.len() >= 4).then(|| {
                self.buf = &self.buf[4..];
                Field::Varint(0)
            }),
            1 => (self.buf.len() >= 8).then(|| {
                self.buf = &self.buf[8..];
                Field::Varint(0)
            }),
            _ => None,
        };
        Some(field.map(|f| (tag >> 3, f)).ok_or_else(bad))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ApiError> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next() {
        out.push(f?);
    }
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn map_entry(b: &[u8], base64_value: bool) -> Result<(String, Value), ApiError> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => k = text(x),
                2 if base64_value => v = json!(base64::engine::general_purpose::STANDARD.encode(x)),
                2 => v = json!(text(x)),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, ApiError> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        let Field::Bytes(x) = f else { continue };
        let slot = match n {
            1 => "name",
            2 => "generateName",
            3 => "namespace",
            6 => "resourceVersion",
            11 => "labels",
            12 => "annotations",
            14 => "finalizers",
            _ => continue,
        };
        match n {
            11 | 12 => {
                let (k, v) = map_entry(x, false)?;
                let entry = m.entry(slot).or_insert_with(|| json!({}));
                entry[k] = v;
            }
            14 => {
                let entry = m.entry(slot).or_insert_with(|| json!([]));
                if let Value::Array(a) = entry {
                    a.push(json!(text(x)));
                }
            }
            _ if !x.is_empty() => {
                m.insert(slot.into(), json!(text(x)));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// Decodes a `k8s\0`-framed protobuf body of kind Namespace, ConfigMap, Secret or
/// DeleteOptions (the last decodes to an empty object); other kinds get 415.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let unsupported = |what: &str| {
        ApiError::UnsupportedMediaType(format!(
            "application/json ({what} in protobuf is not supported)"
        ))
    };
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| unsupported("a body without the k8s magic"))?;
    let (mut kind, mut api_version, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(inner)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (m, g) in fields(tm)? {
                    match (m, g) {
                        (1, Field::Bytes(x)) => api_version = text(x),
                        (2, Field::Bytes(x)) => kind = text(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    match kind.as_str() {
        "Namespace" | "ConfigMap" | "Secret" => {}
        "DeleteOptions" => return Ok(json!({})),
        other => return Err(unsupported(other)),
    }
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("ConfigMap", 2, Field::Bytes(x)) | ("Secret", 4, Field::Bytes(x)) => {
                let key = if kind == "Secret" {
                    "stringData"
                } else {
                    "data"
                };
                let (k, v) = map_entry(x, false)?;
                obj[key][k] = v;
            }
            ("ConfigMap", 3, Field::Bytes(x)) | ("Secret", 2, Field::Bytes(x)) => {
                let key = if kind == "Secret" {
                    "data"
                } else {
                    "binaryData"
                };
                let (k, v) = map_entry(x, true)?;
                obj[key][k] = v;
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = json!(text(x)),
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj["immutable"] = json!(v != 0);
            }
            _ => {}
        }
    }
    if obj["metadata"].is_null() {
        obj["metadata"] = json!({});
    }
    Ok(obj)
}
