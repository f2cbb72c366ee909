//! Local sockets: Unix domain sockets and Windows named pipes through
//! `interprocess::local_socket` (seed: ADR-0004; IPC, Platform-Specific Transports).
//!
//! [`bind`] creates an owner-only endpoint (Unix: parent directory 0700, socket 0600,
//! the mode set with `fchmod` before `bind`, so there is no umask race); [`connect`]
//! maps failures onto [`IpcError::ServerNotFound`], [`IpcError::ConnectionRefused`],
//! [`IpcError::PermissionDenied`] and [`IpcError::ConnectionTimeout`], each naming the
//! endpoint.
//!
//! # Who may tamper with an endpoint
//!
//! On Unix, both ends check the directories on the socket's path with one function
//! (`check_socket_dirs`): the socket's directory and every directory above it (after
//! resolving symlinks) must be owned by a trusted user, and none may be writable by
//! group or others unless it has the sticky bit (so `/tmp` is fine, a `0777` directory
//! without the sticky bit is not); a symlink on the path as written must be owned by a
//! trusted user too. Whoever could replace the socket, or a directory on its path,
//! could serve in the real server's place.
//!
//! - The server ([`bind`]) trusts its own effective uid and root, and refuses with
//!   [`IpcError::Config`] naming `endpoint_path`.
//! - A client trusts its own uid, root, and the uids its server policy
//!   ([`PeerPolicy`]) lists; it refuses with [`IpcError::PermissionDenied`] naming the
//!   directory and its owner. Then, once connected and before sending anything, it
//!   checks the credentials of the process that serves the socket against the policy
//!   itself (by default its own uid or root). That last check is the one that cannot
//!   race: the directory checks narrow who could have planted a socket; the
//!   credentials say who did.
//!
//! # Windows
//!
//! Endpoints are named pipes, `\\.\pipe\<name>` (see
//! [`endpoint_in`](crate::config::endpoint_in) and
//! [`default_endpoint_for`](crate::config::default_endpoint_for)). Pipes have no
//! directory; instead [`bind`] creates the pipe with a security descriptor whose
//! protected DACL admits only the server's own user, SYSTEM and Administrators (the
//! counterpart of mode 0600). A name that another server is listening on is refused
//! (`AddrInUse`) rather than shared (the counterpart of never stealing a live socket):
//! [`bind`] asks `WaitNamedPipeW` first (Wine ignores the flag that follows), then
//! creates the first instance with `FILE_FLAG_FIRST_PIPE_INSTANCE`. Both ends identify the peer process by
//! its pid and its token's user SID ([`PeerIdentity`]) and check it against their
//! [`PeerPolicy`], as on Unix.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use interprocess::local_socket::{
    tokio::{prelude::*, Listener},
    GenericFilePath, ListenerOptions, Name,
};

/// A connection to a local endpoint: a Unix domain socket, or a named pipe on Windows
/// (`interprocess`'s tokio local socket; `AsyncRead + AsyncWrite`). [`connect`] opens a
/// raw one, with no handshake.
pub use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{peer::PeerIdentity, IpcConfig, IpcError, PeerPolicy};

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

/// Connects to `endpoint` as a client whose server policy is `server_policy`: on Unix
/// the directories on the socket's path are checked first (see the [module
/// documentation](self)), then, once connected and before anything is sent, the
/// credentials of the process serving the socket. [`PeerPolicy::any`] skips both.
///
/// # Errors
/// As [`connect`], and `PermissionDenied` naming the directory or the server process
/// that this client does not trust, and its owner.
pub(crate) async fn connect_trusted(
    endpoint: &str,
    timeout: Duration,
    server_policy: &PeerPolicy,
) -> Result<Stream, IpcError> {
    let denied = |reason: String| IpcError::PermissionDenied {
        endpoint: endpoint.to_owned(),
        reason,
    };
    #[cfg(unix)]
    if !server_policy.admits_anyone() {
        match check_socket_dirs(&socket_dir(endpoint), &server_policy.directory_owners()) {
            Ok(()) => {}
            Err(DirError::Unsafe(reason)) => return Err(denied(reason)),
            Err(DirError::Io(path, error)) => {
                return Err(match error.kind() {
                    io::ErrorKind::NotFound => IpcError::ServerNotFound {
                        endpoint: endpoint.to_owned(),
                    },
                    io::ErrorKind::PermissionDenied => {
                        denied(format!("cannot inspect {}: {error}", path.display()))
                    }
                    _ => error.into(),
                })
            }
        }
    }
    let stream = connect(endpoint, timeout).await?;
    if !server_policy.admits_anyone() {
        let server = PeerIdentity::of(&stream)
            .map_err(|e| denied(format!("cannot read the server's credentials: {e}")))?;
        server_policy
            .check_server(&server, crate::peer::own_uid())
            .map_err(denied)?;
    }
    Ok(stream)
}

/// Creates the listening endpoint for `config`.
///
/// On Unix the parent directory is created with mode 0700 when missing, and the socket
/// gets mode 0600. The directories on the socket's path must be safe from other users
/// (see the [module documentation](self)). A socket file left behind by a dead server
/// is replaced; one that a live server still answers on is left alone and reported as
/// `AddrInUse`.
///
/// # Errors
/// `Config` for a bad endpoint or an unsafe directory on its path, `Io` when the
/// endpoint cannot be created.
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
    #[cfg(windows)]
    let options = {
        use interprocess::os::windows::local_socket::ListenerOptionsExt;
        if crate::windows::pipe_is_served(endpoint)? {
            return Err(pipe_in_use(endpoint, "a server is listening on it"));
        }
        // interprocess creates the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE.
        options.security_descriptor(crate::windows::pipe_security_descriptor()?)
    };
    match options.create_tokio() {
        Ok(listener) => Ok(listener),
        // Windows answers ERROR_ACCESS_DENIED when the first instance already exists.
        #[cfg(windows)]
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                || e.kind() == io::ErrorKind::AddrInUse =>
        {
            Err(pipe_in_use(endpoint, &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `AddrInUse`: another server already serves the pipe `endpoint`.
#[cfg(windows)]
fn pipe_in_use(endpoint: &str, detail: &str) -> IpcError {
    IpcError::Io(Arc::new(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("a server is already running at {endpoint} ({detail})"),
    )))
}

/// Whether `endpoint` is a named pipe path, `\\.\pipe\<name>` (case-insensitive;
/// `\\?\pipe\` too), the only endpoints Windows serves.
#[cfg(windows)]
pub(crate) fn is_pipe_name(endpoint: &str) -> bool {
    let lower = endpoint.to_ascii_lowercase();
    [r"\\.\pipe\", r"\\?\pipe\"]
        .iter()
        .any(|prefix| lower.len() > prefix.len() && lower.starts_with(prefix))
}

/// Takes over a listening socket that a service manager created and passed down, as
/// systemd does for socket activation (`LISTEN_FDS`, the socket at file descriptor 3),
/// after checking it as strictly as [`bind`] makes its own: the descriptor must be a
/// listening Unix stream socket bound to `config.endpoint_path` (the same file: a path
/// through a symlink such as `/var/run` counts), the socket file must be owned by this
/// process's user or root and not be writable, so not connectable, by group or others
/// (systemd: `SocketMode=0600`), and the directories on its path must be safe from other users
/// (see the [module documentation](self)). The server built on it applies its peer
/// policy to every connection, as on a socket it bound itself.
///
/// The socket file belongs to whoever created it: dropping the listener closes the
/// descriptor and leaves the file in place (systemd keeps listening on it and starts
/// the service again on the next connection). Must be called within a tokio runtime.
///
/// # Errors
/// `Config` (field `endpoint_path`) naming what is wrong: not a socket, not listening,
/// not a Unix stream socket, bound elsewhere or to no path, an untrusted owner, a mode
/// open to others, an unsafe directory; `Io` when the socket cannot be inspected.
#[cfg(unix)]
pub fn listener_from_fd(
    config: &IpcConfig,
    fd: std::os::fd::OwnedFd,
) -> Result<Listener, IpcError> {
    use std::os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt},
    };

    config.validate()?;
    let endpoint = config.endpoint_path.as_str();
    let refuse = |reason: String| IpcError::Config {
        field: "endpoint_path",
        reason,
    };
    let raw = fd.as_raw_fd();
    let int_option = |option: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `raw` stays open while this function runs (owned by `fd`, then by
        // `listener`); value and len point to live locals of the sizes given.
        let done = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_SOCKET,
                option,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if done == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let kind = int_option(libc::SO_TYPE).map_err(|error| {
        refuse(format!(
            "the inherited file descriptor {raw} is not a socket ({error})"
        ))
    })?;
    let listener = std::os::unix::net::UnixListener::from(fd);
    let address = listener.local_addr().map_err(|error| {
        refuse(format!(
            "the inherited socket is not a Unix socket ({error})"
        ))
    })?;
    if kind != libc::SOCK_STREAM {
        return Err(refuse(
            "the inherited socket is not a stream socket (systemd: ListenStream=)".to_owned(),
        ));
    }
    if int_option(libc::SO_ACCEPTCONN)? == 0 {
        return Err(refuse(
            "the inherited socket is not listening (systemd: Accept=no passes a listening \
             socket)"
                .to_owned(),
        ));
    }
    let Some(bound) = address.as_pathname() else {
        return Err(refuse(
            "the inherited socket is not bound to a path (abstract or unnamed)".to_owned(),
        ));
    };
    let meta = std::fs::symlink_metadata(endpoint).map_err(|error| {
        refuse(format!(
            "the inherited socket is bound to {}, but {endpoint} cannot be inspected: {error}",
            bound.display()
        ))
    })?;
    let same_file = std::fs::metadata(bound)
        .is_ok_and(|other| (other.dev(), other.ino()) == (meta.dev(), meta.ino()));
    if !meta.file_type().is_socket() || !same_file {
        return Err(refuse(format!(
            "the inherited socket is bound to {}, not to {endpoint}: make the two agree",
            bound.display()
        )));
    }
    let own = crate::peer::own_uid();
    if !PeerPolicy::same_user().admits_uid(meta.uid(), own) {
        return Err(refuse(format!(
            "the inherited socket {endpoint} is owned by uid {}, not by this user ({}) or \
             root",
            meta.uid(),
            crate::peer::euid()
        )));
    }
    // Connecting takes write permission on the socket file.
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "the inherited socket {endpoint} has mode {mode:o}: group or others may \
             connect (systemd: SocketMode=0600)"
        )));
    }
    match check_socket_dirs(&socket_dir(endpoint), &PeerPolicy::same_user()) {
        Ok(()) => {}
        Err(DirError::Unsafe(reason)) => return Err(refuse(reason)),
        Err(DirError::Io(_, error)) => return Err(error.into()),
    }
    listener.set_nonblocking(true)?;
    let listener = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(
        std::os::fd::OwnedFd::from(listener),
    )?;
    Ok(listener.into())
}

#[cfg(unix)]
fn prepare_unix_path(endpoint: &str) -> Result<(), IpcError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    use std::path::Path;

    let path = Path::new(endpoint);
    let dir = socket_dir(endpoint);
    let own = PeerPolicy::same_user();
    let checked = |dir: &Path, holds_socket| match check_dirs(dir, &own, holds_socket) {
        Ok(()) => Ok(()),
        Err(DirError::Unsafe(reason)) => Err(IpcError::Config {
            field: "endpoint_path",
            reason,
        }),
        Err(DirError::Io(_, error)) => Err(IpcError::from(error)),
    };
    if !dir.exists() {
        // Create nothing under a directory others control.
        if let Some(existing) = dir.ancestors().skip(1).find(|a| a.exists()) {
            checked(existing, false)?;
        }
        // umask can only remove bits: the directory is never more open than 0700.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
    }
    checked(&dir, true)?;
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

/// The directory holding the socket `endpoint` (`.` for a bare file name).
#[cfg(unix)]
fn socket_dir(endpoint: &str) -> std::path::PathBuf {
    match std::path::Path::new(endpoint).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Why [`check_socket_dirs`] refused.
#[cfg(unix)]
#[derive(Debug)]
enum DirError {
    /// A directory on the path could be tampered with by a user `policy` does not trust.
    Unsafe(String),
    /// A directory on the path could not be inspected.
    Io(std::path::PathBuf, io::Error),
}

/// Refuses a socket directory that a user not trusted by `policy` could tamper with,
/// directly or through a directory above it. The one check shared by [`bind`] (with
/// [`PeerPolicy::same_user`]) and clients (with their server policy's
/// `directory_owners`: this user, root, and the uids it lists):
///
/// - every symlink on the path as written is owned by a trusted user (a symlink in a
///   sticky directory can be replaced by its owner);
/// - after resolving symlinks, the socket's directory and each directory above it, up
///   to `/`, is a directory owned by a trusted user, and is not writable by group or
///   others unless it has the sticky bit (without it they could rename the directory
///   below, or the socket, and put their own in its place).
#[cfg(unix)]
fn check_socket_dirs(dir: &std::path::Path, policy: &PeerPolicy) -> Result<(), DirError> {
    check_dirs(dir, policy, true)
}

/// [`check_socket_dirs`] of `dir`, which holds the socket (`holds_socket`) or is the
/// nearest existing directory above the one that will.
#[cfg(unix)]
fn check_dirs(
    dir: &std::path::Path,
    policy: &PeerPolicy,
    holds_socket: bool,
) -> Result<(), DirError> {
    use std::os::unix::fs::MetadataExt;

    let own = crate::peer::own_uid();
    let trusted = |uid: u32| policy.admits_uid(uid, own);
    let io_error = |path: &std::path::Path| {
        let path = path.to_owned();
        move |error| DirError::Io(path, error)
    };
    let absolute = std::path::absolute(dir).map_err(io_error(dir))?;
    for link in absolute.ancestors() {
        let meta = std::fs::symlink_metadata(link).map_err(io_error(link))?;
        if meta.file_type().is_symlink() && !trusted(meta.uid()) {
            return Err(DirError::Unsafe(format!(
                "{} on the socket's path is a symlink owned by uid {}, not by {}",
                link.display(),
                meta.uid(),
                policy.admitted(own)
            )));
        }
    }
    let real = std::fs::canonicalize(&absolute).map_err(io_error(&absolute))?;
    for (depth, ancestor) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(ancestor).map_err(io_error(ancestor))?;
        let what = if depth == 0 && holds_socket {
            "socket directory"
        } else {
            "directory above the socket's"
        };
        let (uid, mode) = (meta.uid(), meta.mode() & 0o7777);
        let problem = if !meta.is_dir() {
            "is not a directory".to_owned()
        } else if !trusted(uid) {
            format!("is owned by uid {uid}, not by {}", policy.admitted(own))
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            format!(
                "(owner uid {uid}) is writable by group or others (mode {mode:o}) \
                 without the sticky bit"
            )
        } else {
            continue;
        };
        let shown = if depth == 0 && real != absolute {
            format!("{} (resolved from {})", ancestor.display(), dir.display())
        } else {
            ancestor.display().to_string()
        };
        return Err(DirError::Unsafe(format!("{what} {shown} {problem}")));
    }
    Ok(())
}

/// One half of a connection: the end that reads, or the end that writes.
///
/// On Unix a local socket is split into tokio's owned halves: tokio's own `poll_read`
/// notes a read that did not fill the buffer as "drained", so the next read waits for
/// readiness instead of first failing with `EAGAIN` (one system call less per frame
/// received, on both sides: `&Stream`'s read always tries the socket first). On Windows
/// `&Stream` implements both `AsyncRead` and `AsyncWrite`, so each half holds an `Arc`
/// of the same pipe. The in-memory connections of the `testing` module use boxed
/// halves instead.
pub struct StreamHalf(Half);

enum Half {
    #[cfg(unix)]
    UnixReader(tokio::net::unix::OwnedReadHalf),
    #[cfg(unix)]
    UnixWriter(UnixWriter),
    #[cfg(not(unix))]
    Socket(Arc<Stream>),
    Reader(Pin<Box<dyn AsyncRead + Send + Sync>>),
    Writer(Pin<Box<dyn AsyncWrite + Send + Sync>>),
}

/// tokio's owned write half, minus its shutdown on drop: the socket closes when both
/// halves are gone, and `poll_shutdown` does nothing, as with `&Stream`.
#[cfg(unix)]
struct UnixWriter(Option<tokio::net::unix::OwnedWriteHalf>);

#[cfg(unix)]
impl Drop for UnixWriter {
    fn drop(&mut self) {
        if let Some(half) = self.0.take() {
            half.forget();
        }
    }
}

impl std::fmt::Debug for StreamHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            #[cfg(unix)]
            Half::UnixReader(_) => "socket reader",
            #[cfg(unix)]
            Half::UnixWriter(_) => "socket writer",
            #[cfg(not(unix))]
            Half::Socket(_) => "socket",
            Half::Reader(_) => "reader",
            Half::Writer(_) => "writer",
        };
        f.debug_tuple("StreamHalf").field(&kind).finish()
    }
}

impl StreamHalf {
    /// Both halves of `stream`: one to read, one to write.
    pub fn pair(stream: Stream) -> (StreamHalf, StreamHalf) {
        #[cfg(unix)]
        {
            let Stream::UdSocket(stream) = stream;
            let (reader, writer) = tokio::net::UnixStream::from(stream).into_split();
            (
                StreamHalf(Half::UnixReader(reader)),
                StreamHalf(Half::UnixWriter(UnixWriter(Some(writer)))),
            )
        }
        #[cfg(not(unix))]
        {
            let shared = Arc::new(stream);
            (
                StreamHalf(Half::Socket(shared.clone())),
                StreamHalf(Half::Socket(shared)),
            )
        }
    }

    /// The halves of a connection made of any reader and writer (an in-memory pipe, a
    /// fault-injecting wrapper).
    pub fn from_io(
        reader: impl AsyncRead + Send + Sync + 'static,
        writer: impl AsyncWrite + Send + Sync + 'static,
    ) -> (StreamHalf, StreamHalf) {
        (
            StreamHalf(Half::Reader(Box::pin(reader))),
            StreamHalf(Half::Writer(Box::pin(writer))),
        )
    }
}

fn wrong_half() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this half of the connection only writes or only reads",
    )
}

impl AsyncRead for StreamHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(unix)]
            Half::UnixReader(reader) => Pin::new(reader).poll_read(cx, buf),
            #[cfg(not(unix))]
            Half::Socket(stream) => Pin::new(&mut &**stream).poll_read(cx, buf),
            Half::Reader(reader) => reader.as_mut().poll_read(cx, buf),
            _ => Poll::Ready(Err(wrong_half())),
        }
    }
}

impl AsyncWrite for StreamHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            #[cfg(unix)]
            Half::UnixWriter(UnixWriter(Some(writer))) => Pin::new(writer).poll_write(cx, buf),
            #[cfg(not(unix))]
            Half::Socket(stream) => Pin::new(&mut &**stream).poll_write(cx, buf),
            Half::Writer(writer) => writer.as_mut().poll_write(cx, buf),
            _ => Poll::Ready(Err(wrong_half())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            #[cfg(unix)]
            Half::UnixWriter(UnixWriter(Some(writer))) => {
                Pin::new(writer).poll_write_vectored(cx, bufs)
            }
            #[cfg(not(unix))]
            Half::Socket(stream) => Pin::new(&mut &**stream).poll_write_vectored(cx, bufs),
            Half::Writer(writer) => writer.as_mut().poll_write_vectored(cx, bufs),
            _ => Poll::Ready(Err(wrong_half())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            #[cfg(unix)]
            Half::UnixWriter(UnixWriter(Some(writer))) => writer.is_write_vectored(),
            #[cfg(not(unix))]
            Half::Socket(stream) => stream.is_write_vectored(),
            Half::Writer(writer) => writer.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(not(unix))]
            Half::Socket(stream) => Pin::new(&mut &**stream).poll_flush(cx),
            Half::Writer(writer) => writer.as_mut().poll_flush(cx),
            _ => Poll::Ready(Ok(())), // a socket's writes are not buffered
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(not(unix))]
            Half::Socket(stream) => Pin::new(&mut &**stream).poll_shutdown(cx),
            Half::Writer(writer) => writer.as_mut().poll_shutdown(cx),
            _ => Poll::Ready(Ok(())), // as `&Stream`'s: the socket closes with both halves
        }
    }
}

/// Accepts one connection from `listener` (made by [`bind`]), with no peer check and no
/// handshake: what [`Server`](crate::Server) does before its own checks; for tests and
/// tools that play a server by hand.
///
/// # Errors
/// The listener's accept error (e.g. out of file descriptors).
pub async fn accept(listener: &Listener) -> io::Result<Stream> {
    listener.accept().await
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn unsafe_reason(dir: &std::path::Path) -> String {
        match check_socket_dirs(dir, &PeerPolicy::same_user()) {
            Err(DirError::Unsafe(reason)) => reason,
            other => panic!("expected a refusal of {}, got {other:?}", dir.display()),
        }
    }

    #[test]
    fn the_directory_and_every_directory_above_it_are_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let parent = tmp.path().join("parent");
        let dir = parent.join("run");
        std::fs::create_dir_all(&dir).expect("mkdir");
        check_socket_dirs(&dir, &PeerPolicy::same_user()).expect("private directories");

        chmod(&parent, 0o777);
        let reason = unsafe_reason(&dir);
        assert!(
            reason.starts_with(&format!(
                "directory above the socket's {} (owner uid {})",
                parent.display(),
                crate::peer::euid()
            )) && reason.contains("mode 777"),
            "{reason}"
        );
        chmod(&parent, 0o1777);
        check_socket_dirs(&dir, &PeerPolicy::same_user()).expect("sticky, like /tmp");

        chmod(&dir, 0o770);
        let reason = unsafe_reason(&dir);
        assert!(
            reason.starts_with(&format!("socket directory {}", dir.display()))
                && reason.contains("mode 770"),
            "{reason}"
        );
        chmod(&dir, 0o700);

        // Through a symlink: the real directories are checked, and named.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        check_socket_dirs(&link, &PeerPolicy::same_user()).expect("own symlink");
        chmod(&dir, 0o777);
        let reason = unsafe_reason(&link);
        assert!(reason.contains("resolved from"), "{reason}");
    }

    #[test]
    fn a_bare_file_name_is_in_the_working_directory() {
        assert_eq!(socket_dir("x.sock"), std::path::PathBuf::from("."));
        assert_eq!(socket_dir("/run/x.sock"), std::path::PathBuf::from("/run"));
    }
}
