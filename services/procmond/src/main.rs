//! `procmond`: DaemonEye's process collector.
//!
//! Serves [`SystemCollector`] as the `daemoneye.ProcessCollector` service on a local
//! socket until SIGINT or SIGTERM (Ctrl-C off Unix), then stops accepting, removes the
//! socket, lets calls in flight finish and exits 0. Exits 1 with a message on stderr
//! when it cannot start (endpoint in use, bad path, signal handlers unavailable), and 2
//! on a bad command line.

mod cli;
mod shutdown;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use daemoneye_collector::{ProcessCollectorServer, SystemCollector};
use daemoneye_ipc::{IpcConfig, Server};
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("procmond")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
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

/// Binds the endpoint and serves until a shutdown signal.
///
/// # Errors
/// A readable message when the signal handlers cannot be installed or the endpoint
/// cannot be bound.
async fn run(cli: Cli) -> Result<(), String> {
    // Defaults < --config file < DAEMONEYE_* variables < flags.
    let mut config = IpcConfig::load(cli.config.as_deref()).map_err(|error| error.to_string())?;
    if let Some(endpoint) = cli.endpoint {
        config.endpoint_path = endpoint;
    }
    if let Some(max) = cli.max_connections {
        config.max_connections = max.get();
    }
    // Install the handlers before the socket exists, so that a signal sent as soon as
    // the socket appears is a clean shutdown rather than the default (die, socket left).
    let signal =
        shutdown::signal().map_err(|error| format!("cannot install signal handlers: {error}"))?;
    let server = Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new()))
        .map_err(|error| format!("cannot serve on {}: {error}", config.endpoint_path))?;
    tracing::info!(
        endpoint = %config.endpoint_path,
        pid = std::process::id(),
        max_connections = config.max_connections,
        version = env!("CARGO_PKG_VERSION"),
        "procmond serving"
    );
    let served = server
        .serve_with_shutdown(async move {
            let name = signal.await;
            tracing::info!(signal = name, "shutting down");
        })
        .await;
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
