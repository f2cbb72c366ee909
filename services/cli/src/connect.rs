//! The connection settings every command shares, and connecting without a race on
//! start-up: `--timeout-ms` is the time allowed to connect, so a server that is still
//! starting (no socket yet, or one not listening yet) is waited for, up to that time;
//! `--wait SECS` also waits for it to report `SERVING`.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use daemoneye_ipc::{
    envelope::pb,
    health::{HealthClient, ServingStatus},
    Client, Crc32Variant, IpcConfig, IpcError, PeerPolicy, ServiceDescriptor,
};

use crate::CliError;

/// Pause between two connection attempts at first; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between two connection attempts.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// After this long without a server, a terminal is told what the cli waits for.
const TELL_AFTER: Duration = Duration::from_secs(1);

/// Connection options, as given on the command line (`None`: not given).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub timeout_ms: Option<u64>,
    pub server_uids: Vec<u32>,
    pub wait_secs: Option<u64>,
}

/// What the commands connect with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The configuration: defaults, the `--config` file, `DAEMONEYE_*`, then flags.
    pub config: IpcConfig,
    /// Which servers are trusted: this user, root, and `--server-uid`s.
    pub policy: PeerPolicy,
    /// `--wait`: how long to wait for the server to be up and `SERVING`.
    pub wait: Option<Duration>,
    /// The `--server-uid`s.
    pub server_uids: Vec<u32>,
}

impl Settings {
    /// Builds the settings from `options` (the same loading procmond and the agent use,
    /// so one file configures every end).
    ///
    /// # Errors
    /// [`CliError::Config`] for a file or variable that cannot be used.
    pub fn load(options: &Options) -> Result<Self, CliError> {
        let defaults = IpcConfig::with_endpoint(daemoneye_collector::default_endpoint());
        let mut config =
            IpcConfig::load_over(defaults, options.config.as_deref()).map_err(CliError::Config)?;
        if let Some(endpoint) = &options.endpoint {
            config.endpoint_path = endpoint.clone();
        }
        if let Some(ms) = options.timeout_ms {
            config.accept_timeout_ms = ms;
            config.call_timeout_ms = ms;
        }
        config.validate().map_err(CliError::Config)?;
        let policy = options
            .server_uids
            .iter()
            .fold(PeerPolicy::same_user(), |policy, uid| {
                policy.allow_uid(*uid)
            });
        Ok(Self {
            config,
            policy,
            wait: options.wait_secs.map(Duration::from_secs),
            server_uids: options.server_uids.clone(),
        })
    }

    /// Whether a server (or a socket, or its directory) owned by `uid` is trusted: this
    /// user's, root's, or a `--server-uid`'s.
    pub fn trusts(&self, uid: u32) -> bool {
        #[cfg(unix)]
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own = unsafe { libc::geteuid() };
        #[cfg(not(unix))]
        let own = uid;
        uid == own || uid == 0 || self.server_uids.contains(&uid)
    }

    /// The time allowed to connect once (`accept_timeout_ms`, or `--timeout-ms`).
    pub fn accept_timeout(&self) -> Duration {
        accept_timeout(&self.config)
    }

    /// The time allowed for a call (`call_timeout_ms`, or `--timeout-ms`).
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.call_timeout_ms)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint_path
    }

    /// An error about the endpoint.
    pub fn ipc(&self, source: IpcError) -> CliError {
        CliError::Ipc {
            endpoint: self.config.endpoint_path.clone(),
            source,
        }
    }

    /// The time allowed to connect: `--wait` when longer, else `--timeout-ms` (the
    /// configuration's `accept_timeout_ms`).
    pub fn connect_budget(&self) -> Duration {
        let timeout = self.accept_timeout();
        self.wait.map_or(timeout, |wait| wait.max(timeout))
    }

    /// A client of `service`, connected within [`connect_budget`](Self::connect_budget).
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(&self, service: &'static ServiceDescriptor) -> Result<Client, CliError> {
        connect(
            &self.config,
            service,
            &self.policy,
            Instant::now() + self.connect_budget(),
        )
        .await
    }
}

fn accept_timeout(config: &IpcConfig) -> Duration {
    Duration::from_millis(config.accept_timeout_ms)
}

/// What is at an endpoint's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Socket,
    /// Something else, e.g. "a regular file", "a directory".
    Other(&'static str),
    /// It could not be inspected (a directory on the path is not searchable).
    Unknown,
}

/// What is at `path` (following symlinks).
pub fn inspect(path: &str) -> Found {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileTypeExt;
                if kind.is_socket() {
                    return Found::Socket;
                }
                if kind.is_fifo() {
                    return Found::Other("a named pipe (FIFO)");
                }
                if kind.is_char_device() || kind.is_block_device() {
                    return Found::Other("a device");
                }
            }
            if kind.is_dir() {
                Found::Other("a directory")
            } else if kind.is_file() {
                Found::Other("a regular file")
            } else if cfg!(unix) {
                Found::Other("not a socket")
            } else {
                Found::Socket // a pipe name on Windows: nothing to tell
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Found::Nothing,
        Err(_) => Found::Unknown,
    }
}

/// Whether connecting again may succeed: nothing answers yet at a path where a server
/// may still appear, or the server is full.
fn worth_retrying(error: &IpcError) -> bool {
    matches!(
        error,
        IpcError::ServerNotFound { .. }
            | IpcError::ConnectionRefused { .. }
            | IpcError::Busy { .. }
    )
}

/// Whether a failed handshake looks like frames this side and the server check
/// differently: a server framing with the other CRC variant finds the hello corrupt and
/// hangs up without a word (or, were it to answer, its frames fail this side's check).
fn garbled(error: &IpcError) -> bool {
    matches!(
        error,
        IpcError::PeerClosed
            | IpcError::CrcMismatch { .. }
            | IpcError::InvalidMessage { .. }
            | IpcError::Decode(_)
    )
}

/// The other CRC variant.
pub fn other_variant(variant: Crc32Variant) -> Crc32Variant {
    match variant {
        Crc32Variant::Castagnoli => Crc32Variant::Ieee,
        Crc32Variant::Ieee => Crc32Variant::Castagnoli,
    }
}

/// The other CRC variant, when a handshake with it succeeds (before `deadline`).
async fn other_variant_works(
    config: &IpcConfig,
    service: &'static ServiceDescriptor,
    policy: &PeerPolicy,
    deadline: Instant,
) -> Option<Crc32Variant> {
    let theirs = other_variant(config.crc32_variant);
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .min(accept_timeout(config));
    let probe = IpcConfig {
        crc32_variant: theirs,
        accept_timeout_ms: u64::try_from(remaining.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        ..config.clone()
    };
    Client::connect_with_server_policy(&probe, service, policy.clone())
        .await
        .ok()
        .map(|_| theirs)
}

/// Connects a client of `service` to `config`'s endpoint, trying again while no server
/// answers there yet (no socket, a socket nobody listens on, a full server) until
/// `deadline`; a terminal is told after a second of waiting.
///
/// # Errors
/// [`CliError::NotASocket`] at once when the path is a regular file, a directory or
/// anything else that is not a socket; [`CliError::CrcVariant`] when the server hangs
/// up on the hello but accepts one framed with the other CRC variant; otherwise the
/// last connection error.
pub async fn connect(
    config: &IpcConfig,
    service: &'static ServiceDescriptor,
    policy: &PeerPolicy,
    deadline: Instant,
) -> Result<Client, CliError> {
    let endpoint = config.endpoint_path.as_str();
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut told = false;
    loop {
        // Each attempt (connect and handshake) within what is left.
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .min(accept_timeout(config));
        let attempt = IpcConfig {
            accept_timeout_ms: u64::try_from(remaining.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            ..config.clone()
        };
        let error =
            match Client::connect_with_server_policy(&attempt, service, policy.clone()).await {
                Ok(client) => return Ok(client),
                Err(error) => error,
            };
        if matches!(
            error,
            IpcError::ServerNotFound { .. } | IpcError::ConnectionRefused { .. }
        ) {
            if let Found::Other(kind) = inspect(endpoint) {
                return Err(CliError::NotASocket {
                    endpoint: endpoint.to_owned(),
                    kind,
                });
            }
        }
        if garbled(&error) {
            if let Some(theirs) = other_variant_works(config, service, policy, deadline).await {
                return Err(CliError::CrcVariant {
                    endpoint: endpoint.to_owned(),
                    ours: config.crc32_variant,
                    theirs,
                    source: error,
                });
            }
        }
        if !worth_retrying(&error) || Instant::now() + pause >= deadline {
            return Err(CliError::Ipc {
                endpoint: endpoint.to_owned(),
                source: error,
            });
        }
        if !told && started.elapsed() >= TELL_AFTER && std::io::stderr().is_terminal() {
            let left = deadline.saturating_duration_since(Instant::now());
            eprintln!(
                "waiting for a server at {} (up to {} s more)...",
                crate::format::sanitize(endpoint),
                left.as_secs().max(1)
            );
            told = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// What a health check found.
#[derive(Debug)]
pub enum Health {
    /// The server answered with this status.
    Answered(ServingStatus),
    /// The server does not serve the service asked about.
    NoSuchService(String),
    /// No answer: the connection or the call failed.
    Unreachable(CliError),
}

impl Health {
    pub fn serving(&self) -> bool {
        matches!(self, Health::Answered(ServingStatus::Serving))
    }
}

/// Asks the health of `service` (`""`: the server) once, connecting within `deadline`.
pub async fn check(settings: &Settings, service: &str, deadline: Instant) -> Health {
    let client = match connect(
        &settings.config,
        HealthClient::DESCRIPTOR,
        &settings.policy,
        deadline,
    )
    .await
    {
        Ok(client) => HealthClient::from_client(client),
        Err(error) => return Health::Unreachable(error),
    };
    check_with(&client, settings, service).await
}

/// Asks `client` the health of `service`.
pub async fn check_with(client: &HealthClient, settings: &Settings, service: &str) -> Health {
    let request = pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    match client.check(request).await {
        Ok(answer) => Health::Answered(answer.status()),
        Err(IpcError::Status(status)) if status.code() == daemoneye_ipc::Code::NotFound => {
            Health::NoSuchService(status.message().to_owned())
        }
        Err(error) => Health::Unreachable(settings.ipc(error)),
    }
}

/// `--wait`: checks the health of `service` until it is `SERVING` or `wait` has
/// passed; returns the last finding.
pub async fn wait_until_serving(settings: &Settings, service: &str, wait: Duration) -> Health {
    let deadline = Instant::now() + wait;
    loop {
        // Each check may take what is left; the connection is retried inside.
        let health = check(settings, service, deadline).await;
        if health.serving() || Instant::now() + MAX_PAUSE >= deadline {
            return health;
        }
        if matches!(health, Health::NoSuchService(_)) {
            return health;
        }
        if let Health::Unreachable(CliError::NotASocket { .. }) = health {
            return health;
        }
        tokio::time::sleep(MAX_PAUSE).await;
    }
}

/// The path's directory (`.` for a bare file name).
pub fn directory_of(endpoint: &str) -> PathBuf {
    match Path::new(endpoint).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
