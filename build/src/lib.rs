//! # daemoneye-ipc-build
//!
//! Compiles `.proto` files for a [`daemoneye-ipc`] service from `build.rs`, the way
//! `tonic-build` serves tonic: one call, no `protoc` on the machine (the files are parsed
//! by [`protox`], a pure-Rust protobuf compiler, then turned into Rust by
//! [`prost_build`]).
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     daemoneye_ipc_build::compile_protos(&["proto/greeter.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! It writes two things to `OUT_DIR`:
//!
//! - the Rust messages, one file per protobuf package (`example.greeter.v1.rs`; a file
//!   without a `package` gives `_.rs`), which refer to the `prost` that `daemoneye-ipc`
//!   re-exports, so the crate needs no `prost` dependency of its own;
//! - the encoded `google.protobuf.FileDescriptorSet` of those files and everything they
//!   import, **with source info**: the `.proto` comments become the message and field
//!   docs of the service's contract (`ServiceDescriptor::contract()`), reflection, and
//!   generated references. Named `file_descriptor_set.bin` unless
//!   [`Builder::file_descriptor_set_name`] says otherwise.
//!
//! The crate includes both with two macros of `daemoneye-ipc`, and hands the descriptor
//! set to `#[ipc_service]`:
//!
//! ```ignore
//! // src/lib.rs
//! pub mod pb {
//!     daemoneye_ipc::include_proto!("example.greeter.v1"); // the `package` of the file
//! }
//! pub const FILE_DESCRIPTOR_SET: &[u8] = daemoneye_ipc::include_file_descriptor_set!();
//!
//! #[daemoneye_ipc::ipc_service(name = "example.greeter.v1.Greeter", descriptors = FILE_DESCRIPTOR_SET)]
//! pub trait Greeter {
//!     async fn say_hello(&self, req: pb::HelloRequest) -> Result<pb::HelloReply, daemoneye_ipc::Status>;
//! }
//! ```
//!
//! (Without the macros: `include!(concat!(env!("OUT_DIR"), "/example.greeter.v1.rs"));`
//! and `include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"))`.)
//!
//! Every `.proto` file read, imports included, is reported to cargo with
//! `cargo:rerun-if-changed`, so editing one rebuilds the crate. A mistake in a file is an
//! [`Error`] naming the file, line and column (`proto/greeter.proto:7:3: expected ...`),
//! never a panic; returned from `main`, it is what cargo prints.
//!
//! Options are on [`Builder`]: serde derives (off by default), the file name of the
//! descriptor set, the paths of `prost` and the well-known types, and any other
//! [`prost_build::Config`] setting through [`Builder::configure`].
//!
//! [`daemoneye-ipc`]: https://docs.rs/daemoneye-ipc
#![deny(missing_docs)]

use std::{
    collections::BTreeSet,
    env, fmt, fs,
    path::{Path, PathBuf},
};

use protox::prost::Message as _;

/// The `prost-build` this crate generates code with, for [`Builder::configure`].
pub use prost_build;

/// The default name of the descriptor set written to `OUT_DIR` (with `.bin` appended),
/// the one `daemoneye_ipc::include_file_descriptor_set!()` includes.
pub const DEFAULT_FILE_DESCRIPTOR_SET_NAME: &str = "file_descriptor_set";

/// Compiles `protos` (paths of `.proto` files, each under one of `includes`) with the
/// default [`Builder`]: messages refer to `::daemoneye_ipc::prost`, no serde derives, the
/// descriptor set is `OUT_DIR/file_descriptor_set.bin`.
///
/// # Errors
/// See [`Builder::compile`].
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    Builder::new().compile(protos, includes)
}

/// A prost-build configuration hook given to [`Builder::configure`].
type Configure = Box<dyn Fn(&mut prost_build::Config)>;

/// How to compile `.proto` files; [`compile_protos`] is `Builder::new().compile(..)`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     daemoneye_ipc_build::Builder::new()
///         .serde(true) // the crate then depends on `serde` with its `derive` feature
///         .file_descriptor_set_name("greeter_descriptor")
///         .configure(|config| {
///             config.btree_map(["."]);
///         })
///         .compile(&["proto/greeter.proto"], &["proto"])?;
///     Ok(())
/// }
/// ```
pub struct Builder {
    serde: bool,
    prost_path: String,
    prost_types_path: String,
    file_descriptor_set_name: String,
    out_dir: Option<PathBuf>,
    configure: Vec<Configure>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("serde", &self.serde)
            .field("prost_path", &self.prost_path)
            .field("prost_types_path", &self.prost_types_path)
            .field("file_descriptor_set_name", &self.file_descriptor_set_name)
            .field("out_dir", &self.out_dir)
            .field("configure", &self.configure.len())
            .finish()
    }
}

impl Builder {
    /// The defaults: generated code refers to `::daemoneye_ipc::prost` and
    /// `::daemoneye_ipc::prost_types`, no serde derives, the descriptor set is named
    /// [`DEFAULT_FILE_DESCRIPTOR_SET_NAME`], output goes to `OUT_DIR`.
    pub fn new() -> Self {
        Self {
            serde: false,
            prost_path: "::daemoneye_ipc::prost".to_owned(),
            prost_types_path: "::daemoneye_ipc::prost_types".to_owned(),
            file_descriptor_set_name: DEFAULT_FILE_DESCRIPTOR_SET_NAME.to_owned(),
            out_dir: None,
            configure: Vec::new(),
        }
    }

    /// Also derive `serde::Serialize` and `serde::Deserialize` on every generated type,
    /// with `#[serde(default)]` on messages (a missing JSON field takes its proto3
    /// default). The JSON uses the proto field names and enums as integers: it is not
    /// the canonical proto3 JSON mapping. The crate must depend on `serde` with its
    /// `derive` feature. Off by default.
    pub fn serde(mut self, yes: bool) -> Self {
        self.serde = yes;
        self
    }

    /// The name of the descriptor set file in `OUT_DIR`, without its `.bin` extension;
    /// include it with `daemoneye_ipc::include_file_descriptor_set!("name")`. Needed only
    /// when one `build.rs` compiles several sets.
    pub fn file_descriptor_set_name(mut self, name: impl Into<String>) -> Self {
        self.file_descriptor_set_name = name.into();
        self
    }

    /// The path generated code uses for `prost` (default `::daemoneye_ipc::prost`). A
    /// crate that depends on `prost` itself and not on `daemoneye-ipc` (a plain
    /// messages crate) sets `"::prost"`.
    pub fn prost_path(mut self, path: impl Into<String>) -> Self {
        self.prost_path = path.into();
        self
    }

    /// The path generated code uses for the protobuf well-known types such as
    /// `google.protobuf.Timestamp` (default `::daemoneye_ipc::prost_types`).
    pub fn prost_types_path(mut self, path: impl Into<String>) -> Self {
        self.prost_types_path = path.into();
        self
    }

    /// Writes to `dir` instead of `OUT_DIR` (for tests, or a generator run by hand).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Adjusts the [`prost_build::Config`] after this builder's own settings, e.g.
    /// `config.bytes(["."])` or `config.type_attribute(...)`. Its `out_dir` and the
    /// compilation itself stay this builder's.
    pub fn configure(mut self, configure: impl Fn(&mut prost_build::Config) + 'static) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    /// Compiles `protos` (paths of `.proto` files, relative to the crate's directory or
    /// absolute, each under one of `includes`, the directories imports are looked up
    /// in), writes the Rust code and the descriptor set, and prints
    /// `cargo:rerun-if-changed` for every `.proto` file read.
    ///
    /// # Errors
    /// An [`Error`] saying what went wrong and where: a syntax or type error, an import
    /// or file not found (naming the file, line and column), `OUT_DIR` not set (not run
    /// from a build script and no [`out_dir`](Self::out_dir)), or a file that could not
    /// be written.
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let read = self.compile_files(protos, includes)?;
        for path in read {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        Ok(())
    }

    /// [`compile`](Self::compile), returning the `.proto` files read instead of
    /// printing them (all of them, also on error, when the compiler got that far).
    fn compile_files(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<BTreeSet<PathBuf>, Error> {
        let protos: Vec<&Path> = protos.iter().map(AsRef::as_ref).collect();
        let includes: Vec<&Path> = includes.iter().map(AsRef::as_ref).collect();
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => env::var_os("OUT_DIR").map(PathBuf::from).ok_or_else(|| {
                Error::new(
                    "OUT_DIR is not set: call daemoneye_ipc_build from a build script \
                     (build.rs), or give Builder::out_dir",
                )
            })?,
        };

        if let Some(missing) = protos
            .iter()
            .find(|proto| !proto.is_file() && !includes.iter().any(|dir| dir.join(proto).is_file()))
        {
            return Err(Error {
                message: format!(
                    "{}: no such file (looked in the current directory and under {})",
                    missing.display(),
                    list(&includes)
                ),
                file: Some(missing.to_path_buf()),
            });
        }
        let mut compiler =
            protox::Compiler::new(&includes).map_err(|error| Error::protobuf(&error, &includes))?;
        compiler.include_source_info(true).include_imports(true);
        compiler
            .open_files(&protos)
            .map_err(|error| Error::protobuf(&error, &includes))?;
        // Every file read from disk: the inputs and their imports (the well-known
        // types bundled with protox have no path).
        let read: BTreeSet<PathBuf> = compiler
            .files()
            .filter_map(|file| file.path().map(Path::to_owned))
            .chain(protos.iter().map(|p| p.to_path_buf()))
            .collect();

        let fds = compiler.file_descriptor_set();
        let descriptor_path = out_dir.join(format!("{}.bin", self.file_descriptor_set_name));
        fs::write(&descriptor_path, fds.encode_to_vec()).map_err(|error| {
            Error::new(format!("writing {}: {error}", descriptor_path.display()))
        })?;

        let mut config = prost_build::Config::new();
        config
            .out_dir(&out_dir)
            .prost_path(&self.prost_path)
            .prost_types_path(&self.prost_types_path);
        if self.serde {
            config
                .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
                // Messages only (not enums): missing JSON fields take their defaults.
                .message_attribute(".", "#[serde(default)]");
        }
        for configure in &self.configure {
            configure(&mut config);
        }
        config
            .compile_fds(fds)
            .map_err(|error| Error::new(format!("generating Rust code: {error}")))?;
        Ok(read)
    }
}

/// Why `.proto` files did not compile. Its `Display` and `Debug` are the same one-line
/// message (so that `fn main() -> Result<(), Box<dyn Error>>` in `build.rs` prints it
/// as is), naming the file, line and column when the fault is in a file:
/// `proto/greeter.proto:7:3: expected ';', but found 'string'`.
pub struct Error {
    message: String,
    file: Option<PathBuf>,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            file: None,
        }
    }

    /// A protox error, its file named by its path on disk where one of `includes`
    /// holds it (protox names files relative to their include directory).
    fn protobuf(error: &protox::Error, includes: &[&Path]) -> Self {
        // protox's `Debug` is `name:line:column: message` (its `Display` lacks the
        // position).
        let detail = format!("{error:?}");
        let Some(name) = error.file() else {
            return Self::new(format!(
                "cannot compile the .proto files: {detail} (include directories: {})",
                list(includes)
            ));
        };
        let path = includes
            .iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from(name));
        let message = match detail.strip_prefix(name) {
            Some(rest) if rest.starts_with(':') => format!("{}{rest}", path.display()),
            _ => format!("{}: {detail}", path.display()),
        };
        Self {
            message,
            file: Some(path),
        }
    }

    /// The `.proto` file at fault, when the error is in one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// `a, b` for the include directories in a message.
fn list(paths: &[&Path]) -> String {
    if paths.is_empty() {
        return "no include directory".to_owned();
    }
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    const GREETER: &str = r#"syntax = "proto3";

package example.greeter.v1;

// Whom to greet.
message HelloRequest {
  // The name to greet.
  string name = 1;
}
"#;

    /// A directory with `proto/` holding `files`, and an empty `out/`.
    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join("proto").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        fs::create_dir(dir.path().join("out")).unwrap();
        dir
    }

    fn compile(builder: Builder, dir: &Path, protos: &[&str]) -> Result<BTreeSet<PathBuf>, Error> {
        let protos: Vec<PathBuf> = protos.iter().map(|p| dir.join("proto").join(p)).collect();
        builder
            .out_dir(dir.join("out"))
            .compile_files(&protos, &[dir.join("proto")])
    }

    fn descriptor_set(path: &Path) -> protox::prost_reflect::prost_types::FileDescriptorSet {
        let bytes = fs::read(path).unwrap();
        protox::prost_reflect::prost_types::FileDescriptorSet::decode(&bytes[..]).unwrap()
    }

    #[test]
    fn writes_code_on_the_reexported_prost_and_the_descriptor_set_with_comments() {
        let dir = project(&[("greeter.proto", GREETER)]);
        let read = compile(Builder::new(), dir.path(), &["greeter.proto"]).unwrap();
        assert_eq!(
            read.into_iter().collect::<Vec<_>>(),
            [dir.path().join("proto").join("greeter.proto")]
        );

        let code = fs::read_to_string(dir.path().join("out/example.greeter.v1.rs")).unwrap();
        assert!(code.contains("::daemoneye_ipc::prost::Message"), "{code}");
        assert!(
            code.contains("prost_path = \"::daemoneye_ipc::prost\""),
            "{code}"
        );
        let elsewhere = code.replace("::daemoneye_ipc::prost", "");
        assert!(!elsewhere.contains("::prost"), "only the re-export: {code}");
        assert!(!code.contains("serde"), "serde is off by default: {code}");
        assert!(code.contains("/// The name to greet."), "{code}");

        let fds = descriptor_set(&dir.path().join("out/file_descriptor_set.bin"));
        assert_eq!(fds.file.len(), 1);
        let file = &fds.file[0];
        assert_eq!(file.name(), "greeter.proto");
        let comments: Vec<&str> = file
            .source_code_info
            .as_ref()
            .expect("source info is kept")
            .location
            .iter()
            .filter_map(|l| l.leading_comments.as_deref())
            .collect();
        assert!(comments.contains(&" Whom to greet.\n"), "{comments:?}");
        assert!(comments.contains(&" The name to greet.\n"), "{comments:?}");
    }

    #[test]
    fn options_serde_set_name_and_prost_path() {
        let dir = project(&[("greeter.proto", GREETER)]);
        let builder = Builder::new()
            .serde(true)
            .file_descriptor_set_name("greeter_descriptor")
            .prost_path("::prost");
        compile(builder, dir.path(), &["greeter.proto"]).unwrap();
        let code = fs::read_to_string(dir.path().join("out/example.greeter.v1.rs")).unwrap();
        assert!(
            code.contains("#[derive(serde::Serialize, serde::Deserialize)]"),
            "{code}"
        );
        assert!(code.contains("#[serde(default)]"), "{code}");
        assert!(code.contains("::prost::Message"), "{code}");
        assert!(!code.contains("daemoneye_ipc"), "{code}");
        assert!(dir.path().join("out/greeter_descriptor.bin").is_file());
        assert!(!dir.path().join("out/file_descriptor_set.bin").exists());
    }

    #[test]
    fn imports_are_watched_and_kept_in_the_descriptor_set() {
        let common = "syntax = \"proto3\";\npackage example.common;\n// A point in time.\nmessage Stamp { google.protobuf.Timestamp at = 1; }\nimport \"google/protobuf/timestamp.proto\";\n";
        let main = "syntax = \"proto3\";\npackage example.main;\nimport \"common/stamp.proto\";\nmessage Event { example.common.Stamp stamp = 1; }\n";
        let dir = project(&[("common/stamp.proto", common), ("main.proto", main)]);
        let read = compile(Builder::new(), dir.path(), &["main.proto"]).unwrap();
        let proto = dir.path().join("proto");
        assert_eq!(
            read.into_iter().collect::<Vec<_>>(),
            [proto.join("common/stamp.proto"), proto.join("main.proto")]
        );
        let fds = descriptor_set(&dir.path().join("out/file_descriptor_set.bin"));
        let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "google/protobuf/timestamp.proto",
                "common/stamp.proto",
                "main.proto"
            ]
        );
        let code = fs::read_to_string(dir.path().join("out/example.common.rs")).unwrap();
        assert!(
            code.contains("::daemoneye_ipc::prost_types::Timestamp"),
            "{code}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_line_and_column() {
        let broken =
            "syntax = \"proto3\";\n\nmessage Broken {\n  string name = 1\n  int32 id = 2;\n}\n";
        let dir = project(&[("broken.proto", broken)]);
        let error = compile(Builder::new(), dir.path(), &["broken.proto"]).unwrap_err();
        let path = dir.path().join("proto").join("broken.proto");
        assert_eq!(error.file(), Some(path.as_path()));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}:5:3: expected ';'", path.display())),
            "{message}"
        );
        assert_eq!(format!("{error:?}"), message, "Debug is the same line");
        assert!(!dir.path().join("out/file_descriptor_set.bin").exists());
    }

    #[test]
    fn a_missing_import_names_the_importing_line() {
        let main = "syntax = \"proto3\";\nimport \"nowhere.proto\";\n";
        let dir = project(&[("main.proto", main)]);
        let error = compile(Builder::new(), dir.path(), &["main.proto"]).unwrap_err();
        let path = dir.path().join("proto").join("main.proto");
        assert_eq!(
            error.to_string(),
            format!("{}:2:1: import 'nowhere.proto' not found", path.display())
        );
    }

    #[test]
    fn a_type_error_names_its_line() {
        let main = "syntax = \"proto3\";\nmessage A {\n  Missing field = 1;\n}\n";
        let dir = project(&[("main.proto", main)]);
        let error = compile(Builder::new(), dir.path(), &["main.proto"]).unwrap_err();
        let path = dir.path().join("proto").join("main.proto");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}:3:3: ", path.display())),
            "{message}"
        );
        assert!(message.contains("Missing"), "{message}");
    }

    #[test]
    fn a_file_outside_the_includes_or_missing_is_an_error_not_a_panic() {
        let dir = project(&[("greeter.proto", GREETER)]);
        let error = compile(Builder::new(), dir.path(), &["absent.proto"]).unwrap_err();
        let absent = dir.path().join("proto").join("absent.proto");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: no such file", absent.display())),
            "{error}"
        );
        assert_eq!(error.file(), Some(absent.as_path()));

        let elsewhere = tempfile::tempdir().unwrap();
        let outside = elsewhere.path().join("x.proto");
        fs::write(&outside, GREETER).unwrap();
        let error = Builder::new()
            .out_dir(dir.path().join("out"))
            .compile_files(&[&outside], &[dir.path().join("proto")])
            .unwrap_err();
        assert!(error.to_string().contains("x.proto"), "{error}");
        assert!(
            error.to_string().contains("is not in any include path"),
            "{error}"
        );
        let proto = dir.path().join("proto");
        assert!(
            error.to_string().contains(&*proto.to_string_lossy()),
            "{error}"
        );
    }

    #[test]
    fn without_out_dir_it_says_where_to_call_it_from() {
        if env::var_os("OUT_DIR").is_some() {
            return; // set for the whole test process: nothing to check here
        }
        let dir = project(&[("greeter.proto", GREETER)]);
        let error = Builder::new()
            .compile_files(
                &[dir.path().join("proto").join("greeter.proto")],
                &[dir.path().join("proto")],
            )
            .unwrap_err();
        assert!(error.to_string().contains("OUT_DIR is not set"), "{error}");
    }
}
