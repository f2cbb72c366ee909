//! `daemoneye-cli`: the operator's tool for DaemonEye's process collector (`procmond`).
//!
//! ```text
//! daemoneye-cli [--endpoint PATH] [--timeout-ms MS] processes [--name N]... [--pid P]... [--exe-pattern GLOB] [--json]
//! daemoneye-cli [--endpoint PATH] watch [--name N]... [--pid P]... [--exe-pattern GLOB] [--tree PID] [--interval-ms MS] [--existing] [--json]
//! daemoneye-cli [--endpoint PATH] [--timeout-ms MS] verify PID [--algorithm sha256|sha512|blake3] [--json]
//! daemoneye-cli [--endpoint PATH] [--timeout-ms MS] hash PATH [--algorithm sha256|sha512|blake3] [--expect HEX]
//! daemoneye-cli [--endpoint PATH] describe [--messages] [--json] [--offline]
//! daemoneye-cli [--endpoint PATH] docs [--out DIR] [--offline]
//! daemoneye-cli [--endpoint PATH] [--wait SECS] health-check [--service NAME] [--verbose] [--json]
//! daemoneye-cli [--endpoint PATH] ipc test [--count N]
//! daemoneye-cli [--endpoint PATH] metrics [--json]
//! ```
//!
//! Every command also takes `--config FILE` (or `DAEMONEYE_CONFIG`) and the
//! `DAEMONEYE_*` variables, read as procmond reads them, flags on top, so that one
//! file configures both ends.
//!
//! `processes` streams the listing and prints rows as batches arrive (any number of
//! processes); `watch` prints one line per process start or exit until interrupted.
//!
//! No race on start-up: `--timeout-ms` is the time allowed to connect, during which a
//! server that is not there yet (no socket, or one not listening yet) is waited for;
//! `--wait SECS` also waits, up to SECS, for it to report SERVING before the command.
//!
//! Exit status: 0 on success (and when `watch` is stopped by SIGINT or SIGTERM, or its
//! tree is gone); 1 when `hash --expect` finds a different hash, or `verify` finds the
//! executable replaced or deleted, `health-check` finds it not serving, or a step of
//! `ipc test` fails; 2 for any error (no server, refused call, lost connection,
//! unreadable file, bad arguments; `health-check`: unreachable). Errors are one line
//! on stderr naming the endpoint; stdout carries only the requested output.
//!
//! The cli talks only to a collector it trusts: one served by its own user or root from
//! a socket whose directories only they control (add users with `--server-uid`).
//! Anything else, such as a socket another user planted first, is refused before a
//! request is sent, with a message naming the owner found.

mod connect;
mod describe;
mod format;
mod health;
mod ipctest;
mod output;

use std::{
    fmt,
    future::Future,
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use daemoneye_collector::{
    ProcessCollectorClient, DEFAULT_HASH_ALGORITHM, DEFAULT_WATCH_INTERVAL_MS, HASH_ALGORITHMS,
};
use daemoneye_ipc::{IpcConfig, IpcError, PeerPolicy};

use crate::connect::Settings;
use daemoneye_proto::{
    ExecutableState, HashRequest, HashResult, ProcessFilter, VerifyRequest, VerifyResult,
    WatchRequest,
};
use futures_util::StreamExt;

use crate::output::Out;

/// Query DaemonEye's process collector (procmond) over its local socket.
#[derive(Debug, Parser)]
#[command(name = "daemoneye-cli", version, about, propagate_version = true)]
struct Cli {
    /// IPC settings file (.toml, .yaml or .yml) read before DAEMONEYE_* variables and
    /// these flags, which override it: the same file procmond reads (`procmond --help`
    /// lists its keys), so that both ends agree.
    #[arg(long, global = true, value_name = "FILE", env = "DAEMONEYE_CONFIG")]
    config: Option<PathBuf>,

    /// Collector endpoint: Unix socket path or Windows pipe name [env:
    /// DAEMONEYE_ENDPOINT] [default: /var/run/daemoneye/procmond.sock as root, else
    /// $XDG_RUNTIME_DIR/daemoneye/procmond.sock or /tmp/daemoneye-UID/procmond.sock]
    #[arg(long, global = true, value_name = "PATH")]
    endpoint: Option<String>,

    /// Time allowed to connect (a server that is not there yet is waited for) and for
    /// each call, in milliseconds [default: accept_timeout_ms (5000) to connect,
    /// call_timeout_ms (30000) per call, from the configuration]
    #[arg(
        long,
        global = true,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout_ms: Option<u64>,

    /// First wait up to SECS for the server to be up and report SERVING (for scripts
    /// that start procmond just before); `health-check` then answers for the last check.
    #[arg(long, global = true, value_name = "SECS")]
    wait: Option<u64>,

    /// Also trust a collector running as this uid, and socket directories it owns
    /// (repeatable). By default only this user and root are trusted.
    #[arg(long = "server-uid", global = true, value_name = "UID")]
    server_uids: Vec<u32>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List processes (all of them, or those matching every filter given).
    Processes {
        /// Keep processes with this name (repeatable: any of the names matches).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Keep processes with this pid (repeatable: any of the pids matches).
        #[arg(long = "pid", value_name = "PID")]
        pids: Vec<u32>,
        /// Keep processes whose executable path matches this glob, e.g. '/usr/bin/*'.
        #[arg(long, value_name = "GLOB")]
        exe_pattern: Option<String>,
        /// Print the records as a JSON array (and nothing else) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one line per process that starts or exits, until interrupted (SIGINT,
    /// SIGTERM). Processes are seen by snapshots every --interval-ms: one that lives
    /// shorter than that may be missed.
    Watch {
        /// Report processes with this name (repeatable: any of the names matches).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Report processes with this pid (repeatable: any of the pids matches).
        #[arg(long = "pid", value_name = "PID")]
        pids: Vec<u32>,
        /// Report processes whose executable path matches this glob.
        #[arg(long, value_name = "GLOB")]
        exe_pattern: Option<String>,
        /// Watch only this process and its descendants; ends once all have exited.
        #[arg(long, value_name = "PID")]
        tree: Option<u32>,
        /// Time between two snapshots of the process table (at least 100).
        #[arg(
            long,
            value_name = "MS",
            default_value_t = DEFAULT_WATCH_INTERVAL_MS,
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        interval_ms: u32,
        /// First print the matching processes already running (event "existing").
        #[arg(long)]
        existing: bool,
        /// Print JSON Lines: one object per event with "event" ("started", "exited",
        /// "existing"), "observed_at" (Unix ms) and the process record's fields.
        #[arg(long)]
        json: bool,
    },
    /// Check that the executable a process runs is still the file at its path: prints
    /// unchanged, replaced or deleted (exit status 0, 1, 1; 2 when it cannot tell).
    Verify {
        /// The process.
        pid: u32,
        /// Hash algorithm for the running image and the file on disk.
        #[arg(
            long,
            default_value = DEFAULT_HASH_ALGORITHM,
            ignore_case = true,
            value_parser = clap::builder::PossibleValuesParser::new(HASH_ALGORITHMS)
        )]
        algorithm: String,
        /// Print the result as one JSON object (even when it cannot tell).
        #[arg(long)]
        json: bool,
    },
    /// Hash a file as the collector sees it; prints `<hex>  <path>` like sha256sum
    /// (sha512sum, b3sum).
    Hash {
        /// The file to hash; a relative path is taken from this command's directory.
        path: PathBuf,
        /// Hash algorithm.
        #[arg(
            long,
            default_value = DEFAULT_HASH_ALGORITHM,
            ignore_case = true,
            value_parser = clap::builder::PossibleValuesParser::new(HASH_ALGORITHMS)
        )]
        algorithm: String,
        /// Expected hash (hex); exit status 1 when the file's hash differs.
        #[arg(long, value_name = "HEX", value_parser = parse_hex)]
        expect: Option<String>,
    },
    /// Print what the endpoint serves, asked through its reflection service: services,
    /// methods (id, name, request, response, streaming, idempotent, doc). Without a
    /// server there (or with --offline), the contract built into this cli, saying so.
    Describe {
        /// Also print every message's fields and every enum's values.
        #[arg(long)]
        messages: bool,
        /// Print one JSON document: {"source": ..., "services": [contract, ...]}.
        #[arg(long)]
        json: bool,
        /// Do not ask a server: print the built-in contract.
        #[arg(long)]
        offline: bool,
    },
    /// Whether the collector is serving: exit status 0 serving, 1 not serving, 2
    /// unreachable. With --wait SECS, checks again until it serves or SECS have passed.
    HealthCheck {
        /// The service to ask about [default: the server as a whole].
        #[arg(
            long,
            value_name = "NAME",
            default_value = "",
            hide_default_value = true
        )]
        service: String,
        /// Also print the endpoint, the socket's owner and mode, the server's versions,
        /// CRC variant, limits, uptime, connections, each service's state, and a table
        /// of every method's calls, errors and p50/p99 latency.
        #[arg(long, short)]
        verbose: bool,
        /// Print one JSON object (also when unreachable).
        #[arg(long)]
        json: bool,
    },
    /// Diagnose the connection.
    Ipc {
        #[command(subcommand)]
        command: IpcCommand,
    },
    /// Print the server's metrics in the Prometheus text format (as --metrics-textfile
    /// writes them), or with --json the same figures as JSON.
    Metrics {
        /// Print the JSON report (uptime, versions, counters, per method) instead.
        #[arg(long)]
        json: bool,
    },
    /// Write a Markdown reference of each service (`<service>.md`) into --out, from the
    /// running endpoint (or, without one or with --offline, the built-in contract).
    Docs {
        /// The directory to write to (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Do not ask a server: document the built-in contract.
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IpcCommand {
    /// Test connectivity step by step, with a mark per step and, at the first that
    /// fails, the advice for it (exit status 1): the socket path, its directory, its
    /// owner against who you are, connect, the handshake (protocol, service, contract,
    /// CRC variant), N round trips with p50/p99, the frame limit.
    Test {
        /// Round trips to time.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 100,
            value_parser = clap::value_parser!(u32).range(1..=100_000)
        )]
        count: u32,
    },
}

/// The contracts served at `config`'s endpoint, or the built-in one when `offline` or
/// when no server is there (not when one is there but fails: that is an error).
async fn contracts(
    config: &IpcConfig,
    server_policy: PeerPolicy,
    offline: bool,
) -> Result<describe::Described, CliError> {
    if offline {
        return describe::built_in(Some("--offline".to_owned())).map_err(CliError::Docs);
    }
    match describe::from_endpoint(config, server_policy).await {
        Ok(described) => Ok(described),
        Err(
            error @ (IpcError::ServerNotFound { .. }
            | IpcError::ConnectionRefused { .. }
            | IpcError::ConnectionTimeout { .. }),
        ) => describe::built_in(Some(error.to_string())).map_err(CliError::Docs),
        Err(source) => Err(CliError::Ipc {
            endpoint: config.endpoint_path.clone(),
            source,
        }),
    }
}

/// Accepts a non-empty hex string (surrounding blanks ignored), lowercased.
fn parse_hex(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected a hex-encoded hash, e.g. 5891b5b5...".to_owned());
    }
    Ok(text.to_ascii_lowercase())
}

/// Why a command failed; `Display` is the one-line message printed after `error: `.
#[derive(Debug)]
enum CliError {
    /// Talking to the collector at `endpoint` failed.
    Ipc { endpoint: String, source: IpcError },
    /// The endpoint's path is there but is not a socket.
    NotASocket {
        endpoint: String,
        /// What it is: "a regular file", "a directory"...
        kind: &'static str,
    },
    /// The server frames with the other CRC variant.
    CrcVariant {
        endpoint: String,
        ours: daemoneye_ipc::Crc32Variant,
        theirs: daemoneye_ipc::Crc32Variant,
        /// What the handshake with our variant ran into.
        source: IpcError,
    },
    /// The configuration (file, variables, flags) cannot be used.
    Config(IpcError),
    /// `hash --expect`: the file hashed to something else.
    HashMismatch {
        path: String,
        algorithm: String,
        expected: String,
        actual: String,
    },
    /// The collector could not hash the file.
    HashFailed { path: String, reason: String },
    /// The path given cannot be sent.
    BadPath { path: PathBuf, reason: String },
    /// The tokio runtime could not be created.
    Runtime(io::Error),
    /// Records could not be encoded as JSON.
    Json(serde_json::Error),
    /// `describe`/`docs`: the built-in contract or a file could not be had.
    Docs(String),
    /// `verify` could not tell (the collector's reason).
    VerifyFailed { pid: u32, reason: String },
    /// stdout could not be written.
    Output(io::Error),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::HashMismatch { .. } => ExitCode::from(1),
            _ => ExitCode::from(2),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clean = format::sanitize;
        match self {
            CliError::Ipc { endpoint, source } => {
                let endpoint = clean(endpoint);
                match source {
                    IpcError::ServerNotFound { .. } => {
                        write!(f, "no server at {endpoint} (is procmond running?)")
                    }
                    IpcError::ConnectionRefused { .. } => write!(
                        f,
                        "connection refused by {endpoint} (stale socket: is procmond running?)"
                    ),
                    IpcError::PermissionDenied { reason, .. } => {
                        write!(f, "permission denied for {endpoint}: {}", clean(reason))
                    }
                    IpcError::ConnectionTimeout { .. } => {
                        write!(f, "timed out connecting to {endpoint}")
                    }
                    IpcError::DeadlineExceeded { after_ms } => {
                        write!(f, "no answer from {endpoint} within {after_ms} ms")
                    }
                    IpcError::Status(status) => write!(
                        f,
                        "{endpoint} refused the call: {}",
                        clean(&status.to_string())
                    ),
                    IpcError::Config { field, reason } => write!(
                        f,
                        "cannot use endpoint {endpoint}: {field}: {}",
                        clean(reason)
                    ),
                    // Busy and Handshake name the endpoint themselves.
                    IpcError::Busy { .. } | IpcError::Handshake { .. } => {
                        write!(f, "{}", clean(&source.to_string()))
                    }
                    other => write!(f, "talking to {endpoint}: {}", clean(&other.to_string())),
                }
            }
            CliError::Docs(reason) => write!(f, "{}", clean(reason)),
            CliError::NotASocket { endpoint, kind } => write!(
                f,
                "{} is {kind}, not a socket (is the endpoint right? procmond serves a socket \
                 there and does not replace anything else)",
                clean(endpoint)
            ),
            CliError::CrcVariant {
                endpoint,
                ours,
                theirs,
                source,
            } => write!(
                f,
                "CRC variant mismatch: {} frames with {}, this cli with {} ({}): set \
                 crc32_variant the same on both ends (one --config file, or \
                 DAEMONEYE_CRC32_VARIANT)",
                clean(endpoint),
                theirs.as_str(),
                ours.as_str(),
                clean(&source.to_string())
            ),
            CliError::Config(error) => write!(f, "{}", clean(&error.to_string())),
            CliError::HashMismatch {
                path,
                algorithm,
                expected,
                actual,
            } => write!(
                f,
                "{}: {} mismatch: expected {expected}, got {}",
                clean(path),
                clean(algorithm),
                clean(actual)
            ),
            CliError::HashFailed { path, reason } => {
                write!(f, "cannot hash {}: {}", clean(path), clean(reason))
            }
            CliError::BadPath { path, reason } => {
                write!(f, "bad path {}: {reason}", clean(&path.to_string_lossy()))
            }
            CliError::Runtime(e) => write!(f, "cannot start the async runtime: {e}"),
            CliError::Json(e) => write!(f, "cannot encode the records as JSON: {e}"),
            CliError::VerifyFailed { pid, reason } => {
                write!(f, "cannot verify process {pid}: {}", clean(reason))
            }
            CliError::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let mut out = Out::stdout();
    let outcome = run(cli, &mut out).and_then(|code| out.flush().map(|()| code));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // What was printed so far goes first; nothing better to do if stdout or
            // stderr itself is gone.
            let _ = out.flush();
            let _ = writeln!(io::stderr().lock(), "error: {error}");
            error.exit_code()
        }
    }
}

/// Logs from the runtime go to stderr; silent unless `RUST_LOG` asks (default `warn`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Runs the command, printing to `out` as results arrive; the exit status on success.
fn run(cli: Cli, out: &mut Out) -> Result<ExitCode, CliError> {
    let settings = Settings::load(&connect::Options {
        config: cli.config.clone(),
        endpoint: cli.endpoint.clone(),
        timeout_ms: cli.timeout_ms,
        server_uids: cli.server_uids.clone(),
        wait_secs: cli.wait,
    })?;
    let config = settings.config.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let ipc = |source| CliError::Ipc {
            endpoint: config.endpoint_path.clone(),
            source,
        };
        // For `watch`, which runs until interrupted: installed before connecting, so
        // that no signal goes unhandled. Other commands keep the default (terminate).
        let interrupted = match cli.command {
            Command::Watch { .. } => Some(interrupted().map_err(CliError::Runtime)?),
            _ => None,
        };
        let server_policy = settings.policy.clone();
        // Commands that answer for the health themselves, or that ask no server.
        match cli.command {
            Command::HealthCheck {
                service,
                verbose,
                json,
            } => return health::health_check(&settings, &service, verbose, json, out).await,
            Command::Describe { offline: true, .. } | Command::Docs { offline: true, .. } => {}
            _ => {
                if let Some(wait) = settings.wait {
                    wait_for_server(&settings, wait).await;
                }
            }
        }
        match cli.command {
            Command::Ipc {
                command: IpcCommand::Test { count },
            } => return ipctest::run(&settings, count, out).await,
            Command::Metrics { json } => return health::metrics(&settings, json, out).await,
            // `describe` and `docs` ask the reflection service (or need no server).
            Command::Describe {
                messages,
                json,
                offline,
            } => {
                let described = contracts(&config, server_policy, offline).await?;
                let shown = if json {
                    describe::json(&described) + "\n"
                } else {
                    describe::text(&described, messages)
                };
                out.write(&shown)?;
                return Ok(ExitCode::SUCCESS);
            }
            Command::Docs { out: dir, offline } => {
                let described = contracts(&config, server_policy, offline).await?;
                let written = describe::write_docs(&described, &dir).map_err(CliError::Docs)?;
                for path in written {
                    out.write(&format!("{}\n", path.display()))?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            _ => {}
        }
        let client = settings
            .connect(ProcessCollectorClient::DESCRIPTOR)
            .await
            .map(ProcessCollectorClient::from_client)?;
        match cli.command {
            Command::Processes {
                names,
                pids,
                exe_pattern,
                json,
            } => {
                let filter = ProcessFilter {
                    process_names: names,
                    pids,
                    executable_pattern: exe_pattern,
                };
                let idle = settings.call_timeout();
                processes(&client, filter, json, idle, out)
                    .await
                    .map_err(|error| error.into_cli(&config.endpoint_path))?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Watch {
                names,
                pids,
                exe_pattern,
                tree,
                interval_ms,
                existing,
                json,
            } => {
                let request = WatchRequest {
                    filter: Some(ProcessFilter {
                        process_names: names,
                        pids,
                        executable_pattern: exe_pattern,
                    }),
                    tree_root: tree,
                    interval_ms,
                    include_existing: existing,
                };
                let interrupted = async {
                    match interrupted {
                        Some(signal) => signal.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    watched = watch(&client, request, json, out) => {
                        watched.map_err(|error| error.into_cli(&config.endpoint_path))?;
                    }
                    () = interrupted => {}
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Verify {
                pid,
                algorithm,
                json,
            } => {
                let request = VerifyRequest {
                    pid,
                    algorithm: algorithm.to_ascii_lowercase(),
                };
                let result = client.verify_executable(request).await.map_err(ipc)?;
                verify_outcome(&result, json, out)
            }
            Command::Hash {
                path,
                algorithm,
                expect,
            } => {
                let absolute = absolute_utf8(&path)?;
                let shown = path.to_string_lossy().into_owned();
                let request = HashRequest {
                    path: absolute,
                    algorithm,
                    expected_hash: expect.clone(),
                };
                let result = client.check_hash(request).await.map_err(ipc)?;
                out.write(&hash_outcome(result, expect.as_deref(), &shown)?)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Describe { .. }
            | Command::Docs { .. }
            | Command::HealthCheck { .. }
            | Command::Ipc { .. }
            | Command::Metrics { .. } => {
                unreachable!("answered before connecting to the collector")
            }
        }
    })
}

/// `--wait`: waits for the server to report SERVING; when the time passes first, says
/// so on stderr and lets the command go on (its own error, if any, says the rest).
async fn wait_for_server(settings: &Settings, wait: Duration) {
    let endpoint = format::sanitize(settings.endpoint()).into_owned();
    match connect::wait_until_serving(settings, "", wait).await {
        connect::Health::Answered(daemoneye_ipc::health::ServingStatus::Serving) => {}
        connect::Health::Answered(status) => eprintln!(
            "warning: {endpoint} still reports {} after {} s",
            health::status_name(status),
            wait.as_secs()
        ),
        connect::Health::NoSuchService(reason) => {
            eprintln!("warning: {endpoint}: {}", format::sanitize(&reason));
        }
        // The command's own connection attempt reports it.
        connect::Health::Unreachable(_) => {}
    }
}

/// Why streaming failed: the collector or connection, or this side's output.
enum StreamError {
    Ipc(IpcError),
    Cli(CliError),
}

impl StreamError {
    fn into_cli(self, endpoint: &str) -> CliError {
        match self {
            StreamError::Ipc(source) => CliError::Ipc {
                endpoint: endpoint.to_owned(),
                source,
            },
            StreamError::Cli(error) => error,
        }
    }
}

impl From<CliError> for StreamError {
    fn from(error: CliError) -> Self {
        StreamError::Cli(error)
    }
}

/// `processes`: streams the listing, printing each batch as it arrives. Each batch must
/// come within `idle` of the previous one.
async fn processes(
    client: &ProcessCollectorClient,
    filter: ProcessFilter,
    json: bool,
    idle: Duration,
    out: &mut Out,
) -> Result<(), StreamError> {
    let mut batches = client
        .stream_processes(filter)
        .await
        .map_err(StreamError::Ipc)?;
    let mut table = format::TableWriter::new();
    let mut array = format::JsonArrayWriter::new();
    loop {
        let next = tokio::time::timeout(idle, batches.next())
            .await
            .map_err(|_| {
                StreamError::Ipc(IpcError::DeadlineExceeded {
                    after_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                })
            })?;
        let Some(batch) = next else { break };
        let batch = batch.map_err(StreamError::Ipc)?;
        let text = if json {
            array.batch(&batch.processes).map_err(CliError::Json)?
        } else {
            table.batch(&batch.processes)
        };
        out.write(&text)?;
        out.flush()?;
        if out.closed() {
            // The reader is gone (`| head`): it has what it wanted.
            return Ok(());
        }
    }
    out.write(&if json { array.finish() } else { table.finish() })?;
    Ok(())
}

/// `watch`: prints one line per event until the stream ends (the tree is gone) or
/// fails; the caller stops it on a signal.
async fn watch(
    client: &ProcessCollectorClient,
    request: WatchRequest,
    json: bool,
    out: &mut Out,
) -> Result<(), StreamError> {
    let mut events = client
        .watch_processes(request)
        .await
        .map_err(StreamError::Ipc)?;
    while let Some(event) = events.next().await {
        let event = event.map_err(StreamError::Ipc)?;
        let line = if json {
            format::event_json_line(&event).map_err(CliError::Json)?
        } else {
            format::event_line(&event)
        };
        out.write(&line)?;
        out.flush()?;
        if out.closed() {
            return Ok(());
        }
    }
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM (Ctrl-C elsewhere); the handlers are
/// installed when this is called.
fn interrupted() -> io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Prints `verify`'s result; exit status 0 when unchanged, 1 when replaced or deleted.
///
/// # Errors
/// [`CliError::VerifyFailed`] when the collector could not tell (after printing the
/// JSON object with `--json`).
fn verify_outcome(result: &VerifyResult, json: bool, out: &mut Out) -> Result<ExitCode, CliError> {
    if json {
        out.write(&format::verify_json(result).map_err(CliError::Json)?)?;
    }
    let code = match result.state() {
        ExecutableState::Unchanged => ExitCode::SUCCESS,
        ExecutableState::Replaced | ExecutableState::Deleted => ExitCode::from(1),
        ExecutableState::Error | ExecutableState::Unspecified => {
            return Err(CliError::VerifyFailed {
                pid: result.pid,
                reason: result
                    .error_message
                    .clone()
                    .filter(|message| !message.is_empty())
                    .unwrap_or_else(|| "the collector gave no reason".to_owned()),
            })
        }
    };
    if !json {
        out.write(&format::verify_line(result))?;
    }
    Ok(code)
}

/// What `hash` prints for the collector's `result` on the file shown to the user as
/// `shown`: the sha256sum-style line, or why not.
///
/// With `expect`, a returned hash decides by itself (compared case-insensitively),
/// whatever the collector's `success` says about its own comparison; without a hash
/// value, or without `expect` and `success == false`, the collector's error is reported.
fn hash_outcome(result: HashResult, expect: Option<&str>, shown: &str) -> Result<String, CliError> {
    let actual = result.hash_value.as_str();
    let hashed = !actual.is_empty();
    match expect {
        Some(expected) if hashed && !actual.eq_ignore_ascii_case(expected) => {
            Err(CliError::HashMismatch {
                path: shown.to_owned(),
                algorithm: if result.algorithm.is_empty() {
                    "hash".to_owned()
                } else {
                    result.algorithm.clone()
                },
                expected: expected.to_owned(),
                actual: actual.to_owned(),
            })
        }
        _ if hashed && (expect.is_some() || result.success) => {
            Ok(format!("{actual}  {}\n", format::sanitize(shown)))
        }
        _ => Err(CliError::HashFailed {
            path: shown.to_owned(),
            reason: result
                .error_message
                .filter(|message| !message.is_empty())
                .unwrap_or_else(|| "the collector returned no hash".to_owned()),
        }),
    }
}

/// `path` made absolute against this process's working directory (not resolving
/// symlinks or touching the file: the collector reports what it finds there), as UTF-8
/// because the protocol carries paths as strings.
fn absolute_utf8(path: &Path) -> Result<String, CliError> {
    let bad = |reason: String| CliError::BadPath {
        path: path.to_owned(),
        reason,
    };
    let absolute = std::path::absolute(path).map_err(|e| bad(e.to_string()))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|_| bad("not valid UTF-8 (the protocol carries paths as UTF-8)".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hex_parser() {
        assert_eq!(parse_hex(" ABCdef01 ").as_deref(), Ok("abcdef01"));
        assert!(parse_hex("").is_err());
        assert!(parse_hex("xyz").is_err());
    }

    #[test]
    fn processes_arguments_build_the_filter_fields() {
        let cli = Cli::try_parse_from([
            "daemoneye-cli",
            "--endpoint",
            "/tmp/x.sock",
            "processes",
            "--name",
            "sshd",
            "--name",
            "bash",
            "--pid",
            "1",
            "--exe-pattern",
            "/usr/*",
        ])
        .expect("parses");
        assert_eq!(cli.endpoint.as_deref(), Some("/tmp/x.sock"));
        assert_eq!(
            cli.timeout_ms, None,
            "the configuration's timeouts by default"
        );
        match cli.command {
            Command::Processes {
                names,
                pids,
                exe_pattern,
                json,
            } => {
                assert_eq!(names, ["sshd", "bash"]);
                assert_eq!(pids, [1]);
                assert_eq!(exe_pattern.as_deref(), Some("/usr/*"));
                assert!(!json);
            }
            other => panic!("wrong command {other:?}"),
        }
    }

    #[test]
    fn hash_algorithms_are_the_collectors_in_any_case() {
        let parse = |algorithm: &str| {
            Cli::try_parse_from(["daemoneye-cli", "hash", "f", "--algorithm", algorithm]).map(
                |cli| match cli.command {
                    Command::Hash { algorithm, .. } => algorithm,
                    other => panic!("wrong command {other:?}"),
                },
            )
        };
        for name in HASH_ALGORITHMS {
            assert_eq!(parse(name).expect("accepted"), name);
        }
        assert_eq!(parse("BLAKE3").expect("any case").to_lowercase(), "blake3");
        let error = parse("md5").expect_err("refused").to_string();
        assert!(
            error.contains("[possible values: sha256, sha512, blake3]"),
            "{error}"
        );
        let cli = Cli::try_parse_from(["daemoneye-cli", "hash", "f"]).expect("parses");
        assert!(matches!(cli.command, Command::Hash { algorithm, .. } if algorithm == "sha256"));
    }

    #[test]
    fn zero_timeout_is_rejected() {
        assert!(Cli::try_parse_from(["daemoneye-cli", "--timeout-ms", "0", "describe"]).is_err());
    }

    #[test]
    fn hash_outcomes() {
        let result = |hash: &str, success: bool, error: Option<&str>| HashResult {
            hash_value: hash.to_owned(),
            algorithm: "sha256".to_owned(),
            file_path: "/abs/f".to_owned(),
            success,
            error_message: error.map(str::to_owned),
        };
        let ok = hash_outcome(result("ab12", true, None), None, "f").expect("ok");
        assert_eq!(ok, "ab12  f\n");
        let ok = hash_outcome(result("ab12", true, None), Some("AB12"), "f").expect("ok");
        assert_eq!(ok, "ab12  f\n");
        // The collector reports its own comparison as a failure; the hash still decides.
        let mismatch = result("ab12", false, Some("hash mismatch"));
        let error = hash_outcome(mismatch, Some("cd34"), "f").expect_err("mismatch");
        assert!(matches!(error, CliError::HashMismatch { .. }));
        assert_eq!(
            error.to_string(),
            "f: sha256 mismatch: expected cd34, got ab12"
        );
        let failed = result("", false, Some("cannot open /abs/f: denied"));
        let error = hash_outcome(failed, Some("cd34"), "f").expect_err("failed");
        assert_eq!(
            error.to_string(),
            "cannot hash f: cannot open /abs/f: denied"
        );
        let error = hash_outcome(result("", true, None), None, "f").expect_err("no hash");
        assert_eq!(
            error.to_string(),
            "cannot hash f: the collector returned no hash"
        );
        let error = hash_outcome(result("ab12", false, Some("odd")), None, "f").expect_err("odd");
        assert!(matches!(error, CliError::HashFailed { .. }));
    }

    #[test]
    fn relative_paths_become_absolute() {
        let absolute = absolute_utf8(Path::new("some/file")).expect("absolute");
        assert!(Path::new(&absolute).is_absolute());
        assert!(Path::new(&absolute).ends_with(Path::new("some").join("file")));
    }

    #[test]
    fn error_messages_name_the_endpoint_on_one_line() {
        let endpoint = "/run/x/procmond.sock".to_owned();
        let cases = [
            IpcError::ServerNotFound {
                endpoint: endpoint.clone(),
            },
            IpcError::DeadlineExceeded { after_ms: 10 },
            IpcError::PeerClosed,
            IpcError::Status(daemoneye_ipc::Status::not_found("no\nsuch")),
        ];
        for source in cases {
            let message = CliError::Ipc {
                endpoint: endpoint.clone(),
                source,
            }
            .to_string();
            assert!(message.contains(&endpoint), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        let message = CliError::Ipc {
            endpoint: endpoint.clone(),
            source: IpcError::ServerNotFound { endpoint },
        }
        .to_string();
        assert_eq!(
            message,
            "no server at /run/x/procmond.sock (is procmond running?)"
        );
    }
}
