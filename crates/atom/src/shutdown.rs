//! Graceful shutdown: the signal that starts it and the order it runs in.
//!
//! On SIGTERM or SIGINT: `/ready` turns 503 at once; after `shutdown.drain_secs` the listener
//! closes (new connections are refused); in-flight requests get `shutdown.grace_secs` to
//! finish; then background tasks stop and the pools close. [`crate::Application::run_until`]
//! carries this out; this module only provides the signal.

use std::future::Future;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled:
/// `run_until` starts serving before it awaits the signal, and a signal arriving in between
/// (a supervisor stopping a server that has just answered its health check) must start a
/// graceful shutdown, not kill the process with the signal's default action.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal as listen};
        let interrupt = listen(SignalKind::interrupt());
        let terminate = listen(SignalKind::terminate());
        async move {
            tokio::select! {
                () = received(interrupt, "SIGINT") => tracing::info!("SIGINT received; shutting down"),
                () = received(terminate, "SIGTERM") => tracing::info!("SIGTERM received; shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received; shutting down");
    }
}

/// The first signal of `listener`; never, when it could not be installed.
#[cfg(unix)]
async fn received(listener: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match listener {
        Ok(mut listener) => {
            listener.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for {name}");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    /// A signal sent before the future is first polled is not lost, and does not end the
    /// process (this test binary) with the signal's default action.
    #[tokio::test]
    async fn a_signal_before_the_first_poll_starts_the_shutdown() {
        let shutdown = super::signal();
        let pid = std::process::id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
        tokio::time::timeout(Duration::from_secs(30), shutdown).await.expect("the signal was received");
    }
}
