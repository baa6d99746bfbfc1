//! Reading what `nginx -t` wrote to stderr back into [`Diagnostic`]s about the bundle: sandbox
//! paths become bundle paths, rewritten tokens become what the user wrote, levels become rules.

use std::collections::HashMap;

use super::rewrite::Rewrite;
use crate::validate::ast::{Config, Directive};
use crate::validate::diagnostic::Diagnostic;

/// Rule for an error-level message (`[emerg]`, `[alert]`, `[crit]`, `[error]`).
pub const RULE_ERROR: &str = "SB900";
/// Rule for a `[warn]` message.
pub const RULE_WARNING: &str = "SB901";

/// The warning nginx prints for `user` when it does not run as root; the sandbox runs unprivileged
/// on purpose, so this says nothing about the bundle.
const USER_NOT_ROOT: &str = "the \"user\" directive makes sense only if";

/// Everything needed to translate nginx's messages.
#[derive(Debug)]
pub struct Mapper<'a> {
    /// Bundle directory in the sandbox, with a trailing `/`.
    pub conf_prefix: String,
    /// Text substitutions applied to every message (sandbox paths and sockets), longest first.
    pub replacements: Vec<(String, String)>,
    /// The rewritten tokens.
    pub rewrites: &'a [Rewrite],
    /// Column of the first directive on each `(file, line)`; a line with none gets column 0,
    /// "unknown", as [`Diagnostic`] defines it.
    pub columns: HashMap<(String, u32), u32>,
    /// The entry file, for messages that name no place.
    pub entry: String,
    /// Every `server_name` value with the places it is given, in document order.
    pub server_names: HashMap<String, Vec<(String, u32, u32)>>,
    /// The first place each argument value appears, for messages that quote a value.
    pub arg_places: HashMap<String, (String, u32, u32)>,
}

impl<'a> Mapper<'a> {
    /// A mapper with the columns of `config`; `replacements` are sorted longest first.
    pub fn new(
        conf_prefix: String,
        mut replacements: Vec<(String, String)>,
        rewrites: &'a [Rewrite],
        config: &Config,
        entry: &str,
    ) -> Self {
        replacements.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let mut columns = HashMap::new();
        for f in &config.files {
            first_columns(&f.path, &f.directives, &mut columns);
        }
        let mut places = Places::default();
        if let Some(f) = config.files.first() {
            places.collect(config, &f.path, &f.directives, 0);
        }
        Mapper {
            conf_prefix,
            replacements,
            rewrites,
            columns,
            entry: entry.to_string(),
            server_names: places.server_names,
            arg_places: places.args,
        }
    }

    /// Every error and warning line of `stderr` as a diagnostic, in the order nginx wrote them.
    pub fn diagnostics(&self, stderr: &str) -> Vec<Diagnostic> {
        stderr.lines().filter_map(|l| self.line(l)).collect()
    }

    fn line(&self, line: &str) -> Option<Diagnostic> {
        let (level, msg) = split_level(line)?;
        let error = match level {
            "emerg" | "alert" | "crit" | "error" => true,
            "warn" => false,
            _ => return None,
        };
        if msg.starts_with(USER_NOT_ROOT) {
            return None;
        }
        let (text, place) = split_place(msg);
        let (path, line_no, col, text) = match place {
            Some((file, line_no)) => {
                let path = self.bundle_path(file);
                let mut text = text.to_string();
                for rw in self
                    .rewrites
                    .iter()
                    .filter(|r| r.file == path && r.line == line_no)
                {
                    text = text.replace(&rw.replacement, &rw.original);
                }
                let col = self
                    .columns
                    .get(&(path.clone(), line_no))
                    .copied()
                    .unwrap_or(0);
                (path, line_no, col, self.replace(&text))
            }
            None => self.place_from_text(text),
        };
        Some(if error {
            Diagnostic::error(RULE_ERROR, path, line_no, col, text)
        } else {
            Diagnostic::warning(RULE_WARNING, path, line_no, col, text)
        })
    }

    /// A message without `in file:line` (files opened after parsing, sockets…): placed at the
    /// directive whose rewritten value it quotes, else at the entry file, line 0.
    fn place_from_text(&self, text: &str) -> (String, u32, u32, String) {
        // nginx keeps the first server for a name and ignores the later ones: point at the last.
        if let Some(rest) = text.strip_prefix("conflicting server name \"")
            && let Some((name, _)) = rest.split_once('"')
            && let Some((file, line, col)) = self
                .server_names
                .get(&name.to_ascii_lowercase())
                .and_then(|v| v.last())
        {
            return (file.clone(), *line, *col, self.replace(text));
        }
        let hit = self
            .rewrites
            .iter()
            .filter(|r| text.contains(&r.replacement))
            .max_by_key(|r| r.replacement.len());
        if let Some(rw) = hit {
            let text = text.replace(&rw.replacement, &rw.original);
            return (rw.file.clone(), rw.line, rw.col, self.replace(&text));
        }
        let text = self.replace(text);
        let quoted = text.split('"').skip(1).step_by(2);
        let place = quoted
            .filter_map(|q| self.arg_places.get(q))
            .next()
            .cloned();
        match place {
            Some((file, line, col)) => (file, line, col, text),
            None => (self.entry.clone(), 0, 0, text),
        }
    }

    fn bundle_path(&self, file: &str) -> String {
        match file.strip_prefix(&self.conf_prefix) {
            Some(rel) => rel.to_string(),
            None => self.replace(file),
        }
    }

    /// `text` with every sandbox path and socket replaced by what the bundle calls it.
    pub fn replace_all(&self, text: &str) -> String {
        self.replace(text)
    }

    fn replace(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (from, to) in &self.replacements {
            if out.contains(from.as_str()) {
                out = out.replace(from.as_str(), to);
            }
        }
        out
    }
}

fn first_columns(file: &str, dirs: &[Directive], out: &mut HashMap<(String, u32), u32>) {
    for d in dirs {
        out.entry((file.to_string(), d.span.line))
            .and_modify(|c| *c = (*c).min(d.span.col))
            .or_insert(d.span.col);
        first_columns(file, d.children(), out);
    }
}

/// Include nesting deeper than this is not followed.
const MAX_DEPTH: usize = 32;

/// Where values are given, in document order (includes followed where nginx reads them).
#[derive(Default)]
struct Places {
    server_names: HashMap<String, Vec<(String, u32, u32)>>,
    args: HashMap<String, (String, u32, u32)>,
}

impl Places {
    fn collect(&mut self, config: &Config, file: &str, dirs: &[Directive], depth: usize) {
        for d in dirs {
            let here = (file.to_string(), d.span.line, d.span.col);
            for a in &d.args {
                if d.name == "server_name" {
                    self.server_names
                        .entry(a.value.to_ascii_lowercase())
                        .or_default()
                        .push(here.clone());
                }
                self.args
                    .entry(a.value.clone())
                    .or_insert_with(|| here.clone());
            }
            if d.name == "include" && depth < MAX_DEPTH {
                for f in d.includes.iter().filter_map(|&i| config.files.get(i)) {
                    self.collect(config, &f.path, &f.directives, depth + 1);
                }
            }
            self.collect(config, file, d.children(), depth);
        }
    }
}

/// `(level, message)` from either form nginx writes: `nginx: [emerg] msg` (console) or
/// `2024/01/01 00:00:00 [emerg] 12#12: msg` (the `-e stderr` log).
pub fn split_level(line: &str) -> Option<(&str, &str)> {
    let open = line.find('[')?;
    let close = open + line[open..].find("] ")?;
    let level = &line[open + 1..close];
    if !level.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let rest = &line[close + 2..];
    let rest = match rest.split_once(": ") {
        Some((pid, msg)) if is_pid_tid(pid) => msg,
        _ => rest,
    };
    Some((level, rest))
}

fn is_pid_tid(s: &str) -> bool {
    let mut parts = s.split('#');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Splits a trailing ` in /path/file.conf:12` off a message.
pub fn split_place(msg: &str) -> (&str, Option<(&str, u32)>) {
    if let Some((text, place)) = msg.rsplit_once(" in ")
        && let Some((file, line)) = place.rsplit_once(':')
        && !file.is_empty()
        && !file.contains(' ')
        && let Ok(line) = line.parse::<u32>()
    {
        return (text, Some((file, line)));
    }
    (msg, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(rewrites: &[Rewrite]) -> Mapper<'_> {
        Mapper::new(
            "/t/conf/".into(),
            vec![
                ("/t/root".into(), String::new()),
                ("unix:/t/s/1".into(), "0.0.0.0:80".into()),
            ],
            rewrites,
            &Config::default(),
            "nginx.conf",
        )
    }

    #[test]
    fn levels_and_places_are_read_from_both_forms() {
        assert_eq!(
            split_level("2026/01/01 10:00:00 [emerg] 12#12: unknown directive \"x\""),
            Some(("emerg", "unknown directive \"x\""))
        );
        assert_eq!(
            split_level("nginx: [warn] low address bits"),
            Some(("warn", "low address bits"))
        );
        assert_eq!(split_level("nginx: configuration file x test failed"), None);
        assert_eq!(
            split_place("unknown directive \"x\" in /t/conf/conf.d/a.conf:12"),
            (
                "unknown directive \"x\"",
                Some(("/t/conf/conf.d/a.conf", 12))
            )
        );
        assert_eq!(split_place("no place in here"), ("no place in here", None));
    }

    #[test]
    fn messages_map_back_to_bundle_paths_and_original_values() {
        let rws = [Rewrite {
            file: "nginx.conf".into(),
            line: 3,
            col: 5,
            original: "/var/log/nginx/x.log".into(),
            replacement: "/t/root/var/log/nginx/x.log".into(),
        }];
        let m = mapper(&rws);
        let d = m
            .diagnostics(
                "2026/01/01 10:00:00 [emerg] 1#1: duplicate location \"/\" in /t/conf/conf.d/a.conf:7\n\
                 2026/01/01 10:00:00 [warn] 1#1: conflicting server name \"a\" on unix:/t/s/1, ignored\n\
                 nginx: [emerg] open() \"/t/root/var/log/nginx/x.log\" failed (13: Permission denied)\n\
                 nginx: configuration file /t/conf/nginx.conf test failed\n",
            );
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0].to_string(),
            "conf.d/a.conf:7:0: error[SB900]: duplicate location \"/\""
        );
        assert_eq!(
            d[1].to_string(),
            "nginx.conf:0:0: warning[SB901]: conflicting server name \"a\" on 0.0.0.0:80, ignored"
        );
        assert_eq!(
            d[2].to_string(),
            "nginx.conf:3:5: error[SB900]: open() \"/var/log/nginx/x.log\" failed (13: Permission denied)"
        );
    }

    #[test]
    fn the_unprivileged_user_warning_is_dropped() {
        let m = mapper(&[]);
        let out = m.diagnostics(
            "nginx: [warn] the \"user\" directive makes sense only if the master process runs with super-user privileges, ignored in /t/conf/nginx.conf:1",
        );
        assert!(out.is_empty());
    }
}
