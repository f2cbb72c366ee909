//! Connection settings shared by client and server (seed: IPC Protocol, Cross-Platform
//! Considerations; ADR-0004, Implementation details), and loading them from a file and
//! the environment (seed: "Configuration is managed via YAML/TOML files or environment
//! variables").
//!
//! # Loading
//!
//! [`IpcConfig::load`] stacks three layers, each overriding the one before, then checks
//! the result with [`IpcConfig::validate`]:
//!
//! 1. the defaults ([`IpcConfig::default`]);
//! 2. a TOML (`.toml`) or YAML (`.yaml`, `.yml`) file, when a path is given;
//! 3. environment variables named `DAEMONEYE_` followed by the field name in upper case:
//!    `DAEMONEYE_ENDPOINT_PATH`, `DAEMONEYE_MAX_FRAME_BYTES`, `DAEMONEYE_ACCEPT_TIMEOUT_MS`,
//!    `DAEMONEYE_READ_TIMEOUT_MS`, `DAEMONEYE_WRITE_TIMEOUT_MS`, `DAEMONEYE_CALL_TIMEOUT_MS`,
//!    `DAEMONEYE_MAX_CONNECTIONS`, `DAEMONEYE_MAX_IN_FLIGHT`, `DAEMONEYE_CRC32_VARIANT`,
//!    `DAEMONEYE_DRAIN_TIMEOUT_MS`, `DAEMONEYE_HANDLER_TIMEOUT_MS`,
//!    `DAEMONEYE_MAX_BLOCKING`. `DAEMONEYE_ENDPOINT` is a shorter name for
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

use std::{
    env::VarError,
    fmt,
    fs::File,
    io::{self, Read},
    path::Path,
    str::FromStr,
    time::Duration,
};

use figment::{
    error::Kind,
    providers::{Format, Serialized, Toml, Yaml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider, Source,
};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::IpcError;

/// Every [`IpcConfig`] field, as spelt in files; `DAEMONEYE_` plus the upper-cased name
/// is its environment variable. Kept in step with the struct by a unit test.
const FIELDS: [&str; 12] = [
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
];

/// Prefix of the environment variables [`IpcConfig::load`] reads.
const ENV_PREFIX: &str = "DAEMONEYE_";
/// The short name for `DAEMONEYE_ENDPOINT_PATH`.
const ENDPOINT_ALIAS: &str = "DAEMONEYE_ENDPOINT";
/// The table that holds the IPC settings in a file that configures more than IPC.
const NESTED_TABLE: &str = "ipc";
/// Largest configuration file read, in bytes; anything bigger is not a config file.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Figment metadata name of the environment layer (used to word errors).
const ENV_SOURCE: &str = "environment variable";
/// Upper bound of the counts that size a semaphore or travel in a `u32` field.
const MAX_COUNT: usize = {
    let semaphore = tokio::sync::Semaphore::MAX_PERMITS;
    if (u32::MAX as usize) < semaphore {
        u32::MAX as usize
    } else {
        semaphore
    }
};

/// Which CRC-32 polynomial frames carry. Both ends must agree.
///
/// In files and environment variables it is written `"crc32c"` or `"ieee"`, in any case
/// (`CRC32C` is accepted); it is always written back in lower case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Crc32Variant {
    /// CRC-32C (Castagnoli), hardware-accelerated on x86-64 and aarch64. The default
    /// (seed: IPC Protocol, CRC32C Checksum Usage). Written `"crc32c"`.
    #[default]
    Castagnoli,
    /// CRC-32 IEEE 802.3 (the polynomial of zlib and Ethernet). Written `"ieee"`.
    Ieee,
}

impl Crc32Variant {
    /// What configuration values may say, in lower case.
    const NAMES: &'static str = "`crc32c` or `ieee` (any case)";

    /// The checksum of `bytes` under this variant.
    #[inline]
    pub fn checksum(self, bytes: &[u8]) -> u32 {
        match self {
            Crc32Variant::Castagnoli => crc32c::crc32c(bytes),
            Crc32Variant::Ieee => crc32fast::hash(bytes),
        }
    }

    /// The configuration name: `"crc32c"` or `"ieee"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Crc32Variant::Castagnoli => "crc32c",
            Crc32Variant::Ieee => "ieee",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Crc32Variant::Castagnoli, Crc32Variant::Ieee]
            .into_iter()
            .find(|variant| variant.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Crc32Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Crc32Variant {
    type Err = IpcError;

    /// Parses `"crc32c"` or `"ieee"`, ignoring case and surrounding whitespace.
    ///
    /// # Errors
    /// [`IpcError::Config`] for `crc32_variant` on any other text.
    fn from_str(name: &str) -> Result<Self, IpcError> {
        Self::from_name(name).ok_or_else(|| IpcError::Config {
            field: "crc32_variant",
            reason: format!("found {name:?}, expected {}", Self::NAMES),
        })
    }
}

impl Serialize for Crc32Variant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Crc32Variant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl de::Visitor<'_> for Name {
            type Value = Crc32Variant;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Crc32Variant::NAMES)
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Crc32Variant, E> {
                Crc32Variant::from_name(name)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(name), &self))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Settings for one endpoint, used by both [`Client`](crate::Client) and
/// [`Server`](crate::Server). Defaults follow the specification (seed: IPC Protocol;
/// ADR-0004).
///
/// Serde reads it with every field optional (a missing field keeps its default) and
/// unknown fields refused; see [`IpcConfig::load`] and the [module docs](self) for
/// files and environment variables.
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
        }
    }
}

impl IpcConfig {
    /// The default configuration with another endpoint.
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint_path: endpoint.into(),
            ..Self::default()
        }
    }

    /// The defaults, overridden by the file at `path` (when given), overridden by
    /// `DAEMONEYE_*` environment variables, then [validated](Self::validate). See the
    /// [module docs](self) for the file layout and the variable names.
    ///
    /// The file's format follows its extension: `.toml`, or `.yaml` / `.yml` (any case).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), daemoneye_ipc::IpcError> {
    /// use std::path::Path;
    /// let config = daemoneye_ipc::IpcConfig::load(Some(Path::new("/etc/daemoneye/ipc.yaml")))?;
    /// let defaults_and_env = daemoneye_ipc::IpcConfig::load(None)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`IpcError::Config`], whose `field` names the offending setting when there is one
    /// and is `"config"` otherwise (the details are then in `reason`):
    /// - the extension is not one of the above (`config`);
    /// - the file cannot be read, is over 1 MiB or is not UTF-8 (`config`, reason names
    ///   the path and the OS error);
    /// - the file is not valid TOML / YAML (`config`, reason names the path, line and
    ///   column);
    /// - an unknown key, in the file or its `ipc` table (`config`, reason names the key
    ///   and the path);
    /// - a value of the wrong type or out of range, e.g. `max_connections = "many"`
    ///   (that field; reason says what was found and expected, and where: the file or the
    ///   environment variable);
    /// - an environment variable that is not UTF-8 (its field);
    /// - whatever [`validate`](Self::validate) rejects (its field).
    pub fn load(path: Option<&Path>) -> Result<IpcConfig, IpcError> {
        let mut figment = Figment::from(Serialized::defaults(IpcConfig::default()));
        if let Some(path) = path {
            figment = figment.merge(read_file(path)?);
        }
        figment = figment.merge(read_env()?);
        let config: IpcConfig = figment.extract().map_err(extraction_error)?;
        config.validate()?;
        Ok(config)
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

/// One layer of settings, already read and checked for unknown keys.
struct Layer {
    metadata: Metadata,
    settings: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.settings.clone()))
    }
}

fn config_error(field: &'static str, reason: String) -> IpcError {
    IpcError::Config { field, reason }
}

/// The static name of the [`IpcConfig`] field called `name`.
fn known_field(name: &str) -> Option<&'static str> {
    FIELDS.into_iter().find(|field| *field == name)
}

/// Reads and parses the file at `path`, keeping only its IPC settings.
fn read_file(path: &Path) -> Result<Layer, IpcError> {
    let shown = path.display();
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    let format = match extension.as_deref() {
        Some("toml") => "TOML",
        Some("yaml" | "yml") => "YAML",
        _ => {
            return Err(config_error(
                "config",
                format!(
                    "{shown}: unsupported configuration file type; the name must end in \
                     .toml, .yaml or .yml"
                ),
            ))
        }
    };
    let text = read_capped(path)
        .map_err(|e| config_error("config", format!("cannot read {shown}: {e}")))?;
    let document = if format == "TOML" {
        Toml::from_str::<Dict>(&text).map_err(|e| e.to_string())
    } else {
        // An empty YAML document (nothing, or only comments) is null: no settings.
        Yaml::from_str::<Option<Dict>>(&text)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    };
    let document = document.map_err(|e| {
        config_error(
            "config",
            format!("cannot parse {shown} as {format}: {}", e.trim_end()),
        )
    })?;
    Ok(Layer {
        metadata: Metadata::from(format!("{format} file"), path),
        settings: ipc_settings(document, path)?,
    })
}

/// The file's contents, refusing more than [`MAX_FILE_BYTES`] and non-UTF-8 text.
fn read_capped(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8: {e}")))
}

/// The IPC table of a parsed file: its `ipc` table when it has one, else the whole
/// document (see the module docs), with unknown keys refused.
fn ipc_settings(mut document: Dict, path: &Path) -> Result<Dict, IpcError> {
    let shown = path.display();
    let settings = match document.remove(NESTED_TABLE) {
        None => document,
        Some(Value::Dict(_, table)) => {
            if let Some(field) = document.keys().find_map(|key| known_field(key)) {
                return Err(config_error(
                    field,
                    format!(
                        "set at the top level of {shown}, which has an `{NESTED_TABLE}` \
                         table; move it into `{NESTED_TABLE}`"
                    ),
                ));
            }
            table
        }
        Some(Value::Empty(..)) => Dict::new(),
        Some(other) => {
            return Err(config_error(
                "config",
                format!(
                    "`{NESTED_TABLE}` in {shown} must be a table of IPC settings, found {}",
                    other.to_actual()
                ),
            ))
        }
    };
    if let Some(key) = settings.keys().find(|key| known_field(key).is_none()) {
        return Err(config_error(
            "config",
            format!(
                "unknown key `{key}` in {shown}; the IPC settings are {}",
                FIELDS.join(", ")
            ),
        ));
    }
    Ok(settings)
}

/// The name of the environment variable for `field`.
fn env_name(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.to_ascii_uppercase())
}

/// The `DAEMONEYE_*` variables that are set, as a layer.
fn read_env() -> Result<Layer, IpcError> {
    let mut settings = Dict::new();
    // The alias first, so that DAEMONEYE_ENDPOINT_PATH overrides it below.
    if let Some(endpoint) = env_value("endpoint_path", ENDPOINT_ALIAS)? {
        settings.insert("endpoint_path".to_owned(), Value::from(endpoint));
    }
    for field in FIELDS {
        let Some(raw) = env_value(field, &env_name(field))? else {
            continue;
        };
        let value = if field == "endpoint_path" {
            // Verbatim: a path must not turn into a number or a list.
            Value::from(raw)
        } else {
            match raw.trim().parse::<Value>() {
                Ok(value) => value,
                Err(never) => match never {},
            }
        };
        settings.insert(field.to_owned(), value);
    }
    Ok(Layer {
        metadata: Metadata::named(ENV_SOURCE),
        settings,
    })
}

/// The value of the variable `name` (which sets `field`); `None` when unset or blank.
fn env_value(field: &'static str, name: &str) -> Result<Option<String>, IpcError> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => Err(config_error(
            field,
            format!("environment variable {name} is not valid UTF-8"),
        )),
    }
}

/// Maps a figment extraction error onto [`IpcError::Config`], naming the field and
/// where its value came from.
fn extraction_error(error: figment::Error) -> IpcError {
    // figment may chain several errors; the first is the one to fix first.
    let Some(error) = error.into_iter().next() else {
        return config_error("config", "cannot extract the configuration".to_owned());
    };
    let key = error.path.first().map(String::as_str);
    let field = key.and_then(known_field).unwrap_or("config");
    let mut reason = match &error.kind {
        Kind::UnknownField(name, _) => format!(
            "unknown key `{name}`; the IPC settings are {}",
            FIELDS.join(", ")
        ),
        kind if field == "config" && !error.path.is_empty() => {
            format!("{}: {kind}", error.path.join("."))
        }
        kind => kind.to_string(),
    };
    if let Some(metadata) = &error.metadata {
        match &metadata.source {
            Some(Source::File(path)) => {
                reason.push_str(&format!(" (in {})", path.display()));
            }
            _ if metadata.name == ENV_SOURCE && field != "config" => {
                reason.push_str(&format!(" (from environment variable {})", env_name(field)));
            }
            _ => {}
        }
    }
    config_error(field, reason)
}

/// `duration` in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The seed's endpoint when privileged, else a per-user one.
///
/// - Unix, effective uid 0: `/var/run/daemoneye/procmond.sock` (seed: IPC, Default Paths).
/// - Unix, other users: `$XDG_RUNTIME_DIR/daemoneye/procmond.sock`, or
///   `/tmp/daemoneye-<uid>/procmond.sock` when that variable is unset.
/// - Windows: `\\.\pipe\daemoneye\procmond`.
pub fn default_endpoint() -> String {
    default_endpoint_for("procmond")
}

/// Like [`default_endpoint`] for a service whose socket is named `name`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_list_matches_the_struct() {
        let value = Value::serialize(IpcConfig::default()).expect("serialisable");
        let dict = value.into_dict().expect("a struct serialises to a dict");
        let mut names: Vec<&str> = dict.keys().map(String::as_str).collect();
        let mut fields = FIELDS.to_vec();
        names.sort_unstable();
        fields.sort_unstable();
        assert_eq!(names, fields);
        assert_eq!(dict["crc32_variant"].as_str(), Some("crc32c"));
        let ieee = Value::serialize(Crc32Variant::Ieee).expect("serialisable");
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
