//! The catalogue of rule ids. Ids are stable (they appear in CI logs, dashboards and suppressions),
//! so they are listed once here; a test checks every id has its page in `docs/rules/`.

use crate::validate::diagnostic::Severity;

/// Which gate reports a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Rendering the templates.
    Render,
    /// Reading the nginx grammar and resolving includes.
    Parse,
    /// Static rules over the parse tree.
    Lint,
    /// The real `nginx -t` in a sandbox.
    Nginx,
}

/// One rule: id, short name, default severity and a one-line summary.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo {
    /// Stable id, e.g. `SB101`.
    pub id: &'static str,
    /// Short kebab-case name.
    pub name: &'static str,
    /// Which gate reports it.
    pub gate: Gate,
    /// Severity it is reported with by default (`--warnings-as-errors` makes warnings block).
    pub severity: Severity,
    /// What it catches.
    pub summary: &'static str,
}

const fn rule(
    id: &'static str,
    name: &'static str,
    gate: Gate,
    severity: Severity,
    summary: &'static str,
) -> RuleInfo {
    RuleInfo {
        id,
        name,
        gate,
        severity,
        summary,
    }
}

use Gate::*;
use Severity::{Error as E, Warning as W};

/// Every rule, in id order.
pub const RULES: &[RuleInfo] = &[
    rule(
        "SB001",
        "syntax",
        Parse,
        E,
        "the file is not valid nginx syntax",
    ),
    rule(
        "SB002",
        "include-matches-nothing",
        Parse,
        E,
        "an include names a file that is not in the bundle (a glob matching nothing is a warning)",
    ),
    rule(
        "SB003",
        "include-outside-bundle",
        Parse,
        E,
        "an include path is outside the config root (/etc/nginx) or climbs out of the bundle",
    ),
    rule(
        "SB010",
        "render",
        Render,
        E,
        "a template, the values or a link could not be rendered",
    ),
    rule(
        "SB101",
        "undefined-upstream",
        Lint,
        E,
        "a *_pass directive names an upstream that is not defined, or gives a port to one",
    ),
    rule(
        "SB102",
        "empty-upstream",
        Lint,
        E,
        "an upstream block has no server lines",
    ),
    rule(
        "SB103",
        "bad-upstream-server",
        Lint,
        E,
        "an upstream server line has a malformed address, a port out of range or a bad parameter",
    ),
    rule(
        "SB104",
        "no-usable-upstream-server",
        Lint,
        E,
        "every server of an upstream is marked down or backup",
    ),
    rule(
        "SB105",
        "duplicate-server",
        Lint,
        E,
        "two server blocks claim the same listen address and server_name, or default_server",
    ),
    rule(
        "SB106",
        "directive-not-allowed-here",
        Lint,
        E,
        "a directive is used in a context where nginx rejects it",
    ),
    rule(
        "SB107",
        "unknown-directive",
        Lint,
        W,
        "a directive Switchback does not know (nginx -t decides)",
    ),
    rule(
        "SB108",
        "bad-arguments",
        Lint,
        E,
        "a directive has the wrong number of arguments or a block where it takes none",
    ),
    rule(
        "SB109",
        "loads-code",
        Lint,
        E,
        "ssl_engine, an engine: value or a load_module that can reach the bundle: nginx would load and run a shared object",
    ),
    rule(
        "SB110",
        "alias-traversal",
        Lint,
        E,
        "a prefix location without a trailing slash uses an alias with one: /img../x reads outside the alias",
    ),
    rule(
        "SB111",
        "add-header-dropped",
        Lint,
        W,
        "a level with its own add_header drops the enclosing level's security headers",
    ),
    rule(
        "SB112",
        "host-from-client",
        Lint,
        W,
        "proxy_set_header Host or a redirect uses $http_host or $arg_* instead of $host",
    ),
    rule(
        "SB113",
        "ssrf-proxy-pass",
        Lint,
        W,
        "proxy_pass takes its scheme or host from a client-controlled variable (server-side request forgery)",
    ),
    rule(
        "SB114",
        "header-splitting",
        Lint,
        W,
        "$uri, $document_uri or a URI capture that can hold CR/LF is written into a header or redirect",
    ),
    rule(
        "SB115",
        "valid-referers-none",
        Lint,
        W,
        "valid_referers none accepts any request without a Referer",
    ),
    rule(
        "SB116",
        "unanchored-origin-regex",
        Lint,
        W,
        "an $http_origin/$http_referer regex that also matches other sites (no ^, an unescaped dot, an open end)",
    ),
    rule(
        "SB120",
        "variable-pass-without-resolver",
        Lint,
        W,
        "a *_pass with a variable and no resolver in scope: 502 \"no resolver defined\" at request time",
    ),
    rule(
        "SB121",
        "proxy-pass-uri-not-allowed",
        Lint,
        E,
        "proxy_pass has a URI part in a regex or named location, if or limit_except: nginx refuses it",
    ),
    rule(
        "SB122",
        "proxy-pass-slash-mismatch",
        Lint,
        W,
        "a prefix location and its proxy_pass URI disagree on the trailing slash, so paths are glued or doubled",
    ),
    rule(
        "SB123",
        "host-resolved-once",
        Lint,
        W,
        "a *_pass or upstream server names a host that nginx resolves once at load and never again",
    ),
    rule(
        "SB900",
        "nginx-test-failed",
        Nginx,
        E,
        "the real nginx -t rejected the bundle",
    ),
    rule(
        "SB901",
        "nginx-test-warning",
        Nginx,
        W,
        "the real nginx -t warned about the bundle",
    ),
];

/// Looks a rule up by id.
pub fn find(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}
