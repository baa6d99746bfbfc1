//! The gates in order (DESIGN §3.3): parse, lint, then the real `nginx -t`.
//!
//! The static gates are pure and always run. Lint runs only on a bundle that parsed: rules over a
//! half-read tree report things that are not wrong (an upstream "undefined" because the file that
//! defines it stopped at a syntax error), and a wrong finding at 3 a.m. costs more than a missing one
//! that the syntax error already blocks. `nginx -t` runs only when the static gates found no error:
//! it would only repeat them in nginx's words, and it costs a process.

use serde::Serialize;

use super::ast::Config;
use super::diagnostic::{self, Diagnostic, Severity};
use super::lint::{code, lint};
use super::parser::{ParseOptions, parse_bundle_with};
use super::paths::{ImageFiles, ProxyLayout};
use super::sandbox::{Nginx, SandboxError};
use crate::render::{Bundle, Digest};

/// The entry file nginx is started with unless a rollout names another.
pub const DEFAULT_ENTRY: &str = "nginx.conf";

/// What happened at the `nginx -t` gate, so a report says plainly when the strongest check did not
/// run instead of letting silence read as a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NginxGate {
    /// `nginx -t` ran on the bundle.
    Ran {
        /// `nginx -v` of the binary used.
        version: String,
    },
    /// Not run: the static gates already found errors.
    NotRun,
    /// Not run: no nginx binary was found (or the caller asked not to run it).
    Unavailable,
}

/// The outcome of validating one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The digest of the bundle that was checked.
    pub digest: Digest,
    /// The entry file.
    pub entry: String,
    /// Every finding, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Whether the real nginx checked it.
    pub nginx: NginxGate,
    /// The directory the bundle stood for: absolute paths below it were read from the bundle.
    pub config_root: String,
    /// Files the config reads that the image provides, and where validation took them from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_files: Vec<ImageFileUse>,
}

/// A file of the image that the config includes, so a report says what was checked that is not
/// in git.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageFileUse {
    /// As the config names it, below the config root (`/etc/nginx/mime.types`).
    pub path: String,
    /// Where validation read it (`/etc/nginx, the conf dir of nginx/1.22.1`).
    pub from: String,
}

impl Report {
    /// Number of blocking findings.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    /// Whether the bundle may go to a proxy. Warnings block only when asked, so a team can adopt
    /// the warning rules at its own pace.
    pub fn passed(&self, warnings_as_errors: bool) -> bool {
        self.errors() == 0 && (!warnings_as_errors || self.warnings() == 0)
    }
}

/// Parse and lint without the image's files at hand (an incident report re-reading a bundle
/// validation already judged): the bundle stands for `/etc/nginx`, and an include below it that
/// the bundle lacks is taken as the image's, neither followed nor reported. Returns the parse
/// tree and the findings, sorted.
pub fn check_static(bundle: &Bundle, entry: &str) -> (Config, Vec<Diagnostic>) {
    let root = ProxyLayout::default().config_root;
    let options = ParseOptions {
        config_root: Some(&root),
        pod_files: true,
        ..ParseOptions::default()
    };
    check_static_parsed(bundle, entry, &options)
}

/// Parse and lint: the pure gates, for a proxy laid out as `layout` says (its config root and
/// its image's files). Returns the parse tree (for the sandbox) and the findings, sorted.
pub fn check_static_with(
    bundle: &Bundle,
    entry: &str,
    layout: &ProxyLayout,
) -> (Config, Vec<Diagnostic>) {
    let options = ParseOptions {
        config_root: Some(&layout.config_root),
        image: Some(&layout.image),
        ..ParseOptions::default()
    };
    check_static_parsed(bundle, entry, &options)
}

fn check_static_parsed(
    bundle: &Bundle,
    entry: &str,
    options: &ParseOptions<'_>,
) -> (Config, Vec<Diagnostic>) {
    let (config, mut diagnostics) = parse_bundle_with(bundle.files(), entry, options);
    if !diagnostics.iter().any(Diagnostic::is_error) {
        diagnostics.extend(lint(&config));
    }
    // SB109 even over a half-read tree: a line that loads code is wrong whatever follows it.
    diagnostics.extend(code::check(&config, bundle.files()));
    diagnostic::sort(&mut diagnostics);
    diagnostics.dedup();
    (config, diagnostics)
}

impl ProxyLayout {
    /// This layout, with `nginx`'s packaged files as the image's when it names none: what
    /// validation uses unless the user names a directory of image files.
    pub fn or_packaged(mut self, nginx: Option<&Nginx>) -> ProxyLayout {
        if self.image.files.is_empty()
            && let Some(n) = nginx
        {
            self.image = n.image_files().clone();
        }
        self
    }
}

/// All three gates, with the bundle standing for `/etc/nginx` and the image's files taken from
/// `nginx`'s own configuration directory. `nginx` is `None` when no binary is available (or
/// wanted); the report says so.
pub fn validate(
    bundle: &Bundle,
    entry: &str,
    nginx: Option<&Nginx>,
) -> Result<Report, SandboxError> {
    validate_with(
        bundle,
        entry,
        nginx,
        &ProxyLayout::default().or_packaged(nginx),
    )
}

/// [`validate`] for a proxy laid out as `layout` says.
#[tracing::instrument(skip_all, fields(digest = %bundle.digest().short(), entry, root = %layout.config_root))]
pub fn validate_with(
    bundle: &Bundle,
    entry: &str,
    nginx: Option<&Nginx>,
    layout: &ProxyLayout,
) -> Result<Report, SandboxError> {
    let (config, mut diagnostics) = check_static_with(bundle, entry, layout);
    let gate = if diagnostics.iter().any(Diagnostic::is_error) {
        NginxGate::NotRun
    } else if let Some(nginx) = nginx {
        diagnostics.extend(nginx.test_with(bundle, entry, &config, layout)?);
        diagnostic::sort(&mut diagnostics);
        diagnostics.dedup();
        NginxGate::Ran {
            version: nginx.version().to_string(),
        }
    } else {
        NginxGate::Unavailable
    };
    tracing::debug!(findings = diagnostics.len(), nginx = ?gate, "validated");
    Ok(Report {
        digest: bundle.digest(),
        entry: entry.to_string(),
        diagnostics,
        nginx: gate,
        config_root: layout.config_root.to_string(),
        image_files: image_files_used(&config, &layout.image),
    })
}

/// The parsed files that came from the image (listed under absolute paths).
fn image_files_used(config: &Config, image: &ImageFiles) -> Vec<ImageFileUse> {
    config
        .files
        .iter()
        .filter(|f| f.path.starts_with('/'))
        .map(|f| ImageFileUse {
            path: f.path.clone(),
            from: image.source.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(conf: &str) -> Bundle {
        Bundle::new([("nginx.conf".to_string(), conf.as_bytes().to_vec())].into())
    }

    #[test]
    fn without_the_images_files_an_include_below_the_root_is_left_to_the_image() {
        let b = bundle("events {}\nhttp { include /etc/nginx/mime.types; include /srv/x.conf; }\n");
        let (_, found) = check_static(&b, "nginx.conf");
        let rules: Vec<&str> = found.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["SB003"], "{found:?}");
        let (_, found) = check_static_with(&b, "nginx.conf", &ProxyLayout::default());
        let rules: Vec<&str> = found.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["SB002", "SB003"], "{found:?}");
    }
}
