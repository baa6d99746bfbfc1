//! Following `include` through a bundle: resolving paths and globs the way nginx does (relative to
//! the configuration prefix, glob(3) sorted matches, a leading `.` only matched explicitly), parsing
//! each file once in crossplane's order, and finding cycles, which nginx would follow forever.

use std::collections::{BTreeMap, HashMap};

use globset::{GlobBuilder, GlobMatcher};

use super::outside;
use super::{
    INCLUDE_CYCLE, MAX_INCLUDE_DEPTH, MAX_INCLUDE_EXPANSIONS, OutsideFiles, ParseOptions,
    parse_file_with,
};
use crate::validate::ast::{Config, Directive, ParsedFile, Span};
use crate::validate::diagnostic::{self, Diagnostic};
use crate::validate::paths::{
    ConfigRoot, ImageFiles, bundle_has_dir, bundle_path, glob_base, is_image_glob,
};

/// Why an include argument resolves to no file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// Absolute, or `..` climbs above the bundle root.
    Outside,
    /// A literal path that is not in the bundle.
    Missing,
    /// A glob that matches nothing.
    NoMatch,
    /// An absolute path read through [`OutsideFiles`] that could not be read (the reason).
    Unreadable(String),
}

/// An `include` edge between two files, for cycle detection.
struct Edge {
    to: usize,
    arg: String,
    span: Span,
}

struct Resolver<'a> {
    files: &'a BTreeMap<String, Vec<u8>>,
    /// Directory of the entry file, as path components.
    root: Vec<&'a str>,
    /// Bundle paths in the order they were first reached.
    order: Vec<String>,
    index: HashMap<String, usize>,
    /// Results per normalized pattern, so a glob repeated in many files is matched once.
    cache: HashMap<String, Result<Vec<String>, Problem>>,
    edges: Vec<Vec<Edge>>,
    diags: Vec<Diagnostic>,
    /// Where absolute includes are read from (`switchback parse` only).
    outside: Option<&'a dyn OutsideFiles>,
    /// See [`ParseOptions::bundle_prefix`].
    prefix: Option<&'a str>,
    /// Files read through `outside` or taken from `image`, keyed by absolute path, until they
    /// are parsed.
    extra: HashMap<String, Vec<u8>>,
    /// See [`ParseOptions::config_root`].
    config_root: Option<&'a ConfigRoot>,
    /// See [`ParseOptions::image`].
    image: Option<&'a ImageFiles>,
    /// See [`ParseOptions::pod_files`].
    pod_files: bool,
}

pub(super) fn parse_bundle<'a>(
    files: &'a BTreeMap<String, Vec<u8>>,
    entry: &str,
    options: &ParseOptions<'a>,
) -> (Config, Vec<Diagnostic>) {
    let Some(entry_src) = files.get(entry) else {
        let message = format!("entry file \"{entry}\" is not in the bundle");
        return (
            Config::default(),
            vec![Diagnostic::error("SB002", entry, 0, 0, message)],
        );
    };
    let mut root: Vec<&str> = entry.split('/').filter(|c| !c.is_empty()).collect();
    root.pop();
    let mut r = Resolver {
        files,
        root,
        order: vec![entry.to_string()],
        index: HashMap::from([(entry.to_string(), 0)]),
        cache: HashMap::new(),
        edges: Vec::new(),
        diags: Vec::new(),
        outside: options.outside,
        prefix: options.bundle_prefix,
        extra: HashMap::new(),
        config_root: options.config_root,
        image: options.image,
        pod_files: options.pod_files,
    };
    let mut parsed = Vec::new();
    while parsed.len() < r.order.len() {
        let i = parsed.len();
        let path = r.order[i].clone();
        let read_outside;
        let src = if i == 0 {
            entry_src.as_slice()
        } else if let Some(bytes) = files.get(&path) {
            bytes.as_slice()
        } else {
            read_outside = r.extra.remove(&path).unwrap_or_default();
            read_outside.as_slice()
        };
        let (mut directives, error) = parse_file_with(&path, src, options.comments);
        let ok = error.is_none();
        r.diags.extend(error);
        r.edges.push(Vec::new());
        if !options.single_file {
            r.walk(i, &path, &mut directives);
        }
        parsed.push(ParsedFile {
            path,
            directives,
            ok,
        });
    }
    r.find_cycles();
    r.bound_expansions();
    let mut diags = r.diags;
    diagnostic::sort(&mut diags);
    (Config { files: parsed }, diags)
}

impl Resolver<'_> {
    /// Resolves the includes of `directives` (in document order, blocks after their directive) and
    /// queues newly reached files.
    fn walk(&mut self, file: usize, path: &str, directives: &mut [Directive]) {
        for dir in directives {
            if dir.name == "include" && dir.args.len() == 1 && dir.block.is_none() {
                let arg = &dir.args[0];
                match self.resolve(&arg.value) {
                    Ok(paths) => {
                        for p in paths {
                            let next = self.order.len();
                            let to = *self.index.entry(p.clone()).or_insert(next);
                            if to == next {
                                self.order.push(p);
                            }
                            dir.includes.push(to);
                            self.edges[file].push(Edge {
                                to,
                                arg: arg.value.clone(),
                                span: arg.span,
                            });
                        }
                    }
                    Err(problem) => {
                        let diag = self.report(problem, path, &arg.value, arg.span);
                        self.diags.push(diag);
                    }
                }
            }
            if let Some(block) = dir.block.as_mut() {
                self.walk(file, path, block);
            }
        }
    }

    /// The files an include argument names, sorted as glob(3) sorts them: bundle paths, or
    /// absolute paths for the image's files and for files read through `outside`.
    fn resolve(&mut self, arg: &str) -> Result<Vec<String>, Problem> {
        let below_root;
        let rel = if arg.starts_with('/') {
            match self.config_root.and_then(|r| r.relative(arg)) {
                Some(rel) => {
                    below_root = rel;
                    below_root.as_str()
                }
                None => {
                    return match self.outside {
                        Some(outside) => self.resolve_outside(outside, arg),
                        None => Err(Problem::Outside),
                    };
                }
            }
        } else {
            arg
        };
        match self.resolve_in_bundle(rel) {
            Err(problem @ (Problem::Missing | Problem::NoMatch)) => {
                self.resolve_beyond(rel, problem)
            }
            result => result,
        }
    }

    /// The bundle files a relative include names.
    fn resolve_in_bundle(&mut self, rel: &str) -> Result<Vec<String>, Problem> {
        let pattern = bundle_path(&self.root, rel).ok_or(Problem::Outside)?;
        if let Some(hit) = self.cache.get(&pattern) {
            return hit.clone();
        }
        let result = if has_magic(rel) {
            let matchers: Vec<Component> = pattern.split('/').map(Component::new).collect();
            let hits: Vec<String> = self
                .files
                .keys()
                .filter(|k| matches_all(&matchers, k))
                .cloned()
                .collect();
            if hits.is_empty() {
                Err(Problem::NoMatch)
            } else {
                Ok(hits)
            }
        } else if self.files.contains_key(&pattern) {
            Ok(vec![pattern.clone()])
        } else {
            Err(Problem::Missing)
        };
        self.cache.insert(pattern, result.clone());
        result
    }

    /// An include below the config root that the bundle cannot satisfy: the image's file (listed
    /// under its absolute path), or in the pod the pod's own (not followed). A glob is the
    /// image's only when the bundle lacks the directory it lists.
    fn resolve_beyond(&mut self, rel: &str, problem: Problem) -> Result<Vec<String>, Problem> {
        let Some(root) = self.config_root else {
            return Err(problem);
        };
        let Some(under_root) = root.relative(&root.join(rel)) else {
            return Err(problem);
        };
        let magic = has_magic(&under_root);
        if magic {
            let in_bundle = bundle_path(&self.root, &glob_base(rel))
                .is_some_and(|dir| bundle_has_dir(self.files, &dir));
            if in_bundle || !is_image_glob(&under_root) {
                return Err(problem);
            }
        }
        if self.pod_files {
            return Ok(Vec::new());
        }
        let Some(image) = self.image else {
            return Err(problem);
        };
        let hits: Vec<&String> = if magic {
            let matchers: Vec<Component> = under_root.split('/').map(Component::new).collect();
            image
                .files
                .keys()
                .filter(|k| matches_all(&matchers, k))
                .collect()
        } else {
            image
                .files
                .get_key_value(&under_root)
                .map(|(k, _)| k)
                .into_iter()
                .collect()
        };
        if hits.is_empty() {
            return Err(problem);
        }
        let mut out = Vec::new();
        for key in hits {
            let path = root.join(key);
            if !self.index.contains_key(&path) {
                let bytes = image.files.get(key).cloned().unwrap_or_default();
                self.extra.insert(path.clone(), bytes);
            }
            out.push(path);
        }
        Ok(out)
    }

    /// An absolute include read through `outside`, as crossplane reads it: the path as written
    /// (not normalized) names the file; a glob lists the file system, sorted.
    fn resolve_outside(
        &mut self,
        outside: &dyn OutsideFiles,
        arg: &str,
    ) -> Result<Vec<String>, Problem> {
        if let Some(rest) = self.prefix.and_then(|p| arg.strip_prefix(p)) {
            // A file of the bundle; anything else there (a directory, say) is read as crossplane
            // reads it, so the error says what the file system says.
            if let Ok(paths) = self.resolve(rest) {
                return Ok(paths);
            }
        }
        if let Some(hit) = self.cache.get(arg) {
            return hit.clone();
        }
        let result = if has_magic(arg) {
            let hits = outside::glob(outside, arg, &mut self.extra);
            if hits.is_empty() {
                Err(Problem::NoMatch)
            } else {
                Ok(hits)
            }
        } else {
            match outside.read(arg) {
                Ok(bytes) => {
                    self.extra.insert(arg.to_string(), bytes);
                    Ok(vec![arg.to_string()])
                }
                Err(why) => Err(Problem::Unreadable(why)),
            }
        };
        self.cache.insert(arg.to_string(), result.clone());
        result
    }

    /// Reports every include that closes a cycle (an edge back to a file on the current path).
    fn find_cycles(&mut self) {
        let n = self.order.len();
        // 0 = not seen, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; n];
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        state[0] = 1;
        while let Some(&(node, next)) = stack.last() {
            let Some(edge) = self.edges[node].get(next) else {
                state[node] = 2;
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            match state[edge.to] {
                0 => {
                    state[edge.to] = 1;
                    stack.push((edge.to, 0));
                }
                1 => {
                    let from = stack.iter().position(|&(f, _)| f == edge.to).unwrap_or(0);
                    let mut chain: Vec<&str> = stack[from..]
                        .iter()
                        .map(|&(f, _)| self.order[f].as_str())
                        .collect();
                    chain.push(&self.order[edge.to]);
                    let message = format!(
                        "{INCLUDE_CYCLE}: include \"{}\" comes back to \"{}\" ({}); nginx would include it forever",
                        edge.arg,
                        self.order[edge.to],
                        chain.join(" -> ")
                    );
                    let span = edge.span;
                    let path = self.order[node].clone();
                    self.diags.push(Diagnostic::error(
                        "SB002", path, span.line, span.col, message,
                    ));
                }
                _ => {}
            }
        }
    }
}

impl Resolver<'_> {
    /// Counts the file reads nginx would make following the includes (a file is read again at
    /// every include of it), depth-first in nginx's order, and reports the include at which the
    /// count passes [`MAX_INCLUDE_EXPANSIONS`] or the nesting passes [`MAX_INCLUDE_DEPTH`]. Each step follows one include edge, so the work is
    /// bounded by the limit whatever the bundle. Edges that close a cycle are already reported
    /// and are not followed.
    fn bound_expansions(&mut self) {
        let mut on_path = vec![false; self.order.len()];
        on_path[0] = true;
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        let mut reads = 0usize;
        while let Some(&(node, next)) = stack.last() {
            let Some(edge) = self.edges[node].get(next) else {
                on_path[node] = false;
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            if on_path[edge.to] {
                continue;
            }
            if stack.len() > MAX_INCLUDE_DEPTH {
                let message = format!(
                    "include \"{}\" nests includes deeper than {MAX_INCLUDE_DEPTH} levels ({} \
                     includes {} through a chain of {} files); flatten the chain",
                    edge.arg,
                    self.order[0],
                    self.order[edge.to],
                    stack.len()
                );
                let (line, col) = (edge.span.line, edge.span.col);
                let path = self.order[node].clone();
                self.diags
                    .push(Diagnostic::error("SB002", path, line, col, message));
                return;
            }
            reads += 1;
            if reads > MAX_INCLUDE_EXPANSIONS {
                let message = format!(
                    "include \"{}\" takes the bundle's includes past {MAX_INCLUDE_EXPANSIONS} \
                     file reads (nginx reads a file again at every include of it, so includes of \
                     globs whose files include globs multiply); include each file from one place",
                    edge.arg
                );
                let (line, col) = (edge.span.line, edge.span.col);
                let path = self.order[node].clone();
                self.diags
                    .push(Diagnostic::error("SB002", path, line, col, message));
                return;
            }
            on_path[edge.to] = true;
            stack.push((edge.to, 0));
        }
    }
}

impl Resolver<'_> {
    /// The diagnostic for an include that names no file.
    fn report(&self, problem: Problem, path: &str, arg: &str, span: Span) -> Diagnostic {
        let (line, col) = (span.line, span.col);
        let image = match self.image {
            Some(image) if !image.source.is_empty() => {
                format!(" nor among the image's files (from {})", image.source)
            }
            _ => String::new(),
        };
        match problem {
            Problem::Outside => {
                let message = match self.config_root {
                    Some(root) if arg.starts_with('/') => format!(
                        "include \"{arg}\" is outside the config root {root}: the bundle stands \
                         for {root}, so only files below it (the bundle's, or the image's) can be \
                         included"
                    ),
                    _ => format!("include \"{arg}\" leaves the bundle"),
                };
                Diagnostic::error("SB003", path, line, col, message)
            }
            Problem::Missing => Diagnostic::error(
                "SB002",
                path,
                line,
                col,
                format!("include \"{arg}\" matches no file in the bundle{image}"),
            ),
            Problem::Unreadable(why) => Diagnostic::error(
                "SB002",
                path,
                line,
                col,
                format!("include \"{arg}\" cannot be read: {why}"),
            ),
            Problem::NoMatch => Diagnostic::warning(
                "SB002",
                path,
                line,
                col,
                format!("include \"{arg}\" matches no file in the bundle{image}"),
            ),
        }
    }
}

/// nginx (and crossplane) glob an include only when it has one of these characters.
pub(super) fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// One component of a path pattern.
pub(super) enum Component {
    Literal(String),
    /// A glob component; `dot` when it starts with `.` and so may match hidden names.
    Glob {
        matcher: Option<GlobMatcher>,
        dot: bool,
    },
}

impl Component {
    pub(super) fn new(part: &str) -> Self {
        if !has_magic(part) {
            return Component::Literal(part.to_string());
        }
        let matcher = GlobBuilder::new(&glob3_syntax(part))
            .literal_separator(true)
            .backslash_escape(true)
            .allow_unclosed_class(true)
            .build()
            .ok()
            .map(|g| g.compile_matcher());
        Component::Glob {
            matcher,
            dot: part.starts_with('.'),
        }
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        match self {
            Component::Literal(l) => l == name,
            Component::Glob { matcher, dot } => {
                (*dot || !name.starts_with('.'))
                    && matcher.as_ref().is_some_and(|m| m.is_match(name))
            }
        }
    }
}

fn matches_all(components: &[Component], path: &str) -> bool {
    let mut names = path.split('/');
    components
        .iter()
        .all(|c| names.next().is_some_and(|n| c.matches(n)))
        && names.next().is_none()
}

/// Rewrites a glob(3) pattern component for globset: braces are literal in glob(3) (no
/// `GLOB_BRACE`), and a run of `*` is one `*`.
fn glob3_syntax(part: &str) -> String {
    let mut out = String::with_capacity(part.len() + 4);
    let mut in_class = false;
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` (after an optional `!`) right after `[` is a member, not the end.
                if chars.peek() == Some(&'!') {
                    out.push('!');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push(']');
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '{' | '}' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            '*' if !in_class => {
                out.push('*');
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}
