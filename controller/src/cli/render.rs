//! `switchback render`: a config directory or git revision to a bundle and its digest.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use serde_json::json;

use super::source::{
    Loaded, SourceArgs, load, print_diagnostic, render_loaded, revision_json, source_label,
};
use crate::{EXIT_FINDINGS, Format, first_line, print_json};
use switchback::render::{Bundle, RenderError, tree};

#[derive(Args)]
pub(crate) struct RenderArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Write the rendered bundle into this directory.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

pub(crate) fn cmd_render(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.source)?;
    let bundle = match render_loaded(&loaded, &args.source)? {
        Ok(bundle) => bundle,
        Err(e) => return Ok(report_render_error(&loaded, &e, args.format)),
    };
    if let Some(out) = &args.out {
        write_bundle(&bundle, out)?;
    }
    match args.format {
        Format::Json => {
            let files: BTreeMap<&str, usize> = bundle
                .files()
                .iter()
                .map(|(p, b)| (p.as_str(), b.len()))
                .collect();
            print_json(&json!({
                "source": source_label(&args.source),
                "digest": bundle.digest().to_string(),
                "revision": revision_json(&loaded.revision),
                "files": files,
                "bytes": bundle.size(),
            }))?;
        }
        Format::Text => {
            println!("{}", bundle.digest());
            if let Some(r) = &loaded.revision {
                println!("commit {} {}", r.commit, first_line(&r.message));
            }
            for (path, bytes) in bundle.files() {
                println!("  {path} ({} bytes)", bytes.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn report_render_error(loaded: &Loaded, e: &RenderError, format: Format) -> ExitCode {
    let d = e.to_diagnostic();
    match format {
        Format::Json => {
            let _ = print_json(&json!({
                "passed": false,
                "revision": revision_json(&loaded.revision),
                "diagnostics": [d],
            }));
        }
        Format::Text => print_diagnostic(loaded, &d),
    }
    ExitCode::from(EXIT_FINDINGS)
}

/// Writes every file of `bundle` under `out`, and nothing anywhere else.
///
/// A bundle path is written only when it is a plain relative path, and it is walked one component
/// at a time from a handle on `out` (`mkdirat`/`openat` with `O_NOFOLLOW`): a symbolic link that
/// is already in `out` (left by an earlier run, or planted) is refused, never followed, and there
/// is no window between checking a path and using it. `out` itself is whatever the user named.
pub(crate) fn write_bundle(bundle: &Bundle, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let root = std::fs::File::open(out).with_context(|| format!("opening {}", out.display()))?;
    for (path, bytes) in bundle.files() {
        if !tree::is_plain_path(path) {
            bail!(
                "refusing to write the bundle path {path:?} under {}: it is not a plain relative \
                 path and would land outside it",
                out.display()
            );
        }
        write_beneath(&root, path, bytes).with_context(|| {
            format!(
                "writing {} (nothing outside {} is written)",
                out.join(path).display(),
                out.display()
            )
        })?;
    }
    Ok(())
}

/// Creates the directories of `path` (a plain relative path) under `root` and writes the file,
/// refusing to go through or replace a symbolic link.
fn write_beneath(root: &std::fs::File, path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().context("empty bundle path")?;
    let mut dir: OwnedFd = root.as_fd().try_clone_to_owned()?;
    for part in parts {
        match mkdirat(&dir, part, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => bail!("creating the directory {part:?}: {e}"),
        }
        dir = openat(
            &dir,
            part,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| refusal(part, e))?;
    }
    let file = openat(
        &dir,
        name,
        // O_NONBLOCK: an existing FIFO fails at once (no reader) instead of blocking.
        OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_TRUNC
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| refusal(name, e))?;
    let mut file = std::fs::File::from(file);
    file.write_all(bytes)?;
    Ok(())
}

fn refusal(part: &str, e: Errno) -> anyhow::Error {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => anyhow::anyhow!(
            "{part:?} is already there as a symbolic link or a file; it is not followed (remove \
             it, or write to an empty directory)"
        ),
        e => anyhow::anyhow!("opening {part:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> Bundle {
        Bundle::new(
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn writes_files_and_directories_under_out() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        write_bundle(
            &bundle(&[("nginx.conf", "a"), ("conf.d/x/y.conf", "b")]),
            &out,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("nginx.conf")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("conf.d/x/y.conf")).unwrap(),
            "b"
        );
        // A second run over the same directory replaces the files.
        write_bundle(&bundle(&[("nginx.conf", "c")]), &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("nginx.conf")).unwrap(),
            "c"
        );
    }

    #[test]
    fn a_path_that_climbs_out_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a/b/out");
        for bad in ["../../../x", "../x", "a/../../x", "/abs"] {
            let err = write_bundle(&bundle(&[(bad, "pwned")]), &out).unwrap_err();
            assert!(err.to_string().contains("not a plain relative"), "{err:#}");
        }
        assert!(!tmp.path().join("x").exists() && !tmp.path().join("a/x").exists());
        assert!(!tmp.path().join("a/b/x").exists());
    }

    #[test]
    fn links_already_in_out_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("conf.d")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), out.join("nginx.conf")).unwrap();
        for path in ["conf.d/site.conf", "nginx.conf"] {
            let err = write_bundle(&bundle(&[(path, "pwned")]), &out).unwrap_err();
            assert!(format!("{err:#}").contains("not followed"), "{err:#}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}
