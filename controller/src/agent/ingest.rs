//! nginx's access and error logs, received as syslog datagrams on a unix socket and turned into
//! per-digest [`Counters`].
//!
//! Why syslog over a unix datagram socket rather than tailing files: nothing touches the disk, so
//! there is no rotation to follow, no partial line to stitch and no file to fill up; nginx opens
//! the socket non-blocking and drops a line rather than wait, so a slow agent can never stall a
//! request. The cost is that lines sent while the agent is down are lost, which only makes the
//! counters start later (they restart from zero with the agent anyway, see `started_at`).
//!
//! Each line carries its version in the syslog tag (`sba<12 hex>` for access, `sbe<12 hex>` for
//! error lines), written into that version's config by [`super::directives`], so a line from an
//! old worker still draining after a reload counts for the old digest.
//!
//! The parser works on the received bytes in place: no allocation per line.

use std::collections::HashMap;

use crate::analysis::Counters;
use crate::render::Digest;

use super::directives::{ACCESS_TAG, ERROR_TAG};
use super::wire::{DigestCounters, IngestStatus};

/// Digests whose counters are kept when no limit is given; older ones are dropped (their workers
/// are long gone), which bounds memory whatever the number of applies.
pub const DEFAULT_MAX_DIGESTS: usize = 16;

/// The 6 bytes of a digest that appear in log tags.
pub type ShortId = [u8; 6];

/// One parsed log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line {
    /// A request, from the access log.
    Access {
        /// The version whose worker served it.
        version: ShortId,
        /// The response status (0 when nginx closed the connection without one).
        status: u16,
        /// `$request_time` in milliseconds.
        latency_ms: f64,
        /// Whether the request carried this agent's probe token.
        probe: bool,
    },
    /// An error-log line.
    Error {
        /// The version whose worker logged it.
        version: ShortId,
        /// Whether it reports a failed connection to an upstream.
        connect_error: bool,
    },
}

/// The short id of a digest, as it appears in tags.
pub fn short_id(d: &Digest) -> ShortId {
    let mut out = [0u8; 6];
    out.copy_from_slice(&d.as_bytes()[..6]);
    out
}

/// Parses one syslog datagram as nginx sends it with `nohostname`:
/// `<PRI>Mmm dd hh:mm:ss TAG: MESSAGE`. `None` for anything else.
pub fn parse(datagram: &[u8], probe_token: &[u8]) -> Option<Line> {
    let rest = datagram.strip_prefix(b"<")?;
    let close = rest.iter().position(|&b| b == b'>')?;
    let rest = &rest[close + 1..];
    // The timestamp has colons but no ": "; the first ": " ends the tag.
    let colon = rest.windows(2).position(|w| w == b": ")?;
    let head = &rest[..colon];
    let tag = &head[head.iter().rposition(|&b| b == b' ')? + 1..];
    let msg = &rest[colon + 2..];
    let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
    if tag.len() != 3 + 12 {
        return None;
    }
    let version = decode_hex6(&tag[3..])?;
    match &tag[..3] {
        t if t == ACCESS_TAG.as_bytes() => parse_access(version, msg, probe_token),
        t if t == ERROR_TAG.as_bytes() => Some(Line::Error {
            version,
            connect_error: contains(msg, b"while connecting to upstream")
                || contains(msg, b"no live upstreams"),
        }),
        _ => None,
    }
}

fn parse_access(version: ShortId, msg: &[u8], probe_token: &[u8]) -> Option<Line> {
    let mut fields = msg.split(|&b| b == b'\t');
    let status = parse_u16(fields.next()?)?;
    let latency_ms = parse_seconds_as_ms(fields.next()?)?;
    let marker = fields.next()?;
    let probe = !probe_token.is_empty() && marker == probe_token;
    Some(Line::Access {
        version,
        status,
        latency_ms,
        probe,
    })
}

fn decode_hex6(hex: &[u8]) -> Option<ShortId> {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 6];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        *out.get_mut(i)? = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn parse_u16(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    s.iter().try_fold(0u16, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u16::from(b - b'0')))?
    })
}

/// `$request_time` is seconds with millisecond resolution (`0.012`).
fn parse_seconds_as_ms(s: &[u8]) -> Option<f64> {
    let (whole, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &b""[..]),
    };
    if whole.is_empty() || whole.len() > 9 || frac.len() > 3 {
        return None;
    }
    let mut ms = 0u64;
    for &b in whole {
        if !b.is_ascii_digit() {
            return None;
        }
        ms = ms * 10 + u64::from(b - b'0');
    }
    ms *= 1000;
    let mut scale = 100;
    for &b in frac {
        if !b.is_ascii_digit() {
            return None;
        }
        ms += u64::from(b - b'0') * scale;
        scale /= 10;
    }
    Some(ms as f64)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Counters per digest, plus what could not be attributed. One per agent, behind a mutex shared
/// by the socket reader (writes) and the API (snapshots).
#[derive(Debug)]
pub struct Tally {
    known: HashMap<ShortId, Digest>,
    /// Most recently registered first.
    order: Vec<Digest>,
    per: HashMap<Digest, (Counters, Counters)>,
    status: IngestStatus,
    max_digests: usize,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new(DEFAULT_MAX_DIGESTS)
    }
}

impl Tally {
    /// An empty tally keeping counters for at most `max_digests` digests (at least 2).
    pub fn new(max_digests: usize) -> Self {
        Tally {
            known: HashMap::new(),
            order: Vec::new(),
            per: HashMap::new(),
            status: IngestStatus::default(),
            max_digests: max_digests.max(2),
        }
    }

    /// Makes lines tagged with `digest` count for it; call before nginx loads that version. The
    /// digest moves to the front; the oldest beyond the limit is forgotten.
    pub fn register(&mut self, digest: Digest) {
        self.order.retain(|d| *d != digest);
        self.order.insert(0, digest);
        self.known.insert(short_id(&digest), digest);
        self.per.entry(digest).or_default();
        while self.order.len() > self.max_digests {
            if let Some(old) = self.order.pop() {
                self.known.remove(&short_id(&old));
                self.per.remove(&old);
            }
        }
    }

    /// Forgets a digest registered for an apply that was refused before nginx ever served it,
    /// so the state does not list counters for a config that never ran.
    pub fn forget(&mut self, digest: &Digest) {
        self.order.retain(|d| d != digest);
        self.known.remove(&short_id(digest));
        self.per.remove(digest);
    }

    /// Parses and counts one datagram.
    pub fn ingest(&mut self, datagram: &[u8], probe_token: &[u8]) {
        match parse(datagram, probe_token) {
            Some(line) => self.record(line),
            None => self.status.malformed_lines += 1,
        }
    }

    /// Counts one parsed line.
    pub fn record(&mut self, line: Line) {
        let version = match line {
            Line::Access { version, .. } => {
                self.status.access_lines += 1;
                version
            }
            Line::Error { version, .. } => {
                self.status.error_lines += 1;
                version
            }
        };
        let Some(entry) = self.known.get(&version).and_then(|d| self.per.get_mut(d)) else {
            self.status.unattributed_lines += 1;
            return;
        };
        match line {
            Line::Access {
                status,
                latency_ms,
                probe,
                ..
            } => {
                let c = if probe { &mut entry.1 } else { &mut entry.0 };
                c.record(status, latency_ms);
            }
            Line::Error {
                connect_error: true,
                ..
            } => entry.0.upstream_connect_errors += 1,
            Line::Error { .. } => {}
        }
    }

    /// Counters per digest (most recently registered first) and the ingestion totals.
    pub fn snapshot(&self) -> (Vec<DigestCounters>, IngestStatus) {
        let counters = self
            .order
            .iter()
            .filter_map(|d| {
                self.per.get(d).map(|(traffic, probes)| DigestCounters {
                    digest: *d,
                    traffic: traffic.clone(),
                    probes: probes.clone(),
                })
            })
            .collect();
        (counters, self.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        let mut files = std::collections::BTreeMap::new();
        files.insert("f".to_string(), vec![byte]);
        crate::render::Bundle::new(files).digest()
    }

    fn access(d: &Digest, body: &str) -> Vec<u8> {
        format!("<190>Nov  5 14:29:40 sba{}: {body}", d.short()).into_bytes()
    }

    #[test]
    fn access_lines_parse_in_place() {
        let d = digest(1);
        let line = access(&d, "502\t0.013\t-\t502\t-\t127.0.0.1:9");
        assert_eq!(
            parse(&line, b"tok"),
            Some(Line::Access {
                version: short_id(&d),
                status: 502,
                latency_ms: 13.0,
                probe: false
            })
        );
        let probe = access(&d, "200\t1.5\ttok\t200\t0.000\t127.0.0.1:8");
        assert!(matches!(
            parse(&probe, b"tok"),
            Some(Line::Access { probe: true, latency_ms, .. }) if latency_ms == 1500.0
        ));
        let forged = access(&d, "200\t0.001\ttok2\t-\t-\t-");
        assert!(matches!(
            parse(&forged, b"tok"),
            Some(Line::Access { probe: false, .. })
        ));
    }

    #[test]
    fn error_lines_flag_connect_failures() {
        let d = digest(2);
        let msg = format!(
            "<187>Nov 25 14:29:40 sbe{}: 2026/11/25 14:29:40 [error] 31216#31216: *2 connect() \
             failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1",
            d.short()
        );
        assert_eq!(
            parse(msg.as_bytes(), b""),
            Some(Line::Error {
                version: short_id(&d),
                connect_error: true
            })
        );
        let other = format!(
            "<187>Nov 25 14:29:40 sbe{}: [error] open() failed",
            d.short()
        );
        assert!(matches!(
            parse(other.as_bytes(), b""),
            Some(Line::Error {
                connect_error: false,
                ..
            })
        ));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b""[..],
            b"hello",
            b"<190>Nov 25 14:29:40 nginx: 200\t0.1\t-",
            b"<190>Nov 25 14:29:40 sbaXYZ456789abc: 200\t0.1\t-",
            b"<190>Nov 25 14:29:40 sba0123456789ab: 2x0\t0.1\t-",
            b"<190>Nov 25 14:29:40 sba0123456789ab: 200\t0.1",
            b"<190>Nov 25 14:29:40 sba0123456789ab: 200\t0.1234\t-",
        ] {
            assert_eq!(parse(bad, b"t"), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tally_attributes_by_tag_and_keeps_probes_apart() {
        let (a, b) = (digest(1), digest(2));
        let mut t = Tally::new(2);
        t.register(a);
        t.register(b);
        t.ingest(&access(&a, "200\t0.001\t-\t-\t-\t-"), b"tok");
        t.ingest(&access(&b, "502\t0.001\t-\t-\t-\t-"), b"tok");
        t.ingest(&access(&b, "200\t0.001\ttok\t-\t-\t-"), b"tok");
        t.ingest(b"junk", b"tok");
        t.ingest(&access(&digest(3), "200\t0.001\t-\t-\t-\t-"), b"tok");
        let (counters, status) = t.snapshot();
        assert_eq!(counters[0].digest, b);
        assert_eq!(counters[0].traffic.status_502, 1);
        assert_eq!(counters[0].traffic.total(), 1);
        assert_eq!(counters[0].probes.status_2xx, 1);
        assert_eq!(counters[1].traffic.status_2xx, 1);
        assert_eq!(
            (
                status.access_lines,
                status.malformed_lines,
                status.unattributed_lines
            ),
            (4, 1, 1)
        );
        t.register(digest(3));
        let (counters, _) = t.snapshot();
        assert_eq!(counters.len(), 2, "oldest digest forgotten");
        assert!(counters.iter().all(|c| c.digest != a));
    }
}
