//! Support for the input attacks: the real CLI with a deadline, hand-made git trees, and a real
//! nginx serving a bundle on a unix socket (no addresses to share with other tests).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use git2::{ObjectType, Oid, Repository};
use switchback::validate::sandbox::Nginx;
use switchback_tests::bin::switchback_bin;

/// How long anything here may take before the test gives up (a bound, never an assertion).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `cmd` to the end, killing it and failing the test if it is still running after
/// [`PATIENCE`]: a regression that makes the CLI hang fails the test instead of hanging it.
pub fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {PATIENCE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real `switchback` with `args`, bounded.
pub fn switchback(args: &[&str]) -> Output {
    run_bounded(Command::new(switchback_bin()).args(args))
}

/// Standard output and error of a run, for assertion messages.
pub fn both(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A tree object written straight into the object database: git's porcelain and libgit2's tree
/// builder refuse names such as `../../../x`; the database stores whatever it is given, and a
/// repository holding such a tree can be pushed and fetched like any other.
pub fn raw_tree(repo: &Repository, entries: &[(&str, &str, Oid)]) -> Oid {
    let mut data = Vec::new();
    for (mode, name, id) in entries {
        data.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        data.extend_from_slice(id.as_bytes());
    }
    repo.odb()
        .expect("odb")
        .write(ObjectType::Tree, &data)
        .expect("write tree")
}

/// Commits `tree` on HEAD of `repo`.
pub fn commit_tree(repo: &Repository, tree: Oid) -> Oid {
    let sig = git2::Signature::new(
        "Mallory",
        "m@example.invalid",
        &git2::Time::new(1_700_000_000, 0),
    )
    .expect("signature");
    let tree = repo.find_tree(tree).expect("tree");
    repo.commit(Some("HEAD"), &sig, &sig, "a hand-made tree", &tree, &[])
        .expect("commit")
}

/// Every file, link or other non-directory under `dir`.
pub fn non_directories(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            if entry.file_type().expect("type").is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

/// The `*_temp_path` directives of this nginx build (from `nginx -V`), pointed into `prefix`, so
/// a served nginx never touches the build's default directories.
fn temp_paths(nginx: &Path, prefix: &Path) -> String {
    let out = Command::new(nginx).arg("-V").output().expect("nginx -V");
    let text = String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .filter_map(|opt| opt.strip_prefix("--http-")?.split_once("-temp-path="))
        .map(|(name, _)| {
            let name = name.replace('-', "_");
            format!("    {name}_temp_path {};\n", prefix.join(&name).display())
        })
        .collect()
}

/// An nginx.conf for [`serve`]: `server_body` inside one server on `prefix/nginx.sock`.
pub fn served_conf(prefix: &Path, server_body: &str) -> String {
    let nginx = nginx_path();
    format!(
        "pid {pid};\nevents {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n{temps}    \
         default_type text/plain;\n    server {{\n        listen unix:{sock};\n{server_body}    }}\n}}\n",
        pid = prefix.join("nginx.pid").display(),
        temps = temp_paths(&nginx, prefix),
        sock = prefix.join("nginx.sock").display(),
    )
}

/// The nginx binary the validation sandbox would use.
pub fn nginx_path() -> PathBuf {
    Nginx::find(None)
        .expect("nginx usable")
        .expect("nginx present")
        .path()
        .to_path_buf()
}

/// A real nginx serving `prefix/nginx.conf`, stopped when dropped.
pub struct Served {
    child: Child,
    socket: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nginx (one process, in the foreground) on `prefix/nginx.conf` and waits until its
/// socket answers.
pub fn serve(prefix: &Path) -> Served {
    let child = Command::new(nginx_path())
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .args(["-c", "nginx.conf", "-g", "daemon off; master_process off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut served = Served {
        child,
        socket: prefix.join("nginx.sock"),
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        if UnixStream::connect(&served.socket).is_ok() {
            return served;
        }
        if let Some(status) = served.child.try_wait().expect("wait") {
            let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
            panic!("nginx exited ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline, "nginx never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Served {
    /// `GET path` over HTTP/1.0: the status code and the body's bytes.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut conn = UnixStream::connect(&self.socket).expect("connect");
        conn.set_read_timeout(Some(PATIENCE)).expect("timeout");
        write!(conn, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send");
        let mut response = Vec::new();
        conn.read_to_end(&mut response).expect("read");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        let head = String::from_utf8_lossy(&response[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, response[split + 4..].to_vec())
    }
}
