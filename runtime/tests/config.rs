//! `IpcConfig::load`: files (TOML, YAML, top level and under `ipc`), environment
//! variables, and the errors for bad input.
//!
//! `load` reads the process environment, which every test in this binary shares, so
//! every test holds `ENV_LOCK` (and starts from a clean `DAEMONEYE_*` slate); the cases
//! that set variables live in one test function.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

use daemoneye_ipc::{Crc32Variant, IpcConfig, IpcError};

static ENV_LOCK: Mutex<()> = Mutex::new(());

const VARS: [&str; 11] = [
    "DAEMONEYE_ENDPOINT",
    "DAEMONEYE_ENDPOINT_PATH",
    "DAEMONEYE_MAX_FRAME_BYTES",
    "DAEMONEYE_ACCEPT_TIMEOUT_MS",
    "DAEMONEYE_READ_TIMEOUT_MS",
    "DAEMONEYE_WRITE_TIMEOUT_MS",
    "DAEMONEYE_CALL_TIMEOUT_MS",
    "DAEMONEYE_MAX_CONNECTIONS",
    "DAEMONEYE_MAX_IN_FLIGHT",
    "DAEMONEYE_CRC32_VARIANT",
    "DAEMONEYE_DRAIN_TIMEOUT_MS",
];

/// Exclusive use of the environment, with every variable `load` reads unset; they are
/// unset again when the guard drops, even if the test panicked.
struct CleanEnv {
    _lock: MutexGuard<'static, ()>,
}

impl CleanEnv {
    fn take() -> Self {
        let lock = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        clear_env();
        Self { _lock: lock }
    }
}

impl Drop for CleanEnv {
    fn drop(&mut self) {
        clear_env();
    }
}

fn clear_env() {
    for var in VARS {
        std::env::remove_var(var);
    }
}

/// An endpoint this platform accepts, for values read back from files and variables:
/// `/tmp/de-test/{name}.sock`, or the pipe `\\.\pipe\de-test\{name}` on Windows.
fn ep(name: &str) -> String {
    if cfg!(windows) {
        format!(r"\\.\pipe\de-test\{name}")
    } else {
        format!("/tmp/de-test/{name}.sock")
    }
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The field and reason of a `Config` error, panicking on anything else.
fn config_error(result: Result<IpcConfig, IpcError>) -> (&'static str, String) {
    match result {
        Err(IpcError::Config { field, reason }) => (field, reason),
        other => panic!("expected IpcError::Config, got {other:?}"),
    }
}

#[test]
fn toml_file_sets_a_subset_and_keeps_the_other_defaults() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ipc.toml",
        &format!(
            r#"
            # top-level layout (a TOML literal string: no escapes)
            endpoint_path = '{}'
            max_connections = 64
            read_timeout_ms = 1500
            crc32_variant = "IEEE"
        "#,
            ep("a")
        ),
    );
    let config = IpcConfig::load(Some(&path)).unwrap();
    assert_eq!(
        config,
        IpcConfig {
            endpoint_path: ep("a"),
            max_connections: 64,
            read_timeout_ms: 1500,
            crc32_variant: Crc32Variant::Ieee,
            ..IpcConfig::default()
        }
    );
}

#[test]
fn defaults_match_the_specification() {
    let _env = CleanEnv::take();
    let config = IpcConfig::load(None).unwrap();
    assert_eq!(config, IpcConfig::default());
    assert_eq!(config.max_frame_bytes, 1024 * 1024);
    assert_eq!(config.accept_timeout_ms, 5_000);
    assert_eq!(config.read_timeout_ms, 30_000);
    assert_eq!(config.write_timeout_ms, 10_000);
    assert_eq!(config.max_connections, 16);
    assert_eq!(config.crc32_variant, Crc32Variant::Castagnoli);
}

#[test]
fn yaml_file_at_top_level() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "ipc.yaml",
        &format!(
            "endpoint_path: {}\nmax_frame_bytes: 65536\ncrc32_variant: crc32c\n",
            ep("b")
        ),
    );
    let config = IpcConfig::load(Some(&path)).unwrap();
    assert_eq!(config.endpoint_path, ep("b"));
    assert_eq!(config.max_frame_bytes, 65536);
    assert_eq!(config.crc32_variant, Crc32Variant::Castagnoli);
    assert_eq!(config.write_timeout_ms, 10_000);
}

#[test]
fn yaml_and_toml_files_nested_under_ipc_ignore_other_sections() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    // The seed's example, plus a section that belongs to another component.
    let yaml = write(
        &dir,
        "daemoneye.YML",
        &format!(
            "ipc:\n  endpoint_path: {}\n  write_timeout_ms: 2500\nlogging:\n  level: debug\n",
            ep("custom")
        ),
    );
    let config = IpcConfig::load(Some(&yaml)).unwrap();
    assert_eq!(config.endpoint_path, ep("custom"));
    assert_eq!(config.write_timeout_ms, 2500);
    assert_eq!(config.max_connections, 16);

    let toml = write(
        &dir,
        "daemoneye.toml",
        "[alerting]\nsinks = [\"stdout\"]\n\n[ipc]\nmax_in_flight = 8\ncrc32_variant = \"ieee\"\n",
    );
    let config = IpcConfig::load(Some(&toml)).unwrap();
    assert_eq!(config.max_in_flight, 8);
    assert_eq!(config.crc32_variant, Crc32Variant::Ieee);

    // An empty `ipc:` sets nothing; so does an empty file.
    let empty_table = write(&dir, "empty-table.yaml", "ipc:\nother: 1\n");
    assert_eq!(
        IpcConfig::load(Some(&empty_table)).unwrap(),
        IpcConfig::default()
    );
    let empty = write(&dir, "empty.yaml", "# nothing here\n");
    assert_eq!(IpcConfig::load(Some(&empty)).unwrap(), IpcConfig::default());
}

#[test]
fn ipc_field_beside_an_ipc_table_is_an_error() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "mixed.yaml",
        "max_connections: 4\nipc:\n  endpoint_path: /tmp/x.sock\n",
    );
    let (field, reason) = config_error(IpcConfig::load(Some(&path)));
    assert_eq!(field, "max_connections");
    assert!(reason.contains("`ipc`"), "{reason}");
    assert!(reason.contains(&path.display().to_string()), "{reason}");

    let not_a_table = write(&dir, "scalar.toml", "ipc = 5\n");
    let (field, reason) = config_error(IpcConfig::load(Some(&not_a_table)));
    assert_eq!(field, "config");
    assert!(reason.contains("must be a table"), "{reason}");
}

#[test]
fn unknown_key_is_named() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let top = write(&dir, "typo.toml", "max_conections = 4\n");
    let (field, reason) = config_error(IpcConfig::load(Some(&top)));
    assert_eq!(field, "config");
    assert!(reason.contains("unknown key `max_conections`"), "{reason}");
    assert!(reason.contains(&top.display().to_string()), "{reason}");

    let nested = write(&dir, "typo.yaml", "ipc:\n  endpoint: /tmp/x.sock\n");
    let (field, reason) = config_error(IpcConfig::load(Some(&nested)));
    assert_eq!(field, "config");
    assert!(reason.contains("unknown key `endpoint`"), "{reason}");
}

#[test]
fn wrong_type_names_the_field_and_the_file() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "bad.toml", "max_connections = \"many\"\n");
    let (field, reason) = config_error(IpcConfig::load(Some(&path)));
    assert_eq!(field, "max_connections");
    assert!(
        reason.contains(r#"invalid type: found string "many", expected usize"#),
        "{reason}"
    );
    assert!(reason.contains(&path.display().to_string()), "{reason}");

    let negative = write(&dir, "negative.yaml", "read_timeout_ms: -5\n");
    let (field, _) = config_error(IpcConfig::load(Some(&negative)));
    assert_eq!(field, "read_timeout_ms");

    let variant = write(&dir, "variant.yaml", "crc32_variant: adler32\n");
    let (field, reason) = config_error(IpcConfig::load(Some(&variant)));
    assert_eq!(field, "crc32_variant");
    assert!(reason.contains("adler32"), "{reason}");
}

#[test]
fn zero_timeout_fails_validation_naming_the_field() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "zero.yaml", "ipc:\n  read_timeout_ms: 0\n");
    let error = IpcConfig::load(Some(&path)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: read_timeout_ms: must be greater than 0"
    );
    let path = write(&dir, "zero-conn.toml", "max_connections = 0\n");
    let (field, _) = config_error(IpcConfig::load(Some(&path)));
    assert_eq!(field, "max_connections");
}

#[test]
fn unsupported_extension_is_refused_before_reading() {
    let _env = CleanEnv::take();
    // Neither file exists: the extension is checked first.
    for name in ["/tmp/de-test/ipc.json", "/tmp/de-test/ipc"] {
        let (field, reason) = config_error(IpcConfig::load(Some(Path::new(name))));
        assert_eq!(field, "config");
        assert!(reason.starts_with(name), "{reason}");
        assert!(
            reason.contains("unsupported configuration file type")
                && reason.contains(".toml, .yaml or .yml"),
            "{reason}"
        );
    }
}

#[test]
fn missing_file_and_parse_errors_name_the_path() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let (field, reason) = config_error(IpcConfig::load(Some(&missing)));
    assert_eq!(field, "config");
    assert!(
        reason.starts_with(&format!("cannot read {}:", missing.display())),
        "{reason}"
    );

    let broken = write(&dir, "broken.toml", "max_connections = [1\n");
    let (field, reason) = config_error(IpcConfig::load(Some(&broken)));
    assert_eq!(field, "config");
    assert!(
        reason.starts_with(&format!("cannot parse {} as TOML:", broken.display())),
        "{reason}"
    );

    let broken = write(&dir, "broken.yaml", "ipc:\n  a: [1\n");
    let (_, reason) = config_error(IpcConfig::load(Some(&broken)));
    assert!(
        reason.starts_with(&format!("cannot parse {} as YAML:", broken.display())),
        "{reason}"
    );
}

/// Every case that sets environment variables, in one function.
#[test]
fn environment_overrides_the_file() {
    let _env = CleanEnv::take();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ipc.toml",
        &format!(
            "endpoint_path = '{}'\nmax_connections = 4\nread_timeout_ms = 700\n",
            ep("file")
        ),
    );

    // Variables beat the file; fields neither sets keep their defaults.
    std::env::set_var("DAEMONEYE_MAX_CONNECTIONS", "32");
    std::env::set_var("DAEMONEYE_CRC32_VARIANT", "Ieee");
    std::env::set_var("DAEMONEYE_ENDPOINT_PATH", ep("env"));
    let config = IpcConfig::load(Some(&file)).unwrap();
    assert_eq!(config.max_connections, 32);
    assert_eq!(config.crc32_variant, Crc32Variant::Ieee);
    assert_eq!(config.endpoint_path, ep("env"));
    assert_eq!(config.read_timeout_ms, 700);
    assert_eq!(config.write_timeout_ms, 10_000);

    // DAEMONEYE_ENDPOINT is an alias; DAEMONEYE_ENDPOINT_PATH wins over it.
    std::env::set_var("DAEMONEYE_ENDPOINT", ep("alias"));
    let config = IpcConfig::load(Some(&file)).unwrap();
    assert_eq!(config.endpoint_path, ep("env"));
    std::env::remove_var("DAEMONEYE_ENDPOINT_PATH");
    let config = IpcConfig::load(Some(&file)).unwrap();
    assert_eq!(config.endpoint_path, ep("alias"));
    let config = IpcConfig::load(None).unwrap();
    assert_eq!(config.endpoint_path, ep("alias"));

    // Endpoint values are taken verbatim, even when they look like numbers (a bare
    // number is a relative socket path on Unix, and no pipe name on Windows).
    #[cfg(unix)]
    {
        std::env::set_var("DAEMONEYE_ENDPOINT", "12345");
        assert_eq!(IpcConfig::load(None).unwrap().endpoint_path, "12345");
    }

    // A blank variable counts as unset.
    std::env::set_var("DAEMONEYE_MAX_CONNECTIONS", "  ");
    assert_eq!(IpcConfig::load(Some(&file)).unwrap().max_connections, 4);

    // A bad value names the field and the variable.
    std::env::set_var("DAEMONEYE_MAX_CONNECTIONS", "many");
    let (field, reason) = config_error(IpcConfig::load(Some(&file)));
    assert_eq!(field, "max_connections");
    assert!(
        reason.contains(r#"found string "many", expected usize"#),
        "{reason}"
    );
    assert!(
        reason.contains("environment variable DAEMONEYE_MAX_CONNECTIONS"),
        "{reason}"
    );
    std::env::remove_var("DAEMONEYE_MAX_CONNECTIONS");

    // Validation applies to values from the environment too.
    std::env::set_var("DAEMONEYE_WRITE_TIMEOUT_MS", "0");
    let (field, reason) = config_error(IpcConfig::load(None));
    assert_eq!(
        (field, reason.as_str()),
        ("write_timeout_ms", "must be greater than 0")
    );
    std::env::remove_var("DAEMONEYE_WRITE_TIMEOUT_MS");

    // Unrelated DAEMONEYE_* variables are not this loader's business.
    std::env::set_var("DAEMONEYE_LOG_LEVEL", "debug");
    let loaded = IpcConfig::load(None);
    std::env::remove_var("DAEMONEYE_LOG_LEVEL");
    assert!(loaded.is_ok(), "{loaded:?}");

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = std::ffi::OsStr::from_bytes(b"/tmp/\xff.sock");
        std::env::set_var("DAEMONEYE_ENDPOINT_PATH", not_utf8);
        let (field, reason) = config_error(IpcConfig::load(None));
        assert_eq!(field, "endpoint_path");
        assert!(reason.contains("DAEMONEYE_ENDPOINT_PATH"), "{reason}");
    }
}
