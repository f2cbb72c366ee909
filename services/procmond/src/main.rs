//! `procmond`: DaemonEye's process collector.
//!
//! Serves [`SystemCollector`] as the `daemoneye.ProcessCollector` service on a local
//! socket until SIGINT or SIGTERM (Ctrl-C off Unix), then stops accepting, removes the
//! socket, lets calls in flight finish and exits 0. Exits 1 with a message on stderr
//! when it cannot start (endpoint in use, bad path, signal handlers unavailable), and 2
//! on a bad command line.
//!
//! Shutdown takes at most about `drain_timeout_ms` after the signal: calls still running
//! then are stopped, and blocking jobs (hashes, process enumerations) still running
//! then, such as a read from a filesystem that never answers, are abandoned with a
//! warning rather than waited for.
//!
//! Operating it: the built-in health service reports `NOT_SERVING` while the process
//! table cannot be read (probed at start, then seen by every full listing);
//! `--metrics-textfile` writes the Prometheus metrics for node_exporter; under systemd
//! it serves a socket passed by socket activation and reports readiness
//! (`packaging/systemd/`).

mod cli;
mod shutdown;
mod systemd;
mod textfile;

use std::{
    io::IsTerminal,
    process::ExitCode,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use clap::Parser;
use daemoneye_collector::{ProcessCollectorServer, SystemCollector, TABLE_RETRY};
use daemoneye_ipc::{BlockingPool, IpcConfig, Server};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, LogFormat};

/// How long the runtime's shutdown waits for its threads once serving has ended. Any
/// blocking job still running by then has outlived the drain timeout and was reported
/// by [`wait_for_blocking_work`]; this only lets idle threads exit.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    // Before any thread exists: this clears LISTEN_FDS and LISTEN_PID.
    let inherited = match systemd::take_listener() {
        Ok(inherited) => inherited,
        Err(message) => return fail(message),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("procmond")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the async runtime: {error}")),
    };
    let outcome = runtime.block_on(run(cli, inherited));
    // Dropping the runtime would wait for every blocking thread, including one stuck
    // for good in a read: bound the wait instead.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

/// Logs to stderr, as text (colours only on a terminal, without NO_COLOR) or JSON lines.
fn init_logging(cli: &Cli) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Reports a startup failure on stderr (through the log when errors are logged, else
/// as a plain line) and returns exit code 1.
fn fail(message: String) -> ExitCode {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{message}");
    } else {
        eprintln!("procmond: {message}");
    }
    ExitCode::FAILURE
}

/// Binds the endpoint (or takes over the socket systemd passed) and serves until a
/// shutdown signal.
///
/// # Errors
/// A readable message when the signal handlers cannot be installed, the endpoint
/// cannot be bound or the passed socket fails its checks, or the metrics textfile
/// cannot be written.
async fn run(cli: Cli, inherited: systemd::Inherited) -> Result<(), String> {
    // Defaults < --config file < DAEMONEYE_* variables < flags.
    let defaults = IpcConfig::with_endpoint(daemoneye_collector::default_endpoint());
    let mut config =
        IpcConfig::load_over(defaults, cli.config.as_deref()).map_err(|error| error.to_string())?;
    if let Some(endpoint) = cli.endpoint {
        config.endpoint_path = endpoint;
    }
    if let Some(max) = cli.max_connections {
        config.max_connections = max.get();
    }
    if let Some(max) = cli.max_blocking {
        config.max_blocking = max.get();
    }
    // Install the handlers before the socket exists, so that a signal sent as soon as
    // the socket appears is a clean shutdown rather than the default (die, socket left).
    let signal =
        shutdown::signal().map_err(|error| format!("cannot install signal handlers: {error}"))?;
    let collector = SystemCollector::from_config(&config);
    let pools = [
        collector.hashing_pool().clone(),
        collector.enumeration_pool().clone(),
    ];
    let service = ProcessCollectorServer::new(collector.clone());
    let activated = inherited.is_some();
    let server = match inherited {
        #[cfg(unix)]
        Some(fd) => daemoneye_ipc::transport::listener_from_fd(&config, fd)
            .and_then(|listener| Server::from_listener(&config, listener, service))
            .map_err(|error| {
                format!(
                    "cannot serve the socket passed by systemd as {}: {error}",
                    config.endpoint_path
                )
            })?,
        #[cfg(not(unix))]
        Some(never) => match never {},
        None => Server::bind(&config, service)
            .map_err(|error| format!("cannot serve on {}: {error}", config.endpoint_path))?,
    };
    // The health check says NOT_SERVING while the process table cannot be read; the
    // first probe finishes before readiness is announced.
    let health = server.health();
    if let Err(status) = collector.probe_process_table().await {
        tracing::warn!(%status, "cannot probe the process table at start");
    }
    let monitor = tokio::spawn(collector.report_health(health, TABLE_RETRY));
    let metrics = server.metrics();
    let textfile = match &cli.metrics_textfile {
        Some(path) => {
            // A path that cannot be written is an operator's mistake: say so at once.
            textfile::write_now(&metrics, path)
                .await
                .map_err(|error| format!("--metrics-textfile: {error}"))?;
            let every = Duration::from_secs(cli.metrics_interval_secs);
            Some(tokio::spawn(textfile::write_every(
                metrics.clone(),
                path.clone(),
                every,
            )))
        }
        None => None,
    };
    tracing::info!(
        endpoint = %config.endpoint_path,
        pid = std::process::id(),
        max_connections = config.max_connections,
        max_blocking = config.max_blocking,
        crc32_variant = config.crc32_variant.as_str(),
        socket_activated = activated,
        version = env!("CARGO_PKG_VERSION"),
        "procmond serving"
    );
    systemd::notify_ready(&config.endpoint_path);
    let signalled = Arc::new(OnceLock::new());
    let signalled_at = Arc::clone(&signalled);
    let served = server
        .serve_with_shutdown(async move {
            let name = signal.await;
            let _ = signalled_at.set(Instant::now());
            systemd::notify_stopping();
            tracing::info!(signal = name, "shutting down");
        })
        .await;
    monitor.abort();
    let drain_end = signalled.get().copied().unwrap_or_else(Instant::now)
        + Duration::from_millis(config.drain_timeout_ms);
    wait_for_blocking_work(&pools, drain_end).await;
    if let (Some(writer), Some(path)) = (textfile, &cli.metrics_textfile) {
        writer.abort();
        // The last figures, so that the file does not stop short of the shutdown.
        if let Err(error) = textfile::write_now(&metrics, path).await {
            tracing::warn!(%error, "cannot write the final metrics textfile");
        }
    }
    match served {
        Ok(()) => {
            tracing::info!(endpoint = %config.endpoint_path, "procmond stopped");
            Ok(())
        }
        Err(error) => Err(format!(
            "serving on {} failed: {error}",
            config.endpoint_path
        )),
    }
}

/// Waits until no blocking job is running in `pools`, or until `deadline`; then logs a
/// warning with the number of jobs abandoned. The calls that started them have been
/// answered or stopped by now, and a stopped hash ends at its next read, so what is
/// still running then is stuck (a read that never returns) and must not hold up exit.
async fn wait_for_blocking_work(pools: &[BlockingPool], deadline: Instant) {
    let idle = async {
        for pool in pools {
            pool.wait_idle().await;
        }
    };
    if tokio::time::timeout_at(deadline.into(), idle)
        .await
        .is_err()
    {
        let abandoned: usize = pools.iter().map(BlockingPool::running).sum();
        tracing::warn!(
            abandoned,
            "{abandoned} blocking job(s) (hashing, process enumeration) still running after \
             the drain timeout, probably stuck in a read that does not return; exiting \
             without them"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A job stuck for good does not hold up the shutdown: the wait ends at the
    /// deadline, and the runtime's bounded shutdown returns although the thread is
    /// still blocked (dropping the runtime would wait for it forever).
    #[test]
    fn a_stuck_blocking_job_is_abandoned_at_the_deadline() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let pool = BlockingPool::new(2);
        let (_never, stuck) = mpsc::channel::<()>();
        let started = Instant::now();
        runtime.block_on(async {
            let job = pool
                .spawn("stuck", move |_| {
                    let _ = stuck.recv();
                })
                .expect("a free slot");
            drop(job); // the caller gave up; the thread stays blocked
            wait_for_blocking_work(
                std::slice::from_ref(&pool),
                Instant::now() + Duration::from_millis(200),
            )
            .await;
        });
        assert_eq!(pool.running(), 1, "still stuck");
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "shutdown waited for the stuck thread"
        );
    }
}
