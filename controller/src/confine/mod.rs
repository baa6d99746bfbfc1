//! Running untrusted work in a child process with the least it needs, so a hostile bundle or
//! template can take down at most that child, never the controller, the agent or a CI runner:
//! `nginx -t` on a bundle (the sandbox, the agent) and rendering a commit's templates.
//!
//! A confined child gets an empty environment (no tokens, no `SWITCHBACK_*`, no proxy settings;
//! only what the caller adds, such as its own `TMPDIR`), its own process group (so a wall-time
//! kill reaches anything it forked), and resource limits: CPU seconds, memory, the size of the
//! files it may write, no core dumps, and wall time (enforced by the parent).
//!
//! The workspace forbids `unsafe`, so the limits cannot be set between `fork` and `exec`
//! (`pre_exec`). Instead the child is Switchback's own binary started with a hidden subcommand:
//! `switchback __confine LIMITS -- PROGRAM ARGS` sets the limits on itself with `setrlimit` and
//! `exec`s the program, which inherits them; `switchback __render LIMITS` sets them and renders
//! the request it reads on stdin. How that binary is found is [`Launcher::find`]'s job: a
//! production binary registers itself ([`register_self`]); library code in test binaries finds
//! it by `$SWITCHBACK_LAUNCHER` or next to the test executable; when there is none, confined
//! work fails with [`ConfineError::NoLauncher`] instead of running unconfined.

mod launcher;
pub mod render;
mod run;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use launcher::{LAUNCHER_ENV, Launcher, register_self};
pub use run::{Finished, LimitHit, run};

/// The hidden subcommand that sets limits and `exec`s a program.
pub const CONFINE_COMMAND: &str = "__confine";
/// The hidden subcommand that renders a request from stdin under limits.
pub const RENDER_COMMAND: &str = "__render";

const MIB: u64 = 1024 * 1024;

/// Resource limits for one confined child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds (`RLIMIT_CPU`): `SIGXCPU` at this many, `SIGKILL` one second later.
    pub cpu_seconds: u64,
    /// Virtual address space in bytes (`RLIMIT_AS`), when set.
    pub address_space: Option<u64>,
    /// Private writable memory in bytes (`RLIMIT_DATA`: heap and private mappings, not shared
    /// memory), when set.
    pub data: Option<u64>,
    /// The largest file the child may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size: u64,
    /// Wall time after which the parent kills the child's process group.
    pub wall: Duration,
}

impl Limits {
    /// `nginx -t`. Memory is bounded by `RLIMIT_DATA`, not the address space: nginx maps the
    /// config's shared memory zones (`keys_zone=…:4g`, `ssl_session_cache shared:…`) already at
    /// `-t`, so an address-space limit would reject valid configs by their cache sizes.
    pub const NGINX_TEST: Limits = Limits {
        cpu_seconds: 30,
        address_space: None,
        data: Some(1024 * MIB),
        file_size: 64 * MIB,
        wall: Duration::from_secs(60),
    };

    /// Rendering one commit's templates: real configs need milliseconds and a few MiB.
    pub const RENDER: Limits = Limits {
        cpu_seconds: 10,
        address_space: Some(512 * MIB),
        data: None,
        file_size: MIB,
        wall: Duration::from_secs(30),
    };

    /// The flags that carry these limits to the hidden subcommands (wall time stays with the
    /// parent, which enforces it).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![
            "--cpu".to_string(),
            self.cpu_seconds.to_string(),
            "--fsize".to_string(),
            self.file_size.to_string(),
        ];
        if let Some(v) = self.address_space {
            out.extend(["--as".to_string(), v.to_string()]);
        }
        if let Some(v) = self.data {
            out.extend(["--data".to_string(), v.to_string()]);
        }
        out
    }

    /// Reads [`Limits::to_args`] back (up to `--` or the end); the rest of the arguments is left
    /// in `args`. Wall time is not carried, so it comes back as zero.
    pub fn from_args(args: &mut std::vec::IntoIter<String>) -> Result<Limits, String> {
        let mut limits = Limits {
            cpu_seconds: 0,
            address_space: None,
            data: None,
            file_size: 0,
            wall: Duration::ZERO,
        };
        let (mut cpu, mut fsize) = (false, false);
        while let Some(flag) = args.next() {
            if flag == "--" {
                break;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))?;
            match flag.as_str() {
                "--cpu" => (limits.cpu_seconds, cpu) = (value, true),
                "--fsize" => (limits.file_size, fsize) = (value, true),
                "--as" => limits.address_space = Some(value),
                "--data" => limits.data = Some(value),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if !(cpu && fsize) {
            return Err("--cpu and --fsize are required".to_string());
        }
        Ok(limits)
    }

    /// Sets these limits on the calling process (soft and hard, so nothing it runs can raise
    /// them), never above a hard limit already in place; core dumps are turned off.
    pub fn apply_to_self(&self) -> Result<(), String> {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let set = |r: Resource, soft: u64, hard: u64| -> Result<(), String> {
            let (_, current_hard) = getrlimit(r).map_err(|e| format!("getrlimit {r:?}: {e}"))?;
            setrlimit(r, soft.min(current_hard), hard.min(current_hard))
                .map_err(|e| format!("setrlimit {r:?}: {e}"))
        };
        set(Resource::RLIMIT_CORE, 0, 0)?;
        let cpu = self.cpu_seconds.max(1);
        set(Resource::RLIMIT_CPU, cpu, cpu + 1)?;
        set(Resource::RLIMIT_FSIZE, self.file_size, self.file_size)?;
        if let Some(v) = self.address_space {
            set(Resource::RLIMIT_AS, v, v)?;
        }
        if let Some(v) = self.data {
            set(Resource::RLIMIT_DATA, v, v)?;
        }
        Ok(())
    }
}

/// Why confined work could not be started or watched. A child that ran and failed, or that a
/// limit stopped, is not an error here: that is in [`Finished`].
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// No binary to start confined children with; confined work is never run unconfined.
    #[error(
        "cannot run untrusted work under resource limits: no `switchback` binary to launch it \
         with ({0}); set ${LAUNCHER_ENV} to the switchback binary"
    )]
    NoLauncher(String),
    /// The child could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// What was started.
        program: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Watching the child failed (a thread could not be started or panicked).
    #[error("cannot watch the confined child: {0}")]
    Watch(String),
}

/// Handles the hidden subcommands. `switchback`'s `main` (and any binary that registers itself
/// as the launcher) calls this first and exits with its code when it returns `Some`.
pub fn dispatch() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first = args.next()?;
    let rest = || -> Result<Vec<String>, ExitCode> {
        args.map(|a| a.into_string())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                eprintln!("switchback: hidden subcommand arguments must be UTF-8");
                ExitCode::from(126)
            })
    };
    match first.to_str()? {
        CONFINE_COMMAND => Some(rest().map_or_else(|code| code, launcher::exec_main)),
        RENDER_COMMAND => Some(rest().map_or_else(|code| code, render::child_main)),
        _ => None,
    }
}

/// Bytes for people: `512 MiB`.
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= MIB && self.0 % MIB == 0 {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_survive_their_flags() {
        for limits in [Limits::NGINX_TEST, Limits::RENDER] {
            let mut args = limits.to_args();
            args.extend(["--".to_string(), "/usr/sbin/nginx".to_string()]);
            let mut it = args.into_iter();
            let back = Limits::from_args(&mut it).unwrap();
            assert_eq!(
                back,
                Limits {
                    wall: Duration::ZERO,
                    ..limits
                }
            );
            assert_eq!(it.next().as_deref(), Some("/usr/sbin/nginx"));
        }
    }

    #[test]
    fn bad_limit_flags_are_refused() {
        let parse = |v: &[&str]| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            Limits::from_args(&mut v.into_iter())
        };
        assert!(parse(&["--cpu", "x", "--fsize", "1"]).is_err());
        assert!(parse(&["--cpu", "1"]).is_err(), "fsize is required");
        assert!(parse(&["--cpu", "1", "--fsize", "1", "--nope", "2"]).is_err());
        assert!(parse(&["--cpu"]).is_err());
    }

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(Bytes(512 * MIB).to_string(), "512 MiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
    }
}
