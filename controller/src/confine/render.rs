//! Rendering a commit in a confined child (`switchback __render`), so a template that defeats the
//! fuel limit (fuel counts instructions and bytes, not the work of minijinja's lazy sequences:
//! `ns.l = ns.l + ns.l` doubled 33 times) or that allocates hundreds of MiB stops at the child's
//! CPU, memory or time limit and the caller gets an error naming the template and the limit.
//!
//! The request (config tree and values) goes to the child's stdin, the bundle or the render error
//! comes back on stdout, in a small length-prefixed format. Before each template the child writes
//! its name to stderr, so a child killed by a limit is reported at the template it was rendering.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use super::{ConfineError, Launcher, LimitHit, Limits};
use crate::render::{Bundle, ConfigTree, RenderError, TreeEntry};

/// First bytes of a request and a response (format version 1).
const MAGIC: &[u8; 4] = b"SBR1";
/// What the child writes to stderr before rendering a template.
const TEMPLATE_MARK: &str = "switchback-render: template ";

/// Renders `tree` with `overrides` (as [`crate::render::render`] does) in a child under
/// `limits`. `Ok(Err(_))` is a finding in the config (including a limit it hit); `Err(_)` means the
/// child could not be run at all. Blocking: call it from `spawn_blocking` in async code.
pub fn render(
    tree: &ConfigTree,
    overrides: &serde_json::Value,
    limits: &Limits,
) -> Result<Result<Bundle, RenderError>, ConfineError> {
    let launcher = Launcher::find()?;
    let span = tracing::info_span!("render_confined", files = tree.len());
    let _guard = span.enter();
    let request = encode_request(tree, overrides);
    let cmd = launcher.render_command(limits);
    let out = super::run(cmd, launcher.path(), Some(request), limits)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(TEMPLATE_MARK))
        .unwrap_or(crate::render::VALUES_FILE)
        .to_string();
    if let Some(hit) = out.limit {
        tracing::info!(template = %at, limit = %hit, "rendering stopped by a limit");
        return Ok(Err(limit_error(at, hit)));
    }
    if out.status.success()
        && let Ok(result) = decode_response(&out.stdout)
    {
        return Ok(result);
    }
    // Crashed some other way (a stack overflow in deeply nested values, a bug): still a finding
    // about this input, named as precisely as the child allowed.
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with(TEMPLATE_MARK))
        .take(3)
        .collect();
    Ok(Err(RenderError::Crashed {
        path: at,
        why: format!("{}: {}", out.status, said.join(" / ")),
    }))
}

fn limit_error(path: String, hit: LimitHit) -> RenderError {
    RenderError::Limit {
        path,
        limit: hit.to_string(),
        retry: matches!(hit, LimitHit::WallTime(_)),
    }
}

/// `switchback __render LIMITS`: sets the limits on itself, reads a request from stdin, renders
/// it and writes the response to stdout.
pub(super) fn child_main(args: Vec<String>) -> ExitCode {
    let fail = |why: String| {
        eprintln!("switchback {}: {why}", super::RENDER_COMMAND);
        ExitCode::from(126)
    };
    let limits = match Limits::from_args(&mut args.into_iter()) {
        Ok(l) => l,
        Err(why) => return fail(why),
    };
    if let Err(why) = limits.apply_to_self() {
        return fail(format!("cannot set limits: {why}"));
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        return fail(format!("reading the request: {e}"));
    }
    let (tree, overrides) = match decode_request(&input) {
        Ok(r) => r,
        Err(why) => return fail(format!("bad request: {why}")),
    };
    drop(input);
    let mut stderr = std::io::stderr();
    let result = crate::render::render_with(&tree, &overrides, &mut |name| {
        let _ = writeln!(stderr, "{TEMPLATE_MARK}{name}");
    });
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(&encode_response(&result))
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("writing the response: {e}")),
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads length-prefixed fields, refusing lengths past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".to_string());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn field(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "length too large".to_string())?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.field()?.to_vec()).map_err(|_| "not UTF-8".to_string())
    }

    fn magic(&mut self) -> Result<(), String> {
        if self.take(4)? != MAGIC {
            return Err("not a render message".to_string());
        }
        Ok(())
    }
}

fn encode_request(tree: &ConfigTree, overrides: &serde_json::Value) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    put(&mut out, overrides.to_string().as_bytes());
    out.extend_from_slice(&(tree.len() as u64).to_le_bytes());
    for (path, entry) in tree.iter() {
        let (kind, data) = match entry {
            TreeEntry::File(bytes) => (0u8, bytes.as_slice()),
            TreeEntry::Symlink(target) => (1u8, target.as_bytes()),
        };
        out.push(kind);
        put(&mut out, path.as_bytes());
        put(&mut out, data);
    }
    out
}

fn decode_request(bytes: &[u8]) -> Result<(ConfigTree, serde_json::Value), String> {
    let mut r = Reader(bytes);
    r.magic()?;
    let overrides = serde_json::from_slice(r.field()?).map_err(|e| e.to_string())?;
    let n = r.u64()?;
    let mut tree = ConfigTree::new();
    for _ in 0..n {
        let kind = r.take(1)?[0];
        let path = r.string()?;
        let entry = match kind {
            0 => TreeEntry::File(r.field()?.to_vec()),
            1 => TreeEntry::Symlink(r.string()?),
            k => return Err(format!("unknown entry kind {k}")),
        };
        tree.insert(path, entry);
    }
    Ok((tree, overrides))
}

fn encode_response(result: &Result<Bundle, RenderError>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    match result {
        Ok(bundle) => {
            out.push(0);
            out.extend_from_slice(&(bundle.files().len() as u64).to_le_bytes());
            for (path, bytes) in bundle.files() {
                put(&mut out, path.as_bytes());
                put(&mut out, bytes);
            }
        }
        Err(e) => {
            out.push(1);
            // Serialising a plain enum of strings and numbers cannot fail; an empty field would
            // only make the parent report a crash.
            put(&mut out, &serde_json::to_vec(e).unwrap_or_default());
        }
    }
    out
}

fn decode_response(bytes: &[u8]) -> Result<Result<Bundle, RenderError>, String> {
    let mut r = Reader(bytes);
    r.magic()?;
    match r.take(1)?[0] {
        0 => {
            let n = r.u64()?;
            let mut files = BTreeMap::new();
            for _ in 0..n {
                let path = r.string()?;
                files.insert(path, r.field()?.to_vec());
            }
            Ok(Ok(Bundle::new(files)))
        }
        1 => serde_json::from_slice(r.field()?)
            .map(Err)
            .map_err(|e| e.to_string()),
        t => Err(format!("unknown response tag {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let mut tree = ConfigTree::new();
        tree.insert_file("nginx.conf.j2", b"events {}\n{{ x }}".to_vec());
        tree.insert_file("bin.dat", vec![0, 255, 10]);
        tree.insert("link.conf", TreeEntry::Symlink("nginx.conf.j2".into()));
        let values = serde_json::json!({"x": [1, "two"]});
        let (t2, v2) = decode_request(&encode_request(&tree, &values)).unwrap();
        assert_eq!((t2, v2), (tree.clone(), values.clone()));

        let ok = crate::render::render(&tree, &values);
        assert_eq!(decode_response(&encode_response(&ok)).unwrap(), ok);
        let err: Result<Bundle, RenderError> = Err(RenderError::Template {
            path: "a.j2".into(),
            line: 3,
            message: "boom".into(),
        });
        assert_eq!(decode_response(&encode_response(&err)).unwrap(), err);
    }

    #[test]
    fn truncated_or_foreign_messages_are_refused() {
        let mut tree = ConfigTree::new();
        tree.insert_file("a", b"x".to_vec());
        let full = encode_request(&tree, &serde_json::Value::Null);
        for cut in 0..full.len() {
            assert!(decode_request(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_response(b"HTTP/1.1 200").is_err());
        let mut huge = MAGIC.to_vec();
        put(&mut huge, b"null");
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_request(&huge).is_err());
    }
}
