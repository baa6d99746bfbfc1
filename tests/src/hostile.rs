//! Hostile inputs for the security suites, and ways to see what they did: a shared object whose
//! constructor proves it ran, and a run of a command measured for peak memory from `/proc`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A shared object whose constructor writes `marker`: proof that nginx loaded it.
pub struct Evil {
    _dir: tempfile::TempDir,
    /// The library's bytes, to put in a bundle.
    pub so: Vec<u8>,
    marker: PathBuf,
}

impl Evil {
    /// Builds it with `gcc` in a temporary directory.
    pub fn build() -> Evil {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("PWNED");
        let src = dir.path().join("evil.c");
        std::fs::write(
            &src,
            format!(
                "#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) {{\n  \
                 FILE *f = fopen(\"{}\", \"a\");\n  if (f) {{ fputs(\"constructor ran\\n\", f); \
                 fclose(f); }}\n}}\n",
                marker.display()
            ),
        )
        .expect("write evil.c");
        let so = dir.path().join("evil.so");
        let out = Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&src)
            .output()
            .expect("gcc is needed for the security suite (apt-get install gcc)");
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Evil {
            so: std::fs::read(&so).expect("read evil.so"),
            _dir: dir,
            marker,
        }
    }

    /// Whether any process loaded it.
    pub fn ran(&self) -> bool {
        self.marker.exists()
    }
}

/// Runs `cmd` to its end, sampling the peak resident memory (`VmHWM`, KiB) of it and of every
/// process below it from `/proc`. Fails the test (killing the tree) past `ceiling_kib` or
/// `patience`: an unbounded run must not take the machine down with it.
pub fn run_measured(mut cmd: Command, ceiling_kib: u64, patience: Duration) -> (String, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let mut peak = 0;
    let kill = |pid: u32| {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    loop {
        for p in tree(pid) {
            peak = peak.max(hwm_kib(p));
        }
        if peak > ceiling_kib {
            kill(pid);
            let _ = child.wait();
            panic!("memory grew past {ceiling_kib} KiB ({peak} KiB)");
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > patience {
            kill(pid);
            let _ = child.wait();
            panic!("still running after {patience:?} (peak {peak} KiB)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (reader.join().expect("reader"), peak)
}

/// `pid` and every process below it.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let procs: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| {
                let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
                Some((p, ppid))
            })
            .collect()
        })
        .unwrap_or_default();
    for _ in 0..4 {
        for (p, ppid) in &procs {
            if all.contains(ppid) && !all.contains(p) {
                all.push(*p);
            }
        }
    }
    all
}

/// Peak resident memory of `pid`, in KiB (0 when it is gone).
pub fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
