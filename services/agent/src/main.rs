//! `daemoneye-agent`: every `--interval` seconds, lists the processes through procmond and
//! has it hash up to `--hash-limit` distinct executables, logging a summary per cycle.
//! With `--watch` it subscribes to procmond's process monitor instead of polling: it
//! logs each process start and exit as procmond sees it (snapshots every
//! `--watch-interval-ms`) and hashes each executable the first time a process running
//! it starts.
//!
//! Settings: `--config FILE` (or `DAEMONEYE_CONFIG`) and the `DAEMONEYE_*` variables,
//! read as procmond reads them, then these flags: one file configures both ends.
//!
//! A failed cycle is logged as one warning saying why, and the agent carries on at the
//! next interval;
//! with `--once` it runs a single cycle and exits with status 1 if that cycle failed. A
//! watch that fails (procmond restarted, say) is opened again after `--interval`.
//! SIGINT and SIGTERM stop it cleanly (status 0), even in the middle of a cycle. Logs go
//! to stderr; `RUST_LOG` overrides the default level (`info`).

use std::{future::Future, io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use daemoneye_agent::{Agent, CycleError, CycleSummary, WatchReport};
use daemoneye_ipc::{IpcConfig, IpcError};
use tokio::time::MissedTickBehavior;

/// Periodically enumerate processes and verify executables through procmond.
#[derive(Debug, Parser)]
#[command(name = "daemoneye-agent", version, about)]
struct Args {
    /// IPC settings file (.toml, .yaml or .yml) read before DAEMONEYE_* variables and
    /// these flags, which override it: the same file procmond reads (`procmond --help`
    /// lists its keys), so that both ends agree.
    #[arg(long, value_name = "FILE", env = "DAEMONEYE_CONFIG")]
    config: Option<PathBuf>,

    /// Collector endpoint: Unix socket path or Windows pipe name [env:
    /// DAEMONEYE_ENDPOINT] [default: /var/run/daemoneye/procmond.sock as root, else
    /// $XDG_RUNTIME_DIR/daemoneye/procmond.sock or /tmp/daemoneye-UID/procmond.sock]
    #[arg(long, value_name = "PATH")]
    endpoint: Option<String>,

    /// Seconds between the starts of two cycles.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    interval: u64,

    /// Run one cycle and exit: status 0 if it succeeded, 1 if it failed.
    #[arg(long, conflicts_with = "watch")]
    once: bool,

    /// Subscribe to procmond's process monitor instead of polling: log each process
    /// start and exit, and hash each executable when a process first runs it.
    #[arg(long)]
    watch: bool,

    /// With --watch: milliseconds between two snapshots of the process table.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = daemoneye_collector::DEFAULT_WATCH_INTERVAL_MS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    watch_interval_ms: u32,

    /// How many distinct executables to hash per cycle (0: none).
    #[arg(long, value_name = "N", default_value_t = 5)]
    hash_limit: usize,

    /// Time allowed to connect, and for each call, in milliseconds [default:
    /// accept_timeout_ms (5000) and call_timeout_ms (30000) from the configuration]
    #[arg(
        long,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout_ms: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(args))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Defaults < the --config file < DAEMONEYE_* variables < flags.
///
/// # Errors
/// The configuration's error, readable.
fn config(args: &Args) -> Result<IpcConfig, IpcError> {
    let defaults = IpcConfig::with_endpoint(daemoneye_collector::default_endpoint());
    let mut config = IpcConfig::load_over(defaults, args.config.as_deref())?;
    if let Some(endpoint) = &args.endpoint {
        config.endpoint_path = endpoint.clone();
    }
    if let Some(ms) = args.timeout_ms {
        config.accept_timeout_ms = ms;
        config.call_timeout_ms = ms;
    }
    config.validate()?;
    Ok(config)
}

async fn run(args: Args) -> ExitCode {
    let config = match config(&args) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let mut agent = Agent::new(config, args.hash_limit);
    // Handlers are installed here, before the first cycle, so no signal is missed.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tracing::info!(
        endpoint = agent.endpoint(),
        interval_secs = args.interval,
        hash_limit = args.hash_limit,
        once = args.once,
        "agent started"
    );

    if args.watch {
        watch(&mut agent, args.watch_interval_ms, args.interval, shutdown).await;
        tracing::info!("stopped by signal");
        return ExitCode::SUCCESS;
    }

    if args.once {
        return tokio::select! {
            outcome = agent.cycle() => match report(outcome, None) {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(1),
            },
            () = &mut shutdown => {
                tracing::info!("stopped by signal");
                ExitCode::SUCCESS
            }
        };
    }

    let mut ticker = tokio::time::interval(Duration::from_secs(args.interval));
    // After a cycle longer than the interval, wait a full interval rather than bursting.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut shutdown => break,
        }
        tokio::select! {
            outcome = agent.cycle() => {
                report(outcome, Some(args.interval));
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("stopped by signal");
    ExitCode::SUCCESS
}

/// `--watch`: follows procmond's process monitor until `shutdown`, opening it again
/// after `--interval` seconds whenever it fails.
async fn watch(
    agent: &mut Agent,
    interval_ms: u32,
    retry_secs: u64,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let watched = agent.watch(interval_ms, log_report);
        tokio::select! {
            outcome = watched => {
                if let Err(error) = outcome {
                    tracing::warn!(
                        retry_in_secs = retry_secs,
                        "watch failed: {error}; next try in {retry_secs} s"
                    );
                }
            }
            () = &mut shutdown => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(retry_secs)) => {}
            () = &mut shutdown => return,
        }
    }
}

/// Logs one thing the watch saw.
fn log_report(report: WatchReport) {
    match report {
        WatchReport::Subscribed => tracing::info!("watching processes"),
        WatchReport::Event(event) => {
            let process = &event.process;
            tracing::info!(
                event = event.kind.as_str(),
                pid = process.pid,
                ppid = process.ppid,
                name = %process.name,
                executable = process.executable_path.as_ref().map(|path| path.display().to_string()),
                "process {}",
                event.kind.as_str()
            );
        }
        WatchReport::Hashed { pid, path, hash } => {
            tracing::info!(pid, %path, %hash, "executable hashed");
        }
        WatchReport::HashFailed { pid, path, reason } => {
            tracing::warn!(pid, %path, %reason, "executable could not be hashed");
        }
        other => tracing::debug!(?other, "watch report"),
    }
}

/// Logs a cycle's outcome, one line either way (a failure says why, once, and when the
/// next try is: `retry_secs`); `true` when it succeeded.
fn report(outcome: Result<CycleSummary, CycleError>, retry_secs: Option<u64>) -> bool {
    match outcome {
        Ok(summary) => {
            tracing::info!(
                processes = summary.processes,
                executables = summary.executables,
                hashed = summary.hashed,
                failures = summary.failures,
                elapsed_ms = u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
                "cycle complete"
            );
            true
        }
        Err(error) => {
            match retry_secs {
                Some(secs) => tracing::warn!(
                    retry_in_secs = secs,
                    "cycle failed: {error}; next try in {secs} s"
                ),
                None => tracing::warn!("cycle failed: {error}"),
            }
            false
        }
    }
}

/// Completes on the first SIGINT or SIGTERM (Ctrl-C on Windows). The handlers are
/// installed when this is called, not when the future is first polled. A handler that
/// cannot be installed is logged and that signal is not waited for.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(%error, signal = name, "cannot install signal handler");
                None
            }
        };
        let interrupt = install(SignalKind::interrupt(), "SIGINT");
        let terminate = install(SignalKind::terminate(), "SIGTERM");
        async move {
            let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => tracing::info!("received SIGINT"),
                () = wait(terminate) => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!(%error, "cannot install the Ctrl-C handler");
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args =
            Args::try_parse_from(["daemoneye-agent", "--endpoint", "/tmp/a.sock"]).expect("parses");
        assert_eq!(args.endpoint.as_deref(), Some("/tmp/a.sock"));
        assert_eq!(args.timeout_ms, None);
        assert_eq!(args.interval, 30);
        assert_eq!(args.hash_limit, 5);
        assert!(!args.once);
        assert!(Args::try_parse_from(["daemoneye-agent", "--interval", "0"]).is_err());
        assert!(!args.watch);
        assert_eq!(args.watch_interval_ms, 1000);
        assert!(Args::try_parse_from(["daemoneye-agent", "--watch", "--once"]).is_err());
        let watch =
            Args::try_parse_from(["daemoneye-agent", "--watch", "--watch-interval-ms", "100"])
                .expect("parses");
        assert!(watch.watch);
        assert_eq!(watch.watch_interval_ms, 100);
    }
}
