//! Keeping nginx on the last applied-good config across agent restarts, nginx deaths and
//! shutdown. Level-based: each pass compares what runs with what `applied` says and fixes the
//! difference, so it does not matter which event (crash, kill, restart) caused it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::apply::switch;
use super::layout::AppliedRecord;
use super::nginx::{self, Launcher};
use super::state::{Core, Shared, lock};

/// How often the supervisor checks that nginx runs.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// First delay before retrying a failed start; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between start attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Start-up: puts `current` back on `applied` (undoing any apply a crash interrupted), then
/// adopts a master an earlier agent left running and reloads it onto `applied`, or starts one.
pub async fn recover(shared: &Arc<Shared>) {
    let layout = &shared.layout;
    let applied = layout.read_applied();
    if let Some(rec) = &applied {
        lock(&shared.tally).register(rec.digest);
        if layout.read_current() != Some(rec.digest) {
            tracing::info!(digest = %rec.digest.short(), "putting `current` back on the applied version");
            if let Err(e) = layout.swap_current(&rec.digest) {
                tracing::error!(error = %e, "cannot repoint `current`");
            }
        }
    } else if layout.current().symlink_metadata().is_ok() {
        // `current` without `applied`: a first apply that never completed.
        let _ = std::fs::remove_file(layout.current());
    }
    lock(&shared.status).applied = applied.clone();

    let mut core = shared.core.lock().await;
    let found = nginx::find_master(layout);
    match (found, applied) {
        (Some(master), Some(rec)) => {
            let pid = master.pid();
            let same_entry = nginx::master_conf(pid).as_deref()
                == Some(Launcher::running_conf(&rec.entry).as_str());
            tracing::info!(pid, "adopting the running nginx master");
            core.master = Some(master);
            core.entry = Some(rec.entry.clone());
            // A reload makes it read `applied` and reconnect its log sockets to this agent.
            let reloaded = if same_entry {
                switch(shared, &mut core, &rec.entry).await
            } else {
                Err("it was started with another entry file".to_string())
            };
            if let Err(why) = reloaded {
                tracing::warn!(%why, "the adopted nginx could not be reloaded");
                if shared.cfg.manage_nginx {
                    restart(shared, &mut core, &rec).await;
                }
            }
        }
        (Some(mut master), None) if shared.cfg.manage_nginx => {
            tracing::info!(
                pid = master.pid(),
                "stopping an nginx with no applied config"
            );
            master.stop(shared.cfg.timeouts.stop_grace, false).await;
        }
        (Some(master), None) => core.master = Some(master),
        (None, Some(rec)) if shared.cfg.manage_nginx => start(shared, &mut core, &rec).await,
        (None, _) => {}
    }
}

/// Stops the adopted master and starts a fresh one.
async fn restart(shared: &Shared, core: &mut Core, rec: &AppliedRecord) {
    if let Some(mut m) = core.master.take() {
        m.stop(shared.cfg.timeouts.stop_grace, false).await;
    }
    shared.note_stopped();
    start(shared, core, rec).await;
}

/// Starts nginx on `applied`, scheduling a retry with backoff on failure.
async fn start(shared: &Shared, core: &mut Core, rec: &AppliedRecord) {
    if shared.layout.read_current() != Some(rec.digest) {
        if let Err(e) = shared.layout.swap_current(&rec.digest) {
            tracing::error!(error = %e, "cannot repoint `current`");
        }
    }
    match switch(shared, core, &rec.entry).await {
        Ok(()) => {
            core.failed_starts = 0;
            core.next_start = None;
        }
        Err(why) => {
            core.failed_starts = core.failed_starts.saturating_add(1);
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << core.failed_starts.min(8))
                .min(MAX_BACKOFF);
            core.next_start = Some(Instant::now() + backoff);
            tracing::error!(%why, retry_in_ms = backoff.as_millis() as u64, "nginx did not start");
        }
    }
}

/// Restarts nginx when it dies (local mode) or finds it again through its pid file (pod mode),
/// until `shutdown`.
pub async fn supervise(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        let mut core = shared.core.lock().await;
        if core.stopping {
            return;
        }
        if let Some(master) = core.master.as_mut() {
            if master.is_alive() {
                shared.launcher.rotate_log(master.pid());
                continue;
            }
            tracing::warn!(pid = master.pid(), "nginx master exited");
            if shared.cfg.manage_nginx {
                master.kill_orphans();
            }
            core.master = None;
            shared.note_stopped();
        }
        let applied = lock(&shared.status).applied.clone();
        if !shared.cfg.manage_nginx {
            if let Some(m) = nginx::find_master(&shared.layout) {
                let pid = m.pid();
                tracing::info!(pid, "found the pod's nginx master");
                core.master = Some(m);
                lock(&shared.status).nginx.pid = Some(pid);
                // A reload makes its workers connect to this agent's log socket.
                if let Some(rec) = &applied {
                    if let Err(why) = switch(&shared, &mut core, &rec.entry).await {
                        tracing::warn!(%why, "the pod's nginx could not be reloaded");
                    }
                }
            }
            continue;
        }
        let Some(rec) = applied else {
            continue;
        };
        if core.next_start.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        start(&shared, &mut core, &rec).await;
        if core.master.is_some() {
            lock(&shared.status).nginx.restarts += 1;
            tracing::info!("nginx restarted on the applied config");
        }
    }
}

/// Shutdown: no more applies or restarts; a managed nginx is stopped gracefully.
pub async fn stop(shared: &Shared) {
    let mut core = shared.core.lock().await;
    core.stopping = true;
    if shared.cfg.manage_nginx {
        if let Some(mut m) = core.master.take() {
            tracing::info!(pid = m.pid(), "stopping nginx");
            m.stop(shared.cfg.timeouts.stop_grace, false).await;
        }
        shared.note_stopped();
    }
}
