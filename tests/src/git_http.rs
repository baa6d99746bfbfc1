//! A smart-HTTP git server the chaos tests can take down or slow down: every request is handed
//! to the real `git http-backend` (a CGI, `GIT_PROJECT_ROOT` the served directory,
//! `GIT_HTTP_EXPORT_ALL`), so the controller fetches over `http://` exactly as from a git host,
//! and [`GitHttp::down`] / [`GitHttp::slow`] inject the remote's faults of issue 16: a remote
//! that closes every connection unanswered, and one whose every fetch takes a set time (the
//! ref advertisement, the first request of each fetch, is held that long).
//!
//! Plain std threads, one per connection, each answering one request and closing
//! (`Connection: close`), so the server does not depend on the test's runtime and a hung
//! client cannot hold the accept loop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request body read (a fetch's negotiation is a few KiB).
const MAX_BODY: usize = 16 << 20;

/// What the server does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer every request.
    Up,
    /// Close every connection without reading or answering it.
    Down,
    /// Hold every fetch's ref advertisement (`GET .../info/refs`) this long, then answer.
    Slow(Duration),
}

struct Shared {
    root: PathBuf,
    mode: Mutex<Mode>,
    stopping: AtomicBool,
    /// Requests answered.
    served: AtomicU64,
    /// Fetches begun: ref advertisements (`GET .../info/refs`) asked for.
    fetches: AtomicU64,
    /// Connections closed unanswered while [`Mode::Down`].
    refused: AtomicU64,
}

/// A running server; stopped when dropped.
pub struct GitHttp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl GitHttp {
    /// Serves the repositories under `root` (`http://<addr>/<name>.git`) on `ip` (an ephemeral
    /// port), up.
    pub fn start(ip: &str, root: &Path) -> std::io::Result<GitHttp> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            mode: Mutex::new(Mode::Up),
            stopping: AtomicBool::new(false),
            served: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let accept = std::thread::spawn(move || accept_loop(&listener, &accepting));
        Ok(GitHttp {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The URL of the repository `name` (a directory under the root, e.g. `origin.git`).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Sets what the server does with the next requests.
    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// Closes every connection unanswered from now on.
    pub fn down(&self) {
        self.set(Mode::Down);
    }

    /// Answers every request again.
    pub fn up(&self) {
        self.set(Mode::Up);
    }

    /// Holds every fetch `per_fetch` from now on.
    pub fn slow(&self, per_fetch: Duration) {
        self.set(Mode::Slow(per_fetch));
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Fetches begun so far (ref advertisements asked for, while up or slow).
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// Connections closed unanswered so far (while down).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees `stopping` and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let mode = *shared.mode.lock().unwrap_or_else(|e| e.into_inner());
        if mode == Mode::Down {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &shared) {
                eprintln!("git http: {e}");
            }
        });
    }
}

/// One request, read, handed to `git http-backend`, answered.
fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        read_chunked(&mut reader)?
    } else {
        let len: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len.min(MAX_BODY)];
        reader.read_exact(&mut body)?;
        body
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path.ends_with("/info/refs") {
        shared.fetches.fetch_add(1, Ordering::SeqCst);
    }
    let mode = *shared.mode.lock().unwrap_or_else(|e| e.into_inner());
    if let (Mode::Slow(hold), true) = (mode, path.ends_with("/info/refs")) {
        std::thread::sleep(hold);
    }
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = header("content-type") {
        cgi.env("CONTENT_TYPE", t);
    }
    if let Some(e) = header("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = header("git-protocol") {
        cgi.env("GIT_PROTOCOL", p);
    }
    let mut child = cgi.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body)?;
    }
    let out = child.wait_with_output()?;
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let (head, rest) = match split {
        Some((i, n)) => (&out.stdout[..i], &out.stdout[i + n..]),
        None => (&out.stdout[..0], &out.stdout[..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    for h in head.lines().filter(|h| !h.trim().is_empty()) {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            _ => response.extend_from_slice(format!("{h}\r\n").as_bytes()),
        }
    }
    let mut stream = stream;
    stream.write_all(format!("HTTP/1.1 {status}\r\n").as_bytes())?;
    stream.write_all(&response)?;
    stream.write_all(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            rest.len()
        )
        .as_bytes(),
    )?;
    stream.write_all(rest)?;
    stream.flush()?;
    shared.served.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A chunked request body, bounded by [`MAX_BODY`].
fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 || body.len() + size > MAX_BODY {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git_fixture::git_cli as git;

    fn served_repo() -> (tempfile::TempDir, GitHttp, String) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("f"), "x").expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "one"]);
        git(tmp.path(), &["clone", "-q", "--bare", "work", "origin.git"]);
        let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
        let server = GitHttp::start("127.0.0.1", tmp.path()).expect("start");
        (tmp, server, head)
    }

    fn ls_remote(url: &str) -> std::process::Output {
        Command::new("git")
            .args(["ls-remote", url, "main"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("git ls-remote")
    }

    #[test]
    fn a_clone_over_the_server_gets_the_repository_and_down_refuses_it() {
        let (tmp, server, head) = served_repo();
        let url = server.url("origin.git");
        let out = ls_remote(&url);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&head));
        git(tmp.path(), &["clone", "-q", &url, "copy"]);
        let copied = git(&tmp.path().join("copy"), &["rev-parse", "HEAD"]);
        assert_eq!(copied.trim(), head);

        server.down();
        let out = ls_remote(&url);
        assert!(!out.status.success(), "{out:?}");
        assert!(server.refused() > 0);
        server.up();
        assert!(ls_remote(&url).status.success());
    }

    #[test]
    fn a_slow_server_holds_each_fetch() {
        let (_tmp, server, head) = served_repo();
        server.slow(Duration::from_secs(2));
        let started = std::time::Instant::now();
        let out = ls_remote(&server.url("origin.git"));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&head));
        assert!(started.elapsed() >= Duration::from_secs(2));
    }
}
