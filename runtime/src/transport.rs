//! Local sockets: Unix domain sockets and Windows named pipes through
//! `interprocess::local_socket` (seed: ADR-0004; IPC, Platform-Specific Transports).
//!
//! [`bind`] creates an owner-only endpoint (Unix: parent directory 0700, socket 0600,
//! the mode set with `fchmod` before `bind`, so there is no umask race); [`connect`]
//! maps failures onto [`IpcError::ServerNotFound`], [`IpcError::ConnectionRefused`],
//! [`IpcError::PermissionDenied`] and [`IpcError::ConnectionTimeout`], each naming the
//! endpoint.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use interprocess::local_socket::{
    tokio::{prelude::*, Listener, Stream},
    GenericFilePath, ListenerOptions, Name,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{IpcConfig, IpcError};

/// Longest Unix socket path, in bytes (`sun_path` holds 108 bytes including the NUL).
pub const MAX_UNIX_PATH: usize = 107;

fn name(endpoint: &str) -> io::Result<Name<'_>> {
    endpoint.to_fs_name::<GenericFilePath>()
}

/// Connects to `endpoint`, giving up after `timeout`.
///
/// # Errors
/// `ServerNotFound` (no socket), `ConnectionRefused` (stale socket), `PermissionDenied`,
/// `ConnectionTimeout`, or `Io` for anything else.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Stream, IpcError> {
    let name = name(endpoint).map_err(|e| IpcError::from_connect(e, endpoint))?;
    match tokio::time::timeout(timeout, Stream::connect(name)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(IpcError::from_connect(e, endpoint)),
        Err(_) => Err(IpcError::ConnectionTimeout {
            endpoint: endpoint.to_owned(),
        }),
    }
}

/// Creates the listening endpoint for `config`.
///
/// On Unix the parent directory is created with mode 0700 when missing, and the socket
/// gets mode 0600. A socket file left behind by a dead server is replaced; one that a
/// live server still answers on is left alone and reported as `AddrInUse`.
///
/// # Errors
/// `Config` for a bad endpoint, `Io` when the endpoint cannot be created.
pub fn bind(config: &IpcConfig) -> Result<Listener, IpcError> {
    config.validate()?;
    let endpoint = config.endpoint_path.as_str();
    #[cfg(unix)]
    prepare_unix_path(endpoint)?;
    let options = ListenerOptions::new().name(name(endpoint)?);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    Ok(options.create_tokio()?)
}

#[cfg(unix)]
fn prepare_unix_path(endpoint: &str) -> Result<(), IpcError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    use std::path::Path;

    let path = Path::new(endpoint);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            // umask can only remove bits: the directory is never more open than 0700.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        check_socket_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Probe: a live server answers, a stale socket refuses.
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(IpcError::Io(Arc::new(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a server is already running at {endpoint}"),
                )))),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Ok(_) => Err(IpcError::Config {
            field: "endpoint_path",
            reason: format!("{endpoint} exists and is not a socket"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a socket directory that another user could tamper with: one owned by
/// someone other than this user or root, or writable by group or others without the
/// sticky bit (which would let them replace the socket).
#[cfg(unix)]
fn check_socket_dir(dir: &std::path::Path) -> Result<(), IpcError> {
    use std::os::unix::fs::MetadataExt;

    let meta = std::fs::metadata(dir)?;
    let own = crate::peer::euid();
    let reason = if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != own && meta.uid() != 0 {
        Some(format!(
            "is owned by uid {}, not by this user or root",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        Some(format!(
            "is writable by group or others (mode {:o}) without the sticky bit",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IpcError::Config {
            field: "endpoint_path",
            reason: format!("socket directory {} {reason}", dir.display()),
        }),
        None => Ok(()),
    }
}

/// One half of a connection: a shared handle on the stream that reads or writes.
///
/// `&Stream` implements both `AsyncRead` and `AsyncWrite`, so the reader and the writer
/// tasks each hold an `Arc` of the same stream; neither locks.
#[derive(Debug, Clone)]
pub struct StreamHalf(pub(crate) Arc<Stream>);

impl StreamHalf {
    /// Both halves of `stream`: one to read, one to write.
    pub fn pair(stream: Stream) -> (StreamHalf, StreamHalf) {
        let shared = Arc::new(stream);
        (StreamHalf(shared.clone()), StreamHalf(shared))
    }
}

impl AsyncRead for StreamHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for StreamHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_shutdown(cx)
    }
}

/// Accepts one connection from `listener`.
pub(crate) async fn accept(listener: &Listener) -> io::Result<Stream> {
    listener.accept().await
}
