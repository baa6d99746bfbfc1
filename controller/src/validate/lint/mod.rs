//! Lint rules: the mistakes behind proxy outages that can be known without running nginx, each with
//! a stable id and a page under `docs/rules/`. Pure: a parsed bundle in, diagnostics out.

mod address;
pub mod code;
mod contexts;
pub mod docs;
mod headers;
mod index;
mod injection;
mod pass_uri;
mod placement;
mod resolve;
pub mod rules;
mod servers;
mod upstreams;
mod vars;

use super::ast::Config;
use super::diagnostic::{self, Diagnostic};

pub use rules::{RULES, RuleInfo};

/// Runs every rule over a parsed bundle; findings come back sorted by file and position.
pub fn lint(config: &Config) -> Vec<Diagnostic> {
    let index = index::Index::new(config);
    let mut out = Vec::new();
    if let Some((file, dir)) = index.overflow() {
        out.push(Diagnostic::error(
            "SB002",
            file,
            dir.span.line,
            dir.span.col,
            format!(
                "includes expand to more than {} directives (is a file included over and over?); not linted",
                index::MAX_ITEMS
            ),
        ));
        return out;
    }
    let upstreams = upstreams::upstreams(&index);
    upstreams::check(&index, &upstreams, &mut out);
    servers::check(&index, &mut out);
    placement::check(&index, &mut out);
    headers::check(&index, &mut out);
    let assignments = vars::Assignments::new(&index);
    injection::check(&index, &assignments, &mut out);
    resolve::check(&index, &assignments, &upstreams, &mut out);
    pass_uri::check(&index, &mut out);
    diagnostic::sort(&mut out);
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_outage;
#[cfg(test)]
mod tests_security;
