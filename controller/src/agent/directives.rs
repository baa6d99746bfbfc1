//! The directives the agent adds to its copy of a bundle, so nginx tells the agent about every
//! request without the user writing anything for it. Pure: files in, files out.
//!
//! What is inserted (each on the line it belongs to, never on a new line, so every line nginx
//! reports is the user's line):
//! - at the very start of the entry file: `error_log syslog:…,tag=sbe<digest>` (the main-level
//!   error log, which `http` inherits) and, when nginx runs as root and the bundle names no
//!   `user`, `user <worker user> <its group>;` (`--worker-user`, `nobody` by default), so the
//!   workers, which serve requests, never run as root unless the agent is told so; a bundle's
//!   own `user root` is refused then;
//! - right after `http {`: the agent's `log_format`, its `access_log` (unless `http` has its own
//!   `access_log`, see below) and the `*_temp_path`s the bundle leaves to the build defaults,
//!   pointed into the state directory;
//! - after the first `access_log` of every level that declares one (nginx replaces inherited
//!   `access_log`s at a level that has its own), unless that level says `access_log off`;
//!   the same for `error_log` at every level below main.
//!
//! Main-level `pid`, `daemon` and `master_process` are blanked out (spaces, newlines kept): the
//! agent passes them with `-g`, and nginx refuses a directive given twice.
//!
//! Both syslog tags carry the first 12 hex digits of the digest, which is how a log line is
//! attributed to the config the worker that wrote it was started with, even while old workers
//! finish their requests after a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::validate::ast::{Config, Directive};
use crate::validate::paths::ConfigRoot;
use crate::validate::sandbox::edit::{Edit, apply, skip_to};

/// Name of the agent's log format; versioned so a future format change can coexist with old
/// workers still logging in the old one.
pub const LOG_FORMAT: &str = "switchback_agent_v1";

/// The request header whose value marks the agent's own probes in the access log.
pub const PROBE_HEADER: &str = "x-switchback-probe";

/// The access-log line: status, request time, probe marker, then upstream details for people.
/// Tabs separate fields; nginx escapes control bytes in variables as `\xHH`, so a header value
/// can never forge a field.
const LOG_FORMAT_BODY: &str = r#""$status\t$request_time\t$http_x_switchback_probe\t$upstream_status\t$upstream_connect_time\t$upstream_addr""#;

/// Syslog tag prefix of access-log lines.
pub const ACCESS_TAG: &str = "sba";
/// Syslog tag prefix of error-log lines.
pub const ERROR_TAG: &str = "sbe";

/// Main-level directives the agent owns (passed with `-g`).
const AGENT_OWNED: [&str; 3] = ["pid", "daemon", "master_process"];

/// Blocks below `http` whose `access_log`/`error_log` replace the inherited ones.
const NESTED: [&str; 4] = ["server", "location", "if", "limit_except"];

/// Bounds include nesting during the walk; the parser already refuses cycles.
const MAX_INCLUDE_DEPTH: usize = 32;

/// What the inserted directives point at.
#[derive(Debug, Clone)]
pub struct AgentDirectives<'a> {
    /// The agent's syslog socket (absolute, plain characters only).
    pub log_socket: &'a Path,
    /// First 12 hex digits of the digest, the per-version tag.
    pub short: &'a str,
    /// Directory for the `*_temp_path`s the bundle does not set.
    pub temp_dir: &'a Path,
    /// The `*_temp_path` directives this nginx build has.
    pub temp_paths: &'a [String],
    /// When nginx runs as root: the arguments of the `user` directive added when the bundle has
    /// none (`nobody nogroup`); a bundle's own `user root` is then refused unless this names
    /// root too. `None` when nginx does not run as root (`user` means nothing then).
    pub user: Option<&'a str>,
    /// Pin every `listen` to this address (local mode: pods share one network namespace). A
    /// `listen` that pins to an address its server already listens on (`listen 80; listen
    /// [::]:80;`) is blanked: nginx refuses a duplicate.
    pub pin_listen: Option<std::net::IpAddr>,
    /// The config root the bundle stands for (see [`super::paths`]).
    pub config_root: &'a ConfigRoot,
    /// Local mode, running as root: the bundle's `user` names an account of the proxy image,
    /// which this machine may lack, so its arguments become [`AgentDirectives::user`]'s.
    pub replace_user: bool,
}

/// Why the agent could not prepare its copy of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The entry file is not in the bundle.
    #[error("entry {0:?} is not a file of the bundle")]
    NoEntry(String),
    /// The bundle does not parse; the controller's validation should have refused it.
    #[error("the bundle does not parse: {0}")]
    Parse(String),
    /// The bundle asks for root workers while the agent runs them as an unprivileged user.
    #[error(
        "{file}:{line}: `user root` would run nginx's workers as root, able to read and serve \
         any file on this machine; the agent runs them as {worker:?} (remove the directive, or \
         start the agent with --worker-user root to accept root workers)"
    )]
    RootWorkers {
        /// File.
        file: String,
        /// Line.
        line: u32,
        /// The agent's worker user.
        worker: String,
    },
    /// A directive's end could not be found where the parse tree says it is.
    #[error("{file}:{line}: cannot find the end of `{name}`")]
    Shape {
        /// File.
        file: String,
        /// Line.
        line: u32,
        /// Directive.
        name: String,
    },
}

/// The bundle's files with the agent's directives inserted (unchanged files included).
pub fn prepare(
    files: &BTreeMap<String, Vec<u8>>,
    entry: &str,
    d: &AgentDirectives<'_>,
) -> Result<BTreeMap<String, Vec<u8>>, PrepareError> {
    if !files.contains_key(entry) {
        return Err(PrepareError::NoEntry(entry.to_string()));
    }
    let (config, diags) = super::paths::parse_in_pod(files, entry, d.config_root);
    if let Some(e) = diags.iter().find(|x| x.is_error()) {
        return Err(PrepareError::Parse(e.to_string()));
    }
    let mut planner = Planner {
        config: &config,
        files,
        d,
        edits: BTreeMap::new(),
    };
    planner.main(entry)?;
    for (file, edit) in super::paths::pod_paths(&config, files, entry, d.config_root) {
        planner.edits.entry(file).or_default().insert(edit);
    }
    let mut out = files.clone();
    for (path, edits) in planner.edits {
        if let Some(src) = files.get(&path) {
            let edits: Vec<Edit> = edits.into_iter().collect();
            out.insert(path, apply(src, &edits));
        }
    }
    Ok(out)
}

/// The syslog target of one version's access or error log.
pub fn syslog_target(socket: &Path, tag_prefix: &str, short: &str) -> String {
    format!(
        "syslog:server=unix:{},nohostname,tag={tag_prefix}{short}",
        socket.display()
    )
}

struct Planner<'c> {
    config: &'c Config,
    files: &'c BTreeMap<String, Vec<u8>>,
    d: &'c AgentDirectives<'c>,
    edits: BTreeMap<String, BTreeSet<Edit>>,
}

impl<'c> Planner<'c> {
    fn main(&mut self, entry: &str) -> Result<(), PrepareError> {
        let Some(first) = self.config.files.first() else {
            return Err(PrepareError::Parse("no files parsed".to_string()));
        };
        let mut level = Vec::new();
        self.flatten(&first.path, &first.directives, &mut level, 0);
        let mut head = format!(
            "error_log {} error; ",
            syslog_target(self.d.log_socket, ERROR_TAG, self.d.short)
        );
        if let Some(user) = self.d.user {
            match level.iter().find(|(_, x)| x.name == "user") {
                None => head.push_str(&format!("user {user}; ")),
                Some((file, x)) if self.d.replace_user => {
                    let (Some(first), Some(last)) = (x.args.first(), x.args.last()) else {
                        return Err(Self::shape(file, x));
                    };
                    self.push(file, first.span.start, last.span.end, user.to_string());
                }
                Some((file, x))
                    if x.arg_values().next() == Some("root")
                        && user.split_whitespace().next() != Some("root") =>
                {
                    return Err(PrepareError::RootWorkers {
                        file: file.to_string(),
                        line: x.span.line,
                        worker: user.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
        self.insert(entry, 0, head);
        for (file, dir) in &level {
            if AGENT_OWNED.contains(&dir.name.as_str()) {
                let end = self.terminator(file, dir)?;
                self.push(file, dir.span.start, end + 1, " ".to_string());
            }
        }
        for (file, dir) in level {
            if dir.name == "http" && dir.block.is_some() {
                self.block(file, dir, true)?;
            }
        }
        Ok(())
    }

    /// One block: inserts what its level needs and recurses into the nested blocks.
    fn block(&mut self, file: &'c str, dir: &'c Directive, http: bool) -> Result<(), PrepareError> {
        let mut level = Vec::new();
        self.flatten(file, dir.children(), &mut level, 0);
        let brace = self.brace(file, dir)?;
        let mut at_brace = String::new();
        let access = format!(
            "access_log {} {LOG_FORMAT}; ",
            syslog_target(self.d.log_socket, ACCESS_TAG, self.d.short)
        );
        let error = format!(
            "error_log {} error; ",
            syslog_target(self.d.log_socket, ERROR_TAG, self.d.short)
        );
        if http {
            at_brace.push_str(&format!(" log_format {LOG_FORMAT} {LOG_FORMAT_BODY}; "));
            for name in self.d.temp_paths {
                if !level.iter().any(|(_, x)| &x.name == name) {
                    let short = name.trim_end_matches("_temp_path");
                    let path = self.d.temp_dir.join(short);
                    at_brace.push_str(&format!("{name} {}; ", path.display()));
                }
            }
        }
        let logs: Vec<_> = level
            .iter()
            .filter(|(_, x)| x.name == "access_log")
            .collect();
        let off = logs
            .iter()
            .any(|(_, x)| x.arg_values().next() == Some("off"));
        match logs.first() {
            None if http => at_brace.push_str(&access),
            Some((f, first)) if !off => {
                let end = self.terminator(f, first)?;
                self.insert(f, end + 1, format!(" {access}"));
            }
            _ => {}
        }
        if let Some((f, first)) = level.iter().find(|(_, x)| x.name == "error_log") {
            let end = self.terminator(f, first)?;
            self.insert(f, end + 1, format!(" {error}"));
        }
        if !at_brace.is_empty() {
            self.insert(file, brace + 1, at_brace);
        }
        if let Some(ip) = self.d.pin_listen {
            let mut pinned_here = BTreeSet::new();
            for (f, listen) in level.iter().filter(|(_, x)| x.name == "listen") {
                let Some(arg) = listen.args.first() else {
                    continue;
                };
                let Some(pinned) = pin_listen(&arg.value, ip) else {
                    continue;
                };
                if pinned_here.insert(pinned.clone()) {
                    self.push(f, arg.span.start, arg.span.end, pinned);
                } else {
                    let end = self.terminator(f, listen)?;
                    self.push(f, listen.span.start, end + 1, " ".to_string());
                }
            }
        }
        for (f, child) in level {
            if child.block.is_some() && NESTED.contains(&child.name.as_str()) {
                self.block(f, child, false)?;
            }
        }
        Ok(())
    }

    /// The directives of one level in document order, with includes expanded in place.
    fn flatten(
        &self,
        file: &'c str,
        dirs: &'c [Directive],
        out: &mut Vec<(&'c str, &'c Directive)>,
        depth: usize,
    ) {
        for d in dirs {
            if d.name == "include" && depth < MAX_INCLUDE_DEPTH {
                for &i in &d.includes {
                    if let Some(f) = self.config.files.get(i) {
                        self.flatten(&f.path, &f.directives, out, depth + 1);
                    }
                }
            } else {
                out.push((file, d));
            }
        }
    }

    fn src(&self, file: &str) -> &'c [u8] {
        self.files.get(file).map(Vec::as_slice).unwrap_or(&[])
    }

    fn last_token_end(dir: &Directive) -> usize {
        dir.args.last().map_or(dir.span.end, |a| a.span.end)
    }

    fn shape(file: &str, dir: &Directive) -> PrepareError {
        PrepareError::Shape {
            file: file.to_string(),
            line: dir.span.line,
            name: dir.name.clone(),
        }
    }

    /// Offset of the `;` ending a simple directive.
    fn terminator(&self, file: &str, dir: &Directive) -> Result<usize, PrepareError> {
        skip_to(self.src(file), Self::last_token_end(dir), b';')
            .ok_or_else(|| Self::shape(file, dir))
    }

    /// Offset of the `{` opening a block directive. An `if`'s arguments lost their parentheses
    /// in the parser, so its closing `)` (alone or glued to the last token, as in `if ($x)`)
    /// may come before the `{`.
    fn brace(&self, file: &str, dir: &Directive) -> Result<usize, PrepareError> {
        let src = self.src(file);
        let mut from = Self::last_token_end(dir);
        if dir.name == "if" {
            while let Some(at) = skip_to(src, from, b')') {
                from = at + 1;
            }
        }
        skip_to(src, from, b'{').ok_or_else(|| Self::shape(file, dir))
    }

    fn insert(&mut self, file: &str, at: usize, text: String) {
        self.push(file, at, at, text);
    }

    fn push(&mut self, file: &str, start: usize, end: usize, text: String) {
        self.edits
            .entry(file.to_string())
            .or_default()
            .insert(Edit { start, end, text });
    }
}

/// The offset of `want` after `from`, skipping blanks and `#` comments; `None` if anything else
/// comes first.
/// `listen`'s address pinned to `ip`: `8080`, `*:8080`, `0.0.0.0:8080`, `[::]:8080` and
/// `any.host:8080` all become `ip:8080`. Unix sockets are left alone (`None`).
pub fn pin_listen(value: &str, ip: std::net::IpAddr) -> Option<String> {
    if value.starts_with("unix:") {
        return None;
    }
    let port = match value.rsplit_once(':') {
        Some((_, port)) => port,
        None => value,
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    })
}

#[cfg(test)]
#[path = "directives_tests.rs"]
mod tests;
