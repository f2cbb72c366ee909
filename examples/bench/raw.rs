//! The bare local socket under the raw floors, with nothing of daemoneye-ipc on it: a
//! tokio `UnixStream` on Unix, an `interprocess` named pipe on Windows. Endpoints are
//! those of `daemoneye_ipc::config::endpoint_in` (a socket path, a pipe name).

use std::io;

#[cfg(windows)]
pub use interprocess::local_socket::tokio::Stream;
/// The halves of a pipe: tokio's generic split (interprocess deprecates its own).
#[cfg(windows)]
pub type ReadHalf = tokio::io::ReadHalf<Stream>;
#[cfg(windows)]
pub type WriteHalf = tokio::io::WriteHalf<Stream>;
#[cfg(windows)]
use interprocess::local_socket::{tokio::prelude::*, GenericFilePath, ListenerOptions};
#[cfg(unix)]
pub use tokio::net::{
    unix::{OwnedReadHalf as ReadHalf, OwnedWriteHalf as WriteHalf},
    UnixStream as Stream,
};

/// A listening raw endpoint.
pub struct Listener {
    #[cfg(unix)]
    inner: tokio::net::UnixListener,
    #[cfg(windows)]
    inner: interprocess::local_socket::tokio::Listener,
}

impl Listener {
    /// Listens on `endpoint`. Must be called within a tokio runtime.
    pub fn bind(endpoint: &str) -> io::Result<Self> {
        #[cfg(unix)]
        let inner = tokio::net::UnixListener::bind(endpoint)?;
        #[cfg(windows)]
        let inner = ListenerOptions::new()
            .name(endpoint.to_fs_name::<GenericFilePath>()?)
            .create_tokio()?;
        Ok(Self { inner })
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Stream> {
        #[cfg(unix)]
        return Ok(self.inner.accept().await?.0);
        #[cfg(windows)]
        return self.inner.accept().await;
    }
}

/// Connects to `endpoint`.
pub async fn connect(endpoint: &str) -> io::Result<Stream> {
    #[cfg(unix)]
    return Stream::connect(endpoint).await;
    #[cfg(windows)]
    return Stream::connect(endpoint.to_fs_name::<GenericFilePath>()?).await;
}

/// The stream's two halves, each usable from its own task.
pub fn split(stream: Stream) -> (ReadHalf, WriteHalf) {
    #[cfg(unix)]
    return stream.into_split();
    #[cfg(windows)]
    return tokio::io::split(stream);
}
