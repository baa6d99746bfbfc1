//! How the file paths a config names map onto the bundle, the proxy's image and everything else.
//!
//! A config repository is laid out like the proxy's configuration directory, its *config root*
//! (`/etc/nginx` unless a rollout names another): the entry file's directory stands for the config
//! root, so `include /etc/nginx/conf.d/*.conf;` and `include conf.d/*.conf;` name the same bundle
//! files. A path under the config root that the bundle does not carry may be one the image
//! provides (`mime.types`, `fastcgi_params`…, see [`ImageFiles`]); any other absolute path is
//! outside both. Pure: the image's files are read by the caller (see `sandbox::image_files`).

use std::collections::BTreeMap;

/// The config root a bundle stands for when the rollout names none: where the official nginx
/// image and the distributions keep nginx's configuration.
pub const DEFAULT_CONFIG_ROOT: &str = "/etc/nginx";

/// Files validation takes from the nginx it runs `nginx -t` with, when the user names no
/// directory of image files: the ones nginx packages ship beside `nginx.conf`. Only these are read
/// from that directory, so the validating machine's own site configs never leak into a verdict.
pub const IMAGE_FILE_NAMES: &[&str] = &[
    "mime.types",
    "fastcgi_params",
    "fastcgi.conf",
    "scgi_params",
    "uwsgi_params",
    "proxy_params",
    "koi-utf",
    "koi-win",
    "win-utf",
];

/// Directories of the config root whose `*.conf` files come with the image (Debian's
/// `modules-enabled/`, which load the packaged dynamic modules). A glob that the bundle cannot
/// satisfy is the image's only over one of these, in validation and in the pod alike: another
/// directory of the pod's image (the official image's `conf.d/default.conf`) is never included
/// unseen, since validation could not know it.
pub const IMAGE_DIRS: &[&str] = &["modules-enabled"];

/// Why a config root is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigRootError {
    /// Not an absolute path of plain components.
    #[error(
        "config root {0:?} must be an absolute path without `.`, `..`, spaces, quotes or `$` \
         (for example /etc/nginx)"
    )]
    Invalid(String),
}

/// The proxy's configuration directory, which a bundle stands for: absolute, normalized, no
/// trailing `/` (`/` itself is refused: every absolute path would then be "in the bundle").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRoot(String);

impl ConfigRoot {
    /// Checks `path` (a trailing `/` is dropped).
    pub fn new(path: &str) -> Result<ConfigRoot, ConfigRootError> {
        let trimmed = path.trim_end_matches('/');
        let plain = trimmed.starts_with('/')
            && trimmed[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && !trimmed
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"'$;{}\\".contains(c));
        if !plain {
            return Err(ConfigRootError::Invalid(path.to_string()));
        }
        Ok(ConfigRoot(trimmed.to_string()))
    }

    /// The path, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute path of `rel`, a path relative to the root.
    pub fn join(&self, rel: &str) -> String {
        format!("{}/{rel}", self.0)
    }

    /// The path relative to the root that the absolute `path` names, normalized (`.`, `..` and
    /// doubled `/` resolved lexically, as nginx's glob and open see them); `None` when it is not
    /// below the root (including a `..` that climbs out of it).
    pub fn relative<'p>(&self, path: &'p str) -> Option<String> {
        let mut parts: Vec<&'p str> = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        let root: Vec<&str> = self.0.split('/').filter(|c| !c.is_empty()).collect();
        if parts.len() <= root.len() || parts[..root.len()] != root[..] {
            return None;
        }
        Some(parts[root.len()..].join("/"))
    }
}

impl Default for ConfigRoot {
    fn default() -> Self {
        ConfigRoot(DEFAULT_CONFIG_ROOT.to_string())
    }
}

impl std::fmt::Display for ConfigRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Files the proxy's image provides under the config root, read before validation so the pure
/// gates can use them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFiles {
    /// Where they were read, for the report (e.g. `/etc/nginx (the conf dir of nginx/1.22.1)`).
    pub source: String,
    /// Path relative to the config root -> contents. Shared: every worker's validation layout
    /// holds the same packaged files (tens of KiB), which were cloned per rollout.
    pub files: std::sync::Arc<BTreeMap<String, Vec<u8>>>,
}

/// What validation needs to know about the proxy besides the bundle: where the bundle is served
/// from and what the image adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyLayout {
    /// The directory the bundle stands for.
    pub config_root: ConfigRoot,
    /// The image's own files.
    pub image: ImageFiles,
}

/// The bundle path a relative config path names from the directory `dir` (the entry's, as path
/// components), normalized as nginx's open and glob see it; `None` when `..` climbs above the
/// bundle.
pub fn bundle_path(dir: &[&str], rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.to_vec();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The directory part of a glob before its first component with a magic character, as a bundle
/// path ("" for the bundle root): the directory nginx lists to expand it.
pub fn glob_base(pattern: &str) -> String {
    let mut base: Vec<&str> = Vec::new();
    for c in pattern.split('/').filter(|c| !c.is_empty()) {
        if c.contains(['*', '?', '[']) {
            break;
        }
        base.push(c);
    }
    base.join("/")
}

/// Whether a glob relative to the config root lists one of the image's directories
/// ([`IMAGE_DIRS`]).
pub fn is_image_glob(rel: &str) -> bool {
    IMAGE_DIRS.contains(&glob_base(rel).as_str())
}

/// Whether the bundle has the directory `dir` (a bundle path, "" being its root): some file lies
/// below it. A glob over a directory the bundle has is the bundle's; over one it lacks, the
/// image's (in the pod the image's directory is the one that exists).
pub fn bundle_has_dir(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> bool {
    if dir.is_empty() {
        return true;
    }
    let prefix = format!("{dir}/");
    files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_root_is_checked_and_normalized() {
        assert_eq!(
            ConfigRoot::new("/etc/nginx/").map(|r| r.0),
            Ok("/etc/nginx".into())
        );
        for bad in [
            "",
            "/",
            "etc/nginx",
            "/etc/../x",
            "/etc/ng inx",
            "/etc/$x",
            "/a//b",
        ] {
            assert!(ConfigRoot::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn relative_strips_the_root_and_refuses_what_climbs_out() {
        let root = ConfigRoot::default();
        assert_eq!(
            root.relative("/etc/nginx/mime.types").as_deref(),
            Some("mime.types")
        );
        assert_eq!(
            root.relative("/etc/nginx//conf.d/./a.conf").as_deref(),
            Some("conf.d/a.conf")
        );
        assert_eq!(root.relative("/etc/nginx/../passwd"), None);
        assert_eq!(root.relative("/etc/nginx"), None);
        assert_eq!(root.relative("/etc/nginxx/a"), None);
        assert_eq!(root.relative("/var/log/nginx/a.log"), None);
    }

    #[test]
    fn a_glob_belongs_to_the_bundle_when_the_bundle_has_its_directory() {
        let files: BTreeMap<String, Vec<u8>> = [
            ("conf.d/a.conf".to_string(), vec![]),
            ("conf.dx".to_string(), vec![]),
        ]
        .into();
        assert_eq!(glob_base("conf.d/*.conf"), "conf.d");
        assert_eq!(glob_base("*.conf"), "");
        assert!(bundle_has_dir(&files, &glob_base("conf.d/*.conf")));
        assert!(!bundle_has_dir(&files, "modules-enabled"));
        assert!(!bundle_has_dir(&files, "conf"));
        assert!(bundle_has_dir(&files, ""));
    }
}
