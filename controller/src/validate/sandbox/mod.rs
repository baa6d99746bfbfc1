//! `nginx -t` with the real nginx binary in a throw-away prefix: the last gate, because only nginx
//! itself knows every module's rules (DESIGN §3.3). It must give the same answer on any machine,
//! so the sandbox copy of a bundle is rewritten first (see `docs/validation-sandbox.md`):
//!
//! - host names nginx would resolve while reading the config (upstream `server`, literal hosts in
//!   `*_pass`, `resolver`, `set_real_ip_from`, syslog targets…) become `127.0.0.1`, ports kept:
//!   the validating machine's DNS is never consulted;
//! - every `listen` address becomes a unix socket inside the sandbox: no port is bound;
//! - every file nginx writes at `-t` time (pid, logs, temp and cache directories, including the
//!   compiled-in defaults) is pointed inside the sandbox, and includes that leave the bundle point
//!   at nothing;
//! - TLS files the bundle names but does not carry get stand-ins and are reported (SB901).
//!
//! Tokens are rewritten in place by their byte spans with their newlines kept, so the lines nginx
//! reports are the bundle's lines.

mod address;
mod directive_kinds;
pub mod edit;
mod files;
pub mod image_files;
mod output;
mod placeholder;
mod process;
pub use process::BuildInfo;
mod rewrite;
#[cfg(test)]
mod tests_rewrite;

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::confine::{self, ConfineError, LimitHit, Limits};
use crate::render::Bundle;
use crate::validate::ast::Config;
use crate::validate::diagnostic::{self, Diagnostic};
use crate::validate::lint::code;
use crate::validate::paths::{ImageFiles, ProxyLayout};

pub(crate) use directive_kinds::is_opaque;
pub use directive_kinds::placeholder_kind;
pub use output::{RULE_ERROR, RULE_WARNING};

/// Environment variable naming the nginx binary when none is given explicitly.
pub const NGINX_ENV: &str = "SWITCHBACK_NGINX";

/// Where Debian and most distributions install nginx, tried after `PATH`.
const FALLBACK_PATH: &str = "/usr/sbin/nginx";

/// Unix socket paths longer than this do not fit `sun_path` (108 bytes with the terminator).
const MAX_SOCKET_PATH: usize = 100;

/// Why nginx could not be found, run, or given a sandbox. A bundle nginx rejects is not an error
/// here: that comes back as diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The binary could not be started.
    #[error("cannot run nginx at {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The binary ran but `-V` did not answer like nginx.
    #[error("{path} does not look like nginx: `-V` gave {status}: {output}")]
    NotNginx {
        /// The binary.
        path: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
    /// Preparing the sandbox directory failed.
    #[error("cannot prepare the nginx sandbox at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A bundle path that cannot be written inside the sandbox (absolute, `..`, empty part).
    #[error("bundle path {0:?} is not a plain relative path")]
    BadPath(String),
    /// The entry file is not in the bundle.
    #[error("entry {0:?} is not a file of the bundle")]
    NoEntry(String),
    /// The parse tree does not describe this bundle, so it cannot guide the rewrite; running
    /// nginx on the unrewritten files could resolve names and write outside the sandbox.
    #[error("the parsed config does not match the bundle: {0}")]
    ConfigMismatch(String),
    /// A file of the bundle has a syntax error. nginx would stop there too, but the rewrite only
    /// covers what the parser read, so nginx is not run on text nobody has looked at; the parser's
    /// SB001 already rejects the bundle.
    #[error("{0} has a syntax error (SB001); nginx -t is not run on it")]
    Unparsed(String),
    /// An include leads back to a file that is being included; nginx would recurse until it
    /// crashes, and the parser's SB002 already rejects the bundle.
    #[error("{0} includes itself through an include cycle (SB002); nginx -t is not run on it")]
    IncludeCycle(String),
    /// The sandbox could not be laid out safely.
    #[error("cannot build the sandbox copy: {0}")]
    Plan(String),
    /// nginx did not finish in time and was killed.
    #[error("nginx -t did not finish within {0:?}")]
    Timeout(Duration),
    /// nginx was stopped by a resource limit other than time.
    #[error("nginx -t was stopped by {0}; a config that needs that much is refused")]
    Limit(LimitHit),
    /// nginx could not be run under its limits (no launcher binary); it is never run without them.
    #[error(transparent)]
    Confine(#[from] ConfineError),
}

/// A usable nginx binary: its path, its version and what its build needs pinned in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nginx {
    path: PathBuf,
    version: String,
    modules: PathBuf,
    temp_paths: Vec<String>,
    limits: Limits,
    report_external: bool,
    image: ImageFiles,
}

impl Nginx {
    /// Finds nginx: `explicit` (an error if it cannot be run), else `$SWITCHBACK_NGINX` (same),
    /// else `nginx` on `PATH`, else `/usr/sbin/nginx`. `Ok(None)` when there is none, so callers
    /// can decide whether running without the nginx gate is acceptable.
    pub fn find(explicit: Option<&Path>) -> Result<Option<Nginx>, SandboxError> {
        locate(
            explicit,
            std::env::var_os(NGINX_ENV),
            std::env::var_os("PATH"),
            Path::new(FALLBACK_PATH),
        )
    }

    /// Uses the binary at `path`, asking it for its version and build options (`nginx -V`).
    pub fn at(path: &Path) -> Result<Nginx, SandboxError> {
        let out = Command::new(path)
            .arg("-V")
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SandboxError::Spawn {
                path: path.to_path_buf(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("nginx version: "))
            .map(str::to_string);
        let (true, Some(version)) = (out.status.success(), version) else {
            return Err(SandboxError::NotNginx {
                path: path.to_path_buf(),
                status: out.status,
                output: text,
            });
        };
        let build = process::BuildInfo::parse(&text);
        let image = image_files::packaged(&build.conf_dir, &version);
        Ok(Nginx {
            path: path.to_path_buf(),
            image,
            version,
            modules: build.modules,
            temp_paths: build.temp_paths,
            limits: Limits::NGINX_TEST,
            report_external: true,
        })
    }

    /// The binary, as found.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `nginx -v` reports, e.g. `nginx/1.22.1`: recorded with every verdict, since another
    /// nginx version can judge the same bundle differently.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The packaged files of this build's configuration directory (`mime.types`,
    /// `fastcgi_params`…): the image files validation uses unless the user names a directory.
    pub fn image_files(&self) -> &ImageFiles {
        &self.image
    }

    /// Bounds each run (default 60 s); a run past it is killed and reported as an error.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.limits.wall = timeout;
        self
    }

    /// The resource limits each run gets (default [`Limits::NGINX_TEST`]); a run stopped by one
    /// is reported as an error.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether TLS files that the bundle names but does not carry are reported as SB901 warnings
    /// (default: yes). They are checked with stand-ins either way; turn this off where such
    /// files are provisioned on the proxies by design and the warnings are only noise.
    pub fn report_external_files(mut self, report: bool) -> Self {
        self.report_external = report;
        self
    }

    /// Runs `nginx -t` on `bundle` with `entry` as the main file, in a fresh temporary prefix that
    /// is removed afterwards. `config` is the bundle's parse tree (entry first); it says which
    /// tokens to rewrite. Blocking: call it from `spawn_blocking` in async code.
    ///
    /// Returns nginx's errors as SB900 and warnings as SB901, at bundle paths and lines. A bundle
    /// that would load code (SB109: `ssl_engine`, `engine:` values, `load_module` of a bundle
    /// file) or a Perl/Lua module gets those findings and nginx is not run. nginx runs under
    /// [`Limits`] with an empty environment (see [`crate::confine`]).
    pub fn test(
        &self,
        bundle: &Bundle,
        entry: &str,
        config: &Config,
    ) -> Result<Vec<Diagnostic>, SandboxError> {
        let layout = ProxyLayout {
            image: self.image.clone(),
            ..ProxyLayout::default()
        };
        self.test_with(bundle, entry, config, &layout)
    }

    /// [`Nginx::test`] for a proxy laid out as `proxy` says: absolute paths below its config root
    /// are the bundle's files, and the image files `config` includes (parsed with the same
    /// layout) are copied into the sandbox.
    pub fn test_with(
        &self,
        bundle: &Bundle,
        entry: &str,
        config: &Config,
        proxy: &ProxyLayout,
    ) -> Result<Vec<Diagnostic>, SandboxError> {
        let span = tracing::info_span!(
            "nginx_test",
            nginx = %self.path.display(),
            version = %self.version,
            entry,
            digest = %bundle.digest().short(),
        );
        let _guard = span.enter();
        let started = Instant::now();
        files::check_inputs(bundle, entry, config, proxy)?;
        // Again here, whatever the caller linted: a loaded library runs before nginx checks it.
        let loads_code = code::check(config, bundle.files());
        if !loads_code.is_empty() {
            tracing::warn!(
                findings = loads_code.len(),
                "nginx -t not run: the bundle loads code"
            );
            return Ok(loads_code);
        }
        let launcher = confine::Launcher::find()?;

        let dir = tempfile::Builder::new()
            .prefix("sb-nginx-")
            .tempdir()
            .map_err(|source| io_err(std::env::temp_dir(), source))?;
        let root = dir.path();
        let as_root = root
            .metadata()
            .map_err(|e| io_err(root.to_path_buf(), e))?
            .uid()
            == 0;
        let layout = rewrite::Layout::new(root, self.modules.clone());
        if layout.sockets.join("syslog").as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SandboxError::Plan(format!(
                "the temporary directory {} is too long for unix socket paths; set TMPDIR shorter",
                root.display()
            )));
        }
        let plan = rewrite::plan(
            config,
            &rewrite::Options {
                layout: &layout,
                entry,
                files: bundle.files(),
                as_root,
                temp_paths: &self.temp_paths,
                config_root: &proxy.config_root,
            },
        )
        .map_err(|e| match e {
            rewrite::PlanError::Cycle(path) => SandboxError::IncludeCycle(path),
            rewrite::PlanError::Other(why) => SandboxError::Plan(why),
        })?;
        if !plan.refused.is_empty() {
            tracing::warn!(
                refused = plan.refused.len(),
                "nginx -t not run: code-running modules"
            );
            return Ok(plan.refused.iter().map(refused_module).collect());
        }
        files::write_sandbox(bundle, &layout, &plan, config, proxy)?;

        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(tmp.clone(), e))?;
        // An empty environment (no inherited `NGINX` listening sockets, no proxy settings, no
        // tokens) but its own TMPDIR, and the limits.
        let mut cmd = launcher.command(&self.limits, &self.path);
        cmd.env("TMPDIR", &tmp).current_dir(root);
        cmd.arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(format!("{}/", layout.conf.display()))
            .arg("-c")
            .arg(entry)
            .arg("-e")
            .arg("stderr");
        let mut globals = Vec::new();
        if !plan.has_pid {
            let pid = layout.defaults().join("nginx.pid");
            globals.push(format!("pid {};", edit::token(&pid.display().to_string())));
        }
        if as_root && !plan.has_user {
            // Else nginx looks up its compiled-in default user, which this machine may lack.
            globals.push("user root;".to_string());
        }
        if !globals.is_empty() {
            cmd.arg("-g").arg(globals.join(" "));
        }
        let finished = confine::run(cmd, &self.path, None, &self.limits)?;
        match finished.limit {
            Some(LimitHit::WallTime(d)) => return Err(SandboxError::Timeout(d)),
            Some(hit) => return Err(SandboxError::Limit(hit)),
            None => {}
        }
        let status = finished.status;
        let stderr = String::from_utf8_lossy(&finished.stderr).into_owned();

        let mut replacements = vec![
            (
                format!("{}/_prefix/", layout.mirror.display()),
                String::new(),
            ),
            (format!("{}/_conf/", layout.mirror.display()), String::new()),
            (
                format!("{}/", layout.defaults().display()),
                "<nginx default>/".to_string(),
            ),
            (
                format!("{}/", layout.image.display()),
                format!("{}/", proxy.config_root),
            ),
            (layout.mirror.display().to_string(), String::new()),
            (format!("{}/", layout.conf.display()), String::new()),
            (root.display().to_string(), "<sandbox>".to_string()),
        ];
        replacements.extend(plan.sockets.iter().cloned());
        let mapper = output::Mapper::new(
            format!("{}/", layout.conf.display()),
            replacements,
            &plan.rewrites,
            config,
            entry,
        );
        let mut out = mapper.diagnostics(&stderr);
        if !status.success() && !out.iter().any(Diagnostic::is_error) {
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            let said = if tail.is_empty() {
                "and printed nothing".to_string()
            } else {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "without an error line: {}",
                    mapper.replace_all(&tail.join(" / "))
                )
            };
            out.push(Diagnostic::error(
                RULE_ERROR,
                entry,
                0,
                0,
                format!("nginx -t failed ({status}) {said}"),
            ));
        }
        if self.report_external {
            out.extend(plan.external.iter().map(|e| {
                Diagnostic::warning(
                    RULE_WARNING,
                    &e.file,
                    e.line,
                    e.col,
                    format!(
                        "`{}` names {:?}, which is not in the bundle: nginx -t checked the \
                         config with a placeholder, the file itself is only checked on the proxy",
                        e.directive, e.path
                    ),
                )
            }));
        }
        diagnostic::sort(&mut out);
        out.dedup();
        let errors = out.iter().filter(|d| d.is_error()).count();
        tracing::info!(
            errors,
            warnings = out.len() - errors,
            exit = %status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "nginx -t finished"
        );
        Ok(out)
    }
}

/// The finding for a `load_module` of a module that would run the bundle's code.
fn refused_module(r: &rewrite::External) -> Diagnostic {
    let message = format!(
        "`load_module {}`: the sandbox does not load modules that run code while nginx reads \
         the config (perl, lua), so nginx -t was not run",
        r.path
    );
    Diagnostic::error(RULE_ERROR, &r.file, r.line, r.col, message)
}

/// [`Nginx::find`] with its inputs passed in, so every branch can be tested.
fn locate(
    explicit: Option<&Path>,
    env: Option<OsString>,
    path_var: Option<OsString>,
    fallback: &Path,
) -> Result<Option<Nginx>, SandboxError> {
    if let Some(path) = explicit {
        return Nginx::at(path).map(Some);
    }
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        return Nginx::at(Path::new(&path)).map(Some);
    }
    let found = path_var
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nginx"))
        .chain(std::iter::once(fallback.to_path_buf()))
        .find(|p| is_executable(p));
    found.map(|p| Nginx::at(&p)).transpose()
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn io_err(path: PathBuf, source: std::io::Error) -> SandboxError {
    SandboxError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nginx_anywhere_is_none() {
        let Ok(empty) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let found = locate(
            None,
            Some(OsString::new()),
            Some(empty.path().as_os_str().to_owned()),
            Path::new("/nonexistent/sbin/nginx"),
        );
        assert!(matches!(found, Ok(None)), "{found:?}");
    }

    #[test]
    fn a_named_binary_that_is_missing_is_an_error_not_none() {
        let found = locate(
            None,
            Some("/nonexistent/nginx".into()),
            None,
            Path::new("/nonexistent/sbin/nginx"),
        );
        assert!(
            matches!(found, Err(SandboxError::Spawn { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_explicit_binary_is_an_error() {
        let err = Nginx::find(Some(Path::new("/nonexistent/nginx"))).unwrap_err();
        assert!(matches!(err, SandboxError::Spawn { .. }), "{err}");
    }
}
