//! `ipc test`: diagnoses the connection to the collector one step at a time, printing
//! each step with a mark and, when one fails, the specification's advice for it
//! (seed: "Debugging IPC Communication", Troubleshooting), then stops there.
//!
//! Steps: the path is a socket; its directory (owner, mode); the socket's owner and
//! mode against who runs this; connect (and who serves); the handshake (protocol,
//! service, contract, CRC variant: a CRC mismatch is found by trying the other variant
//! and named); N round trips with p50/p99; the frame limit (equal on both ends, and a
//! request of nearly that size goes through).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::{
    envelope::{pb, ENVELOPE_OVERHEAD},
    health::HealthClient,
    reflection::ReflectionClient,
    Code, IpcError,
};

use crate::{
    connect::{self, Found, Settings},
    format::sanitize,
    health::status_name,
    output::Out,
    CliError,
};

/// Seed: Troubleshooting, "Permission Denied".
const PERMISSION: &str = "Permission denied: check the socket file's and its directory's \
    owner and mode (ls -la on the directory); run this as the user procmond runs as, or as \
    root; a collector run by another user is trusted only with --server-uid UID.";
/// Seed: Troubleshooting, "Connection Refused".
const REFUSED: &str = "Connection refused: verify that procmond is running (systemctl \
    status procmond, or pgrep -a procmond) and that every component uses the same endpoint \
    path (--endpoint, endpoint_path in the --config file, DAEMONEYE_ENDPOINT).";
/// Seed: Troubleshooting, "Timeout Errors".
const TIMEOUT: &str = "Timeout errors: increase the timeouts (--timeout-ms here; \
    accept_timeout_ms and call_timeout_ms in the configuration) and check the system load.";
/// Seed: "CRC mismatch: Inspect for data corruption or protocol version mismatch."
const CRC: &str = "CRC mismatch: both ends must frame with the same crc32_variant (crc32c \
    or ieee): set it once in the configuration file both read (--config here, --config or \
    DAEMONEYE_CONFIG for procmond) or in DAEMONEYE_CRC32_VARIANT for both. If the variants \
    agree, inspect for data corruption or a protocol version mismatch.";
/// The endpoint serves something else.
const OTHER_SERVICE: &str = "This endpoint serves another service: check that the endpoint \
    path configuration matches between components (--endpoint, endpoint_path, \
    DAEMONEYE_ENDPOINT).";
/// Contracts or protocols that cannot work together.
const VERSIONS: &str = "The two ends cannot work together: upgrade the older one \
    (`daemoneye-cli describe` shows what the endpoint serves).";
/// The frame limits differ.
const FRAMES: &str = "Both ends must agree on max_frame_bytes: set it once in the \
    configuration file both read.";
/// Not a socket at the path.
const NOT_A_SOCKET: &str = "Remove it, or point --endpoint at the socket procmond serves \
    (procmond does not replace anything that is not a socket).";

/// Prints the steps as they finish.
struct Steps<'a> {
    out: &'a mut Out,
}

impl Steps<'_> {
    fn pass(&mut self, step: &str, detail: &str) -> Result<(), CliError> {
        self.out
            .write(&format!("[ ok ] {step:<12} {}\n", sanitize(detail)))?;
        self.out.flush()
    }

    /// Prints the failure and its advice; the exit status of the test.
    fn fail(&mut self, step: &str, detail: &str, advice: &str) -> Result<ExitCode, CliError> {
        self.out.write(&format!(
            "[FAIL] {step:<12} {}\n       advice: {advice}\n",
            sanitize(detail)
        ))?;
        self.out.flush()?;
        Ok(ExitCode::from(1))
    }
}

/// Stops the test at the first failing step.
macro_rules! step {
    ($steps:expr, $step:expr, $outcome:expr) => {
        match $outcome {
            Ok(detail) => $steps.pass($step, &detail)?,
            Err((detail, advice)) => return $steps.fail($step, &detail, advice),
        }
    };
}

type Outcome<T> = Result<T, (String, &'static str)>;

/// `ipc test`: 0 when every step passes, 1 at the first that fails.
pub async fn run(settings: &Settings, count: u32, out: &mut Out) -> Result<ExitCode, CliError> {
    let mut steps = Steps { out };
    let endpoint = settings.endpoint().to_owned();
    if cfg!(unix) {
        step!(steps, "socket", socket_step(&endpoint));
        step!(steps, "directory", directory_step(&endpoint, settings));
        step!(steps, "owner", owner_step(&endpoint, settings));
    }
    step!(steps, "connect", connect_step(settings).await);
    let info = match handshake_step(settings).await {
        Ok((detail, info)) => {
            steps.pass("handshake", &detail)?;
            info
        }
        Err((detail, advice)) => return steps.fail("handshake", &detail, advice),
    };
    step!(steps, "round trips", round_trips(settings, count).await);
    step!(steps, "frame limit", frame_step(settings, &info).await);
    Ok(ExitCode::SUCCESS)
}

fn socket_step(endpoint: &str) -> Outcome<String> {
    match connect::inspect(endpoint) {
        Found::Socket => Ok(format!("{endpoint} is a socket")),
        Found::Other(kind) => Err((format!("{endpoint} is {kind}, not a socket"), NOT_A_SOCKET)),
        Found::Nothing => {
            let dir = connect::directory_of(endpoint);
            let detail = if dir.exists() {
                format!("{endpoint} does not exist")
            } else {
                format!(
                    "{endpoint} does not exist, nor does its directory {}",
                    dir.display()
                )
            };
            Err((detail, REFUSED))
        }
        Found::Unknown => {
            let error = std::fs::metadata(endpoint)
                .err()
                .map_or_else(String::new, |e| e.to_string());
            Err((
                format!(
                    "cannot inspect {endpoint}: {error} (is its directory {} searchable \
                     by you, uid {}?)",
                    connect::directory_of(endpoint).display(),
                    unix::euid()
                ),
                PERMISSION,
            ))
        }
    }
}

fn directory_step(endpoint: &str, settings: &Settings) -> Outcome<String> {
    let dir = connect::directory_of(endpoint);
    let shown = dir.display().to_string();
    let (uid, mode) = unix::owner_and_mode(&dir)
        .map_err(|error| (format!("cannot inspect {shown}: {error}"), PERMISSION))?;
    let me = unix::euid();
    if !unix::may(&dir, unix::SEARCH) {
        return Err((
            format!(
                "{shown} (owner uid {uid}, mode {mode:04o}) is not searchable by you (uid {me})"
            ),
            PERMISSION,
        ));
    }
    if !settings.trusts(uid) {
        return Err((
            format!(
                "{shown} is owned by uid {uid}, not by you (uid {me}) or root: a socket there \
                 could have been planted by that user, so the cli refuses it (if procmond \
                 runs as uid {uid}, pass --server-uid {uid})"
            ),
            PERMISSION,
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err((
            format!(
                "{shown} (mode {mode:04o}) is writable by group or others without the sticky \
                 bit: they could replace the socket, so the cli refuses it (0700 expected)"
            ),
            PERMISSION,
        ));
    }
    let note = if mode & 0o777 == 0o700 {
        ""
    } else {
        " (0700 expected)"
    };
    Ok(format!("{shown}: owner uid {uid}, mode {mode:04o}{note}"))
}

fn owner_step(endpoint: &str, settings: &Settings) -> Outcome<String> {
    let (uid, mode) = unix::owner_and_mode(std::path::Path::new(endpoint))
        .map_err(|error| (format!("cannot inspect {endpoint}: {error}"), PERMISSION))?;
    let me = unix::euid();
    if !unix::may(std::path::Path::new(endpoint), unix::WRITE) {
        return Err((
            format!(
                "the socket is owned by uid {uid} with mode {mode:04o}: you (uid {me}) may not \
                 connect to it (connecting needs write permission)"
            ),
            PERMISSION,
        ));
    }
    if !settings.trusts(uid) {
        return Err((
            format!(
                "the socket is owned by uid {uid}, not by you (uid {me}) or root: the cli \
                 does not trust it (if procmond runs as uid {uid}, pass --server-uid {uid})"
            ),
            PERMISSION,
        ));
    }
    let note = if mode & 0o022 == 0 {
        ""
    } else {
        " (others may connect too: procmond makes it 0600)"
    };
    Ok(format!(
        "socket owner uid {uid}, mode {mode:04o}; you are uid {me}{note}"
    ))
}

async fn connect_step(settings: &Settings) -> Outcome<String> {
    let endpoint = settings.endpoint();
    let started = Instant::now();
    let stream = daemoneye_ipc::transport::connect(endpoint, settings.accept_timeout())
        .await
        .map_err(|error| {
            let advice = match error {
                IpcError::ServerNotFound { .. } | IpcError::ConnectionRefused { .. } => REFUSED,
                IpcError::PermissionDenied { .. } => PERMISSION,
                IpcError::ConnectionTimeout { .. } => TIMEOUT,
                _ => REFUSED,
            };
            let detail = match error {
                IpcError::ConnectionRefused { .. } => format!(
                    "nothing accepts connections at {endpoint}: a socket left behind by a \
                     server that is gone, or one still starting"
                ),
                other => other.to_string(),
            };
            (detail, advice)
        })?;
    let took = started.elapsed();
    let served_by = {
        use interprocess::local_socket::traits::StreamCommon;
        stream.peer_creds()
    };
    match served_by {
        Ok(creds) => {
            let pid = creds
                .pid()
                .map_or_else(|| "?".to_owned(), |p| p.to_string());
            #[cfg(unix)]
            if let Some(uid) = creds.euid() {
                if !settings.trusts(uid) {
                    return Err((
                        format!(
                            "served by pid {pid} running as uid {uid}, not you (uid {}) or \
                             root: the cli does not trust it (if that is procmond, pass \
                             --server-uid {uid})",
                            unix::euid()
                        ),
                        PERMISSION,
                    ));
                }
                return Ok(format!(
                    "accepted in {}; served by pid {pid}, uid {uid}",
                    micros(took)
                ));
            }
            Ok(format!("accepted in {}; served by pid {pid}", micros(took)))
        }
        Err(error) => Ok(format!(
            "accepted in {} (the server's credentials cannot be read: {error})",
            micros(took)
        )),
    }
}

/// A failed handshake: why, and the advice.
fn handshake_failure(error: &IpcError) -> (String, &'static str) {
    let advice = match error {
        IpcError::Handshake { reason, .. } if reason.contains("this endpoint serves") => {
            OTHER_SERVICE
        }
        IpcError::Handshake { .. } => VERSIONS,
        IpcError::PermissionDenied { .. } => PERMISSION,
        IpcError::ConnectionTimeout { .. } | IpcError::Busy { .. } => TIMEOUT,
        IpcError::ServerNotFound { .. } | IpcError::ConnectionRefused { .. } => REFUSED,
        _ => CRC,
    };
    (error.to_string(), advice)
}

async fn handshake_step(settings: &Settings) -> Outcome<(String, pb::ServerInfo)> {
    let descriptor = ProcessCollectorClient::DESCRIPTOR;
    let deadline = || Instant::now() + settings.accept_timeout();
    let client =
        match connect::connect(&settings.config, descriptor, &settings.policy, deadline()).await {
            Ok(client) => client,
            Err(error @ CliError::CrcVariant { .. }) => return Err((error.to_string(), CRC)),
            Err(CliError::Ipc { source, .. }) => return Err(handshake_failure(&source)),
            Err(other) => return Err((other.to_string(), REFUSED)),
        };
    drop(client);
    let reflection = connect::connect(
        &settings.config,
        ReflectionClient::DESCRIPTOR,
        &settings.policy,
        deadline(),
    )
    .await
    .map_err(|error| (format!("the reflection service: {error}"), VERSIONS))?;
    let info = ReflectionClient::from_client(reflection)
        .server_info()
        .await
        .map_err(|error| (format!("the reflection service: {error}"), VERSIONS))?;
    let contract = match info.services.iter().find(|s| s.name == descriptor.name) {
        Some(served) if served.schema_hash == descriptor.schema_hash => {
            format!(
                "contract {:016x} (the same as this cli's)",
                served.schema_hash
            )
        }
        Some(served) => format!(
            "contract {:016x} (this cli: {:016x}; compatible method by method)",
            served.schema_hash, descriptor.schema_hash
        ),
        None => "contract not listed by reflection".to_owned(),
    };
    let detail = format!(
        "protocol {}, service {}, {contract}, CRC {}",
        info.protocol_version,
        descriptor.name,
        settings.config.crc32_variant.as_str()
    );
    Ok((detail, info))
}

async fn round_trips(settings: &Settings, count: u32) -> Outcome<String> {
    let deadline = Instant::now() + settings.accept_timeout();
    let health = connect::connect(
        &settings.config,
        HealthClient::DESCRIPTOR,
        &settings.policy,
        deadline,
    )
    .await
    .map(HealthClient::from_client)
    .map_err(|error| (error.to_string(), REFUSED))?;
    let mut latencies = Vec::with_capacity(count as usize);
    let mut status = None;
    for _ in 0..count {
        let started = Instant::now();
        let answer = health
            .check(pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|error| {
                let advice = match error {
                    IpcError::DeadlineExceeded { .. } | IpcError::Timeout { .. } => TIMEOUT,
                    IpcError::CrcMismatch { .. } => CRC,
                    _ => REFUSED,
                };
                (format!("after {} calls: {error}", latencies.len()), advice)
            })?;
        latencies.push(started.elapsed());
        status = Some(answer.status());
    }
    latencies.sort_unstable();
    let server = status.map_or_else(String::new, |status| {
        format!("; the server reports {}", status_name(status))
    });
    Ok(format!(
        "{count} health checks: p50 {}, p99 {}, max {}{server}",
        micros(percentile(&latencies, 50)),
        micros(percentile(&latencies, 99)),
        micros(latencies.last().copied().unwrap_or_default()),
    ))
}

/// The nearest-rank `p`th percentile of sorted `values` (zero when empty).
fn percentile(values: &[Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * values.len()).div_ceil(100).clamp(1, values.len());
    values[rank - 1]
}

async fn frame_step(settings: &Settings, info: &pb::ServerInfo) -> Outcome<String> {
    let ours = settings.config.max_frame_bytes;
    let theirs = info
        .limits
        .as_ref()
        .map_or(0, |limits| limits.max_frame_bytes as usize);
    if theirs != ours {
        return Err((
            format!("the server takes frames of up to {theirs} bytes, this client {ours}"),
            FRAMES,
        ));
    }
    // A request of nearly a frame: a health check of a service with a long name,
    // answered NOT_FOUND (with a bounded message) once the server has read it all.
    let deadline = Instant::now() + settings.accept_timeout();
    let health = connect::connect(
        &settings.config,
        HealthClient::DESCRIPTOR,
        &settings.policy,
        deadline,
    )
    .await
    .map(HealthClient::from_client)
    .map_err(|error| (error.to_string(), REFUSED))?;
    let size = ours.saturating_sub(ENVELOPE_OVERHEAD + 16).max(1);
    let request = pb::HealthCheckRequest {
        service: "x".repeat(size),
    };
    match health.check(request).await {
        Err(IpcError::Status(status)) if status.code() == Code::NotFound => Ok(format!(
            "{ours} bytes on both ends; a request of {size} bytes went through"
        )),
        Ok(_) => Ok(format!("{ours} bytes on both ends")),
        Err(error) => Err((
            format!("a request of {size} bytes (the limit is {ours}) failed: {error}"),
            FRAMES,
        )),
    }
}

/// A duration in microseconds or milliseconds.
fn micros(duration: Duration) -> String {
    let us = duration.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.1} ms", us / 1_000.0)
    }
}

/// File ownership and access, the way this process's effective ids see them.
#[cfg(unix)]
mod unix {
    use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

    pub const SEARCH: libc::c_int = libc::X_OK;
    pub const WRITE: libc::c_int = libc::W_OK;

    pub fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    pub fn owner_and_mode(path: &Path) -> std::io::Result<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok((meta.uid(), meta.mode() & 0o7777))
    }

    /// Whether this process (by its effective ids) may access `path` as `mode` asks.
    pub fn may(path: &Path, mode: libc::c_int) -> bool {
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, libc::AT_EACCESS) == 0 }
    }
}

/// Off Unix the steps that use these are skipped.
#[cfg(not(unix))]
mod unix {
    use std::path::Path;

    pub const SEARCH: i32 = 0;
    pub const WRITE: i32 = 0;

    pub fn euid() -> u32 {
        0
    }

    pub fn owner_and_mode(_path: &Path) -> std::io::Result<(u32, u32)> {
        Ok((0, 0))
    }

    pub fn may(_path: &Path, _mode: i32) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&values, 50), Duration::from_micros(50));
        assert_eq!(percentile(&values, 99), Duration::from_micros(99));
        assert_eq!(percentile(&values[..1], 99), Duration::from_micros(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
