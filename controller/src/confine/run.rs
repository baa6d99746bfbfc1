//! One bounded run of a confined child: stdin written, stdout and stderr collected (up to a cap),
//! wall time enforced by killing the child's process group, and the way it ended told apart:
//! exited by itself, or stopped by which limit.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{Bytes, ConfineError, Limits};

/// Most stderr kept; the rest is read and dropped, so a chatty child never blocks on a full pipe.
const MAX_STDERR: usize = 1024 * 1024;
/// Most stdout kept: past it the child is killed (a rendered bundle larger than this is refused).
pub const MAX_STDOUT: usize = 256 * 1024 * 1024;
/// How long the output pipes may stay open after the child ended (something it started and that
/// left its process group may hold them); past it what was read is kept.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Which limit stopped a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// `RLIMIT_CPU`: this many CPU seconds.
    Cpu(u64),
    /// `RLIMIT_AS` or `RLIMIT_DATA`: an allocation failed at this many bytes.
    Memory(u64),
    /// `RLIMIT_FSIZE`: a write past this many bytes.
    FileSize(u64),
    /// Killed by the parent after this much wall time.
    WallTime(Duration),
    /// Killed by the parent for writing more than this many bytes to stdout.
    Output(usize),
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitHit::Cpu(s) => write!(f, "the CPU limit ({s} s of CPU time)"),
            LimitHit::Memory(b) => write!(f, "the memory limit ({})", Bytes(*b)),
            LimitHit::FileSize(b) => write!(f, "the file size limit ({})", Bytes(*b)),
            LimitHit::WallTime(d) => write!(f, "the time limit ({} s)", d.as_secs()),
            LimitHit::Output(b) => write!(f, "the output limit ({})", Bytes(*b as u64)),
        }
    }
}

/// How a confined child ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stdout (at most [`MAX_STDOUT`] bytes).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (the first MiB).
    pub stderr: Vec<u8>,
    /// The limit that stopped it, if one did.
    pub limit: Option<LimitHit>,
}

/// Runs `cmd` (made by [`super::Launcher`], in its own process group) with `stdin` as its input,
/// and waits at most `limits.wall`. `program` names it in errors.
pub fn run(
    mut cmd: Command,
    program: &Path,
    stdin: Option<Vec<u8>>,
    limits: &Limits,
) -> Result<Finished, ConfineError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ConfineError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    let group = i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|_| ConfineError::Watch("the child's pid does not fit".to_string()))?;
    let kill_group = move || {
        let _ = killpg(group, Signal::SIGKILL);
    };

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that dies early closes the pipe: the write fails and that is fine.
        spawn("stdin", move || {
            let _ = pipe.write_all(&input);
        })?;
    }
    let stdout = child.stdout.take();
    let (out_tx, out_rx) = mpsc::channel();
    spawn("stdout", move || {
        let mut buf = Vec::new();
        let mut over = false;
        if let Some(s) = stdout {
            let _ = s.take(MAX_STDOUT as u64 + 1).read_to_end(&mut buf);
            if buf.len() > MAX_STDOUT {
                over = true;
                buf.truncate(MAX_STDOUT);
                kill_group();
            }
        }
        let _ = out_tx.send((buf, over));
    })?;
    let stderr = child.stderr.take();
    let (err_tx, err_rx) = mpsc::channel();
    spawn("stderr", move || {
        let _ = err_tx.send(stderr.map(read_capped).unwrap_or_default());
    })?;
    let (done_tx, done_rx) = mpsc::channel();
    spawn("wait", move || {
        let _ = done_tx.send(wait(child));
    })?;

    let (status, timed_out) = match done_rx.recv_timeout(limits.wall) {
        Ok(status) => (status, false),
        Err(_) => {
            kill_group();
            let status = done_rx
                .recv()
                .map_err(|_| ConfineError::Watch("the wait thread ended early".to_string()))?;
            (status, true)
        }
    };
    let status = status.map_err(|source| ConfineError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    let (stdout, over) = out_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
    let stderr = err_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
    let limit = if timed_out {
        Some(LimitHit::WallTime(limits.wall))
    } else if over {
        Some(LimitHit::Output(MAX_STDOUT))
    } else {
        classify(status, &stderr, limits)
    };
    Ok(Finished {
        status,
        stdout,
        stderr,
        limit,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ConfineError> {
    std::thread::Builder::new()
        .name(format!("confine-{name}"))
        .spawn(f)
        .map(drop)
        .map_err(|e| ConfineError::Watch(format!("cannot start the {name} thread: {e}")))
}

fn wait(mut child: Child) -> std::io::Result<ExitStatus> {
    child.wait()
}

fn read_capped(mut pipe: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_STDERR.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The limit behind a signal death, when it is one of ours.
fn classify(status: ExitStatus, stderr: &[u8], limits: &Limits) -> Option<LimitHit> {
    let signal = Signal::try_from(status.signal()?).ok()?;
    let memory = limits.address_space.or(limits.data).unwrap_or(0);
    match signal {
        // SIGKILL: the hard CPU limit, one second after SIGXCPU was ignored.
        Signal::SIGXCPU | Signal::SIGKILL => Some(LimitHit::Cpu(limits.cpu_seconds)),
        Signal::SIGXFSZ => Some(LimitHit::FileSize(limits.file_size)),
        // Rust's allocation-failure handler prints this and aborts.
        Signal::SIGABRT
            if String::from_utf8_lossy(stderr).contains("memory allocation of") && memory > 0 =>
        {
            Some(LimitHit::Memory(memory))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, stdin: Option<Vec<u8>>, limits: &Limits) -> Finished {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).process_group(0);
        run(cmd, Path::new("/bin/sh"), stdin, limits).unwrap()
    }

    use std::os::unix::process::CommandExt;

    const QUICK: Limits = Limits {
        cpu_seconds: 5,
        address_space: None,
        data: None,
        file_size: 0,
        wall: Duration::from_secs(20),
    };

    #[test]
    fn input_goes_in_and_output_comes_back() {
        let out = sh("cat; echo oops >&2", Some(b"hello".to_vec()), &QUICK);
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.limit, None);
    }

    #[test]
    fn a_child_past_its_wall_time_is_killed_with_what_it_forked() {
        let limits = Limits {
            wall: Duration::from_millis(300),
            ..QUICK
        };
        // The background sleep keeps stdout open; it is in the group, so it dies too.
        let out = sh("sleep 30 & echo started; wait", None, &limits);
        assert_eq!(out.limit, Some(LimitHit::WallTime(limits.wall)));
        assert_eq!(out.stdout, b"started\n");
    }

    #[test]
    fn signals_are_told_apart() {
        let out = sh("kill -XCPU $$", None, &QUICK);
        assert_eq!(out.limit, Some(LimitHit::Cpu(5)));
        let out = sh("kill -XFSZ $$", None, &QUICK);
        assert_eq!(out.limit, Some(LimitHit::FileSize(0)));
        let out = sh("kill -TERM $$", None, &QUICK);
        assert_eq!(out.limit, None);
        assert_eq!(out.status.signal(), Some(15));
    }
}
