//! The shutdown signal.

use std::{future::Future, io};

/// Installs the handlers now and returns a future that completes with the signal's
/// name on the first SIGINT or SIGTERM. Must be called inside a tokio runtime.
///
/// # Errors
/// The OS error when a handler cannot be installed.
#[cfg(unix)]
pub fn signal() -> io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// Returns a future that completes on the first Ctrl-C (Ctrl-Break or console close are
/// not handled). Must be called inside a tokio runtime.
///
/// # Errors
/// None: a failure to listen is logged and the future then never completes.
#[cfg(not(unix))]
pub fn signal() -> io::Result<impl Future<Output = &'static str> + Send> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(error) => {
                tracing::error!(%error, "cannot listen for Ctrl-C; stop the process another way");
                std::future::pending().await
            }
        }
    })
}
