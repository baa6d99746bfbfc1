//! The demo's config repository: a real git repository made from `examples/basic` (built into the
//! binary, so `switchback demo` needs no checkout), and the four commits of the story:
//!
//! 0. the config every proxy serves when the demo starts;
//! 1. a routine good change (a longer read timeout), rolled out canary-style and promoted;
//! 2. the outage's change: the `app` upstream's servers edited to ports nothing listens on. It is
//!    valid nginx (`nginx -t` passes, every lint rule passes), so only traffic can catch it;
//! 3. the fix: the servers back, plus a third one, rolled out and promoted.

use std::path::{Path, PathBuf};

/// The directory inside the repository that holds the proxy config (`spec.source.path`).
pub const CONFIG_PATH: &str = "edge";

const NGINX_CONF: &str = include_str!("../../../examples/basic/nginx.conf.j2");
const MIME_TYPES: &str = include_str!("../../../examples/basic/mime.types");
const SITE_CONF: &str = include_str!("../../../examples/basic/conf.d/site.conf.j2");
const UPSTREAMS_CONF: &str = include_str!("../../../examples/basic/conf.d/upstreams.conf");
const VALUES: &str = include_str!("../../../examples/basic/values.yaml");

/// Why the demo repository could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// git refused.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// One commit of the story: its message and the files of the config directory.
#[derive(Debug, Clone)]
pub struct StoryCommit {
    /// The commit message (first line is the summary).
    pub message: String,
    /// Files under [`CONFIG_PATH`].
    pub files: Vec<(String, String)>,
    /// Whether Switchback should promote it (true) or roll it back (false).
    pub good: bool,
}

/// The story's commits, with upstream servers at `upstream_ip` (app on 9001-9003, api on
/// 9101-9102). `upstream_ip` is a loopback address of the demo's own.
pub fn story(upstream_ip: &str) -> Vec<StoryCommit> {
    let at = |text: &str| text.replace("127.0.0.1:9", &format!("{upstream_ip}:9"));
    let base_upstreams = at(UPSTREAMS_CONF);
    let files = |values: &str, upstreams: &str| {
        vec![
            ("nginx.conf.j2".to_string(), NGINX_CONF.to_string()),
            ("mime.types".to_string(), MIME_TYPES.to_string()),
            ("conf.d/site.conf.j2".to_string(), SITE_CONF.to_string()),
            ("conf.d/upstreams.conf".to_string(), upstreams.to_string()),
            ("values.yaml".to_string(), values.to_string()),
        ]
    };
    let longer_timeout = VALUES.replace("read_timeout: 15s", "read_timeout: 20s");
    let broken = base_upstreams
        .replace(":9001 ", ":9011 ")
        .replace(":9002 ", ":9012 ");
    let fixed = base_upstreams.replace(
        &format!("    server {upstream_ip}:9002 max_fails=3 fail_timeout=10s;\n"),
        &format!(
            "    server {upstream_ip}:9002 max_fails=3 fail_timeout=10s;\n    server {upstream_ip}:9003 max_fails=3 fail_timeout=10s;\n"
        ),
    );
    vec![
        StoryCommit {
            message: "Initial proxy config".to_string(),
            files: files(VALUES, &base_upstreams),
            good: true,
        },
        StoryCommit {
            message: "Give slow API calls 20s before timing out".to_string(),
            files: files(&longer_timeout, &base_upstreams),
            good: true,
        },
        StoryCommit {
            message: "Move app upstream to the new app servers\n\nRoutine update of the upstream block: the app servers moved to 9011/9012.".to_string(),
            files: files(&longer_timeout, &broken),
            good: false,
        },
        StoryCommit {
            message: "Put the app servers back and add app-3\n\nThe new ports were never opened; revert and add the third server.".to_string(),
            files: files(&longer_timeout, &fixed),
            good: true,
        },
    ]
}

/// Creates an empty repository at `dir` on branch `main`.
pub fn init(dir: &Path) -> Result<git2::Repository, RepoError> {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head("main");
    Ok(git2::Repository::init_opts(dir, &opts)?)
}

/// Replaces the config directory with `commit`'s files and commits them; returns the commit id.
pub fn commit(repo: &git2::Repository, commit: &StoryCommit) -> Result<String, RepoError> {
    let root = repo
        .workdir()
        .ok_or_else(|| git2::Error::from_str("the demo repository has no work tree"))?
        .join(CONFIG_PATH);
    for (path, text) in &commit.files {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|source| RepoError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&file, text).map_err(|source| RepoError::Io { path: file, source })?;
    }
    let mut index = repo.index()?;
    index.add_all([CONFIG_PATH], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let who = git2::Signature::now("Switchback demo", "demo@switchback.invalid")?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo.commit(Some("HEAD"), &who, &who, &commit.message, &tree, &parents)?;
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_story_changes_what_it_says() {
        let story = story("127.0.2.1");
        assert_eq!(story.len(), 4);
        let upstreams = |c: &StoryCommit| {
            c.files
                .iter()
                .find(|(p, _)| p == "conf.d/upstreams.conf")
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        };
        assert!(upstreams(&story[0]).contains("server 127.0.2.1:9001 "));
        assert!(upstreams(&story[2]).contains("server 127.0.2.1:9011 "));
        assert!(!upstreams(&story[2]).contains(":9001 "));
        assert!(upstreams(&story[3]).contains("server 127.0.2.1:9003 "));
        assert_ne!(story[0].files, story[1].files);
    }
}
