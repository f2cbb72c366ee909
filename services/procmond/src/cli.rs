//! Command-line options.

use std::num::NonZeroUsize;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// DaemonEye's process collector: serves the `daemoneye.ProcessCollector` service
/// (process enumeration, executable hashing, detection tasks) on a local socket until
/// SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "procmond", version)]
pub struct Cli {
    /// IPC settings file (.toml, .yaml or .yml), read before DAEMONEYE_* variables and
    /// these flags, which override it; see `IpcConfig::load` for the keys
    #[arg(long, value_name = "FILE", env = "DAEMONEYE_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Socket path to serve on [default: /var/run/daemoneye/procmond.sock as root,
    /// else $XDG_RUNTIME_DIR/daemoneye/procmond.sock or /tmp/daemoneye-UID/procmond.sock]
    #[arg(long, value_name = "PATH", env = "DAEMONEYE_ENDPOINT")]
    pub endpoint: Option<String>,

    /// Connections served at once; one more is answered "busy" [default: 16]
    #[arg(long, value_name = "N", env = "DAEMONEYE_MAX_CONNECTIONS")]
    pub max_connections: Option<NonZeroUsize>,

    /// Blocking jobs run at once, for hashing and for process enumeration each; one
    /// more is answered "resource exhausted" [default: 16]
    #[arg(long, value_name = "N", env = "DAEMONEYE_MAX_BLOCKING")]
    pub max_blocking: Option<NonZeroUsize>,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such
    /// as "procmond=debug,daemoneye_ipc=trace". Logs go to stderr.
    #[arg(
        long,
        value_name = "FILTER",
        env = "RUST_LOG",
        default_value = "info",
        value_parser = parse_filter
    )]
    pub log_level: String,
}

/// Accepts `value` only if it is a valid `EnvFilter`, so a typo fails at startup.
fn parse_filter(value: &str) -> Result<String, String> {
    EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("procmond").chain(args.iter().copied()))
    }

    #[test]
    fn options_parse() {
        let cli = parse(&[
            "--endpoint",
            "/tmp/x.sock",
            "--max-connections",
            "4",
            "--max-blocking",
            "3",
            "--config",
            "/etc/d.toml",
        ])
        .expect("valid");
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/etc/d.toml"))
        );
        assert_eq!(cli.endpoint.as_deref(), Some("/tmp/x.sock"));
        assert_eq!(cli.max_connections.map(NonZeroUsize::get), Some(4));
        assert_eq!(cli.max_blocking.map(NonZeroUsize::get), Some(3));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--max-connections", "many"]).is_err());
        assert!(parse(&["--max-blocking", "0"]).is_err());
        assert!(parse(&["--log-level", "procmond=loud"]).is_err());
        assert!(parse(&["--log-level", "procmond=debug,warn"]).is_ok());
    }

    #[test]
    fn command_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
