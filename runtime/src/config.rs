//! Connection settings shared by client and server (seed: IPC Protocol, Cross-Platform
//! Considerations; ADR-0004, Implementation details).

use std::time::Duration;

use crate::IpcError;

/// Which CRC-32 polynomial frames carry. Both ends must agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Crc32Variant {
    /// CRC-32C (Castagnoli), hardware-accelerated on x86-64 and aarch64. The default
    /// (seed: IPC Protocol, CRC32C Checksum Usage).
    #[default]
    Castagnoli,
    /// CRC-32 IEEE 802.3 (the polynomial of zlib and Ethernet).
    Ieee,
}

impl Crc32Variant {
    /// The checksum of `bytes` under this variant.
    #[inline]
    pub fn checksum(self, bytes: &[u8]) -> u32 {
        match self {
            Crc32Variant::Castagnoli => crc32c::crc32c(bytes),
            Crc32Variant::Ieee => crc32fast::hash(bytes),
        }
    }
}

/// Settings for one endpoint, used by both [`Client`](crate::Client) and
/// [`Server`](crate::Server). Defaults follow the specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcConfig {
    /// Unix socket path or Windows pipe name. Default: [`default_endpoint`].
    pub endpoint_path: String,
    /// Largest frame payload accepted or sent, in bytes. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Connect / accept (including the handshake) timeout, in milliseconds. Default 5 s.
    pub accept_timeout_ms: u64,
    /// Server: how long a connection with no call in flight may stay silent before it is
    /// closed, in milliseconds. Default 30 s.
    pub read_timeout_ms: u64,
    /// Time allowed to write out a batch of frames, in milliseconds. Default 10 s.
    pub write_timeout_ms: u64,
    /// Client: default time a call may take end to end (its deadline), in milliseconds.
    /// Default 30 s.
    pub call_timeout_ms: u64,
    /// Server: connections served at once; one more gets a "busy" answer. Default 16.
    pub max_connections: usize,
    /// Server: calls run at once per connection; past this the server stops reading from
    /// that peer (backpressure). Default 128.
    pub max_in_flight: usize,
    /// Frame checksum polynomial. Default CRC32C.
    pub crc32_variant: Crc32Variant,
    /// Server: at shutdown, how long calls in flight may take to finish, in
    /// milliseconds. Default 5 s.
    pub drain_timeout_ms: u64,
}

impl Default for IpcConfig {
    fn default() -> Self {
        Self {
            endpoint_path: default_endpoint(),
            max_frame_bytes: 1024 * 1024,
            accept_timeout_ms: 5_000,
            read_timeout_ms: 30_000,
            write_timeout_ms: 10_000,
            call_timeout_ms: 30_000,
            max_connections: 16,
            max_in_flight: 128,
            crc32_variant: Crc32Variant::Castagnoli,
            drain_timeout_ms: 5_000,
        }
    }
}

impl IpcConfig {
    /// The default configuration with another endpoint.
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint_path: endpoint.into(),
            ..Self::default()
        }
    }

    /// Checks every field, naming the first bad one.
    ///
    /// # Errors
    /// [`IpcError::Config`] when a limit or timeout is zero, the frame limit exceeds
    /// `u32::MAX`, or the endpoint is empty (or, on Unix, longer than a socket address
    /// can hold: 107 bytes).
    pub fn validate(&self) -> Result<(), IpcError> {
        let bad = |field, reason: &str| {
            Err(IpcError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.endpoint_path.is_empty() {
            return bad("endpoint_path", "must not be empty");
        }
        #[cfg(unix)]
        if self.endpoint_path.len() > crate::transport::MAX_UNIX_PATH {
            return Err(IpcError::Config {
                field: "endpoint_path",
                reason: format!(
                    "{} bytes is longer than a Unix socket path may be ({} bytes)",
                    self.endpoint_path.len(),
                    crate::transport::MAX_UNIX_PATH
                ),
            });
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > u32::MAX as usize {
            return bad("max_frame_bytes", "must be between 1 and 4294967295");
        }
        for (field, value) in [
            ("accept_timeout_ms", self.accept_timeout_ms),
            ("read_timeout_ms", self.read_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("call_timeout_ms", self.call_timeout_ms),
        ] {
            if value == 0 {
                return bad(field, "must be greater than 0");
            }
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be greater than 0");
        }
        if self.max_in_flight == 0 || self.max_in_flight > u32::MAX as usize {
            return bad("max_in_flight", "must be between 1 and 4294967295");
        }
        Ok(())
    }

    pub(crate) fn accept_timeout(&self) -> Duration {
        Duration::from_millis(self.accept_timeout_ms)
    }
    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// The seed's endpoint when privileged, else a per-user one.
///
/// - Unix, effective uid 0: `/var/run/daemoneye/procmond.sock` (seed: IPC, Default Paths).
/// - Unix, other users: `$XDG_RUNTIME_DIR/daemoneye/procmond.sock`, or
///   `/tmp/daemoneye-<uid>/procmond.sock` when that variable is unset.
/// - Windows: `\\.\pipe\daemoneye\procmond`.
pub fn default_endpoint() -> String {
    default_endpoint_for("procmond")
}

/// Like [`default_endpoint`] for a service whose socket is named `name`.
pub fn default_endpoint_for(name: &str) -> String {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid == 0 {
            return format!("/var/run/daemoneye/{name}.sock");
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => {
                format!("{}/daemoneye/{name}.sock", dir.to_string_lossy())
            }
            _ => format!("/tmp/daemoneye-{uid}/{name}.sock"),
        }
    }
    #[cfg(windows)]
    {
        format!(r"\\.\pipe\daemoneye\{name}")
    }
}
