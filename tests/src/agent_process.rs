//! Probing the agent and servers from outside, as an attacker would: `switchback agent` as its
//! own process (with a descriptor limit, its memory read from `/proc`), one-shot HTTP requests,
//! and piles of idle or slowloris connections. Used by the security suite
//! (`tests/tests/security_edges.rs`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::agent_harness::{PATIENCE, Site, eventually};
use crate::bin::switchback_bin;

/// `switchback agent` as its own process, stopped (`SIGTERM`, then `SIGKILL`) when dropped.
pub struct Agent {
    child: Child,
    api: SocketAddr,
    log: std::path::PathBuf,
}

impl Agent {
    /// Starts `sh -c 'ulimit -n <fds>; exec switchback agent …'` on `site` with `args` and `env`.
    pub fn spawn(
        site: &Site,
        api: SocketAddr,
        fds: u32,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let log = site.dir.path().join(format!("agent-{}.log", api.port()));
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {fds} && exec \"$0\" \"$@\""))
            .arg(switchback_bin())
            .arg("agent")
            .arg("--state-dir")
            .arg(&site.state)
            .arg("--listen")
            .arg(api.to_string())
            .arg("--nginx-listen")
            .arg(site.nginx.to_string())
            .args(args)
            .env_remove("SWITCHBACK_AGENT_TOKEN")
            .env("SWITCHBACK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("start switchback agent"),
            api,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers.
    pub async fn up(&mut self) {
        let api = self.api;
        let child = &mut self.child;
        eventually("the agent's /healthz", || {
            let exited = child.try_wait().ok().flatten();
            async move {
                assert!(exited.is_none(), "the agent exited at start: {exited:?}");
                http_status(api, "GET", "/healthz", None, Vec::new())
                    .await
                    .filter(|s| *s == 200)
            }
        })
        .await;
    }

    /// Waits (bounded) for the process to end on its own and returns its stderr.
    pub async fn exited(mut self) -> (std::process::ExitStatus, String) {
        let child = &mut self.child;
        let status = eventually("the agent to exit", || {
            let r = child.try_wait().expect("wait");
            async move { r }
        })
        .await;
        (status, self.log())
    }

    /// The agent's peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        proc_kib(self.pid(), "VmHWM:") * 1024
    }

    /// The agent's resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        proc_kib(self.pid(), "VmRSS:") * 1024
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = signal::kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        for _ in 0..200 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field in /proc/PID/status")
}

/// One HTTP/1.1 request over a fresh connection; the status, or `None` when nothing answered
/// within the patience.
pub async fn http_status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Option<u16> {
    http(addr, method, path, token, body).await.map(|(s, _)| s)
}

/// One request with `reqwest` (no proxies): status and body text.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Option<(u16, String)> {
    http_within(PATIENCE, addr, method, path, token, body).await
}

/// [`http`] with its own time limit (queued applies wait for the ones ahead of them).
pub async fn http_within(
    limit: Duration,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(limit)
        // A queued apply's body waits unread for its turn; reqwest's 30 s default would cut it.
        .tcp_user_timeout(None)
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client
        .request(method, format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{path}: {e:?}");
            return None;
        }
    };
    let status = resp.status().as_u16();
    Some((status, resp.text().await.unwrap_or_default()))
}

/// Reads from `stream` until the server closes it; `true` when it did within the patience.
pub async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Opens `idle` silent connections and `slow` ones that trickle half a request head, to `addr`.
pub async fn pile_up(
    addr: SocketAddr,
    idle: usize,
    slow: usize,
) -> (Vec<TcpStream>, Vec<tokio::task::JoinHandle<bool>>) {
    let mut silent = Vec::new();
    for _ in 0..idle {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut trickling = Vec::new();
    for _ in 0..slow {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        trickling.push(tokio::spawn(async move {
            // Slowloris: a byte of a never-ending head at a time, until the server hangs up.
            let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: ";
            if s.write_all(head).await.is_err() {
                return true;
            }
            for _ in 0..600 {
                if s.write_all(b"a").await.is_err() {
                    return true;
                }
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    _ => {}
                }
            }
            false
        }));
    }
    (silent, trickling)
}
