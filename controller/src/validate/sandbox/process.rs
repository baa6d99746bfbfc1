//! What the nginx binary's build needs pinned in a sandbox (its runs go through
//! [`crate::confine`]).

use std::path::{Path, PathBuf};

/// What `nginx -V` says about the build that matters to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// `--modules-path`, the only directory `load_module` may load from.
    pub modules: PathBuf,
    /// The `*_temp_path` directives the build has (their defaults are created at `-t`).
    pub temp_paths: Vec<String>,
    /// The directory of `--conf-path`: where the packaged files beside `nginx.conf` live
    /// (`mime.types`, `fastcgi_params`…), which validation takes as the image's.
    pub conf_dir: PathBuf,
}

impl BuildInfo {
    /// Reads the `configure arguments:` line of `nginx -V`.
    pub fn parse(v_output: &str) -> BuildInfo {
        let args: Vec<&str> = v_output
            .lines()
            .find_map(|l| l.strip_prefix("configure arguments:"))
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let value = |key: &str| args.iter().find_map(|a| a.strip_prefix(key));
        let prefix = value("--prefix=").unwrap_or("/usr/local/nginx");
        let modules = value("--modules-path=")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(prefix).join("modules"));
        let conf_dir = value("--conf-path=")
            .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
            .unwrap_or_else(|| Path::new(prefix).join("conf"));
        let without = |m: &str| args.contains(&format!("--without-{m}").as_str());
        let mut temp_paths = Vec::new();
        if !without("http") {
            temp_paths.push("client_body_temp_path".to_string());
            for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
                if !without(&format!("http_{m}_module")) {
                    temp_paths.push(format!("{m}_temp_path"));
                }
            }
        }
        BuildInfo {
            modules,
            temp_paths,
            conf_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_reads_debian_options() {
        let v = "nginx version: nginx/1.22.1\nconfigure arguments: --prefix=/usr/share/nginx \
                 --conf-path=/etc/nginx/nginx.conf --modules-path=/usr/lib/nginx/modules --without-http_uwsgi_module\n";
        let b = BuildInfo::parse(v);
        assert_eq!(b.modules, PathBuf::from("/usr/lib/nginx/modules"));
        assert_eq!(b.conf_dir, PathBuf::from("/etc/nginx"));
        assert_eq!(
            b.temp_paths,
            [
                "client_body_temp_path",
                "proxy_temp_path",
                "fastcgi_temp_path",
                "scgi_temp_path"
            ]
        );
        let plain = BuildInfo::parse("nginx version: nginx/1.25.0\nconfigure arguments:\n");
        assert_eq!(plain.modules, PathBuf::from("/usr/local/nginx/modules"));
        assert_eq!(plain.conf_dir, PathBuf::from("/usr/local/nginx/conf"));
    }
}
