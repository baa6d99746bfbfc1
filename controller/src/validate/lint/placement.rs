//! SB106 (directive not allowed here), SB107 (unknown directive) and SB108 (wrong arguments or
//! block): what nginx would refuse while reading the file, found before any nginx runs, with the
//! column and the contexts where the directive would have been accepted.

use super::contexts::{self, MANY};
use super::index::{Ctx, Index};
use crate::validate::diagnostic::Diagnostic;

/// Runs SB106-SB108.
pub fn check(index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    for item in index.items() {
        if item.ctx == Ctx::Opaque {
            continue;
        }
        let dir = item.dir;
        let (line, col) = (dir.span.line, dir.span.col);
        let Some(spec) = contexts::spec(&dir.name, item.ctx) else {
            out.push(Diagnostic::warning(
                "SB107",
                item.file,
                line,
                col,
                format!(
                    "unknown directive \"{}\": not one Switchback knows; nginx -t decides \
                     whether your nginx has a module for it",
                    dir.name
                ),
            ));
            continue;
        };
        if !spec.allowed_in(item.ctx) {
            out.push(Diagnostic::error(
                "SB106",
                item.file,
                line,
                col,
                format!(
                    "\"{}\" directive is not allowed in {}; it is allowed in: {}",
                    dir.name,
                    item.ctx.describe(),
                    spec.allowed().join(", ")
                ),
            ));
            continue;
        }
        // nginx checks the block shape before the arguments and stops at the first error, so a
        // directive with the wrong shape gets that one finding.
        let shape = match (spec.block, dir.block.is_some()) {
            (true, false) => Some(format!("directive \"{}\" has no opening \"{{\"", dir.name)),
            (false, true) => Some(format!(
                "directive \"{}\" takes no block: it ends with \";\"",
                dir.name
            )),
            _ => None,
        };
        if let Some(message) = shape {
            out.push(Diagnostic::error("SB108", item.file, line, col, message));
            continue;
        }
        let n = dir.args.len();
        if n < usize::from(spec.min) || (spec.max != MANY && n > usize::from(spec.max)) {
            out.push(Diagnostic::error(
                "SB108",
                item.file,
                line,
                col,
                format!(
                    "invalid number of arguments in \"{}\" directive: it takes {}, found {n}",
                    dir.name,
                    spec.describe_args()
                ),
            ));
        }
    }
}
