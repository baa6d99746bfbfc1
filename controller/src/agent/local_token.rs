//! The API token in local mode. Every endpoint of the agent but `/healthz` wants a bearer token
//! in both modes: whoever can post a bundle decides what nginx serves (issue 13, finding 4). In
//! local mode it comes from `--token-file` or `$SWITCHBACK_AGENT_TOKEN` (the local fleet writes
//! one per fleet to a 0600 file); with neither, the agent makes one at start and keeps it in
//! `STATE/api-token`, mode 0600, where whoever may change the state directory anyway can read it
//! (`curl -H "Authorization: Bearer $(cat STATE/api-token)" …`). A token there from an earlier
//! run is reused, so scripts keep working across restarts.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::layout::FsError;
use super::token::Token;

/// The file under the state directory holding a generated token.
pub const TOKEN_FILE: &str = "api-token";

/// A fresh token: 32 bytes from the kernel's random source, hex-encoded.
pub fn generate() -> std::io::Result<Token> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Token::new(&hex::encode(bytes), "a generated token").map_err(std::io::Error::other)
}

/// Writes `token` to `path` readable by its owner only (0600 from creation on: written to a
/// fresh temporary file made with that mode, then renamed over `path`).
pub fn write_private(path: &Path, token: &Token) -> Result<(), FsError> {
    let err = |what: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| FsError { what, path, source }
    };
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err("create", &tmp))?;
    file.write_all(token.expose().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(err("rename to", path))
}

/// The token in `STATE/api-token` when it is there and usable (its mode is put back to 0600),
/// else a fresh one written there.
pub fn load_or_create(state: &Path) -> Result<Token, FsError> {
    let path = token_path(state);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(token) = Token::new(&text, &path.display().to_string())
    {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| FsError {
                what: "chmod 0600",
                path: path.clone(),
                source,
            },
        )?;
        return Ok(token);
    }
    let token = generate().map_err(|source| FsError {
        what: "generate a token for",
        path: path.clone(),
        source,
    })?;
    write_private(&path, &token)?;
    Ok(token)
}

/// Where a generated token is kept.
pub fn token_path(state: &Path) -> PathBuf {
    state.join(TOKEN_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn a_generated_token_is_private_kept_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path()).expect("create");
        assert_eq!(first.expose().len(), 64);
        let path = token_path(dir.path());
        assert_eq!(
            std::fs::metadata(&path).expect("stat").mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let again = load_or_create(dir.path()).expect("reuse");
        assert_eq!(again, first);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").mode() & 0o777,
            0o600
        );
        assert_ne!(generate().expect("token"), first, "fresh tokens differ");
    }
}
