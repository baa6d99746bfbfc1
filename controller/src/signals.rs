//! The signals that mean "stop now, cleanly": Ctrl-C (SIGINT), SIGTERM (`kill`, `timeout`,
//! Kubernetes) and SIGHUP (the terminal went away). Every long-running command stops its nginx
//! processes on any of them, so none is left serving after Switchback is gone.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves when the process is asked to stop.
pub async fn terminated() {
    let wait = |kind: SignalKind| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = wait(SignalKind::interrupt()) => {}
        () = wait(SignalKind::terminate()) => {}
        () = wait(SignalKind::hangup()) => {}
    }
}
