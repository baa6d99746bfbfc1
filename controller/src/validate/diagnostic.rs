//! The one shape every finding takes, whichever gate found it, so people and tools read parse
//! errors, lint findings and `nginx -t` failures the same way: `path:line:col: error[SB101]: message`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much a finding matters. Errors block a bundle; warnings are reported (and block only when
/// the caller asks for warnings to be treated as errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported, not blocking by default.
    Warning,
    /// The bundle must never reach a proxy.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A finding about one place in a bundle.
///
/// `line` and `col` are 1-based; `col` is 0 when only the line is known (nginx itself reports only
/// lines). `rule` is a stable id with a page under `docs/rules/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Bundle-relative path of the file.
    pub path: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub col: u32,
    /// Error or warning.
    pub severity: Severity,
    /// Stable rule id, e.g. `SB101`.
    pub rule: String,
    /// What is wrong and, where it can be known, what to do.
    pub message: String,
}

impl Diagnostic {
    /// An error finding.
    pub fn error(
        rule: &str,
        path: impl Into<String>,
        line: u32,
        col: u32,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            path: path.into(),
            line,
            col,
            severity: Severity::Error,
            rule: rule.to_string(),
            message: message.into(),
        }
    }

    /// A warning finding.
    pub fn warning(
        rule: &str,
        path: impl Into<String>,
        line: u32,
        col: u32,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(rule, path, line, col, message)
        }
    }

    /// Whether this finding blocks a bundle.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}[{}]: {}",
            self.path, self.line, self.col, self.severity, self.rule, self.message
        )
    }
}

/// Sorts findings by file, position, then rule, so output is stable across runs.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.path, a.line, a.col, &a.rule, &a.message)
            .cmp(&(&b.path, b.line, b.col, &b.rule, &b.message))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_in_compiler_style() {
        let d = Diagnostic::error("SB101", "conf.d/app.conf", 12, 9, "no upstream `app`");
        assert_eq!(
            d.to_string(),
            "conf.d/app.conf:12:9: error[SB101]: no upstream `app`"
        );
    }
}
