//! The sandbox directory's files: checking that the parse tree describes the bundle, and writing
//! the rewritten bundle, the directories nginx expects and the stand-in files.

use std::path::{Component, Path};

use super::{SandboxError, edit, io_err, placeholder, rewrite};
use crate::render::Bundle;
use crate::validate::ast::Config;
use crate::validate::paths::ProxyLayout;

/// Refuses inputs the rewrite cannot vouch for (see [`SandboxError::ConfigMismatch`]).
pub(super) fn check_inputs(
    bundle: &Bundle,
    entry: &str,
    config: &Config,
    proxy: &ProxyLayout,
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
    let known = |path: &str| bundle.get(path).is_some() || image_file(proxy, path).is_some();
    if let Some(f) = config.files.iter().find(|f| !known(&f.path)) {
        return Err(SandboxError::ConfigMismatch(format!(
            "{:?} is parsed but not in the bundle",
            f.path
        )));
    }
    Ok(())
}

/// The image file a parsed file stands for (its path is absolute, below the config root).
fn image_file<'p>(proxy: &'p ProxyLayout, path: &str) -> Option<(String, &'p [u8])> {
    if !path.starts_with('/') {
        return None;
    }
    let rel = proxy.config_root.relative(path)?;
    let bytes = proxy.image.files.get(&rel)?;
    Some((rel, bytes.as_slice()))
}

/// Writes the rewritten bundle, the image files the config includes (below `layout.image`), the
/// directories nginx expects and the stand-in files.
pub(super) fn write_sandbox(
    bundle: &Bundle,
    layout: &rewrite::Layout,
    plan: &rewrite::Plan,
    config: &Config,
    proxy: &ProxyLayout,
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
    for f in &config.files {
        let Some((rel, bytes)) = image_file(proxy, &f.path) else {
            continue;
        };
        let dest = layout.image.join(&rel);
        if let Some(parent) = dest.parent() {
            mkdir(parent)?;
        }
        match plan.edits.get(&f.path) {
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
