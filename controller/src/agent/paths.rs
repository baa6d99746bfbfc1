//! Making the bundle's file paths true inside the pod. The bundle stands for the proxy's config
//! root (`/etc/nginx`), but the agent serves it from its own version directory, which nginx reads
//! as its configuration prefix (`-c versions/<digest>/<entry>`). So, in the agent's copy only:
//!
//! - an absolute path below the config root that names bundle files (`include
//!   /etc/nginx/conf.d/*.conf`, `ssl_certificate /etc/nginx/tls/site.pem` carried in git) becomes
//!   the same path relative to the prefix, which is the version directory;
//! - a relative path that names no bundle file (`include fastcgi_params;`, a certificate mounted
//!   from a Secret) becomes the absolute path below the config root, where the image or the mount
//!   provides it: nginx would otherwise look for it in the version directory.
//!
//! Everything else is left as written. The rule for globs is validation's: a glob belongs to the
//! bundle when the bundle has the directory it lists, to the pod only when it lists one of the
//! image's directories (`modules-enabled/`); any other glob stays the bundle's, matching nothing,
//! as validation saw it. Pure: files in, edits out.

use std::collections::BTreeMap;

use crate::validate::ast::{Config, Directive};
use crate::validate::parser::{ParseOptions, parse_bundle_with};
use crate::validate::paths::{ConfigRoot, bundle_has_dir, bundle_path, glob_base, is_image_glob};
use crate::validate::sandbox::edit::{Edit, token};
use crate::validate::sandbox::{is_opaque, placeholder_kind};

/// Directives besides `include` and the TLS ones whose first argument names a file nginx reads.
const FILE_DIRECTIVES: &[&str] = &["auth_basic_user_file", "ssl_stapling_file"];

/// The bundle parsed as the pod sees it: absolute includes below `root` followed into the bundle,
/// the files it does not carry left to the pod (validation judged them with the image's files).
pub(super) fn parse_in_pod(
    files: &BTreeMap<String, Vec<u8>>,
    entry: &str,
    root: &ConfigRoot,
) -> (Config, Vec<crate::validate::Diagnostic>) {
    let options = ParseOptions {
        config_root: Some(root),
        pod_files: true,
        ..ParseOptions::default()
    };
    parse_bundle_with(files, entry, &options)
}

/// The edits, per bundle file, that point the bundle's file paths where they are in the pod.
pub(super) fn pod_paths(
    config: &Config,
    files: &BTreeMap<String, Vec<u8>>,
    entry: &str,
    root: &ConfigRoot,
) -> Vec<(String, Edit)> {
    let mut dir: Vec<&str> = entry.split('/').collect();
    dir.pop();
    let walker = Walker { files, root, dir };
    let mut out = Vec::new();
    for file in &config.files {
        walker.walk(&file.path, &file.directives, None, &mut out);
    }
    out
}

struct Walker<'a> {
    files: &'a BTreeMap<String, Vec<u8>>,
    root: &'a ConfigRoot,
    /// The entry's directory: the prefix nginx resolves relative paths against.
    dir: Vec<&'a str>,
}

impl Walker<'_> {
    fn walk(
        &self,
        file: &str,
        dirs: &[Directive],
        parent: Option<&str>,
        out: &mut Vec<(String, Edit)>,
    ) {
        for d in dirs {
            let data = parent.is_some_and(is_opaque);
            let names_file = d.name == "include"
                || (!data
                    && (placeholder_kind(&d.name).is_some()
                        || FILE_DIRECTIVES.contains(&d.name.as_str())));
            if names_file
                && d.block.is_none()
                && let Some(arg) = d.args.first()
                && let Some(new) = self.in_pod(&arg.value)
            {
                let edit = Edit {
                    start: arg.span.start,
                    end: arg.span.end,
                    text: token(&new),
                };
                out.push((file.to_string(), edit));
            }
            if let Some(block) = &d.block {
                let inner = if data { parent } else { Some(d.name.as_str()) };
                self.walk(file, block, inner, out);
            }
        }
    }

    /// Where `value` must point in the pod, when that is not what it says.
    fn in_pod(&self, value: &str) -> Option<String> {
        if value.contains('$') || value.starts_with("data:") || value.starts_with("engine:") {
            return None;
        }
        let glob = value.contains(['*', '?', '[']);
        if value.starts_with('/') {
            let rel = self.root.relative(value)?;
            // The pod's own: a file the bundle lacks, or a glob over an image directory.
            let pods = !self.in_bundle(&rel) && (!glob || is_image_glob(&rel));
            return (!pods).then_some(rel);
        }
        if value.split('/').any(|c| c == "..") || self.in_bundle(value) {
            return None;
        }
        let rel = self.root.relative(&self.root.join(value))?;
        (!glob || is_image_glob(&rel)).then(|| self.root.join(&rel))
    }

    /// Whether `rel` (relative to the prefix, no `..`) names bundle files.
    fn in_bundle(&self, rel: &str) -> bool {
        if rel.contains(['*', '?', '[']) {
            bundle_path(&self.dir, &glob_base(rel)).is_some_and(|d| bundle_has_dir(self.files, &d))
        } else {
            bundle_path(&self.dir, rel).is_some_and(|p| self.files.contains_key(&p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(list: &[(&str, &str)], entry: &str) -> BTreeMap<String, String> {
        let files: BTreeMap<String, Vec<u8>> = list
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        let root = ConfigRoot::default();
        let (config, diags) = parse_in_pod(&files, entry, &root);
        assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
        let mut edits: BTreeMap<String, Vec<Edit>> = BTreeMap::new();
        for (file, edit) in pod_paths(&config, &files, entry, &root) {
            edits.entry(file).or_default().push(edit);
        }
        files
            .iter()
            .map(|(p, src)| {
                let out = edits.get(p).map_or_else(
                    || src.clone(),
                    |e| crate::validate::sandbox::edit::apply(src, e),
                );
                (p.clone(), String::from_utf8_lossy(&out).into_owned())
            })
            .collect()
    }

    #[test]
    fn bundle_paths_become_relative_and_pod_files_absolute() {
        let out = rewritten(
            &[
                (
                    "nginx.conf",
                    "include /etc/nginx/modules-enabled/*.conf;\nhttp {\n  include /etc/nginx/mime.types;\n  include /etc/nginx/conf.d/*.conf;\n  include fastcgi_params;\n  types { include more.types; }\n}\n",
                ),
                (
                    "conf.d/a.conf",
                    "server {\n  ssl_certificate /etc/nginx/tls/a.pem;\n  ssl_certificate_key tls/secret.key;\n  auth_basic_user_file htpasswd;\n  ssl_trusted_certificate /etc/ssl/ca.pem;\n}\n",
                ),
                ("tls/a.pem", "pem"),
                ("htpasswd", "u:p"),
                ("more.types", "types {}"),
            ],
            "nginx.conf",
        );
        assert_eq!(
            out["nginx.conf"],
            "include /etc/nginx/modules-enabled/*.conf;\nhttp {\n  include /etc/nginx/mime.types;\n  include conf.d/*.conf;\n  include /etc/nginx/fastcgi_params;\n  types { include more.types; }\n}\n"
        );
        assert_eq!(
            out["conf.d/a.conf"],
            "server {\n  ssl_certificate tls/a.pem;\n  ssl_certificate_key /etc/nginx/tls/secret.key;\n  auth_basic_user_file htpasswd;\n  ssl_trusted_certificate /etc/ssl/ca.pem;\n}\n"
        );
    }

    #[test]
    fn an_entry_in_a_subdirectory_is_the_prefix() {
        let out = rewritten(
            &[
                (
                    "edge/nginx.conf",
                    "include /etc/nginx/x.conf;\ninclude y.conf;\ninclude /etc/nginx/sites-enabled/*;\n",
                ),
                ("edge/x.conf", "worker_processes 1;\n"),
            ],
            "edge/nginx.conf",
        );
        // A glob over a directory neither the bundle has nor the image's list names stays the
        // bundle's: the pod image's directory of that name is never included unseen.
        assert_eq!(
            out["edge/nginx.conf"],
            "include x.conf;\ninclude /etc/nginx/y.conf;\ninclude sites-enabled/*;\n"
        );
    }
}
