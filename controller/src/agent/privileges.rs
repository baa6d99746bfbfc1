//! Running as root. The agent runs as root wherever nginx must start as root (a VM, a developer's
//! machine, a container without `runAsNonRoot`). nginx's master then runs as root too, which it
//! needs to bind ports and read keys; its workers must not: they parse requests from anyone and
//! serve files, and a root worker serves `/etc/shadow` to `location / { alias /etc/; }`
//! (issue 13, finding 4). So the agent names an unprivileged worker user in every bundle that
//! names none (`--worker-user`, `nobody` by default; `directives.rs` inserts it and refuses a
//! bundle's own `user root`), and checks at start that this user can reach what workers use in
//! the state directory: the log socket (workers send their log lines there) and `tmp/` (request
//! bodies and proxy buffers). nginx's master itself creates the temp directories it needs and
//! hands them to the worker user.
//!
//! The check looks at the owner, group and other bits of each directory on the way with the
//! user's primary group (supplementary groups are not considered, so it may refuse a layout that
//! would work; it never accepts one that does not).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{Group, User};

use super::layout::Layout;

/// The user nginx's workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// The arguments of nginx's `user` directive: the name and the primary group's name.
    pub directive: String,
}

impl WorkerUser {
    /// Whether this is root (workers as root: accepted only when asked for by name).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Looks up `name` in the system's user database.
pub fn worker_user(name: &str) -> Result<WorkerUser, String> {
    let user = User::from_name(name)
        .map_err(|e| format!("looking up --worker-user {name:?}: {e}"))?
        .ok_or_else(|| {
            format!(
                "--worker-user {name:?} is not a user on this machine (nginx's workers run as \
                 it when the agent runs as root)"
            )
        })?;
    let group = Group::from_gid(user.gid)
        .map_err(|e| format!("looking up the group of --worker-user {name:?}: {e}"))?
        .ok_or_else(|| {
            format!(
                "the primary group {} of --worker-user {name:?} has no name, which nginx's \
                 `user` directive needs",
                user.gid
            )
        })?;
    Ok(WorkerUser {
        name: user.name.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        directive: format!("{} {}", user.name, group.name),
    })
}

/// Makes the state directory and its `tmp/` searchable by `user` (the agent made them; search
/// without listing is all workers need), then checks every directory above the state directory:
/// an error names the first one `user` cannot search and what to do.
pub fn make_reachable(layout: &Layout, user: &WorkerUser) -> Result<(), String> {
    if user.is_root() {
        return Ok(());
    }
    for dir in [layout.root().to_path_buf(), layout.temp_dir()] {
        let meta = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !searchable(&meta, user) {
            let mode = meta.permissions().mode() | 0o001;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("making {} searchable: {e}", dir.display()))?;
        }
    }
    for dir in layout.root().ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !searchable(&meta, user) {
            return Err(unreachable(dir, &meta, user, layout));
        }
    }
    Ok(())
}

/// Whether `user` may search (`x`) the directory `meta` describes.
fn searchable(meta: &std::fs::Metadata, user: &WorkerUser) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

fn unreachable(dir: &Path, meta: &std::fs::Metadata, user: &WorkerUser, layout: &Layout) -> String {
    format!(
        "nginx's workers run as {:?} (--worker-user), who cannot reach the agent's log socket {}: \
         {} is mode {:04o}, owner uid {}. Make it searchable (chmod o+x {}), use a state \
         directory below directories that are, or start the agent with --worker-user root to \
         run the workers as root (they can then read and serve every file on this machine)",
        user.name,
        layout.log_socket().display(),
        dir.display(),
        meta.mode() & 0o7777,
        meta.uid(),
        dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> WorkerUser {
        WorkerUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            directive: "nobody nogroup".into(),
        }
    }

    #[test]
    fn a_closed_parent_is_named_and_the_state_directory_is_opened() {
        let top = tempfile::tempdir().expect("tempdir");
        let parent = top.path().join("closed");
        std::fs::create_dir(&parent).expect("mkdir");
        let layout = Layout::new(parent.join("state")).expect("layout");
        layout.prepare().expect("prepare");
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        set(top.path(), 0o711);
        set(&parent, 0o700);
        set(layout.root(), 0o700);
        // Owned by whoever runs the test; "nobody" is neither owner nor group.
        let err = make_reachable(&layout, &nobody()).expect_err("closed parent");
        assert!(err.contains(&parent.display().to_string()), "{err}");
        assert!(
            err.contains("0700") && err.contains("--worker-user root"),
            "{err}"
        );
        set(&parent, 0o711);
        make_reachable(&layout, &nobody()).expect("reachable");
        let mode = std::fs::metadata(layout.root()).expect("stat").mode();
        assert_eq!(mode & 0o001, 0o001, "the state directory is searchable now");
        let root = WorkerUser { uid: 0, ..nobody() };
        set(&parent, 0o700);
        assert!(make_reachable(&layout, &root).is_ok(), "root reaches all");
    }

    #[test]
    fn nobody_resolves_with_its_group_name() {
        // Every Linux distribution has `nobody`; its group is `nogroup` or `nobody`.
        let u = worker_user("nobody").expect("nobody exists");
        assert!(!u.is_root());
        assert!(u.directive.starts_with("nobody "), "{}", u.directive);
        assert!(worker_user("no-such-user-sb").is_err());
    }
}
