//! Command-line options.

use std::num::NonZeroUsize;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The configuration keys, as `--help` lists them: each is a key of the `--config`
/// file and, upper-cased after `DAEMONEYE_`, an environment variable. Kept equal to
/// `IpcConfig`'s fields by a test.
pub const CONFIG_KEYS: [(&str, &str); 13] = [
    (
        "endpoint_path",
        "socket path (also DAEMONEYE_ENDPOINT, --endpoint)",
    ),
    ("max_frame_bytes", "largest frame, in bytes [1048576]"),
    ("accept_timeout_ms", "time for a client's handshake [5000]"),
    ("read_timeout_ms", "idle connection closed after [30000]"),
    (
        "write_timeout_ms",
        "time to write a batch of frames [10000]",
    ),
    ("call_timeout_ms", "client side: a call's deadline [30000]"),
    (
        "max_connections",
        "connections served at once (--max-connections) [16]",
    ),
    ("max_in_flight", "calls run at once per connection [128]"),
    (
        "crc32_variant",
        "frame checksum, crc32c or ieee: both ends must agree [crc32c]",
    ),
    (
        "drain_timeout_ms",
        "time calls get to finish at shutdown [5000]",
    ),
    ("handler_timeout_ms", "longest a call may run [60000]"),
    (
        "max_blocking",
        "hashing / enumeration jobs at once (--max-blocking) [16]",
    ),
    ("stream_window", "client side: stream credit, in items [32]"),
];

/// The text after the options in `--help`: the configuration keys, and systemd.
fn after_help() -> String {
    let mut text = String::from(
        "Configuration, lowest precedence first: defaults, the --config file (TOML, or \
         YAML; keys at the top level or under an `ipc` table), DAEMONEYE_<KEY> \
         environment variables, then these flags. Keys:\n",
    );
    for (key, what) in CONFIG_KEYS {
        text.push_str(&format!("  {key:<20} {what}\n"));
    }
    text.push_str(
        "\nUnder systemd: a socket passed by socket activation (LISTEN_FDS) is served in \
         place of binding one, after the same checks (path, owner, mode 0600, \
         directories); readiness is reported (Type=notify) when NOTIFY_SOCKET is set.",
    );
    text
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log shippers): timestamp, level, target,
    /// fields, and the spans the event happened in.
    Json,
}

/// DaemonEye's process collector: serves the `daemoneye.ProcessCollector` service
/// (process enumeration, executable hashing, detection tasks) on a local socket until
/// SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "procmond", version, after_help = after_help())]
pub struct Cli {
    /// IPC settings file (.toml, .yaml or .yml), read before DAEMONEYE_* variables and
    /// these flags, which override it; its keys are listed below
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

    /// Log line format: text, or json for log shippers (one object per line)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Write the server's metrics in the Prometheus text format to this file every
    /// --metrics-interval-secs (atomically: a temporary file in the same directory,
    /// then renamed), for node_exporter's textfile collector (name it *.prom)
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<std::path::PathBuf>,

    /// Seconds between two writes of --metrics-textfile
    #[arg(
        long,
        value_name = "N",
        default_value_t = 15,
        requires = "metrics_textfile",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub metrics_interval_secs: u64,
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
    fn metrics_and_log_options() {
        let cli = parse(&[
            "--metrics-textfile",
            "/var/lib/node_exporter/procmond.prom",
            "--metrics-interval-secs",
            "5",
            "--log-format",
            "json",
        ])
        .expect("valid");
        assert_eq!(
            cli.metrics_textfile.as_deref(),
            Some(std::path::Path::new("/var/lib/node_exporter/procmond.prom"))
        );
        assert_eq!(cli.metrics_interval_secs, 5);
        assert_eq!(cli.log_format, LogFormat::Json);
        let defaults = parse(&[]).expect("valid");
        assert_eq!(defaults.log_format, LogFormat::Text);
        assert_eq!(defaults.metrics_textfile, None);
        assert!(parse(&["--metrics-interval-secs", "0", "--metrics-textfile", "x"]).is_err());
        assert!(
            parse(&["--metrics-interval-secs", "5"]).is_err(),
            "an interval without a file"
        );
        assert!(parse(&["--log-format", "xml"]).is_err());
    }

    /// `--help` lists every key `IpcConfig` reads, no more, no fewer.
    #[test]
    fn help_lists_every_configuration_key() {
        let defaults =
            serde_json::to_value(daemoneye_ipc::IpcConfig::default()).expect("serializes");
        let mut fields: Vec<&str> = defaults
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut listed: Vec<&str> = CONFIG_KEYS.iter().map(|(key, _)| *key).collect();
        listed.sort_unstable();
        assert_eq!(listed, fields);
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for (key, _) in CONFIG_KEYS {
            assert!(help.contains(key), "{key} missing from --help:\n{help}");
        }
        assert!(!help.contains("IpcConfig"), "names a Rust API:\n{help}");
    }

    #[test]
    fn command_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
