//! Finding the binary that starts confined children, and its `__confine` side: set the limits on
//! itself, then `exec` the program.
//!
//! Where the launcher comes from, in order:
//! 1. the running binary, when it registered itself ([`register_self`]): `switchback`'s own
//!    `main` does, so the controller, the agent and the CLI always use themselves;
//! 2. `$SWITCHBACK_LAUNCHER`, when set: that binary or an error (for embedders and tests);
//! 3. a `switchback` next to the running executable or one directory up (test and bench
//!    executables live in `target/<profile>/deps/`, the binary in `target/<profile>/`).
//!
//! A found binary (2, 3) is asked `__confine --probe` once and must answer like this version's
//! launcher; a stale or foreign binary is refused. When nothing qualifies, confined work fails
//! with [`ConfineError::NoLauncher`]: limits are never silently dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{CONFINE_COMMAND, ConfineError, Limits, RENDER_COMMAND};

/// Environment variable naming the launcher binary for library code that is not running inside
/// `switchback` itself.
pub const LAUNCHER_ENV: &str = "SWITCHBACK_LAUNCHER";

/// What `__confine --probe` prints: the protocol this code speaks.
const PROBE_REPLY: &str = "switchback-confine 1\n";

/// The running binary, when it registered itself as able to launch.
static SELF: OnceLock<PathBuf> = OnceLock::new();
/// The discovered launcher (or why there is none), looked up once per process.
static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Records the running binary as the launcher. Call it from a `main` that first hands the hidden
/// subcommands to [`super::dispatch`].
pub fn register_self() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = SELF.set(exe);
    }
}

/// The binary that starts confined children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    path: PathBuf,
}

impl Launcher {
    /// The launcher for this process (see the module notes for the order).
    pub fn find() -> Result<Launcher, ConfineError> {
        if let Some(path) = SELF.get() {
            return Ok(Launcher { path: path.clone() });
        }
        FOUND
            .get_or_init(discover)
            .clone()
            .map(|path| Launcher { path })
            .map_err(ConfineError::NoLauncher)
    }

    /// The launcher's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs `program` under `limits`, with an empty environment, its own process
    /// group and no stdin. Add arguments, environment (`TMPDIR`) and the working directory to it.
    pub fn command(&self, limits: &Limits, program: &Path) -> Command {
        let program = std::path::absolute(program).unwrap_or_else(|_| program.to_path_buf());
        let mut cmd = self.base();
        cmd.arg(CONFINE_COMMAND)
            .args(limits.to_args())
            .arg("--")
            .arg(program);
        cmd
    }

    /// A command that renders the request written to its stdin under `limits`.
    pub fn render_command(&self, limits: &Limits) -> Command {
        let mut cmd = self.base();
        cmd.arg(RENDER_COMMAND).args(limits.to_args());
        cmd
    }

    fn base(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.env_clear().process_group(0).stdin(Stdio::null());
        cmd
    }
}

/// Looks for a launcher outside the running binary (steps 2 and 3).
fn discover() -> Result<PathBuf, String> {
    if let Some(named) = std::env::var_os(LAUNCHER_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(named);
        return probe(&path)
            .map(|()| path.clone())
            .map_err(|why| format!("${LAUNCHER_ENV}={}: {why}", path.display()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let name = format!("switchback{}", std::env::consts::EXE_SUFFIX);
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .collect();
    let mut tried = Vec::new();
    for candidate in &candidates {
        if !candidate.is_file() {
            tried.push(format!("{}: not there", candidate.display()));
            continue;
        }
        match probe(candidate) {
            Ok(()) => return Ok(candidate.clone()),
            Err(why) => tried.push(format!("{}: {why}", candidate.display())),
        }
    }
    Err(format!(
        "{} is not switchback and none was found: {}",
        exe.display(),
        tried.join("; ")
    ))
}

/// Asks a binary whether it is this version's launcher.
fn probe(path: &Path) -> Result<(), String> {
    let mut cmd = Command::new(path);
    cmd.arg(CONFINE_COMMAND)
        .arg("--probe")
        .env_clear()
        .process_group(0)
        .stdin(Stdio::null());
    let limits = Limits {
        cpu_seconds: 5,
        address_space: None,
        data: None,
        file_size: 0,
        wall: Duration::from_secs(10),
    };
    let out = super::run(cmd, path, None, &limits).map_err(|e| e.to_string())?;
    if out.status.success() && out.stdout == PROBE_REPLY.as_bytes() {
        return Ok(());
    }
    Err(format!(
        "it does not answer `{CONFINE_COMMAND} --probe` like this version ({}; rebuild it?)",
        out.status
    ))
}

/// `switchback __confine [--probe | LIMITS -- PROGRAM ARGS...]`: sets the limits on this process
/// and replaces it with the program, which inherits them (and the environment the parent gave,
/// which is empty unless it added something).
pub(super) fn exec_main(args: Vec<String>) -> ExitCode {
    if args.first().map(String::as_str) == Some("--probe") {
        print!("{PROBE_REPLY}");
        return ExitCode::SUCCESS;
    }
    let mut it = args.into_iter();
    let limits = match Limits::from_args(&mut it) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("switchback {CONFINE_COMMAND}: {why}");
            return ExitCode::from(126);
        }
    };
    let Some(program) = it.next() else {
        eprintln!("switchback {CONFINE_COMMAND}: no program after --");
        return ExitCode::from(126);
    };
    if let Err(why) = limits.apply_to_self() {
        eprintln!("switchback {CONFINE_COMMAND}: cannot set limits: {why}");
        return ExitCode::from(126);
    }
    // Only returns on failure.
    let err = Command::new(&program).args(it).exec();
    eprintln!("switchback {CONFINE_COMMAND}: cannot run {program}: {err}");
    ExitCode::from(127)
}
