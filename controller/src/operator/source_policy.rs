//! Which repository URLs a ProxyRollout may name.
//!
//! Whoever may create a ProxyRollout chooses `spec.source.url`, and the controller fetches it with
//! its own network position, its own files and the Secrets the rollout names. So by default only
//! `https://` and ssh (`ssh://`, scp-like `git@host:path`) sources are followed: encrypted, with
//! the server authenticated, and with a host the Secret's credentials can be pinned to. `http://`,
//! `git://`, `file://` and local paths (which read the controller's own disk, where the other
//! rollouts' git caches are) are refused unless the controller runs with
//! `--allow-insecure-sources` (chart: `git.allowInsecureSources`), which exists for tests and
//! local experiments. Even then a path inside the controller's cache directory is refused, and
//! credentials are never sent over plain http (`source::git::auth`).

use std::path::{Path, PathBuf};

use crate::source::git::{Remote, Transport, percent_decode, redact_url};

/// The answer to "may this rollout follow that URL?": the server it reaches (for https and ssh;
/// the Secret's pin is compared with it), or why not.
pub(super) fn check(
    url: &str,
    allow_insecure: bool,
    cache_dir: &Path,
) -> Result<Option<Remote>, String> {
    let url = url.trim();
    let shown = redact_url(url);
    let transport = Transport::of(url);
    let refused = |what: &str| {
        format!(
            "spec.source.url {shown}: {what} sources are not followed; use an https:// or ssh:// \
             (git@host:path) URL. The controller's --allow-insecure-sources (chart: \
             git.allowInsecureSources) allows http://, git://, file:// and local paths, for tests"
        )
    };
    match transport {
        Transport::Https | Transport::Ssh => Remote::parse(url)
            .map(Some)
            .map_err(|e| format!("spec.source.url {shown}: {e}")),
        Transport::Http | Transport::Git if allow_insecure => Ok(Remote::parse(url).ok()),
        Transport::File | Transport::Local if allow_insecure => {
            let path = local_path(url);
            if inside(&path, cache_dir) {
                return Err(format!(
                    "spec.source.url {shown}: a path inside the controller's cache directory \
                     (where every rollout's git cache is) is never followed"
                ));
            }
            Ok(None)
        }
        Transport::Other => Err(format!(
            "spec.source.url {shown}: an unknown scheme; use an https:// or ssh:// \
             (git@host:path) URL"
        )),
        Transport::Http => Err(refused("plain http://")),
        Transport::Git => Err(refused("git://")),
        Transport::File => Err(refused("file://")),
        Transport::Local => Err(refused("local path")),
    }
}

/// The path a `file://` URL or a local path names, as libgit2 reads it (`file://` and an
/// optional `localhost` dropped, `%XX` decoded), made absolute.
fn local_path(url: &str) -> PathBuf {
    let path = match url.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("file://") => {
            let rest = &url[7..];
            rest.strip_prefix("localhost").unwrap_or(rest)
        }
        _ => url,
    };
    let decoded = percent_decode(path);
    std::path::absolute(&decoded).unwrap_or_else(|_| PathBuf::from(decoded))
}

/// Whether `path` is `dir` or under it, comparing the paths as written (made normal) and as the
/// filesystem resolves them (links followed), so neither `..` nor a link gets out of the check.
fn inside(path: &Path, dir: &Path) -> bool {
    let dirs = [
        normal(dir),
        dir.canonicalize().unwrap_or_else(|_| normal(dir)),
    ];
    let mut paths = vec![normal(path)];
    // A path that does not exist yet resolves through its nearest existing ancestor.
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    for _ in 0..64 {
        if let Ok(real) = existing.canonicalize() {
            paths.push(
                rest.iter()
                    .rev()
                    .fold(real, |p: PathBuf, part| p.join(part)),
            );
            break;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    paths.iter().any(|p| dirs.iter().any(|d| p.starts_with(d)))
}

/// `path` made absolute with `.` and `..` removed, without touching the filesystem.
fn normal(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str, insecure: bool) -> bool {
        check(url, insecure, Path::new("/var/cache/switchback")).is_ok()
    }

    #[test]
    fn by_default_only_https_and_ssh() {
        for url in [
            "https://github.com/org/x.git",
            "ssh://git@github.com/org/x.git",
            "git@github.com:org/x.git",
        ] {
            assert!(ok(url, false), "{url}");
        }
        for url in [
            "http://10.0.0.1/x.git",
            "git://github.com/org/x.git",
            "file:///var/cache/switchback/edge.other/git",
            "/srv/git/x.git",
            "ftp://h/x",
            "https://github.com#@evil.example/x",
        ] {
            let err = check(url, false, Path::new("/c")).err();
            assert!(err.is_some(), "{url} must be refused");
        }
        let err = check("http://u:s3cret@h/x", false, Path::new("/c")).err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("--allow-insecure-sources")
                    && e.contains("plain http")
                    && !e.contains("s3cret")),
            "{err:?}"
        );
    }

    #[test]
    fn insecure_allows_http_and_paths_outside_the_cache() {
        assert!(ok("http://127.0.0.1:8080/x.git", true));
        assert!(ok("file:///srv/git/x.git", true));
        assert!(ok("/srv/git/x.git", true));
        assert!(!ok("ftp://h/x", true));
        for url in [
            "file:///var/cache/switchback/edge.other/git",
            "file://localhost/var/cache/switchback",
            "file:///var/cache/%73witchback/x",
            "/var/cache/switchback/../switchback/x",
            "/var/cache/switchback",
        ] {
            let err = check(url, true, Path::new("/var/cache/switchback")).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("cache directory")),
                "{url}: {err:?}"
            );
        }
        assert!(ok("/var/cache/switchback-other/x", true));
    }

    #[test]
    fn a_link_into_the_cache_is_caught() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        std::fs::create_dir_all(cache.join("ns.other/git")).expect("mkdir");
        let link = tmp.path().join("innocent");
        std::os::unix::fs::symlink(&cache, &link).expect("symlink");
        let url = format!("file://{}/ns.other/git", link.display());
        assert!(check(&url, true, &cache).is_err(), "{url}");
        let missing = format!("{}/not-yet/x", link.display());
        assert!(check(&missing, true, &cache).is_err(), "{missing}");
    }
}
