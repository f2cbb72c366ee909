//! Transport errors: everything that can go wrong between two processes, as opposed to
//! a handler's [`Status`].

use std::{io, sync::Arc};

use crate::Status;

/// An IPC failure (seed: IPC Protocol, Error Handling; Migration Overview, Error Handling).
///
/// Framing errors (`InvalidLength`, `TooLarge`, `CrcMismatch`, `PeerClosed` inside a
/// frame) close the connection that produced them; other connections are unaffected.
/// `Status` carries an application error returned by the server for one call; the
/// connection stays usable. The type is `Clone` so that one connection failure can be
/// reported to every call that was in flight on it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// The server answered the call with an error status.
    #[error("server returned {0}")]
    Status(#[from] Status),
    /// A frame header announced a zero-length payload.
    #[error("invalid frame length {length}")]
    InvalidLength {
        /// The announced length, in bytes.
        length: u32,
    },
    /// A frame is larger than `max_frame_bytes`; detected from the header, before the
    /// body is read or any buffer is allocated for it.
    #[error("frame of {size} bytes exceeds the limit of {max_size} bytes")]
    TooLarge {
        /// The frame's payload size, in bytes.
        size: usize,
        /// The configured limit, in bytes.
        max_size: usize,
    },
    /// The checksum in a frame header does not match its payload.
    #[error("CRC mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    CrcMismatch {
        /// The checksum the header carried.
        expected: u32,
        /// The checksum computed over the received payload.
        actual: u32,
    },
    /// The peer closed the connection (possibly in the middle of a frame).
    #[error("peer closed the connection")]
    PeerClosed,
    /// An I/O operation failed.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
    /// A payload is not a valid protobuf message of the expected type.
    #[error("protobuf decode error: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A message could not be encoded.
    #[error("protobuf encode error: {0}")]
    Encode(String),
    /// A well-formed frame broke the protocol (unexpected envelope, bad handshake).
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// What was wrong.
        reason: String,
    },
    /// The two ends are incompatible (protocol version, service name or schema hash).
    #[error("handshake with {endpoint} failed: {reason}")]
    Handshake {
        /// The endpoint the client connected to.
        endpoint: String,
        /// Why the peers cannot talk.
        reason: String,
    },
    /// The server is at its connection limit and refused this connection.
    #[error("server at {endpoint} is busy: {reason}")]
    Busy {
        /// The endpoint the client connected to.
        endpoint: String,
        /// The server's explanation.
        reason: String,
    },
    /// Nothing listens at the endpoint (no socket file or pipe).
    #[error("no server at {endpoint}")]
    ServerNotFound {
        /// The endpoint that was tried.
        endpoint: String,
    },
    /// The endpoint exists but nobody accepts connections on it (stale socket).
    #[error("connection refused by {endpoint}")]
    ConnectionRefused {
        /// The endpoint that was tried.
        endpoint: String,
    },
    /// The endpoint may not be used: the OS refused to open it, the server's peer policy
    /// refused this client, or (on the client) the endpoint failed the client's checks
    /// of who serves it: a server process or a socket directory owned by a user the
    /// client's server policy does not trust, or a directory on the socket's path that
    /// others could tamper with. `reason` says which, naming the owner found.
    #[error("permission denied for {endpoint}: {reason}")]
    PermissionDenied {
        /// The endpoint that was tried.
        endpoint: String,
        /// Why, e.g. `server process uid=65534 gid=65534 pid=812 is not trusted by this
        /// client's server policy (this user (uid 1000) or root)`.
        reason: String,
    },
    /// Connecting (including the handshake) took longer than `accept_timeout_ms`.
    #[error("timed out connecting to {endpoint}")]
    ConnectionTimeout {
        /// The endpoint that was tried.
        endpoint: String,
    },
    /// A read or write took longer than its configured timeout.
    #[error("{operation} timed out after {after_ms} ms")]
    Timeout {
        /// `"read"` or `"write"`.
        operation: &'static str,
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
    /// The call's deadline passed before its answer arrived; the server was told to
    /// cancel it.
    #[error("deadline of {after_ms} ms exceeded")]
    DeadlineExceeded {
        /// The call's timeout, in milliseconds.
        after_ms: u64,
    },
    /// The client's circuit breaker is open after repeated failures; nothing was sent.
    #[error("circuit breaker open; retry in {retry_after_ms} ms")]
    CircuitOpen {
        /// When a probe call will be let through, in milliseconds from now (0: a probe
        /// is in flight).
        retry_after_ms: u64,
    },
    /// The client's rate limit allows no call before the call's deadline; nothing was sent.
    #[error("rate limited; next call allowed in {retry_after_ms} ms")]
    RateLimited {
        /// When the next call is allowed, in milliseconds from now.
        retry_after_ms: u64,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<io::Error> for IpcError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => IpcError::PeerClosed,
            _ => IpcError::Io(Arc::new(error)),
        }
    }
}

impl IpcError {
    /// The [`Status`] the server returned, if this is an application error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            IpcError::Status(status) => Some(status),
            _ => None,
        }
    }

    /// Maps an error from connecting to `endpoint` onto the seed's endpoint variants.
    pub(crate) fn from_connect(error: io::Error, endpoint: &str) -> Self {
        let endpoint = endpoint.to_owned();
        match error.kind() {
            io::ErrorKind::NotFound => IpcError::ServerNotFound { endpoint },
            io::ErrorKind::ConnectionRefused => IpcError::ConnectionRefused { endpoint },
            io::ErrorKind::PermissionDenied => IpcError::PermissionDenied {
                endpoint,
                reason: "the operating system refused access to the socket \
                         (its mode or its directory's excludes this user)"
                    .to_owned(),
            },
            io::ErrorKind::TimedOut => IpcError::ConnectionTimeout { endpoint },
            _ => IpcError::Io(Arc::new(error)),
        }
    }
}
