//! The sandbox directory's files: checking that the parse tree describes the bundle, and writing
//! the rewritten bundle, the directories nginx expects and the stand-in files.

use std::path::{Component, Path};

use super::{SandboxError, edit, io_err, placeholder, rewrite};
use crate::render::Bundle;
use crate::validate::ast::Config;

/// Refuses inputs the rewrite cannot vouch for (see [`SandboxError::ConfigMismatch`]).
pub(super) fn check_inputs(
    bundle: &Bundle,
    entry: &str,
    config: &Config,
) -> Result<(), SandboxError> {
    if bundle.get(entry).is_none() {
        return Err(SandboxError::NoEntry(entry.to_string()));
    }
    match config.files.first() {
        Some(f) if f.path == entry => {}
        Some(f) => {
            return Err(SandboxError::ConfigMismatch(format!(
                "its first file is {:?}, the entry is {entry:?}",
                f.path
            )));
        }
        None => {
            return Err(SandboxError::ConfigMismatch(
                "it has no files (was the bundle parsed?)".to_string(),
            ));
        }
    }
    if let Some(f) = config.files.iter().find(|f| !f.ok) {
        return Err(SandboxError::Unparsed(f.path.clone()));
    }
    if let Some(f) = config.files.iter().find(|f| bundle.get(&f.path).is_none()) {
        return Err(SandboxError::ConfigMismatch(format!(
            "{:?} is parsed but not in the bundle",
            f.path
        )));
    }
    Ok(())
}

/// Writes the rewritten bundle, the directories nginx expects and the stand-in files.
pub(super) fn write_sandbox(
    bundle: &Bundle,
    layout: &rewrite::Layout,
    plan: &rewrite::Plan,
) -> Result<(), SandboxError> {
    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| io_err(p.to_path_buf(), e));
    let write =
        |p: &Path, bytes: &[u8]| std::fs::write(p, bytes).map_err(|e| io_err(p.to_path_buf(), e));
    mkdir(&layout.conf)?;
    mkdir(&layout.sockets)?;
    for (path, bytes) in bundle.files() {
        let rel = Path::new(path);
        if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(SandboxError::BadPath(path.clone()));
        }
        let dest = layout.conf.join(rel);
        if let Some(parent) = dest.parent() {
            mkdir(parent)?;
        }
        match plan.edits.get(path) {
            Some(edits) => write(&dest, &edit::apply(bytes, edits))?,
            None => write(&dest, bytes)?,
        }
    }
    for d in &plan.dirs {
        mkdir(d)?;
    }
    for (path, kind) in &plan.placeholders {
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        let bytes: &[u8] = match kind {
            rewrite::Placeholder::CertAndKey => placeholder::CERT_AND_KEY.as_bytes(),
            rewrite::Placeholder::Crl => placeholder::CRL.as_bytes(),
            rewrite::Placeholder::DhParams => placeholder::DH_PARAMS.as_bytes(),
            rewrite::Placeholder::Password => placeholder::PASSWORD.as_bytes(),
            rewrite::Placeholder::TicketKey => &placeholder::TICKET_KEY,
        };
        write(path, bytes)?;
    }
    Ok(())
}
