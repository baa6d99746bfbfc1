//! The agent's own refusal of bundles that would make nginx load code, before its `nginx -t` and
//! reload. The controller's validation refuses them too (SB109), but the agent must not trust
//! that: it reloads a real nginx, as the pod's user, next to the pod's secrets, and a bundle can
//! reach it by other ways (a forged or mistaken apply, a controller of another version).
//!
//! Refused: every SB109 finding (`ssl_engine`, `engine:` values, `load_module` paths that can
//! reach a bundle file), and any `load_module` whose file, resolved against nginx's prefix (the
//! state directory, which holds every kept version) and with links followed, is not inside the
//! nginx build's module directory. The second check is the exact one: it knows the real paths.

use std::collections::BTreeMap;
use std::path::Path;

use crate::validate::Diagnostic;
use crate::validate::ast::Directive;
use crate::validate::lint::code;
use crate::validate::paths::ConfigRoot;

/// Most findings quoted in the refusal.
const MAX_QUOTED: usize = 3;

/// `Err` with the findings (file:line: SB109: why) when the bundle would load code. `modules` is
/// the build's module directory (`--modules-path`), `prefix` nginx's `-p`, `root` the config root
/// the bundle stands for (its absolute includes below it are followed into the bundle).
pub fn refuse_code(
    files: &BTreeMap<String, Vec<u8>>,
    entry: &str,
    root: &ConfigRoot,
    modules: &Path,
    prefix: &Path,
) -> Result<(), String> {
    // A bundle that does not parse is refused by `prepare`, with the parser's message.
    let (config, _) = super::paths::parse_in_pod(files, entry, root);
    let mut found: Vec<String> = code::check(&config, files)
        .iter()
        .map(ToString::to_string)
        .collect();
    let allowed = modules.canonicalize().ok();
    for file in &config.files {
        outside_modules(
            &file.path,
            &file.directives,
            allowed.as_deref(),
            modules,
            prefix,
            &mut found,
        );
    }
    if found.is_empty() {
        return Ok(());
    }
    let more = found.len().saturating_sub(MAX_QUOTED);
    found.truncate(MAX_QUOTED);
    let mut why = format!(
        "the bundle would make nginx load code, refused before nginx -t: {}",
        found.join("; ")
    );
    if more > 0 {
        why.push_str(&format!(" (and {more} more)"));
    }
    Err(why)
}

fn outside_modules(
    file: &str,
    dirs: &[Directive],
    allowed: Option<&Path>,
    modules: &Path,
    prefix: &Path,
    out: &mut Vec<String>,
) {
    for d in dirs {
        if d.name.eq_ignore_ascii_case("load_module")
            && let Some(arg) = d.args.first()
        {
            let path = prefix.join(arg.value.trim());
            let inside = match (path.canonicalize(), allowed) {
                (Ok(real), Some(dir)) => real.starts_with(dir) && real != dir,
                _ => false,
            };
            if !inside {
                let message = format!(
                    "`load_module {}` is not a file in the nginx build's module directory {}; \
                     only modules of the build are loaded",
                    arg.value,
                    modules.display()
                );
                let d = Diagnostic::error(code::RULE, file, d.span.line, d.span.col, message);
                out.push(d.to_string());
            }
        }
        outside_modules(file, d.children(), allowed, modules, prefix, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(conf: &str) -> BTreeMap<String, Vec<u8>> {
        let mut f = BTreeMap::new();
        f.insert("nginx.conf".to_string(), conf.as_bytes().to_vec());
        f
    }

    #[test]
    fn modules_load_only_from_the_build_directory() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        let prefix = dir.path().join("state");
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::create_dir_all(prefix.join("versions/abc")).unwrap();
        std::fs::write(modules.join("ngx_x_module.so"), b"").unwrap();
        std::fs::write(prefix.join("versions/abc/ngx_y_module.so"), b"").unwrap();
        std::os::unix::fs::symlink(&modules, prefix.join("mods")).unwrap();

        let ok = format!(
            "load_module {}/ngx_x_module.so;\nevents {{}}\n",
            modules.display()
        );
        assert_eq!(
            refuse_code(
                &files(&ok),
                "nginx.conf",
                &ConfigRoot::default(),
                &modules,
                &prefix
            ),
            Ok(())
        );

        for bad in [
            // An earlier version's file, by the absolute path of the state directory.
            format!("{}/versions/abc/ngx_y_module.so", prefix.display()),
            // Not there at all.
            format!("{}/ngx_missing.so", modules.display()),
            // The directory itself.
            modules.display().to_string(),
        ] {
            let conf = format!("load_module {bad};\nevents {{}}\n");
            let err = refuse_code(
                &files(&conf),
                "nginx.conf",
                &ConfigRoot::default(),
                &modules,
                &prefix,
            )
            .unwrap_err();
            assert!(err.contains("nginx.conf:1:1: error[SB109]"), "{err}");
        }
        // A relative path through a link into the module directory resolves like nginx does.
        let conf = "load_module mods/ngx_x_module.so;\nevents {}\n";
        let err = refuse_code(
            &files(conf),
            "nginx.conf",
            &ConfigRoot::default(),
            &modules,
            &prefix,
        )
        .unwrap_err();
        assert!(
            err.contains("modules/NAME"),
            "the static rule still applies: {err}"
        );
    }

    #[test]
    fn engines_are_refused_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let conf = "events {}\nhttp { server {\n ssl_certificate_key \"engine:/x.so:k\"; } }\n";
        let err = refuse_code(
            &files(conf),
            "nginx.conf",
            &ConfigRoot::default(),
            dir.path(),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.contains("nginx.conf:3:"), "{err}");
        assert!(err.contains("error[SB109]"), "{err}");
    }
}
