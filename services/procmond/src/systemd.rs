//! systemd integration: socket activation (a listening socket passed as file
//! descriptor 3, with `LISTEN_FDS` and `LISTEN_PID`) and readiness notification
//! (`Type=notify`: `READY=1` sent to `NOTIFY_SOCKET`). Without systemd, neither variable
//! is set and nothing here does anything.

#[cfg(unix)]
use std::os::fd::{FromRawFd, OwnedFd};

/// A socket passed by the service manager, if any.
#[cfg(unix)]
pub type Inherited = Option<OwnedFd>;
/// No socket activation off Unix.
#[cfg(not(unix))]
pub type Inherited = Option<std::convert::Infallible>;

/// Takes the listening socket systemd passed to this process, if it passed one, and
/// clears `LISTEN_FDS` and `LISTEN_PID` (so that nothing this process starts takes them
/// for its own). Must run before any other thread starts: it changes the environment.
///
/// # Errors
/// A readable message when the variables are malformed or name more than one socket.
#[cfg(unix)]
pub fn take_listener() -> Result<Inherited, String> {
    // SAFETY: called from `main` before the runtime, or any other thread, exists.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() }
        .map_err(|error| format!("cannot take the sockets passed by systemd: {error}"))?;
    let fds: Vec<_> = fds.collect();
    match fds[..] {
        [] => Ok(None),
        // SAFETY: by the socket activation protocol, descriptors 3.. up to LISTEN_FDS
        // are open and handed to this process (LISTEN_PID names it); nothing else in it
        // owns them.
        [fd] => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        _ => Err(format!(
            "systemd passed {} sockets; procmond serves one: give procmond.socket a \
             single ListenStream=",
            fds.len()
        )),
    }
}

/// Off Unix there is no socket activation.
#[cfg(not(unix))]
pub fn take_listener() -> Result<Inherited, String> {
    Ok(None)
}

/// Tells systemd the service is ready (`READY=1`, with a status line), when it asked
/// to be told (`NOTIFY_SOCKET` is set). A failure is logged, not fatal.
pub fn notify_ready(endpoint: &str) {
    #[cfg(unix)]
    {
        let status = format!("serving on {endpoint}");
        let states = [
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ];
        if let Err(error) = sd_notify::notify(&states) {
            tracing::warn!(%error, "cannot notify systemd of readiness");
        }
    }
    #[cfg(not(unix))]
    let _ = endpoint;
}

/// Tells systemd the service is stopping (`STOPPING=1`), when it asked to be told.
pub fn notify_stopping() {
    #[cfg(unix)]
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::debug!(%error, "cannot notify systemd of the shutdown");
    }
}
