//! A `switchback local` process under test: its event lines as they come, waiting for one, and
//! SIGINT (as Ctrl-C) when the test ends, also on failure.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Stops `switchback local` with SIGINT (as Ctrl-C would) when the test ends, also on failure.
pub struct Running(pub Child);

impl Running {
    /// Sends SIGINT now.
    pub fn interrupt(&mut self) {
        let Ok(pid) = i32::try_from(self.0.id()) else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        );
    }

    /// The process's stdout lines, read on a thread of their own.
    pub fn lines(&mut self) -> mpsc::Receiver<String> {
        let stdout = self.0.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        lines
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
            let _ = self.0.wait();
        }
    }
}

/// Reads event lines until one contains `want`; fails after 180 s or when the process ends.
pub fn wait_for(lines: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let hit = line.contains(want);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no event with {want:?}; saw:\n{}", seen.join("\n"));
}
