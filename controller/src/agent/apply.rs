//! One apply, as named steps (verify, prepare, write, nginx -t, swap and reload, persist), each
//! failing with its own [`ApplyStep`]. Whatever fails, nginx keeps serving what it served and
//! `current` points where it pointed; see `docs/agent.md` for why a crash at any instant is
//! safe too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::render::{Bundle, Digest};

use super::base64;
use super::directives::{self, AgentDirectives};
use super::layout::{AppliedRecord, check_paths, checked_rel};
use super::nginx::Master;
use super::state::{Core, Shared, lock};
use super::wire::{ApplyOutcome, ApplyRequest, ApplyStep, LastApply, Revision};

/// A step's result: on failure, the step and why.
pub type StepResult<T> = Result<T, (ApplyStep, String)>;

/// Decodes and checks an apply request: base64, plain paths, the entry, and the digest, before
/// anything touches the disk.
pub fn decode(req: &ApplyRequest) -> StepResult<Bundle> {
    let files = req.files.iter().map(|(p, b)| (p.clone(), b.as_str()));
    decode_files(files.collect(), req.digest, &req.entry)
}

/// [`decode`] of files taken by value: each base64 text is dropped once decoded, so a large
/// request is not held twice.
fn decode_files<S: AsRef<str>>(
    files: BTreeMap<String, S>,
    digest: Digest,
    entry: &str,
) -> StepResult<Bundle> {
    let fail = |why: String| (ApplyStep::Verify, why);
    check_paths(files.keys().map(String::as_str)).map_err(|e| fail(e.to_string()))?;
    let mut decoded = BTreeMap::new();
    for (path, b64) in files {
        checked_rel(&path).map_err(|e| fail(e.to_string()))?;
        let bytes = base64::decode(b64.as_ref()).map_err(|e| fail(format!("{path}: {e}")))?;
        decoded.insert(path, bytes);
    }
    let bundle = Bundle::new(decoded);
    if bundle.digest() != digest {
        return Err(fail(format!(
            "the files have digest {}, not the {} the request names",
            bundle.digest(),
            digest
        )));
    }
    check_entry(&bundle, entry)?;
    Ok(bundle)
}

/// Checks that `entry` is a plain relative path naming a file of `bundle`.
fn check_entry(bundle: &Bundle, entry: &str) -> StepResult<()> {
    let fail = |why: String| (ApplyStep::Verify, why);
    checked_rel(entry).map_err(|e| fail(format!("entry: {e}")))?;
    if bundle.get(entry).is_none() {
        return Err(fail(format!("entry {entry:?} is not a file of the bundle")));
    }
    Ok(())
}

/// Applies a request: decodes it, then runs [`apply_bundle`].
pub async fn apply(shared: &Arc<Shared>, req: ApplyRequest) -> ApplyOutcome {
    let ApplyRequest {
        digest,
        commit,
        entry,
        files,
    } = req;
    let decoded = decode_files(files, digest, &entry);
    apply_checked(shared, digest, &commit, &entry, async { decoded }).await
}

/// The one apply path of both modes: records `digest` as desired, waits for `bundle` (decoded
/// from a request, or fetched from ConfigMaps and checked against the digest in Kubernetes
/// mode), checks the entry, runs [`apply_bundle`] and records the outcome. `bundle` is a future
/// so that the desired digest shows in `/v1/state` while a fetch is under way.
pub async fn apply_checked(
    shared: &Arc<Shared>,
    digest: Digest,
    commit: &str,
    entry: &str,
    bundle: impl std::future::Future<Output = StepResult<Bundle>>,
) -> ApplyOutcome {
    let started = Instant::now();
    {
        let mut s = lock(&shared.status);
        s.desired = Some(Revision {
            digest,
            commit: commit.to_string(),
        });
    }
    let checked = bundle.await.and_then(|b| {
        if b.digest() != digest {
            return Err((
                ApplyStep::Verify,
                format!("the files have digest {}, not {digest}", b.digest()),
            ));
        }
        check_entry(&b, entry).map(|()| b)
    });
    let outcome = match checked {
        Ok(bundle) => apply_bundle(shared, bundle, commit, entry).await,
        Err((step, reason)) => failed(digest, step, reason),
    };
    record(shared, &outcome, started);
    outcome
}

fn failed(digest: Digest, step: ApplyStep, reason: String) -> ApplyOutcome {
    ApplyOutcome::ApplyFailed {
        digest,
        step,
        reason,
    }
}

fn record(shared: &Shared, outcome: &ApplyOutcome, started: Instant) {
    let mut s = lock(&shared.status);
    match outcome {
        ApplyOutcome::Applied { noop: true, .. } => s.applies.noop += 1,
        ApplyOutcome::Applied { .. } => s.applies.applied += 1,
        ApplyOutcome::ApplyFailed { .. } => s.applies.failed += 1,
    }
    s.last_apply = Some(LastApply {
        outcome: outcome.clone(),
        finished_at: shared.clock.now(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
}

/// Applies a verified bundle under the apply lock (applies queue on it, in arrival order).
#[tracing::instrument(name = "agent_apply", skip_all, fields(digest = %bundle.digest().short(), commit = %commit, entry = %entry))]
pub async fn apply_bundle(
    shared: &Arc<Shared>,
    bundle: Bundle,
    commit: &str,
    entry: &str,
) -> ApplyOutcome {
    let mut core = shared.core.lock().await;
    apply_locked(shared, &mut core, bundle, commit, entry, false).await
}

/// Drift repair: applies the applied digest's `bundle` again through the same steps, writing a
/// fresh copy of its directory even though one with that name is there (the drifted one). The
/// caller holds the apply lock and has checked, under it, that this digest is still the applied
/// one, so a repair can never take nginx back from a newer apply.
#[tracing::instrument(name = "agent_repair", skip_all, fields(digest = %bundle.digest().short(), commit = %commit))]
pub async fn repair_locked(
    shared: &Arc<Shared>,
    core: &mut Core,
    bundle: Bundle,
    commit: &str,
    entry: &str,
) -> ApplyOutcome {
    apply_locked(shared, core, bundle, commit, entry, true).await
}

async fn apply_locked(
    shared: &Arc<Shared>,
    core: &mut Core,
    bundle: Bundle,
    commit: &str,
    entry: &str,
    rewrite: bool,
) -> ApplyOutcome {
    let digest = bundle.digest();
    let result = if core.stopping {
        Err((ApplyStep::Reload, "the agent is shutting down".to_string()))
    } else {
        steps(shared, core, bundle, commit, entry, rewrite).await
    };
    match result {
        Ok(noop) => {
            tracing::info!(noop, "applied");
            if !noop {
                // The live directory changed: drift detection watches the new one from now.
                shared.drift_kick.notify_one();
            }
            ApplyOutcome::Applied {
                digest,
                commit: commit.to_string(),
                noop,
            }
        }
        Err((step, reason)) => {
            tracing::warn!(?step, %reason, "apply failed; nginx keeps the previous config");
            failed(digest, step, reason)
        }
    }
}

async fn steps(
    shared: &Arc<Shared>,
    core: &mut Core,
    bundle: Bundle,
    commit: &str,
    entry: &str,
    rewrite: bool,
) -> StepResult<bool> {
    let digest = bundle.digest();
    let layout = &shared.layout;
    let running = core.master.as_mut().is_some_and(Master::is_alive);
    let applied = lock(&shared.status).applied.clone();
    if !rewrite
        && running
        && applied
            .as_ref()
            .is_some_and(|a| a.digest == digest && a.entry == entry)
        && layout.read_current() == Some(digest)
    {
        return Ok(true);
    }
    if let Some(e) = core.entry.as_deref().filter(|e| running && *e != entry) {
        return Err((
            ApplyStep::Verify,
            format!(
                "entry {entry:?} differs from the {e:?} nginx was started with; a reload cannot \
                 change nginx's -c (restart the agent with an empty state to switch)"
            ),
        ));
    }

    // Prepare: the agent's directives, inserted by the parse tree's spans.
    let config_root = lock(&shared.config_root).clone();
    let socket = layout.log_socket();
    let temp = layout.temp_dir();
    let short = digest.short();
    let d = AgentDirectives {
        log_socket: &socket,
        short: &short,
        temp_dir: &temp,
        temp_paths: &shared.launcher.binary.temp_paths,
        user: shared.worker_user.as_deref(),
        pin_listen: shared.cfg.pin_listen,
        config_root: &config_root,
        replace_user: shared.cfg.replace_bundle_user,
    };
    // Before anything is written or run: a bundle that would make nginx load code is refused
    // here whatever the controller decided (SB109, and modules only from the build).
    super::guard::refuse_code(
        bundle.files(),
        entry,
        &config_root,
        &shared.launcher.binary.modules,
        layout.root(),
    )
    .map_err(|why| (ApplyStep::Prepare, why))?;
    let edited = directives::prepare(bundle.files(), entry, &d)
        .map_err(|e| (ApplyStep::Prepare, e.to_string()))?;

    // Write: stage, fsync, verify, rename; or reuse an identical copy already in place (a
    // rollback to a kept version), which never leaves `current` dangling. The bundle as sent is
    // kept beside it (drift repair re-applies it), and the directory's manifest is recorded as
    // written (drift detection compares the live files with it).
    let writer = {
        // The bundle moves to the writer (nothing after it needs the files): no second copy.
        let shared = Arc::clone(shared);
        let (commit, entry) = (commit.to_string(), entry.to_string());
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let hook = |stage: &str| crash_hook(&shared, stage);
            let layout = &shared.layout;
            let digest = bundle.digest();
            let expected = super::tree::of_files(&edited);
            let kept = layout.version(&digest);
            // Reused only when it holds exactly these files and nothing else (no file, link or
            // directory added by hand), since its manifest becomes drift detection's baseline.
            let reuse = !rewrite && super::tree::scan(&kept).is_ok_and(|m| m == expected);
            let dir = if reuse {
                kept
            } else {
                layout
                    .write_version(&bundle, &edited, &hook)
                    .map_err(|e| e.to_string())?
            };
            layout
                .write_bundle_with(&digest, &mut |w| {
                    super::client::write_apply_request(w, &bundle, &commit, &entry)
                })
                .map_err(|e| e.to_string())?;
            let found = super::tree::scan(&dir).map_err(|e| e.to_string())?;
            if found != expected {
                let d = super::tree::diff(&expected, &found, 5);
                return Err(format!(
                    "{} does not hold exactly the files written (added {:?}, removed {:?}, \
                     changed {:?})",
                    dir.display(),
                    d.added,
                    d.removed,
                    d.changed
                ));
            }
            Ok((dir, expected))
        })
    };
    let (dir, tree) = writer
        .await
        .map_err(|e| (ApplyStep::Write, format!("the writer task failed: {e}")))?
        .map_err(|e| (ApplyStep::Write, e))?;
    crash_hook(shared, "renamed");

    // nginx -t with the real prefix and -g, on the version directory.
    if let Err(why) = shared
        .launcher
        .test(&dir, entry, shared.cfg.timeouts.nginx_test)
        .await
    {
        discard(shared, &digest);
        return Err((ApplyStep::NginxTest, why));
    }

    // Swap and reload (or start, when nothing runs yet).
    lock(&shared.tally).register(digest);
    let previous = layout.read_current();
    let fs = |e: super::layout::FsError| (ApplyStep::Reload, e.to_string());
    layout.swap_current(&digest).map_err(fs)?;
    crash_hook(shared, "swapped");
    if let Err(why) = switch(shared, core, entry).await {
        restore(shared, core, previous, &digest).await;
        return Err((ApplyStep::Reload, why));
    }
    crash_hook(shared, "reloaded");

    // Persist what nginx now serves.
    let rec = AppliedRecord {
        digest,
        commit: commit.to_string(),
        entry: entry.to_string(),
        applied_at: shared.clock.now(),
        tree,
    };
    if let Err(e) = layout.write_applied(&rec) {
        restore(shared, core, previous, &digest).await;
        if previous.is_some() {
            // nginx was switched: put it back, so it serves what `applied` says.
            let _ = switch(shared, core, entry).await;
        }
        return Err((ApplyStep::Persist, e.to_string()));
    }
    crash_hook(shared, "persisted");
    let old = lock(&shared.status).applied.replace(rec);
    let mut protect = vec![digest];
    protect.extend(old.map(|o| o.digest));
    match layout.prune(shared.cfg.keep_versions, &protect) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(removed = removed.len(), "pruned old versions")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning old versions failed"),
    }
    Ok(false)
}

/// Makes nginx read `current`: a confirmed reload of the running master, or a start.
pub async fn switch(shared: &Shared, core: &mut Core, entry: &str) -> Result<(), String> {
    let timeout = shared.cfg.timeouts.reload;
    let alive = core.master.as_mut().is_some_and(Master::is_alive);
    if let Some(master) = core.master.as_ref().filter(|_| alive) {
        let pid = master.pid();
        let workers = shared.launcher.reload(pid, timeout).await?;
        shared.note_generation(pid, workers);
        return Ok(());
    }
    if !shared.cfg.manage_nginx {
        return Err(format!(
            "no nginx master runs for {} (pod mode: the container starts nginx)",
            shared.layout.root().display()
        ));
    }
    core.master = None;
    let master = shared.launcher.start(entry, timeout).await?;
    let pid = master.pid();
    core.master = Some(master);
    core.entry = Some(entry.to_string());
    shared.note_generation(pid, super::nginx::children_of(pid));
    Ok(())
}

/// Undoes a swap: `current` back on `previous` (or removed), the refused version deleted. nginx
/// itself needs nothing: a refused reload leaves the old workers, a failed start leaves nothing.
async fn restore(shared: &Shared, core: &mut Core, previous: Option<Digest>, refused: &Digest) {
    let layout = &shared.layout;
    let undone = match previous {
        Some(p) => layout.swap_current(&p),
        None => std::fs::remove_file(layout.current()).map_err(|source| super::layout::FsError {
            what: "remove",
            path: layout.current(),
            source,
        }),
    };
    if let Err(e) = undone {
        tracing::error!(error = %e, "cannot put `current` back; nginx serves the old config until its next restart");
    }
    discard(shared, refused);
    if core.master.as_mut().is_some_and(|m| !m.is_alive()) {
        core.master = None;
        shared.note_stopped();
    }
}

/// Deletes a refused version and its (empty) counters, unless `current` or `applied` still need
/// them.
fn discard(shared: &Shared, digest: &Digest) {
    let applied = lock(&shared.status).applied.as_ref().map(|a| a.digest);
    if shared.layout.read_current() != Some(*digest) && applied != Some(*digest) {
        let _ = shared.layout.remove_version(digest);
        lock(&shared.tally).forget(digest);
    }
}

/// Test hook: dies by `SIGKILL` at the named stage when `$SWITCHBACK_AGENT_CRASH_AT` names it,
/// so the crash-safety tests can stop the agent at an exact point of an apply.
fn crash_hook(shared: &Shared, stage: &str) {
    if shared.cfg.crash_at.as_deref() == Some(stage) {
        tracing::warn!(stage, "SWITCHBACK_AGENT_CRASH_AT: killing the agent");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::client::apply_request;

    fn bundle() -> Bundle {
        let mut files = BTreeMap::new();
        files.insert("nginx.conf".to_string(), b"events {}\n".to_vec());
        files.insert("conf.d/a.conf".to_string(), vec![0xff, 0x00, b'\n']);
        Bundle::new(files)
    }

    fn refused(req: &ApplyRequest) -> String {
        match decode(req) {
            Err((ApplyStep::Verify, why)) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn a_faithful_request_decodes_to_the_same_bundle() {
        let b = bundle();
        let got = decode(&apply_request(&b, "c", "nginx.conf")).unwrap();
        assert_eq!(got, b);
    }

    #[test]
    fn requests_are_checked_before_anything_is_written() {
        let b = bundle();
        let mut wrong_digest = apply_request(&b, "c", "nginx.conf");
        wrong_digest.digest = Bundle::new(BTreeMap::new()).digest();
        assert!(refused(&wrong_digest).contains("the files have digest"));

        let mut tampered = apply_request(&b, "c", "nginx.conf");
        tampered.files.insert(
            "nginx.conf".into(),
            crate::agent::base64::encode(b"events { }\n"),
        );
        assert!(refused(&tampered).contains("not the"));

        let mut bad_b64 = apply_request(&b, "c", "nginx.conf");
        bad_b64
            .files
            .insert("nginx.conf".into(), "not base64!".into());
        assert!(refused(&bad_b64).starts_with("nginx.conf:"));

        let mut climbing = apply_request(&b, "c", "nginx.conf");
        climbing.files.insert("../etc/x".into(), String::new());
        assert!(refused(&climbing).contains("plain relative path"));

        let no_entry = apply_request(&b, "c", "main.conf");
        assert!(refused(&no_entry).contains("entry \"main.conf\""));
    }
}
