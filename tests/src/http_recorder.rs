//! A loopback HTTP or HTTPS server that records what each client sent (path, `Authorization`)
//! and answers what the test says: the stand-in for an attacker's git server, a git host that
//! redirects, or an internal service, in the security tests (`tests/tests/security_operator.rs`).
//!
//! For https, [`TestCa`] makes a self-signed certificate for loopback addresses with the `openssl`
//! command; a client trusts it through `SSL_CERT_FILE` (libgit2 uses the system OpenSSL, which
//! reads that variable), so a test can show what a controller would send to a server it trusts.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The most of a request head read before answering.
const MAX_HEAD: usize = 16 * 1024;
/// How long one client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a recorder or its certificate could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// The `openssl` command failed or is missing.
    #[error("making a test certificate with openssl: {0}")]
    Openssl(String),
    /// The certificate or key could not be loaded into rustls.
    #[error("loading the test certificate: {0}")]
    Tls(String),
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A self-signed certificate (and its key) for some loopback addresses, in a temp directory.
pub struct TestCa {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// A certificate whose subject alternative names are `ips`, valid for two days.
    pub fn new(ips: &[IpAddr]) -> Result<TestCa, RecorderError> {
        let dir = tempfile::tempdir().map_err(|e| RecorderError::Openssl(e.to_string()))?;
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let sans = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .collect::<Vec<_>>()
            .join(",");
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=switchback-test", "-addext"])
            .arg(format!("subjectAltName={sans}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .map_err(|e| RecorderError::Openssl(e.to_string()))?;
        if !out.status.success() {
            return Err(RecorderError::Openssl(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(TestCa {
            _dir: dir,
            cert,
            key,
        })
    }

    /// The certificate in PEM: for `SSL_CERT_FILE` of a client that should trust the servers.
    pub fn cert_file(&self) -> &Path {
        &self.cert
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, RecorderError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = |e: &dyn std::fmt::Display| RecorderError::Tls(e.to_string());
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| tls(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(&e))?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| tls(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| tls(&e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// What the server answers to every request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `401 Unauthorized` with `WWW-Authenticate: Basic`: "send me your credentials".
    Unauthorized,
    /// `302 Found` to this URL prefix, the request's path and query appended.
    Redirect(String),
    /// This status, `Content-Type` and body.
    Respond {
        /// The status code.
        status: u16,
        /// The `Content-Type` header.
        content_type: String,
        /// The body.
        body: String,
    },
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The request target (path and query).
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running server; stopped when dropped.
pub struct Recorder {
    addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Serves on `ip` (a free port), over TLS with `ca`'s certificate when given.
    pub async fn start(
        ip: IpAddr,
        ca: Option<&TestCa>,
        answer: Answer,
    ) -> Result<Recorder, RecorderError> {
        let wanted = SocketAddr::new(ip, 0);
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| RecorderError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| RecorderError::Bind {
                addr: wanted,
                source,
            })?;
        let acceptor = ca.map(TestCa::acceptor).transpose()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            // Bounded by the test: the task is aborted when the recorder is dropped.
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, answer, record) = (acceptor.clone(), answer.clone(), record.clone());
                tokio::spawn(async move {
                    // A client that goes away or fails the handshake is its own business.
                    let _ = match acceptor {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => serve(tls, &answer, &record).await,
                            Err(e) => Err(e),
                        },
                        None => serve(stream, &answer, &record).await,
                    };
                });
            }
        });
        Ok(Recorder {
            addr,
            tls: ca.is_some(),
            seen,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `Some(what)` when a request carried `secret` in its `Authorization` header, as it is
    /// (bearer) or inside basic auth's base64.
    pub fn secret_seen(&self, secret: &str) -> Option<String> {
        use base64::Engine as _;
        self.authorizations().into_iter().find_map(|header| {
            let decoded = header
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (header.contains(secret) || decoded.contains(secret))
                .then(|| format!("{} received the secret: {header}", self.addr))
        })
    }

    /// The `Authorization` headers received, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| s.authorization)
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head, records it, answers, closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: &Answer,
    record: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_string());
    if let Ok(mut seen) = record.lock() {
        seen.push(Seen {
            path: path.clone(),
            authorization,
        });
    }
    let response = match answer {
        Answer::Unauthorized => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic \
            realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_string(),
        Answer::Redirect(prefix) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {prefix}{path}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ),
        Answer::Respond {
            status,
            content_type,
            body,
        } => format!(
            "HTTP/1.1 {status} Answer\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// The request head (up to the blank line), at most [`MAX_HEAD`] bytes.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
