//! The agent's log-ingestion rate (DESIGN §6): how many nginx log lines per second one core turns
//! into per-digest counters. Two figures:
//!
//! 1. parse and count only: pre-built syslog datagrams fed to `Tally::ingest` on one thread
//!    (the agent's per-line work, with no I/O);
//! 2. through a unix datagram socket: a sender thread plays nginx, the receiving thread does what
//!    the agent's socket loop does (receive, lock the tally once per batch, parse, count).
//!
//! The goal is 50,000 lines/s on one core. `cargo bench -p switchback --bench agent_ingest`.
//! The line mix: 90% 2xx, 4% 502, 3% 404, 2% probes, 1% error-log connect failures, over three
//! digests, with latencies from 0 to 3 s.

use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::Instant;

use switchback::agent::ingest::Tally;
use switchback::render::{Bundle, Digest};

const TOKEN: &[u8] = b"0123456789abcdef01234567";
/// Lines for the in-memory figure.
const LINES: usize = 2_000_000;
/// Datagrams for the socket figure.
const DATAGRAMS: usize = 300_000;
/// Datagrams handled per lock, as in the agent.
const BATCH: usize = 256;

fn digest(i: u8) -> Digest {
    Bundle::new([("nginx.conf".to_string(), vec![i])].into_iter().collect()).digest()
}

fn lines(digests: &[Digest], n: usize) -> Vec<Vec<u8>> {
    let token = std::str::from_utf8(TOKEN).unwrap_or("-");
    (0..n)
        .map(|i| {
            let d = digests[i % digests.len()].short();
            let ms = (i * 7919) % 3000;
            let time = format!("{}.{:03}", ms / 1000, ms % 1000);
            let line = match i % 100 {
                0 => format!(
                    "<187>Nov 25 14:29:40 sbe{d}: 2026/11/25 14:29:40 [error] 31216#31216: *{i} \
                     connect() failed (111: Connection refused) while connecting to upstream, \
                     client: 127.0.0.1, server: , request: \"GET /x HTTP/1.1\", upstream: \
                     \"http://127.0.0.1:9/x\", host: \"127.0.0.1:8080\""
                ),
                1..=4 => {
                    format!("<190>Nov 25 14:29:40 sba{d}: 502\t{time}\t-\t502\t-\t127.0.0.1:9")
                }
                5..=7 => {
                    format!("<190>Nov 25 14:29:40 sba{d}: 404\t{time}\t-\t404\t0.000\t127.0.0.1:8")
                }
                8 | 9 => format!("<190>Nov 25 14:29:40 sba{d}: 200\t{time}\t{token}\t-\t-\t-"),
                _ => format!(
                    "<190>Nov 25 14:29:40 sba{d}: 200\t{time}\t-\t200\t0.001\t127.0.0.1:8080"
                ),
            };
            line.into_bytes()
        })
        .collect()
}

fn tally(digests: &[Digest]) -> Tally {
    let mut t = Tally::default();
    for d in digests {
        t.register(*d);
    }
    t
}

fn main() {
    let digests = [digest(1), digest(2), digest(3)];
    let input = lines(&digests, LINES);

    let mut t = tally(&digests);
    let started = Instant::now();
    for line in &input {
        t.ingest(line, TOKEN);
    }
    let took = started.elapsed().as_secs_f64();
    let (counters, status) = t.snapshot();
    let counted: u64 = counters
        .iter()
        .map(|c| c.traffic.total() + c.probes.total())
        .sum();
    assert_eq!(status.malformed_lines, 0);
    println!(
        "parse+count, one thread: {LINES} lines in {:.3} s = {:.0} lines/s ({counted} requests, {} error lines)",
        took,
        LINES as f64 / took,
        status.error_lines
    );

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("socket figure skipped: no temp dir ({e})");
            return;
        }
    };
    let path = dir.path().join("log.sock");
    let (Ok(rx), Ok(tx)) = (UnixDatagram::bind(&path), UnixDatagram::unbound()) else {
        println!("socket figure skipped: cannot bind a unix datagram socket");
        return;
    };
    let shared = Mutex::new(tally(&digests));
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for line in input.iter().take(DATAGRAMS) {
                // Blocking send: the receiver's queue applies back-pressure, nothing is dropped.
                let _ = tx.send_to(line, &path);
            }
        });
        let mut buf = vec![0u8; 16 * 1024];
        let mut seen = 0;
        while seen < DATAGRAMS {
            let Ok(n) = rx.recv(&mut buf) else { break };
            let mut t = shared.lock().unwrap_or_else(|p| p.into_inner());
            t.ingest(&buf[..n], TOKEN);
            seen += 1;
            let _ = rx.set_nonblocking(true);
            for _ in 0..BATCH {
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        t.ingest(&buf[..n], TOKEN);
                        seen += 1;
                    }
                    Err(_) => break,
                }
            }
            let _ = rx.set_nonblocking(false);
        }
    });
    let took = started.elapsed().as_secs_f64();
    println!(
        "through a unix datagram socket: {DATAGRAMS} lines in {:.3} s = {:.0} lines/s",
        took,
        DATAGRAMS as f64 / took
    );
}
