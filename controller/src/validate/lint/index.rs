//! A flat, context-aware view of a parsed bundle with `include`s inlined where nginx inlines them,
//! so each rule is a simple query ("every `server` line inside an `upstream` of the http context")
//! instead of its own recursive walk that must remember to follow includes.

use crate::validate::ast::{Config, Directive};

/// Where a directive sits, in nginx's own terms (the `NGX_*_CONF` contexts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ctx {
    /// Top level of the main file.
    Main,
    /// Inside `events {}`.
    Events,
    /// Inside `http {}`.
    Http,
    /// Inside `http { server {} }`.
    Server,
    /// Inside a `location {}` (at any depth).
    Location,
    /// Inside `if {}` in a server.
    IfInServer,
    /// Inside `if {}` in a location.
    IfInLocation,
    /// Inside `limit_except {}`.
    LimitExcept,
    /// Inside `http { upstream {} }`.
    Upstream,
    /// Inside `stream {}`.
    Stream,
    /// Inside `stream { server {} }`.
    StreamServer,
    /// Inside `stream { upstream {} }`.
    StreamUpstream,
    /// Inside `mail {}`.
    Mail,
    /// Inside `mail { server {} }`.
    MailServer,
    /// Inside a block whose body is data, not directives (`map`, `geo`, `types`, `split_clients`,
    /// `charset_map`, `match`, Lua), or a block this table does not know: not checked.
    Opaque,
}

impl Ctx {
    /// The name nginx uses in "directive is not allowed here" terms, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Ctx::Main => "the main context",
            Ctx::Events => "events",
            Ctx::Http => "http",
            Ctx::Server => "server (http)",
            Ctx::Location => "location",
            Ctx::IfInServer => "if (in server)",
            Ctx::IfInLocation => "if (in location)",
            Ctx::LimitExcept => "limit_except",
            Ctx::Upstream => "upstream (http)",
            Ctx::Stream => "stream",
            Ctx::StreamServer => "server (stream)",
            Ctx::StreamUpstream => "upstream (stream)",
            Ctx::Mail => "mail",
            Ctx::MailServer => "server (mail)",
            Ctx::Opaque => "a data block",
        }
    }

    /// The context of the children of a block directive `name` opened in this context.
    fn child(self, name: &str) -> Ctx {
        match (self, name) {
            (Ctx::Main, "events") => Ctx::Events,
            (Ctx::Main, "http") => Ctx::Http,
            (Ctx::Main, "stream") => Ctx::Stream,
            (Ctx::Main, "mail") => Ctx::Mail,
            (Ctx::Http, "server") => Ctx::Server,
            (Ctx::Http, "upstream") => Ctx::Upstream,
            (Ctx::Stream, "server") => Ctx::StreamServer,
            (Ctx::Stream, "upstream") => Ctx::StreamUpstream,
            (Ctx::Mail, "server") => Ctx::MailServer,
            (Ctx::Server | Ctx::Location, "location") => Ctx::Location,
            (Ctx::Server, "if") => Ctx::IfInServer,
            (Ctx::Location, "if") => Ctx::IfInLocation,
            (Ctx::Location, "limit_except") => Ctx::LimitExcept,
            _ => Ctx::Opaque,
        }
    }
}

/// One directive with its file and context.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Bundle path of the file the directive is written in.
    pub file: &'a str,
    /// The directive.
    pub dir: &'a Directive,
    /// The context it is in.
    pub ctx: Ctx,
}

/// Every directive of a bundle in document order, includes inlined.
pub struct Index<'a> {
    items: Vec<Item<'a>>,
    /// The indexes of every item's direct children, grouped by parent in item order: the
    /// children of item `p` are `kids[kid_start[p]..kid_start[p + 1]]` (so listing a block's
    /// children costs their number, not a scan of every later item: 50,000 included `server`
    /// blocks made that scan quadratic, a minute of lint). Two vectors for the whole bundle
    /// instead of one per block.
    kids: Vec<usize>,
    /// Where each item's children start in `kids`, plus one end mark.
    kid_start: Vec<usize>,
    /// Per item, the index of the block it is directly in (`None` at the top of the main file), so
    /// a rule can ask "which location, server and http is this in" without a walk from the top.
    parents: Vec<Option<usize>>,
    /// The include that pushed the expansion past [`MAX_ITEMS`], when one did.
    overflow: Option<(&'a str, &'a Directive)>,
}

/// Most directives the inlined view may hold. A file included twice is inlined twice, as nginx
/// does, so a chain of files each including the next twice grows exponentially; past this the
/// bundle is refused instead of linted for minutes.
pub const MAX_ITEMS: usize = 200_000;

/// Include nesting deeper than this is not followed (the parser already refuses cycles; this only
/// bounds the work on hostile input).
const MAX_INCLUDE_DEPTH: usize = 32;

impl<'a> Index<'a> {
    /// Builds the index from the entry file (`config.files[0]`).
    pub fn new(config: &'a Config) -> Self {
        // Every directive of the bundle once is the usual size of the inlined view.
        let estimate = config
            .files
            .iter()
            .map(|f| count(&f.directives))
            .sum::<usize>()
            .min(MAX_ITEMS);
        let mut index = Index {
            items: Vec::with_capacity(estimate),
            kids: Vec::new(),
            kid_start: Vec::new(),
            parents: Vec::with_capacity(estimate),
            overflow: None,
        };
        if let Some(entry) = config.files.first() {
            index.add(config, &entry.path, &entry.directives, Ctx::Main, None, 0);
        }
        index.link_children();
        index
    }

    /// Fills `kids` and `kid_start` from `parents` (a counting sort by parent, so each parent's
    /// children stay in document order).
    fn link_children(&mut self) {
        let n = self.items.len();
        let mut start = vec![0usize; n + 1];
        for &p in self.parents.iter().flatten() {
            if let Some(count) = start.get_mut(p + 1) {
                *count += 1;
            }
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut kids = vec![0usize; start[n]];
        for (i, parent) in self.parents.iter().enumerate() {
            let Some(slot) = parent.and_then(|p| next.get_mut(p)) else {
                continue;
            };
            if let Some(kid) = kids.get_mut(*slot) {
                *kid = i;
            }
            *slot += 1;
        }
        self.kids = kids;
        self.kid_start = start;
    }

    fn add(
        &mut self,
        config: &'a Config,
        file: &'a str,
        directives: &'a [Directive],
        ctx: Ctx,
        parent: Option<usize>,
        depth: usize,
    ) {
        for dir in directives {
            let me = self.items.len();
            self.items.push(Item { file, dir, ctx });
            self.parents.push(parent);
            if self.items.len() >= MAX_ITEMS {
                self.overflow.get_or_insert((file, dir));
                return;
            }
            if dir.name == "include" && depth < MAX_INCLUDE_DEPTH {
                for &i in &dir.includes {
                    if let Some(f) = config.files.get(i) {
                        self.add(config, &f.path, &f.directives, ctx, parent, depth + 1);
                    }
                }
            }
            if let Some(block) = &dir.block {
                let inner = if ctx == Ctx::Opaque {
                    Ctx::Opaque
                } else {
                    ctx.child(&dir.name)
                };
                self.add(config, file, block, inner, Some(me), depth);
            }
        }
    }

    /// Where the expansion stopped at [`MAX_ITEMS`]: the file and directive, so it can be reported.
    pub fn overflow(&self) -> Option<(&'a str, &'a Directive)> {
        self.overflow
    }

    /// All items in document order.
    pub fn items(&self) -> &[Item<'a>] {
        &self.items
    }

    /// Items named `name` in context `ctx`.
    pub fn named(&self, name: &'a str, ctx: Ctx) -> impl Iterator<Item = (usize, &Item<'a>)> {
        self.items
            .iter()
            .enumerate()
            .filter(move |(_, it)| it.ctx == ctx && it.dir.name == name)
    }

    /// The item at `i`.
    pub fn get(&self, i: usize) -> Option<&Item<'a>> {
        self.items.get(i)
    }

    /// The enclosing blocks of item `i`, innermost first, each with its index (bounded by the
    /// nesting depth: parents always come before their children).
    pub fn ancestors(&self, i: usize) -> impl Iterator<Item = (usize, &Item<'a>)> {
        let mut next = self.parents.get(i).copied().flatten();
        std::iter::from_fn(move || {
            let p = next?;
            next = self.parents.get(p).copied().flatten().filter(|&q| q < p);
            self.items.get(p).map(|it| (p, it))
        })
    }

    /// Indexes of the direct children of the block item `parent`.
    pub fn child_ids(&self, parent: usize) -> &[usize] {
        match self.kid_start.get(parent..).unwrap_or(&[]) {
            [from, to, ..] => self.kids.get(*from..*to).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Direct children of the block item `parent` (includes inlined), in order.
    pub fn children(&self, parent: usize) -> impl Iterator<Item = &Item<'a>> {
        self.child_ids(parent)
            .iter()
            .filter_map(|&i| self.items.get(i))
    }
}

/// How many directives a tree holds, blocks included (not following includes).
fn count(directives: &[Directive]) -> usize {
    directives
        .iter()
        .map(|d| 1 + d.block.as_deref().map_or(0, count))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::validate::parser::parse_bundle;

    fn names<'a>(index: &Index<'a>, ids: &[usize]) -> Vec<&'a str> {
        ids.iter()
            .filter_map(|&i| index.get(i))
            .map(|it| it.dir.name.as_str())
            .collect()
    }

    #[test]
    fn children_are_listed_in_document_order_with_includes_inlined() {
        let files: BTreeMap<String, Vec<u8>> = [
            (
                "nginx.conf",
                "events {}\nhttp {\n a 1;\n include x.conf;\n server { b 1; location / { c 1; } d 1; }\n e 1;\n}\n",
            ),
            ("x.conf", "f 1;\nupstream u { server 127.0.0.1:1; }\n"),
        ]
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
        let (config, _) = parse_bundle(&files, "nginx.conf");
        let index = Index::new(&config);
        let Some((http, _)) = index.named("http", Ctx::Main).next() else {
            panic!("no http block in {:?}", names(&index, index.child_ids(0)));
        };
        assert_eq!(
            names(&index, index.child_ids(http)),
            ["a", "include", "f", "upstream", "server", "e"]
        );
        let Some((server, _)) = index.named("server", Ctx::Http).next() else {
            panic!("no server block");
        };
        assert_eq!(
            names(&index, index.child_ids(server)),
            ["b", "location", "d"]
        );
        let Some((location, _)) = index.named("location", Ctx::Server).next() else {
            panic!("no location block");
        };
        assert_eq!(names(&index, index.child_ids(location)), ["c"]);
        assert_eq!(
            index
                .ancestors(location + 1)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            [location, server, http]
        );
        // A directive without a block, and an index past the end, have no children.
        assert!(index.child_ids(0).is_empty());
        assert!(index.child_ids(index.items().len()).is_empty());
        assert!(index.child_ids(usize::MAX).is_empty());
    }
}
