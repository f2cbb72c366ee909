//! Connection settings shared by client and server (seed: IPC Protocol, Cross-Platform
//! Considerations; ADR-0004, Implementation details), and loading them from a file and
//! the environment (seed: "Configuration is managed via YAML/TOML files or environment
//! variables").
//!
//! # Loading
//!
//! Loading needs the crate's `config-file` feature (`features = ["config-file"]` on the
//! `daemoneye-ipc` dependency). It is off by default, so that a program that builds its
//! [`IpcConfig`] in code does not compile figment and the TOML and YAML parsers.
//!
//! With it, `IpcConfig::load` stacks three layers, each overriding the one before, then
//! checks the result with [`IpcConfig::validate`]:
//!
//! 1. the defaults ([`IpcConfig::default`]);
//! 2. a TOML (`.toml`) or YAML (`.yaml`, `.yml`) file, when a path is given;
//! 3. environment variables named `DAEMONEYE_` followed by the field name in upper case:
//!    `DAEMONEYE_ENDPOINT_PATH`, `DAEMONEYE_MAX_FRAME_BYTES`, `DAEMONEYE_ACCEPT_TIMEOUT_MS`,
//!    `DAEMONEYE_READ_TIMEOUT_MS`, `DAEMONEYE_WRITE_TIMEOUT_MS`, `DAEMONEYE_CALL_TIMEOUT_MS`,
//!    `DAEMONEYE_MAX_CONNECTIONS`, `DAEMONEYE_MAX_IN_FLIGHT`, `DAEMONEYE_CRC32_VARIANT`,
//!    `DAEMONEYE_DRAIN_TIMEOUT_MS`, `DAEMONEYE_HANDLER_TIMEOUT_MS`,
//!    `DAEMONEYE_MAX_BLOCKING`, `DAEMONEYE_STREAM_WINDOW`. `DAEMONEYE_ENDPOINT` is a shorter name for
//!    `DAEMONEYE_ENDPOINT_PATH` (the one the binaries document); when both are set,
//!    `DAEMONEYE_ENDPOINT_PATH` wins. Names are matched exactly (upper case), a variable
//!    that is empty or only whitespace counts as unset, and the endpoint's value is taken
//!    verbatim while the others are parsed (`64` is a number, `ieee` a string).
//!
//! Every layer may set any subset of the fields.
//!
//! # File layout
//!
//! The settings sit either at the top level of the file:
//!
//! ```toml
//! endpoint_path = "/run/daemoneye/procmond.sock"
//! max_connections = 32
//! crc32_variant = "crc32c"
//! ```
//!
//! or under an `ipc` table, as in the seed's example, when the file configures more
//! than IPC:
//!
//! ```yaml
//! ipc:
//!   endpoint_path: /tmp/custom-daemoneye.sock
//!   read_timeout_ms: 60000
//! logging:          # another component's section: not read here
//!   level: info
//! ```
//!
//! The rule: when the top level has an `ipc` key, only that table is read; the file's
//! other top-level keys belong to other components and are ignored, except that an IPC
//! field name among them is an error (it would otherwise be dropped without a word).
//! Without an `ipc` key the whole file is the IPC table. Either way an unknown key among
//! the IPC settings is an error naming it, so a misspelt `max_conections` cannot fall
//! back to the default unnoticed. An empty file (or an empty `ipc:`) sets nothing.

#[cfg(feature = "config-file")]
mod load;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{FrameCodec, IpcError};

pub use crate::codec::Crc32Variant;

/// Every [`IpcConfig`] field, as spelt in files; `DAEMONEYE_` plus the upper-cased name
/// is its environment variable. Kept in step with the struct by a unit test.
#[cfg(any(feature = "config-file", test))]
const FIELDS: [&str; 13] = [
    "endpoint_path",
    "max_frame_bytes",
    "accept_timeout_ms",
    "read_timeout_ms",
    "write_timeout_ms",
    "call_timeout_ms",
    "max_connections",
    "max_in_flight",
    "crc32_variant",
    "drain_timeout_ms",
    "handler_timeout_ms",
    "max_blocking",
    "stream_window",
];

/// Upper bound of the counts that size a semaphore or travel in a `u32` field.
const MAX_COUNT: usize = {
    let semaphore = tokio::sync::Semaphore::MAX_PERMITS;
    if (u32::MAX as usize) < semaphore {
        u32::MAX as usize
    } else {
        semaphore
    }
};

/// Settings for one endpoint, used by both [`Client`](crate::Client) and
/// [`Server`](crate::Server). Defaults follow the specification (seed: IPC Protocol;
/// ADR-0004).
///
/// Serde reads it with every field optional (a missing field keeps its default) and
/// unknown fields refused; see `IpcConfig::load` (feature `config-file`) and the
/// [module docs](self) for files and environment variables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpcConfig {
    /// Unix socket path or Windows pipe name. Default: [`default_endpoint`]
    /// (`/var/run/daemoneye/procmond.sock` for root, a per-user path otherwise).
    /// Must be non-empty, without NUL bytes and, on Unix, at most 107 bytes.
    pub endpoint_path: String,
    /// Largest frame payload accepted or sent, in bytes. Default 1 MiB (1048576);
    /// 1 to 4294967295.
    pub max_frame_bytes: usize,
    /// Connect / accept (including the handshake) timeout, in milliseconds. Default
    /// 5000 (5 s); must be greater than 0.
    pub accept_timeout_ms: u64,
    /// Server: how long a connection with no call in flight may stay silent before it is
    /// closed, in milliseconds. Default 30000 (30 s); must be greater than 0.
    pub read_timeout_ms: u64,
    /// Time allowed to write out a batch of frames, in milliseconds. Default 10000
    /// (10 s); must be greater than 0.
    pub write_timeout_ms: u64,
    /// Client: default time a call may take end to end (its deadline), in milliseconds.
    /// Default 30000 (30 s); must be greater than 0.
    pub call_timeout_ms: u64,
    /// Server: connections served at once; one more gets a "busy" answer. Default 16;
    /// 1 to 4294967295.
    pub max_connections: usize,
    /// Server: calls run at once per connection; past this the server stops reading from
    /// that peer (backpressure). Default 128; 1 to 4294967295.
    pub max_in_flight: usize,
    /// Frame checksum polynomial, `"crc32c"` or `"ieee"`. Default `"crc32c"`.
    pub crc32_variant: Crc32Variant,
    /// Server: at shutdown, how long calls in flight may take to finish, in
    /// milliseconds. Default 5000 (5 s); 0 closes them at once.
    pub drain_timeout_ms: u64,
    /// Server: longest a handler may run, in milliseconds, whatever deadline the client
    /// sent (or when it sent none); past it the call is answered `DEADLINE_EXCEEDED`.
    /// Separate from `read_timeout_ms`, which is about idle peers. Default 60000 (60 s);
    /// must be greater than 0.
    pub handler_timeout_ms: u64,
    /// Server: blocking jobs (file reads, process table walks) that one
    /// [`BlockingPool`](crate::BlockingPool) built from this configuration runs at once;
    /// one more is answered `RESOURCE_EXHAUSTED` at once. A service may keep one pool per
    /// kind of work (procmond: hashing, and process enumeration). Default 16
    /// ([`DEFAULT_MAX_BLOCKING`](crate::blocking::DEFAULT_MAX_BLOCKING)); 1 to 4294967295.
    pub max_blocking: usize,
    /// Client: the credit window of each server-streaming call, in items: the server
    /// sends at most this many items ahead of the consumer, so a stream's buffer holds
    /// at most `stream_window` items of at most `max_frame_bytes` each. Credit is
    /// granted again each time the consumer has taken half the window. Default 32;
    /// 1 to 1048576.
    pub stream_window: u32,
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
            handler_timeout_ms: 60_000,
            max_blocking: crate::blocking::DEFAULT_MAX_BLOCKING,
            stream_window: 32,
        }
    }
}

impl IpcConfig {
    /// The frame codec this configuration asks for: its `max_frame_bytes` and
    /// `crc32_variant`.
    pub fn frame_codec(&self) -> FrameCodec {
        FrameCodec::new(self.max_frame_bytes, self.crc32_variant)
    }

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
    /// [`IpcError::Config`] when a limit or timeout (other than `drain_timeout_ms`) is
    /// zero, `max_frame_bytes`, `max_connections`, `max_in_flight` or `max_blocking`
    /// exceeds `u32::MAX`, or the endpoint is empty, contains a NUL byte or (on Unix) is
    /// longer than a socket address can hold (107 bytes).
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
        if self.endpoint_path.contains('\0') {
            return bad("endpoint_path", "must not contain a NUL byte");
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
        #[cfg(windows)]
        if !crate::transport::is_pipe_name(&self.endpoint_path) {
            return Err(IpcError::Config {
                field: "endpoint_path",
                reason: format!(
                    "{} is not a named pipe path: on Windows an endpoint is \\\\.\\pipe\\<name> \
                     (see config::endpoint_in and default_endpoint_for)",
                    self.endpoint_path
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
            ("handler_timeout_ms", self.handler_timeout_ms),
        ] {
            if value == 0 {
                return bad(field, "must be greater than 0");
            }
        }
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
            ("max_blocking", self.max_blocking),
        ] {
            if value == 0 || value > MAX_COUNT {
                return Err(IpcError::Config {
                    field,
                    reason: format!("must be between 1 and {MAX_COUNT}"),
                });
            }
        }
        let max_window = crate::server::MAX_STREAM_CREDIT;
        if self.stream_window == 0 || self.stream_window as usize > max_window {
            return bad(
                "stream_window",
                &format!("must be between 1 and {max_window}"),
            );
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
    pub(crate) fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms)
    }
}

/// `duration` in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The endpoint of [`IpcConfig::default`]: `default_endpoint_for("daemoneye")`. A
/// program serving a service of its own sets its endpoint (DaemonEye's procmond:
/// `daemoneye_collector::default_endpoint()`, which is `default_endpoint_for("procmond")`).
pub fn default_endpoint() -> String {
    default_endpoint_for("daemoneye")
}

/// The endpoint of a service whose socket is named `name`: a system one when
/// privileged, else a per-user one (seed: IPC, Default Paths).
///
/// - Unix, effective uid 0: `/var/run/daemoneye/{name}.sock`.
/// - Unix, other users: `$XDG_RUNTIME_DIR/daemoneye/{name}.sock`, or
///   `/tmp/daemoneye-<uid>/{name}.sock` when that variable is unset.
/// - Windows: `\\.\pipe\daemoneye\{name}`.
pub fn default_endpoint_for(name: &str) -> String {
    #[cfg(unix)]
    {
        let uid = crate::peer::euid();
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

/// A private endpoint named `name` that belongs to the directory `dir`, for tests,
/// examples and other short-lived servers that already own a scratch directory (a
/// `tempfile::TempDir`, say): two directories never share an endpoint.
///
/// - Unix: the socket `{dir}/{name}.sock` (inside `dir`, so it inherits the directory's
///   permissions and goes away with it).
/// - Windows: the pipe `\\.\pipe\daemoneye\{last component of dir}-{hash of dir}\{name}`
///   (pipes live in their own namespace, not in the file system; the hash keeps two
///   directories with the same last component apart).
pub fn endpoint_in(dir: &std::path::Path, name: &str) -> String {
    #[cfg(unix)]
    {
        dir.join(format!("{name}.sock"))
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(windows)]
    {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        dir.hash(&mut hasher);
        let last = dir
            .file_name()
            .map(|last| last.to_string_lossy().replace(['\\', '/'], "-"))
            .unwrap_or_default();
        format!(r"\\.\pipe\daemoneye\{last}-{:016x}\{name}", hasher.finish())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn field_list_matches_the_struct() {
        let value = serde_json::to_value(IpcConfig::default()).expect("serialisable");
        let Value::Object(dict) = value else {
            panic!("a struct serialises to a map: {value}");
        };
        let mut names: Vec<&str> = dict.keys().map(String::as_str).collect();
        let mut fields = FIELDS.to_vec();
        names.sort_unstable();
        fields.sort_unstable();
        assert_eq!(names, fields);
        assert_eq!(dict["crc32_variant"].as_str(), Some("crc32c"));
        let ieee = serde_json::to_value(Crc32Variant::Ieee).expect("serialisable");
        assert_eq!(ieee.as_str(), Some("ieee"));
    }

    #[test]
    fn crc32_variant_names_round_trip() {
        for variant in [Crc32Variant::Castagnoli, Crc32Variant::Ieee] {
            assert_eq!(variant.as_str().parse::<Crc32Variant>().ok(), Some(variant));
            assert_eq!(
                variant.as_str().to_uppercase().parse::<Crc32Variant>().ok(),
                Some(variant)
            );
        }
        let error = "crc32".parse::<Crc32Variant>().expect_err("not a variant");
        assert!(
            matches!(
                error,
                IpcError::Config {
                    field: "crc32_variant",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn validate_bounds_counts() {
        let config = IpcConfig {
            max_connections: MAX_COUNT + 1,
            ..IpcConfig::default()
        };
        let error = config.validate().expect_err("too many connections");
        assert!(
            matches!(
                error,
                IpcError::Config {
                    field: "max_connections",
                    ..
                }
            ),
            "{error}"
        );
        let config = IpcConfig {
            max_blocking: 0,
            ..IpcConfig::default()
        };
        let error = config.validate().expect_err("no blocking slot");
        assert!(
            matches!(
                error,
                IpcError::Config {
                    field: "max_blocking",
                    ..
                }
            ),
            "{error}"
        );
        let config = IpcConfig::with_endpoint("/tmp/a\0b.sock");
        let error = config.validate().expect_err("NUL in endpoint");
        assert!(
            matches!(
                error,
                IpcError::Config {
                    field: "endpoint_path",
                    ..
                }
            ),
            "{error}"
        );
    }
}
