//! Drift detection (`docs/drift.md`): the role Tripwire plays for a host, for the config nginx
//! serves. Someone editing `current/nginx.conf` by hand on a live proxy makes the pod serve, at its
//! next reload, config that no commit holds; this task notices and reports it, and under policy
//! `Repair` puts the applied digest back through the normal apply path.
//!
//! A check runs when inotify reports a change under the live version directory (after a short
//! quiet period, so an editor's burst of writes is one check), when an apply or a policy change
//! kicks it, and at the configured interval whatever inotify said (watches can be lost: a
//! directory created after the watch was set, a full inotify queue). Each check holds the apply
//! lock, so the agent's own writes are never mistaken for drift and a repair can never undo a
//! newer apply; it compares a fresh [`tree::scan`] with the manifest recorded when the digest was
//! applied.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::apply;
use super::layout::AppliedRecord;
use super::state::{Core, Shared, lock};
use super::tree::{self, Manifest};
use super::wire::{ApplyOutcome, ApplyRequest, DriftPolicy, DriftReport, DriftResolution};
use crate::render::Digest;

/// Quiet time after an inotify event before the check runs.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a stream of events can put a check off.
const MAX_DEFER: Duration = Duration::from_secs(2);
/// Most differing paths named in one report; the rest are counted.
pub const MAX_PATHS: usize = 20;
/// Least time between two repairs, so something that keeps rewriting the live config cannot
/// make the agent reload nginx in a loop; a drift seen sooner is repaired when the gap is over.
const REPAIR_GAP: Duration = Duration::from_secs(5);
/// The path reported as changed when `current` no longer points at the applied version.
pub const CURRENT_LINK: &str = "../current";

/// Runs drift checks until `stop`: at start, every `every`, after inotify events and kicks.
pub async fn watch(shared: Arc<Shared>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut watcher: Option<Watcher> = None;
    let mut pace = Pace::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let recheck = pace.recheck_at.take();
        let event = tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => false,
            () = shared.drift_kick.notified() => false,
            () = sleep_until(recheck) => false,
            stale = changed(watcher.as_ref()) => {
                if stale && let Some(w) = watcher.as_mut() {
                    w.stale = true;
                }
                true
            }
        };
        if event && !settle(&mut watcher, &mut stop).await {
            return;
        }
        check(&shared, &mut watcher, &mut pace).await;
    }
}

/// When repairs may run and when to look again without an event.
#[derive(Default)]
struct Pace {
    /// No repair before this instant ([`REPAIR_GAP`] after the last one).
    next_repair: Option<tokio::time::Instant>,
    /// Check again at this instant (a repair was deferred or failed).
    recheck_at: Option<tokio::time::Instant>,
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until no event came for [`DEBOUNCE`] (at most [`MAX_DEFER`]); false on `stop`.
async fn settle(watcher: &mut Option<Watcher>, stop: &mut watch::Receiver<bool>) -> bool {
    let deadline = tokio::time::Instant::now() + MAX_DEFER;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let quiet = tokio::time::sleep(DEBOUNCE.min(left));
        tokio::select! {
            _ = stop.changed() => return false,
            () = quiet => return true,
            stale = changed(watcher.as_ref()) => {
                if stale && let Some(w) = watcher.as_mut() {
                    w.stale = true;
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
    }
}

/// Resolves when the watcher reports events (true when the watches need setting again: a
/// directory was replaced, removed or created); never without a watcher.
async fn changed(watcher: Option<&Watcher>) -> bool {
    match watcher {
        Some(w) => w.events().await,
        None => std::future::pending().await,
    }
}

/// One check under the apply lock: compare, record, and repair when the policy says so.
async fn check(shared: &Arc<Shared>, watcher: &mut Option<Watcher>, pace: &mut Pace) {
    let mut core = shared.core.lock().await;
    if core.stopping {
        return;
    }
    let Some(rec) = lock(&shared.status).applied.clone() else {
        *watcher = None;
        finish_check(shared);
        return;
    };
    let dir = shared.layout.version(&rec.digest);
    if watcher
        .as_ref()
        .is_none_or(|w| w.digest != rec.digest || w.stale)
    {
        // Armed before the scan, so a change made while it reads wakes the next check.
        *watcher = None;
        *watcher = Watcher::arm(&dir, rec.digest)
            .map_err(|e| tracing::warn!(error = %e, "inotify unavailable; drift is seen at the interval"))
            .ok();
    }
    let scanned = {
        let layout = shared.layout.clone();
        let digest = rec.digest;
        tokio::task::spawn_blocking(move || {
            let found = tree::scan(&layout.version(&digest));
            (found, layout.read_current() == Some(digest))
        })
        .await
    };
    let (found, current_ok) = match scanned {
        Ok((Ok(found), current_ok)) => (found, current_ok),
        Ok((Err(e), _)) => {
            tracing::warn!(error = %e, "drift check: cannot read the live config");
            finish_check(shared);
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "drift check task failed");
            return;
        }
    };
    if rec.tree.is_empty() {
        adopt_baseline(shared, &rec, found);
        finish_check(shared);
        return;
    }
    let report = compare(&rec, &found, current_ok, shared.clock.now());
    let policy = {
        let mut s = lock(&shared.status);
        let d = &mut s.drift;
        if let Some(open) = d.report.as_mut().filter(|r| r.resolved_at.is_none()) {
            if open.digest != rec.digest {
                open.resolved_at = Some(shared.clock.now());
                open.resolution = Some(DriftResolution::Superseded);
            }
        }
        match report {
            None => {
                if let Some(open) = d.report.as_mut().filter(|r| r.resolved_at.is_none()) {
                    tracing::info!(digest = %rec.digest.short(), "the live config matches the applied digest again");
                    open.resolved_at = Some(shared.clock.now());
                    open.resolution = Some(DriftResolution::Reverted);
                }
                None
            }
            Some(mut new) => {
                match d.report.as_mut().filter(|r| r.resolved_at.is_none()) {
                    Some(open) => {
                        // The same episode: keep when it began and the last repair error.
                        new.detected_at = open.detected_at;
                        new.repair_error.clone_from(&open.repair_error);
                        if new != *open {
                            tracing::warn!(files = ?new.paths().collect::<Vec<_>>(), "config drift changed");
                        }
                    }
                    None => {
                        d.episodes += 1;
                        tracing::warn!(
                            digest = %rec.digest.short(),
                            files = ?new.paths().collect::<Vec<_>>(),
                            policy = ?d.policy,
                            "config drift: the live config differs from the applied digest"
                        );
                    }
                }
                d.report = Some(new);
                Some(d.policy)
            }
        }
    };
    let now = tokio::time::Instant::now();
    if policy == Some(DriftPolicy::Repair) && pace.next_repair.is_some_and(|t| now < t) {
        tracing::debug!("repair deferred: the last one was less than {REPAIR_GAP:?} ago");
        pace.recheck_at = pace.next_repair;
    } else if policy == Some(DriftPolicy::Repair) {
        pace.next_repair = Some(now + REPAIR_GAP);
        let result = repair(shared, &mut core, &rec).await;
        if result.is_err() {
            pace.recheck_at = pace.next_repair;
        }
        let mut s = lock(&shared.status);
        let d = &mut s.drift;
        match result {
            Ok(()) => {
                tracing::info!(digest = %rec.digest.short(), "config drift repaired");
                d.repairs += 1;
                if let Some(r) = d.report.as_mut() {
                    r.repair_error = None;
                    r.resolved_at = Some(shared.clock.now());
                    r.resolution = Some(DriftResolution::Repaired);
                }
            }
            Err(why) => {
                tracing::warn!(%why, "config drift repair failed; nginx keeps what it loaded");
                d.repair_failures += 1;
                if let Some(r) = d.report.as_mut() {
                    r.repair_error = Some(why);
                }
            }
        }
    }
    drop(core);
    finish_check(shared);
}

fn finish_check(shared: &Shared) {
    let mut s = lock(&shared.status);
    s.drift.checks += 1;
    s.drift.last_check = Some(shared.clock.now());
}

/// A record written before drift detection existed has no manifest: the live directory as it is
/// becomes the baseline (said in the log, and persisted so a restart keeps it).
fn adopt_baseline(shared: &Shared, rec: &AppliedRecord, found: Manifest) {
    tracing::info!(
        digest = %rec.digest.short(),
        "no manifest recorded for the applied digest; taking the live directory as the baseline"
    );
    let mut with_tree = rec.clone();
    with_tree.tree = found;
    if let Err(e) = shared.layout.write_applied(&with_tree) {
        tracing::warn!(error = %e, "cannot persist the drift baseline");
    }
    lock(&shared.status).applied = Some(with_tree);
}

/// The drift report for what a scan found, or `None` when it matches what was applied. Pure.
pub fn compare(
    rec: &AppliedRecord,
    found: &Manifest,
    current_ok: bool,
    now: Timestamp,
) -> Option<DriftReport> {
    let mut d = tree::diff(&rec.tree, found, MAX_PATHS);
    if !current_ok {
        d.changed.insert(0, CURRENT_LINK.to_string());
    }
    if d.is_empty() {
        return None;
    }
    Some(DriftReport {
        digest: rec.digest,
        detected_at: now,
        expected: tree::digest(&rec.tree),
        found: tree::digest(found),
        added: d.added,
        removed: d.removed,
        changed: d.changed,
        omitted: d.omitted,
        repair_error: None,
        resolved_at: None,
        resolution: None,
    })
}

/// Re-applies the applied digest from the bundle kept in the state directory, which must still
/// hash to it.
async fn repair(shared: &Arc<Shared>, core: &mut Core, rec: &AppliedRecord) -> Result<(), String> {
    let bytes = shared.layout.read_bundle(&rec.digest).ok_or_else(|| {
        format!(
            "no kept bundle for {} in {}; apply the digest again to repair",
            rec.digest.short(),
            shared.layout.bundles().display()
        )
    })?;
    let request: ApplyRequest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the kept bundle is not readable: {e}"))?;
    let bundle = apply::decode(&request).map_err(|(_, why)| format!("the kept bundle: {why}"))?;
    if bundle.digest() != rec.digest {
        return Err(format!(
            "the kept bundle is {}, not the applied {}",
            bundle.digest().short(),
            rec.digest.short()
        ));
    }
    match apply::repair_locked(shared, core, bundle, &rec.commit, &rec.entry).await {
        ApplyOutcome::Applied { .. } => Ok(()),
        ApplyOutcome::ApplyFailed { step, reason, .. } => Err(format!("{step:?}: {reason}")),
    }
}

/// The inotify descriptor, as tokio's readiness wants it.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches on every directory of one version directory.
struct Watcher {
    fd: AsyncFd<InotifyFd>,
    digest: Digest,
    /// Set when the watches no longer cover the tree (a directory came, went or was replaced).
    stale: bool,
}

impl Watcher {
    /// Watches `dir` and every directory under it (symlinks are not followed).
    fn arm(dir: &Path, digest: Digest) -> Result<Watcher, String> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("inotify_init: {e}"))?;
        let mask = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_DONT_FOLLOW;
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            inotify
                .add_watch(&d, mask)
                .map_err(|e| format!("watching {}: {e}", d.display()))?;
            if let Ok(entries) = std::fs::read_dir(&d) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(entry.path());
                    }
                }
            }
        }
        // `AsyncFd::new` is deprecated because a `T` that does not own its descriptor could let it
        // be closed (and the number reused) while registered. `InotifyFd` owns it (an `OwnedFd`
        // inside `Inotify`) and the `AsyncFd` owns the `InotifyFd`, deregistering before it drops
        // it: the case the API is sound for. `register` says the same in an `unsafe` call, which
        // this crate forbids.
        #[allow(deprecated)]
        let fd = AsyncFd::new(InotifyFd(inotify)).map_err(|e| format!("inotify fd: {e}"))?;
        Ok(Watcher {
            fd,
            digest,
            stale: false,
        })
    }

    /// Waits for events and reads them all; true when the watches need setting again.
    async fn events(&self) -> bool {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return true;
            };
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    let restructured = AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_Q_OVERFLOW
                        | AddWatchFlags::IN_ISDIR;
                    return events.iter().any(|e| e.mask.intersects(restructured));
                }
                Ok(Err(_)) => return true,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rec(tree: &[(&str, &str)]) -> AppliedRecord {
        let bundle =
            crate::render::Bundle::new(BTreeMap::from([("nginx.conf".into(), b"x".to_vec())]));
        AppliedRecord {
            digest: bundle.digest(),
            commit: "c".into(),
            entry: "nginx.conf".into(),
            applied_at: Timestamp::UNIX_EPOCH,
            tree: tree
                .iter()
                .map(|(p, e)| (p.to_string(), e.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_untouched_directory_is_no_drift() {
        let r = rec(&[("nginx.conf", "f:1")]);
        assert_eq!(
            compare(&r, &r.tree.clone(), true, Timestamp::UNIX_EPOCH),
            None
        );
    }

    #[test]
    fn a_drift_names_the_files_and_both_tree_hashes() {
        let r = rec(&[("nginx.conf", "f:1"), ("conf.d", "d")]);
        let found: Manifest = [("nginx.conf", "f:2"), ("conf.d", "d"), ("x", "f:3")]
            .iter()
            .map(|(p, e)| (p.to_string(), e.to_string()))
            .collect();
        let report = compare(&r, &found, true, Timestamp::UNIX_EPOCH).expect("drift");
        assert_eq!(report.changed, ["nginx.conf"]);
        assert_eq!(report.added, ["x"]);
        assert_eq!(report.expected, tree::digest(&r.tree));
        assert_eq!(report.found, tree::digest(&found));
        assert_ne!(report.expected, report.found);
        assert_eq!(report.paths().collect::<Vec<_>>(), ["nginx.conf", "x"]);
    }

    #[test]
    fn a_moved_current_symlink_is_drift_even_with_equal_files() {
        let r = rec(&[("nginx.conf", "f:1")]);
        let report = compare(&r, &r.tree.clone(), false, Timestamp::UNIX_EPOCH).expect("drift");
        assert_eq!(report.changed, [CURRENT_LINK]);
        assert_eq!(report.expected, report.found);
    }
}
