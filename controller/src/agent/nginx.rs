//! The nginx process: starting it, testing a version with the real paths, reloading it and
//! confirming the reload took, stopping it. Process facts come from `/proc`, which is what every
//! Linux pod has, so the same code works for a child of the agent (local mode) and for a master
//! found through the pid file (a restarted agent, or pod mode where the container runs nginx).
//!
//! A reload is confirmed by a new worker generation: after `SIGHUP`, the master only forks new
//! workers once it has read and accepted the new config, so a child pid that was not there before
//! the signal is proof. An `[emerg]` in the master's error log after the signal is proof of the
//! opposite (nginx keeps the old workers and the old config).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::layout::Layout;

/// How often process state is polled while waiting for nginx.
const POLL: Duration = Duration::from_millis(25);
/// Most bytes of nginx's error log read after a signal; bounds the work on a log flooded with
/// request errors (the master's own lines come first).
const MAX_LOG_READ: u64 = 4 * 1024 * 1024;
/// nginx's error log is moved aside at a fresh start past this size.
const MAX_ERROR_LOG: u64 = 64 * 1024 * 1024;

/// The nginx binary and what its build needs.
#[derive(Debug, Clone)]
pub struct Binary {
    /// The executable.
    pub path: PathBuf,
    /// `nginx -v`, e.g. `nginx/1.22.1`.
    pub version: String,
    /// The `*_temp_path` directives this build has.
    pub temp_paths: Vec<String>,
    /// `--modules-path`: the only directory `load_module` may load from.
    pub modules: PathBuf,
}

impl Binary {
    /// Reads the build options of the binary the sandbox locator found.
    pub fn inspect(path: &Path, version: String) -> std::io::Result<Binary> {
        let out = std::process::Command::new(path)
            .arg("-V")
            .env_clear()
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let build = crate::validate::sandbox::BuildInfo::parse(&text);
        Ok(Binary {
            path: path.to_path_buf(),
            version,
            temp_paths: build.temp_paths,
            modules: build.modules,
        })
    }
}

/// How nginx is invoked: the same prefix, startup log and `-g` for the running master and for
/// every `nginx -t`, so the test sees exactly the paths the reload will.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The binary.
    pub binary: Binary,
    layout: Layout,
}

impl Launcher {
    /// A launcher for `binary` over the state directory `layout`.
    pub fn new(binary: Binary, layout: Layout) -> Self {
        Launcher { binary, layout }
    }

    /// Arguments for config file `conf` (relative to the state directory).
    pub fn args(&self, conf: &str) -> Vec<OsString> {
        nginx_args(&self.layout, conf)
    }

    /// The config path nginx is started with for `entry`.
    pub fn running_conf(entry: &str) -> String {
        format!("current/{entry}")
    }

    /// Runs the real `nginx -t` on `versions/<hex>/<entry>`, confined like the controller's
    /// sandbox ([`crate::confine`]: empty environment but `TMPDIR`, CPU/memory/file-size limits,
    /// `timeout` of wall time). `Err` carries nginx's messages with the version directory
    /// stripped, so they read `nginx.conf:3` like the bundle.
    pub async fn test(
        &self,
        version_dir: &Path,
        entry: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let rel = version_dir
            .strip_prefix(self.layout.root())
            .unwrap_or(version_dir)
            .join(entry);
        let launcher = crate::confine::Launcher::find().map_err(|e| e.to_string())?;
        let limits = crate::confine::Limits {
            wall: timeout,
            ..crate::confine::Limits::NGINX_TEST
        };
        let mut cmd = launcher.command(&limits, &self.binary.path);
        cmd.arg("-t").arg("-q");
        let mut args = self.args(&rel.to_string_lossy());
        // Messages to stderr, where they are collected, rather than to the shared error log.
        args[3] = "stderr".into();
        cmd.args(args)
            .env("TMPDIR", self.layout.temp_dir())
            .current_dir(self.layout.root());
        let program = self.binary.path.clone();
        let run =
            tokio::task::spawn_blocking(move || crate::confine::run(cmd, &program, None, &limits));
        let out = match run.await {
            Err(e) => return Err(format!("the nginx -t task failed: {e}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(out)) => out,
        };
        match out.limit {
            Some(crate::confine::LimitHit::WallTime(_)) => {
                return Err(format!("nginx -t did not finish within {timeout:?}"));
            }
            Some(hit) => return Err(format!("nginx -t was stopped by {hit}")),
            None => {}
        }
        if out.status.success() {
            return Ok(());
        }
        let dir = format!("{}/", version_dir.display());
        let text = String::from_utf8_lossy(&out.stderr).replace(&dir, "");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("test failed"))
            .map(|l| l.trim_start_matches("nginx: "))
            .collect();
        Err(if lines.is_empty() {
            format!("nginx -t failed ({})", out.status)
        } else {
            lines.join("; ")
        })
    }

    /// Starts nginx on `current/<entry>` in its own process group (so stopping it can reach
    /// workers a dead master left behind) and waits until it has workers.
    pub async fn start(&self, entry: &str, timeout: Duration) -> Result<Master, String> {
        let _ = rotate_if_large(&self.layout.error_log());
        let offset = log_len(&self.layout.error_log());
        let mut cmd = tokio::process::Command::new(&self.binary.path);
        // Nothing from the agent's environment (a token in `$SWITCHBACK_AGENT_TOKEN` would
        // otherwise reach workers through an `env` directive); the time zone for log lines.
        cmd.env_clear();
        if let Some(tz) = std::env::var_os("TZ") {
            cmd.env("TZ", tz);
        }
        cmd.args(self.args(&Self::running_conf(entry)))
            .current_dir(self.layout.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.path.display()))?;
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return Err("nginx exited at once".to_string());
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let why = self.emerg_since(offset).unwrap_or_default();
                return Err(format!("nginx exited ({status}) at start {why}")
                    .trim()
                    .to_string());
            }
            if !children_of(pid).is_empty() {
                return Ok(Master::Child { child, pid });
            }
            if Instant::now() >= deadline {
                let mut m = Master::Child { child, pid };
                m.stop(Duration::from_secs(1), true).await;
                return Err(format!("nginx started no workers within {timeout:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `SIGHUP` and waits for a new worker generation. Returns the new workers.
    pub async fn reload(&self, pid: i32, timeout: Duration) -> Result<Vec<i32>, String> {
        let before: BTreeSet<i32> = children_of(pid).into_iter().collect();
        let offset = log_len(&self.layout.error_log());
        signal::kill(Pid::from_raw(pid), Signal::SIGHUP)
            .map_err(|e| format!("cannot signal nginx master {pid}: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.emerg_since(offset) {
                return Err(format!("nginx refused the reload: {line}"));
            }
            if !alive(pid) {
                return Err(format!("nginx master {pid} exited during the reload"));
            }
            let now = children_of(pid);
            // New workers prove the config was accepted; old ones that are gone or titled
            // "shutting down" have closed their listening sockets, so from here on every new
            // connection meets the new config.
            let new: Vec<i32> = now
                .iter()
                .copied()
                .filter(|p| !before.contains(p))
                .collect();
            if !new.is_empty() && before.iter().all(|&p| !accepting(p)) {
                return Ok(new);
            }
            if Instant::now() >= deadline {
                if new.is_empty() {
                    return Err(format!("no new worker generation within {timeout:?}"));
                }
                // The config was accepted and is what nginx runs now; reporting a failure would
                // make the agent's record disagree with nginx. Old processes still up are only
                // slow to drain.
                tracing::warn!(
                    pid,
                    "old nginx processes still up after the reload deadline"
                );
                return Ok(new);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Rotates the error log of the running master `pid` when it is too large: the file is
    /// renamed and `SIGUSR1` makes nginx reopen its logs (nginx's own rotation protocol). The
    /// file grows with every upstream error nginx logs, so a long 502 storm would otherwise fill
    /// the disk.
    pub fn rotate_log(&self, pid: i32) {
        if rotate_if_large(&self.layout.error_log()) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGUSR1);
        }
    }

    /// The first `[emerg]` line the master wrote after `offset`.
    fn emerg_since(&self, offset: u64) -> Option<String> {
        let mut f = std::fs::File::open(self.layout.error_log()).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut buf = Vec::new();
        f.take(MAX_LOG_READ).read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf);
        let line = text.lines().find(|l| l.contains("[emerg]"))?;
        let msg = line.split_once("[emerg] ").map_or(line, |x| x.1);
        // Drop the `pid#tid: ` prefix.
        let msg = msg.split_once(": ").map_or(msg, |x| x.1);
        let root = format!("{}/", self.layout.root().display());
        Some(msg.replace(&root, ""))
    }
}

/// The global directives the agent owns: they must be the same for every run and every test.
pub fn globals(layout: &Layout) -> String {
    format!(
        "daemon off; master_process on; pid {}; error_log {} notice;",
        layout.pid_file().display(),
        layout.error_log().display()
    )
}

/// nginx's arguments for config file `conf` (relative to the state directory). In pod mode the
/// container runs `nginx` with `nginx_args(layout, "current/<entry>")`, so that the agent can
/// find, test against and reload it exactly as it would its own.
pub fn nginx_args(layout: &Layout, conf: &str) -> Vec<OsString> {
    let mut prefix = layout.root().as_os_str().to_owned();
    prefix.push("/");
    vec![
        "-p".into(),
        prefix,
        "-e".into(),
        layout.error_log().into_os_string(),
        "-c".into(),
        conf.into(),
        "-g".into(),
        globals(layout).into(),
    ]
}

/// A running nginx master.
#[derive(Debug)]
pub enum Master {
    /// Started by this agent.
    Child {
        /// The process.
        child: tokio::process::Child,
        /// Its pid.
        pid: i32,
    },
    /// Found through the pid file: started by an earlier agent or by the container.
    Adopted {
        /// Its pid.
        pid: i32,
        /// Whether it leads its own process group (started by an agent), so the group may be
        /// killed to reach orphaned workers.
        own_group: bool,
    },
}

impl Master {
    /// The master's pid.
    pub fn pid(&self) -> i32 {
        match self {
            Master::Child { pid, .. } | Master::Adopted { pid, .. } => *pid,
        }
    }

    /// Whether the master still runs (reaping it when it is our child).
    pub fn is_alive(&mut self) -> bool {
        match self {
            Master::Child { child, .. } => matches!(child.try_wait(), Ok(None)),
            Master::Adopted { pid, .. } => alive(*pid),
        }
    }

    /// Stops nginx: `SIGQUIT` (finish requests), then after `grace` `SIGTERM`, then `SIGKILL`
    /// to the whole process group. With `fast`, starts at `SIGTERM`.
    pub async fn stop(&mut self, grace: Duration, fast: bool) {
        let pid = self.pid();
        let steps: &[(Signal, Duration)] = if fast {
            &[(Signal::SIGTERM, Duration::from_secs(3))]
        } else {
            &[
                (Signal::SIGQUIT, grace),
                (Signal::SIGTERM, Duration::from_secs(3)),
            ]
        };
        let mut gone = false;
        for (sig, wait) in steps {
            if signal::kill(Pid::from_raw(pid), *sig).is_err() {
                gone = true;
                break;
            }
            if self.wait_gone(*wait).await {
                gone = true;
                break;
            }
            tracing::warn!(pid, signal = %sig, "nginx did not stop in time");
        }
        if !gone {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            self.wait_gone(Duration::from_secs(3)).await;
        }
        // Workers of a master that died hard keep running and keep the port; the group holds
        // only processes of this nginx. ESRCH (nothing left) is the normal case.
        self.kill_orphans();
    }

    /// After the master died: kills what is left of its process group (workers keep serving, and
    /// keep the port, after their master is gone), when the group is this agent's.
    pub fn kill_orphans(&self) {
        let own_group = match self {
            Master::Child { .. } => true,
            Master::Adopted { own_group, .. } => *own_group,
        };
        if own_group {
            let _ = signal::killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        }
    }

    async fn wait_gone(&mut self, limit: Duration) -> bool {
        match self {
            Master::Child { child, .. } => tokio::time::timeout(limit, child.wait()).await.is_ok(),
            Master::Adopted { pid, .. } => {
                let deadline = Instant::now() + limit;
                while alive(*pid) {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    tokio::time::sleep(POLL).await;
                }
                true
            }
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: (state, ppid, pgrp).
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| state != 'Z' && state != 'X')
}

/// Whether an old worker may still accept connections: alive and not yet titled
/// `nginx: worker process is shutting down`.
fn accepting(pid: i32) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|t| !String::from_utf8_lossy(&t).contains("shutting down"))
}

/// The live children of `pid`, found by scanning `/proc` (not every kernel has
/// `/proc/<pid>/task/<tid>/children`).
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| stat(p).is_some_and(|(s, ppid, _)| ppid == pid && s != 'Z' && s != 'X'))
        .collect();
    out.sort_unstable();
    out
}

/// The nginx master named by the pid file, if it runs and serves this state directory.
pub fn find_master(layout: &Layout) -> Option<Master> {
    let text = std::fs::read_to_string(layout.pid_file()).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    // The master's title repeats its arguments, so `-p <root>/` identifies this state directory.
    let prefix = format!("-p {}/", layout.root().display());
    if !(alive(pid) && cmdline.contains("nginx") && cmdline.contains(&prefix)) {
        return None;
    }
    let own_group = stat(pid).is_some_and(|(_, _, pgrp)| pgrp == pid);
    Some(Master::Adopted { pid, own_group })
}

/// The `-c` argument of a running master, read from its process title
/// (`nginx: master process nginx -p … -c current/nginx.conf …`).
pub fn master_conf(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let title = String::from_utf8_lossy(&raw).replace('\0', " ");
    let mut words = title.split_whitespace();
    words.find(|w| *w == "-c")?;
    words.next().map(str::to_string)
}

/// Moves nginx's error log aside when it has grown past [`MAX_ERROR_LOG`] (the previous `.1`
/// is replaced, so the logs never take more than twice that). Returns whether it did.
fn rotate_if_large(path: &Path) -> bool {
    log_len(path) > MAX_ERROR_LOG && std::fs::rename(path, path.with_extension("log.1")).is_ok()
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
