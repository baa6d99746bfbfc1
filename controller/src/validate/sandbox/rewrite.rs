//! The sandbox copy of a bundle: which tokens to rewrite so that `nginx -t` checks the config
//! without resolving a name, binding a port, or touching a file outside its temporary directory.
//!
//! Everything is driven by the parse tree's byte spans: a token is replaced in place and the
//! newlines it contained are kept, so every line nginx reports is the line of the original file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::address;
use super::directive_kinds::{CODE_MODULES, PASS_DIRECTIVES, WRITE_DIRS, is_opaque};
pub use super::directive_kinds::{Placeholder, placeholder_kind};
use super::edit::{Edit, find_brace, token};
use crate::validate::ast::{Arg, Config, Directive};
use crate::validate::paths::{ConfigRoot, bundle_path};

/// Include nesting deeper than this is refused (the parser refuses it too, and cycles): a file
/// left unplanned would reach nginx unrewritten.
const MAX_DEPTH: usize = crate::validate::parser::MAX_INCLUDE_DEPTH;

/// Where things go inside the sandbox directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The bundle copy; nginx's `-p` prefix.
    pub conf: PathBuf,
    /// Absolute and out-of-prefix paths of the config are mirrored below this.
    pub mirror: PathBuf,
    /// Unix sockets that stand in for `listen` addresses.
    pub sockets: PathBuf,
    /// The nginx build's own module directory, the only place `load_module` may load from.
    pub modules: PathBuf,
    /// The image files the config includes, below their path under the config root.
    pub image: PathBuf,
}

impl Layout {
    /// The layout under the sandbox root `root`.
    pub fn new(root: &Path, modules: PathBuf) -> Self {
        Layout {
            conf: root.join("conf"),
            mirror: root.join("root"),
            sockets: root.join("s"),
            modules,
            image: root.join("image"),
        }
    }

    /// Where nginx's own defaults (pid, temp paths, access log) are pointed.
    pub fn defaults(&self) -> PathBuf {
        self.mirror.join("_default")
    }
}

/// One rewritten token, kept so nginx's messages can be translated back to what the user wrote.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Bundle path.
    pub file: String,
    /// Line of the token.
    pub line: u32,
    /// Column of the directive the token belongs to.
    pub col: u32,
    /// The value in the bundle.
    pub original: String,
    /// The value in the sandbox copy.
    pub replacement: String,
}

/// A file the config reads at `-t` time that the bundle does not carry.
#[derive(Debug, Clone)]
pub struct External {
    /// Bundle path of the directive.
    pub file: String,
    /// Its line.
    pub line: u32,
    /// Its column.
    pub col: u32,
    /// The directive name.
    pub directive: String,
    /// The path as written.
    pub path: String,
}

/// Everything needed to lay out the sandbox and to read nginx's answer.
#[derive(Debug, Default)]
pub struct Plan {
    /// Edits per bundle file, in no particular order.
    pub edits: BTreeMap<String, Vec<Edit>>,
    /// The rewritten tokens.
    pub rewrites: Vec<Rewrite>,
    /// Stand-in files to write.
    pub placeholders: BTreeMap<PathBuf, Placeholder>,
    /// Directories to create before running nginx.
    pub dirs: BTreeSet<PathBuf>,
    /// `(sandbox socket as nginx prints it, the address the config gave)`.
    pub sockets: Vec<(String, String)>,
    /// Files read at `-t` time that come from outside the bundle.
    pub external: Vec<External>,
    /// Whether the config sets `pid` itself (then `-g pid` would be a duplicate).
    pub has_pid: bool,
    /// Whether the config sets `user` (recorded only when running as root).
    pub has_user: bool,
    /// `load_module` lines naming a module that runs code while nginx reads the config.
    pub refused: Vec<External>,
    /// Included files walked (the planner's work; each file is walked once per context).
    pub files_walked: usize,
}

/// The inputs of [`plan`] besides the parse tree.
#[derive(Debug)]
pub struct Options<'a> {
    /// Sandbox paths.
    pub layout: &'a Layout,
    /// Entry file, bundle-relative.
    pub entry: &'a str,
    /// The bundle's files, to tell bundle files from outside ones.
    pub files: &'a BTreeMap<String, Vec<u8>>,
    /// Whether nginx will run as root (then `user` is pointed at root, which always exists).
    pub as_root: bool,
    /// The `*_temp_path` directives this nginx build has, to pin their defaults in the sandbox.
    pub temp_paths: &'a [String],
    /// The directory the bundle stands for: absolute paths below it name bundle files.
    pub config_root: &'a ConfigRoot,
}

/// Why the sandbox copy could not be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// An include leads back to a file being included (nginx would recurse until it crashes).
    Cycle(String),
    /// Anything else, described.
    Other(String),
}

/// Works out every rewrite for `config` (whose first file must be the entry).
pub fn plan(config: &Config, opts: &Options<'_>) -> Result<Plan, PlanError> {
    let mut planner = Planner {
        config,
        opts,
        upstreams: upstream_names(config),
        plan: Plan::default(),
        seen: HashSet::new(),
        sockets: HashMap::new(),
        external_seen: HashSet::new(),
        stack: Vec::new(),
        walked: HashSet::new(),
    };
    if let Some(entry) = config.files.first() {
        planner.stack.push(&entry.path);
        planner.walk(&entry.path, &entry.directives, None, 0)?;
    }
    Ok(planner.plan)
}

/// Every `upstream` name in the bundle, lowercase (nginx compares them case-insensitively).
fn upstream_names(config: &Config) -> HashSet<String> {
    fn visit(dirs: &[Directive], out: &mut HashSet<String>) {
        for d in dirs {
            if d.name == "upstream"
                && let Some(a) = d.args.first()
            {
                out.insert(a.value.to_ascii_lowercase());
            }
            visit(d.children(), out);
        }
    }
    let mut out = HashSet::new();
    for f in &config.files {
        visit(&f.directives, &mut out);
    }
    out
}

struct Planner<'a> {
    config: &'a Config,
    opts: &'a Options<'a>,
    upstreams: HashSet<String>,
    plan: Plan,
    seen: HashSet<(String, usize)>,
    sockets: HashMap<String, String>,
    external_seen: HashSet<String>,
    /// Files being walked, outermost first, to catch include cycles.
    stack: Vec<&'a str>,
    /// (file index, enclosing block) pairs already walked: a file's rewrite depends only on
    /// those, so a file included a thousand times in one context is planned once.
    walked: HashSet<(usize, Option<&'a str>)>,
}

impl<'a> Planner<'a> {
    fn walk(
        &mut self,
        file: &'a str,
        dirs: &'a [Directive],
        parent: Option<&'a str>,
        depth: usize,
    ) -> Result<(), PlanError> {
        for d in dirs {
            self.directive(file, d, parent);
            if d.name == "include" {
                for &i in &d.includes {
                    if let Some(f) = self.config.files.get(i) {
                        if self.stack.contains(&f.path.as_str()) {
                            return Err(PlanError::Cycle(f.path.clone()));
                        }
                        if depth >= MAX_DEPTH {
                            return Err(PlanError::Other(format!(
                                "includes nest deeper than {MAX_DEPTH} levels at {file}:{}",
                                d.span.line
                            )));
                        }
                        if !self.walked.insert((i, parent)) {
                            continue;
                        }
                        self.stack.push(&f.path);
                        self.plan.files_walked += 1;
                        self.walk(&f.path, &f.directives, parent, depth + 1)?;
                        self.stack.pop();
                    }
                }
            }
            if let Some(block) = &d.block {
                if d.name.ends_with("_by_lua_block") {
                    continue;
                }
                if d.name == "http" && parent.is_none() {
                    self.pin_http_defaults(file, d)?;
                }
                // Inside a data block everything stays data, however deep.
                let inner = match parent {
                    Some(p) if is_opaque(p) => parent,
                    _ => Some(d.name.as_str()),
                };
                self.walk(file, block, inner, depth)?;
            }
        }
        Ok(())
    }

    fn directive(&mut self, file: &str, d: &Directive, parent: Option<&str>) {
        let name = d.name.as_str();
        let Some(first) = d.args.first() else {
            return;
        };
        // In `types`, `map` or `geo` only `include` is a directive (nginx reads it there too).
        if parent.is_some_and(is_opaque) && name != "include" {
            return;
        }
        match name {
            "listen" if parent == Some("server") => self.listen(file, d, first),
            "server" if parent == Some("upstream") && d.block.is_none() => {
                if let Some(new) = address::host_port(&first.value) {
                    self.set(file, d, first, new);
                }
            }
            n if PASS_DIRECTIVES.contains(&n) => {
                if let Some(new) = address::pass_target(&first.value, &self.upstreams) {
                    self.set(file, d, first, new);
                }
            }
            "auth_http" | "ssl_stapling_responder" | "ssl_ocsp_responder" => {
                if let Some(new) = address::pass_target(&first.value, &HashSet::new()) {
                    self.set(file, d, first, new);
                }
            }
            "resolver" => {
                for a in d.args.iter().filter(|a| !a.value.contains('=')) {
                    if let Some(new) = address::host_port(&a.value) {
                        self.set(file, d, a, new);
                    }
                }
            }
            "set_real_ip_from" | "debug_connection" => {
                if let Some(new) = address::cidr_or_host(&first.value) {
                    self.set(file, d, first, new);
                }
            }
            // Stapling makes nginx resolve the OCSP responder named in the certificate.
            "ssl_stapling" if first.value.eq_ignore_ascii_case("on") => {
                self.set(file, d, first, "off".to_string());
            }
            "error_log" | "access_log" => self.log_target(file, d, first),
            "pid" | "lock_file" => {
                self.plan.has_pid |= name == "pid";
                self.write_path(file, d, first);
            }
            n if WRITE_DIRS.contains(&n) => self.write_path(file, d, first),
            "include" => self.include(file, d, first),
            "load_module" => {
                let base = first.value.rsplit('/').next().unwrap_or_default();
                if CODE_MODULES.iter().any(|m| base.starts_with(m)) {
                    self.plan.refused.push(External {
                        file: file.to_string(),
                        line: d.span.line,
                        col: d.span.col,
                        directive: d.name.clone(),
                        path: first.value.clone(),
                    });
                    return;
                }
                let new = self.opts.layout.modules.join(base).display().to_string();
                self.set(file, d, first, new.clone());
                // Messages keep the real path: it is the one nginx tried, not the one written.
                if let Some(rw) = self.plan.rewrites.last_mut()
                    && rw.replacement == new
                {
                    rw.original = new;
                }
            }
            "user" if self.opts.as_root => {
                self.plan.has_user = true;
                for a in &d.args {
                    self.set(file, d, a, "root".to_string());
                }
            }
            n => {
                if let Some(kind) = placeholder_kind(n) {
                    self.read_file(file, d, first, kind);
                }
            }
        }
    }

    /// Every listen address becomes a unix socket in the sandbox: nothing is bound, nothing is
    /// resolved, and addresses nginx would treat as one still share one socket.
    fn listen(&mut self, file: &str, d: &Directive, arg: &Arg) {
        if arg.value.contains('$') {
            return;
        }
        let key = address::listen_key(&arg.value, "80");
        let next = self.sockets.len() + 1;
        let socket = self
            .sockets
            .entry(key.clone())
            .or_insert_with(|| {
                let path = format!("unix:{}/{next}", self.opts.layout.sockets.display());
                self.plan.sockets.push((path.clone(), key.clone()));
                path
            })
            .clone();
        self.set(file, d, arg, socket);
    }

    fn log_target(&mut self, file: &str, d: &Directive, arg: &Arg) {
        let v = arg.value.as_str();
        if v == "off" || v == "stderr" || v.starts_with("memory:") {
            return;
        }
        if v.starts_with("syslog:") {
            let socket = self.opts.layout.sockets.join("syslog");
            if let Some(new) = address::syslog_target(v, &socket.display().to_string()) {
                self.set(file, d, arg, new);
            }
            return;
        }
        self.write_path(file, d, arg);
    }

    /// A path nginx writes: mirrored under the sandbox, its directory created (nginx creates only
    /// the last component of a temp or cache path, and no directory for a file).
    fn write_path(&mut self, file: &str, d: &Directive, arg: &Arg) {
        let target = self.mirror(&arg.value, "_prefix");
        if !arg.value.contains('$')
            && let Some(parent) = target.parent()
        {
            self.plan.dirs.insert(parent.to_path_buf());
        }
        self.set(file, d, arg, target.display().to_string());
    }

    /// An include of bundle files by absolute path points at the sandbox copy; of image files,
    /// at their copy below `layout.image`. Includes that leave both point into the (empty)
    /// mirror instead, so nginx reports them missing rather than reading the validating
    /// machine's files.
    fn include(&mut self, file: &str, d: &Directive, arg: &Arg) {
        let v = arg.value.as_str();
        let from_image = d
            .includes
            .first()
            .and_then(|&i| self.config.files.get(i))
            .is_some_and(|f| f.path.starts_with('/'));
        if from_image && let Some(rel) = self.under_root(v) {
            let target = self.opts.layout.image.join(rel);
            self.set(file, d, arg, target.display().to_string());
            return;
        }
        if let Some(target) = self.absolute_in_bundle(v) {
            self.set(file, d, arg, target.display().to_string());
            return;
        }
        if self.in_bundle_path(v).is_some() {
            return;
        }
        let target = self.mirror(v, "_conf");
        self.set(file, d, arg, target.display().to_string());
    }

    /// A path below the config root, relative to it: the absolute path's rest, or the relative
    /// path normalized (relative paths resolve against the entry's directory, which stands for
    /// the root); `None` for absolute paths elsewhere and for paths that climb out.
    fn under_root(&self, value: &str) -> Option<String> {
        if value.starts_with('/') {
            return self.opts.config_root.relative(value);
        }
        self.opts
            .config_root
            .relative(&self.opts.config_root.join(value))
            .filter(|_| !value.split('/').any(|c| c == ".."))
    }

    /// The sandbox copy an absolute path below the config root names (bundle files and globs
    /// over them alike); `None` for relative paths and paths elsewhere.
    fn absolute_in_bundle(&self, value: &str) -> Option<PathBuf> {
        if !value.starts_with('/') {
            return None;
        }
        let rel = self.opts.config_root.relative(value)?;
        let bundle = self.in_bundle_path(&rel)?;
        Some(self.opts.layout.conf.join(bundle))
    }

    /// A TLS file: kept when the bundle carries it (pointed at the sandbox copy when named by
    /// its absolute path), else replaced by a stand-in and reported.
    fn read_file(&mut self, file: &str, d: &Directive, arg: &Arg, kind: Placeholder) {
        let v = arg.value.as_str();
        if v.contains('$') || v.starts_with("data:") || v.starts_with("engine:") {
            return;
        }
        if let Some(p) = self.in_bundle_path(v)
            && self.opts.files.contains_key(&p)
        {
            return;
        }
        if let Some(target) = self.absolute_in_bundle(v)
            && let Ok(rel) = target.strip_prefix(&self.opts.layout.conf)
            && self.opts.files.contains_key(&rel.display().to_string())
        {
            self.set(file, d, arg, target.display().to_string());
            return;
        }
        let target = self.mirror(v, "_conf");
        if let Some(parent) = target.parent() {
            self.plan.dirs.insert(parent.to_path_buf());
        }
        self.plan.placeholders.entry(target.clone()).or_insert(kind);
        if self.external_seen.insert(v.to_string()) {
            self.plan.external.push(External {
                file: file.to_string(),
                line: d.span.line,
                col: d.span.col,
                directive: d.name.clone(),
                path: v.to_string(),
            });
        }
        self.set(file, d, arg, target.display().to_string());
    }

    /// Pins nginx's compiled-in http defaults (temp directories, access log) into the sandbox for
    /// every one the http block does not set itself; inserted right after `{`, on the same line.
    fn pin_http_defaults(&mut self, file: &str, http: &Directive) -> Result<(), PlanError> {
        let mut set = HashSet::new();
        self.names_at_level(http.children(), &mut set, 0);
        let defaults = self.opts.layout.defaults();
        let mut text = String::new();
        for name in self.opts.temp_paths {
            if !set.contains(name.as_str()) {
                let dir = defaults.join(name.trim_end_matches("_path"));
                text.push_str(&format!(" {name} {};", token(&dir.display().to_string())));
            }
        }
        if !set.contains("access_log") {
            let log = defaults.join("access.log");
            text.push_str(&format!(
                " access_log {};",
                token(&log.display().to_string())
            ));
        }
        if text.is_empty() {
            return Ok(());
        }
        self.plan.dirs.insert(defaults);
        let src = self.opts.files.get(file).map(Vec::as_slice).unwrap_or(&[]);
        let after = http
            .args
            .last()
            .map(|a| a.span.end)
            .unwrap_or(http.span.end);
        let Some(brace) = find_brace(src, after) else {
            return Err(PlanError::Other(format!(
                "cannot find the `{{` of `http` at {file}:{}",
                http.span.line
            )));
        };
        self.plan
            .edits
            .entry(file.to_string())
            .or_default()
            .push(Edit {
                start: brace + 1,
                end: brace + 1,
                text: format!("{text} "),
            });
        Ok(())
    }

    /// The directive names of one block level, includes inlined (each file once).
    fn names_at_level(&self, dirs: &'a [Directive], out: &mut HashSet<&'a str>, depth: usize) {
        let mut seen = HashSet::new();
        self.names_once(dirs, out, &mut seen, depth);
    }

    fn names_once(
        &self,
        dirs: &'a [Directive],
        out: &mut HashSet<&'a str>,
        seen: &mut HashSet<usize>,
        depth: usize,
    ) {
        for d in dirs {
            out.insert(&d.name);
            if d.name == "include" && depth < MAX_DEPTH {
                for &i in &d.includes {
                    if let Some(f) = self.config.files.get(i)
                        && seen.insert(i)
                    {
                        self.names_once(&f.directives, out, seen, depth + 1);
                    }
                }
            }
        }
    }

    /// The bundle path a relative config path names (relative to the entry's directory, as nginx
    /// resolves it), or `None` when it is absolute or climbs out of the bundle.
    fn in_bundle_path(&self, value: &str) -> Option<String> {
        if value.starts_with('/') {
            return None;
        }
        let mut dir: Vec<&str> = self.opts.entry.split('/').collect();
        dir.pop();
        bundle_path(&dir, value)
    }

    /// Where a path of the config lands in the sandbox mirror. `..` becomes `__`, so nothing
    /// leaves the mirror; relative paths go below `base` (`_prefix` or `_conf`).
    fn mirror(&self, value: &str, base: &str) -> PathBuf {
        let mut p = self.opts.layout.mirror.clone();
        if !value.starts_with('/') {
            p.push(base);
        }
        for c in value.split('/') {
            match c {
                "" | "." => {}
                ".." => p.push("__"),
                c => p.push(c),
            }
        }
        p
    }

    /// Records the rewrite of one argument (once per file and position, however often the file
    /// is included).
    fn set(&mut self, file: &str, d: &Directive, arg: &Arg, new: String) {
        if !self.seen.insert((file.to_string(), arg.span.start)) {
            return;
        }
        self.plan
            .edits
            .entry(file.to_string())
            .or_default()
            .push(Edit {
                start: arg.span.start,
                end: arg.span.end,
                text: token(&new),
            });
        self.plan.rewrites.push(Rewrite {
            file: file.to_string(),
            line: arg.span.line,
            col: d.span.col,
            original: arg.value.clone(),
            replacement: new,
        });
    }
}
