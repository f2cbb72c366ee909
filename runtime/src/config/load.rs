//! Loading an [`IpcConfig`] from defaults, a TOML or YAML file and `DAEMONEYE_*`
//! environment variables with figment; the rules are in the [parent module's
//! docs](super).

use std::{
    env::VarError,
    fs::File,
    io::{self, Read},
    path::Path,
};

use figment::{
    error::Kind,
    providers::{Format, Serialized, Toml, Yaml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider, Source,
};

use super::{IpcConfig, FIELDS};
use crate::IpcError;

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
impl IpcConfig {
    /// The defaults, overridden by the file at `path` (when given), overridden by
    /// `DAEMONEYE_*` environment variables, then [validated](Self::validate). See the
    /// [module docs](crate::config) for the file layout and the variable names.
    ///
    /// The file's format follows its extension: `.toml`, or `.yaml` / `.yml` (any case).
    ///
    /// Needs the `config-file` feature.
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
        Self::load_over(IpcConfig::default(), path)
    }

    /// Like [`load`](Self::load) with `base` in place of the defaults: for a program
    /// whose own defaults differ (procmond's endpoint, say). Needs the `config-file`
    /// feature.
    ///
    /// # Errors
    /// As for [`load`](Self::load).
    pub fn load_over(base: IpcConfig, path: Option<&Path>) -> Result<IpcConfig, IpcError> {
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(path) = path {
            figment = figment.merge(read_file(path)?);
        }
        figment = figment.merge(read_env()?);
        let config: IpcConfig = figment.extract().map_err(extraction_error)?;
        config.validate()?;
        Ok(config)
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
