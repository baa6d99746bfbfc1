//! Reading Kubernetes manifests as the chart tests need them: a multi-document YAML stream (what
//! `helm template` prints, or a file of the examples) into JSON values, and the RBAC rules of a set
//! of objects flattened into (group, resource, verb) triples that compare exactly with a list.

use std::collections::BTreeSet;

use serde_json::Value;

/// Why a manifest stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// One document is not YAML the parser accepts.
    #[error("document {index} of the manifest stream is not valid YAML: {message}")]
    Yaml {
        /// Zero-based position in the stream.
        index: usize,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// Every non-empty document of a YAML stream (separated by `---` lines), as JSON values; documents
/// holding only comments are skipped, as kubectl and helm skip them.
pub fn parse_stream(text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut index = 0;
    let mut flush = |doc: &mut String, index: &mut usize| -> Result<(), ManifestError> {
        let has_content = doc
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            let value: Value = serde_saphyr::from_str(doc).map_err(|e| ManifestError::Yaml {
                index: *index,
                message: e.to_string(),
            })?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        *index += 1;
        doc.clear();
        Ok(())
    };
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut current, &mut index)?;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current, &mut index)?;
    Ok(docs)
}

/// One permission: API group (`""` for core), resource (with subresource, `pods/status`), verb.
pub type Permission = (String, String, String);

/// Every (group, resource, verb) the `rules` of the Roles and ClusterRoles among `objects` grant;
/// `kinds` picks which of the two kinds count.
pub fn rbac_permissions(objects: &[Value], kinds: &[&str]) -> BTreeSet<Permission> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut out = BTreeSet::new();
    let roles = objects
        .iter()
        .filter(|o| kinds.contains(&o["kind"].as_str().unwrap_or_default()));
    for role in roles {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_splits_into_documents_and_skips_comment_only_ones() {
        let text = "---\n# Source: x\n---\n# Source: a.yaml\nkind: A\nmetadata:\n  name: a\n---\nkind: B\n";
        let docs = parse_stream(text).expect("valid YAML");
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["A", "B"]);
    }

    #[test]
    fn bad_yaml_names_its_document() {
        let err = parse_stream("kind: A\n---\nkind: [B\n").expect_err("unclosed flow sequence");
        assert!(matches!(err, ManifestError::Yaml { index: 1, .. }), "{err}");
    }

    #[test]
    fn rules_flatten_into_triples() {
        let docs = parse_stream(
            "kind: Role\nrules:\n- apiGroups: [\"\", apps]\n  resources: [pods]\n  verbs: [get, list]\n---\nkind: ClusterRole\nrules:\n- apiGroups: [example.test]\n  resources: [widgets]\n  verbs: [delete]\n",
        )
        .expect("valid YAML");
        let only_roles = rbac_permissions(&docs, &["Role"]);
        let t = |g: &str, r: &str, v: &str| (g.to_string(), r.to_string(), v.to_string());
        assert_eq!(
            only_roles,
            BTreeSet::from([
                t("", "pods", "get"),
                t("", "pods", "list"),
                t("apps", "pods", "get"),
                t("apps", "pods", "list"),
            ])
        );
        assert_eq!(rbac_permissions(&docs, &["Role", "ClusterRole"]).len(), 5);
    }
}
