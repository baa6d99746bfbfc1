//! Reading the image's own files (see [`crate::validate::paths`]) from disk, once, before the
//! pure gates run: from the nginx build's configuration directory only the packaged files
//! ([`IMAGE_FILE_NAMES`], [`IMAGE_DIRS`]); from a directory the user names, every regular file
//! in it, within bounds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::validate::paths::{IMAGE_DIRS, IMAGE_FILE_NAMES, ImageFiles};

/// Most files taken from a named directory: a copy of an image's `/etc/nginx` has a few dozen.
pub const MAX_IMAGE_FILES: usize = 2_000;

/// Most bytes taken from a named directory, all files together.
pub const MAX_IMAGE_BYTES: u64 = 32 * 1024 * 1024;

/// A named directory of image files that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageFilesError {
    /// It could not be listed or a file in it could not be read.
    #[error("image files: cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// It holds more than the bounds allow.
    #[error(
        "image files: {path} holds more than {MAX_IMAGE_FILES} files or {MAX_IMAGE_BYTES} bytes; \
         name the directory that stands for the image's config root, not a parent of it"
    )]
    TooLarge {
        /// The directory.
        path: PathBuf,
    },
}

/// The packaged files of an nginx build's configuration directory `conf_dir`; those missing are
/// left out (a build without `scgi_params` simply has none). `version` labels the source.
pub fn packaged(conf_dir: &Path, version: &str) -> ImageFiles {
    let mut files = BTreeMap::new();
    for name in IMAGE_FILE_NAMES {
        if let Ok(bytes) = std::fs::read(conf_dir.join(name)) {
            files.insert((*name).to_string(), bytes);
        }
    }
    for dir in IMAGE_DIRS {
        let Ok(entries) = std::fs::read_dir(conf_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Debian links these into modules-available: follow the link, read the file.
            if name.ends_with(".conf")
                && let Ok(bytes) = std::fs::read(entry.path())
            {
                files.insert(format!("{dir}/{name}"), bytes);
            }
        }
    }
    ImageFiles {
        source: format!("{}, the conf dir of {version}", conf_dir.display()),
        files: files.into(),
    }
}

/// Every regular file below `dir` (links followed, hidden files included), keyed by its path
/// relative to `dir`: the user's own copy of what their image holds under the config root.
pub fn named(dir: &Path) -> Result<ImageFiles, ImageFilesError> {
    let mut files = BTreeMap::new();
    let mut bytes = 0u64;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = pending.pop() {
        let read_err = |source| ImageFilesError::Read {
            path: path.clone(),
            source,
        };
        for entry in std::fs::read_dir(&path).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let child = entry.path();
            let meta = std::fs::metadata(&child).map_err(|source| ImageFilesError::Read {
                path: child.clone(),
                source,
            })?;
            if meta.is_dir() {
                pending.push((child, child_rel));
            } else if meta.is_file() {
                bytes += meta.len();
                if files.len() >= MAX_IMAGE_FILES || bytes > MAX_IMAGE_BYTES {
                    return Err(ImageFilesError::TooLarge {
                        path: dir.to_path_buf(),
                    });
                }
                let content = std::fs::read(&child).map_err(|source| ImageFilesError::Read {
                    path: child.clone(),
                    source,
                })?;
                files.insert(child_rel, content);
            }
        }
    }
    Ok(ImageFiles {
        source: dir.display().to_string(),
        files: files.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_takes_only_the_listed_files_and_module_confs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::write(root.join("mime.types"), "types {}\n").expect("write");
        std::fs::write(root.join("nginx.conf"), "events {}\n").expect("write");
        std::fs::create_dir_all(root.join("sites-enabled")).expect("mkdir");
        std::fs::write(root.join("sites-enabled/default"), "server {}\n").expect("write");
        std::fs::create_dir_all(root.join("modules-enabled")).expect("mkdir");
        std::fs::write(root.join("modules-enabled/50-a.conf"), "load_module x;\n").expect("w");
        let image = packaged(root, "nginx/1.0");
        let names: Vec<&str> = image.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["mime.types", "modules-enabled/50-a.conf"]);
        assert!(
            image.source.ends_with("the conf dir of nginx/1.0"),
            "{}",
            image.source
        );
    }

    #[test]
    fn named_takes_every_file_below_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("snippets")).expect("mkdir");
        std::fs::write(root.join("snippets/ssl.conf"), "ssl_protocols TLSv1.3;\n").expect("w");
        std::fs::write(root.join("mime.types"), "types {}\n").expect("write");
        let image = named(root).expect("read");
        let names: Vec<&str> = image.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["mime.types", "snippets/ssl.conf"]);
        let missing = named(&root.join("nope"));
        assert!(matches!(missing, Err(ImageFilesError::Read { .. })));
    }
}
