//! Graceful shutdown: SIGTERM or SIGINT stops accepting, lets transactions in flight
//! finish up to a deadline, and answers `421 4.3.2` to idle sessions.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cancels `token` on SIGTERM or SIGINT.
pub fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: no new connections; finishing transactions in flight");
        token.cancel();
    });
}

/// Waits for tracked connections to end, at most `deadline`. Returns whether all ended.
pub async fn drain(tracker: &TaskTracker, deadline: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(deadline, tracker.wait()).await.is_ok()
}
