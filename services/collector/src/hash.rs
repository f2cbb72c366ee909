//! Streaming file hashing: SHA-256 (the default), SHA-512 and BLAKE3.
//!
//! Files are read through a fixed buffer of [`HASH_BUFFER_BYTES`], never whole, so
//! memory stays bounded whatever the file's size, and the cancellation flag is checked
//! before every read. Only regular files are hashed: a FIFO, device or directory is
//! refused (on Unix the file is opened with `O_NONBLOCK`, so even a FIFO swapped in
//! under the path cannot block the open). These functions block: call them from a
//! blocking thread.

use std::{
    fmt,
    fs::File,
    io::{self, Read},
    path::Path,
};

use daemoneye_ipc::CancelFlag;
use daemoneye_proto::{HashRequest, HashResult};
use sha2::{Digest, Sha256, Sha512};

/// Size of the read buffer used while hashing, in bytes (64 KiB).
pub const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// The algorithm used when a request names none.
pub const DEFAULT_HASH_ALGORITHM: &str = "sha256";

/// Every accepted algorithm name, default first. Names are matched ignoring ASCII case
/// and surrounding blanks; answers always use these spellings.
pub const HASH_ALGORITHMS: [&str; 3] = ["sha256", "sha512", "blake3"];

/// A supported hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
    Blake3,
}

impl Algorithm {
    /// The algorithm named `name` (see [`HASH_ALGORITHMS`]); an empty name is the
    /// default.
    ///
    /// # Errors
    /// The message for an unsupported name, quoting it and listing the supported ones.
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        if name.is_empty() {
            return Ok(Self::Sha256);
        }
        [Self::Sha256, Self::Sha512, Self::Blake3]
            .into_iter()
            .find(|algorithm| algorithm.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "unsupported hash algorithm {} (supported: {})",
                    crate::limits::excerpt(name),
                    HASH_ALGORITHMS.join(", ")
                )
            })
    }

    /// The algorithm's name, as in [`HASH_ALGORITHMS`].
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Blake3 => "blake3",
        }
    }

    fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(Sha256::new()),
            Self::Sha512 => Hasher::Sha512(Sha512::new()),
            Self::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hash in progress.
enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
    // Boxed: its state is ~1.9 KB, against ~100 bytes for the others.
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
            Self::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    /// The digest, lowercase hex.
    fn finish(self) -> String {
        match self {
            Self::Sha256(h) => format!("{:x}", h.finalize()),
            Self::Sha512(h) => format!("{:x}", h.finalize()),
            Self::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

/// Why a file could not be hashed.
#[derive(Debug)]
pub(crate) enum HashError {
    /// Opening, inspecting or reading the file failed.
    Io {
        /// What was being done: "open", "inspect" or "read".
        operation: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// The path names something other than a regular file.
    NotAFile,
    /// The caller went away; hashing stopped early.
    Cancelled,
}

impl HashError {
    pub(crate) fn describe(&self, path: &str) -> String {
        match self {
            HashError::Io { operation, error } => format!("cannot {operation} {path}: {error}"),
            HashError::NotAFile => format!("{path} is not a regular file"),
            HashError::Cancelled => format!("hashing {path} was cancelled"),
        }
    }
}

/// Opens `path` for reading without blocking on FIFOs and checks it is a regular file.
fn open_regular(path: &Path) -> Result<File, HashError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    // Windows refuses to open a directory (ERROR_ACCESS_DENIED), and opening a pipe
    // path (`\\.\pipe\…`) would connect to its server: look before opening there.
    #[cfg(windows)]
    if std::fs::metadata(path).is_ok_and(|metadata| !metadata.is_file()) {
        return Err(HashError::NotAFile);
    }
    let file = options.open(path).map_err(|error| HashError::Io {
        operation: "open",
        error,
    })?;
    let metadata = file.metadata().map_err(|error| HashError::Io {
        operation: "inspect",
        error,
    })?;
    if !metadata.is_file() {
        return Err(HashError::NotAFile);
    }
    Ok(file)
}

/// The lowercase hex digest of the regular file at `path`, read in chunks of
/// [`HASH_BUFFER_BYTES`]. Checks `cancelled` before each read.
pub(crate) fn hash_file(
    path: &Path,
    algorithm: Algorithm,
    cancelled: &CancelFlag,
) -> Result<String, HashError> {
    let file = open_regular(path)?;
    hash_reader(file, algorithm, cancelled)
}

/// The lowercase hex digest of everything `reader` yields, read in chunks of
/// [`HASH_BUFFER_BYTES`]. Checks `cancelled` before each read.
pub(crate) fn hash_reader(
    mut reader: impl Read,
    algorithm: Algorithm,
    cancelled: &CancelFlag,
) -> Result<String, HashError> {
    let mut hasher = algorithm.hasher();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        if cancelled.is_cancelled() {
            return Err(HashError::Cancelled);
        }
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(HashError::Io {
                    operation: "read",
                    error,
                })
            }
        }
    }
    Ok(hasher.finish())
}

/// Answers a [`HashRequest`]; never fails as a call (see
/// [`SystemCollector::check_hash`](crate::SystemCollector) for the outcome rules).
pub(crate) fn hash_request(request: &HashRequest, cancelled: &CancelFlag) -> HashResult {
    let failure = |algorithm: &str, message: String| HashResult {
        hash_value: String::new(),
        algorithm: algorithm.to_owned(),
        file_path: request.path.clone(),
        success: false,
        error_message: Some(message),
    };
    let algorithm = match Algorithm::parse(&request.algorithm) {
        Ok(algorithm) => algorithm,
        Err(message) => return failure(request.algorithm.trim(), message),
    };
    if request.path.is_empty() {
        return failure(algorithm.name(), "no path given to hash".to_owned());
    }
    let hash_value = match hash_file(Path::new(&request.path), algorithm, cancelled) {
        Ok(hash) => hash,
        Err(error) => return failure(algorithm.name(), error.describe(&request.path)),
    };
    let mismatch = request
        .expected_hash
        .as_deref()
        .map(str::trim)
        .filter(|expected| !expected.is_empty() && !expected.eq_ignore_ascii_case(&hash_value));
    HashResult {
        success: mismatch.is_none(),
        error_message: mismatch
            .map(|expected| format!("hash mismatch: expected {expected}, got {hash_value}")),
        hash_value,
        algorithm: algorithm.name().to_owned(),
        file_path: request.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// sha256("hello world\n"), as printed by `sha256sum`.
    const HELLO_SHA256: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
    /// sha256 of the empty input.
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn request(path: &Path, algorithm: &str, expected: Option<&str>) -> HashRequest {
        HashRequest {
            path: path.to_string_lossy().into_owned(),
            algorithm: algorithm.to_owned(),
            expected_hash: expected.map(str::to_owned),
        }
    }

    fn temp_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write");
        file.flush().expect("flush");
        file
    }

    #[test]
    fn known_content_has_known_hash() {
        let file = temp_file(b"hello world\n");
        let result = hash_request(&request(file.path(), "", None), &CancelFlag::new());
        assert!(result.success, "{result:?}");
        assert_eq!(result.hash_value, HELLO_SHA256);
        assert_eq!(result.algorithm, "sha256");
        assert_eq!(result.file_path, file.path().to_string_lossy());
        assert_eq!(result.error_message, None);

        let empty = temp_file(b"");
        let result = hash_request(&request(empty.path(), "SHA256", None), &CancelFlag::new());
        assert_eq!(result.hash_value, EMPTY_SHA256);
    }

    #[test]
    fn file_larger_than_the_buffer_hashes_correctly() {
        let content: Vec<u8> = (0..(1024 * 1024 + 3)).map(|i| (i % 251) as u8).collect();
        assert!(content.len() > HASH_BUFFER_BYTES);
        let file = temp_file(&content);
        let expected = format!("{:x}", Sha256::digest(&content));
        let hash = hash_file(file.path(), Algorithm::Sha256, &CancelFlag::new()).expect("hash");
        assert_eq!(hash, expected);
        let expected = format!("{:x}", Sha512::digest(&content));
        let hash = hash_file(file.path(), Algorithm::Sha512, &CancelFlag::new()).expect("hash");
        assert_eq!(hash, expected);
        let expected = blake3::hash(&content).to_hex().to_string();
        let hash = hash_file(file.path(), Algorithm::Blake3, &CancelFlag::new()).expect("hash");
        assert_eq!(hash, expected);
    }

    /// Published vectors: FIPS 180-2 ("abc") and the BLAKE3 reference ("", "abc").
    #[test]
    fn every_algorithm_matches_its_published_vectors() {
        let vectors = [
            (
                "sha256",
                b"abc".as_slice(),
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            ("sha256", b"", EMPTY_SHA256),
            (
                "SHA512",
                b"abc",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
            (
                "blake3",
                b"",
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            ),
            (
                " Blake3 ",
                b"abc",
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            ),
        ];
        for (name, content, expected) in vectors {
            let file = temp_file(content);
            let result = hash_request(&request(file.path(), name, None), &CancelFlag::new());
            assert!(result.success, "{name}: {result:?}");
            assert_eq!(result.hash_value, expected, "{name}");
            assert_eq!(result.algorithm, name.trim().to_ascii_lowercase());
        }
        assert_eq!(Algorithm::parse(""), Ok(Algorithm::Sha256));
        assert_eq!(
            HASH_ALGORITHMS.map(|name| Algorithm::parse(name).map(Algorithm::name)),
            HASH_ALGORITHMS.map(Ok)
        );
    }

    #[test]
    fn expected_hash_is_compared_case_insensitively() {
        let file = temp_file(b"hello world\n");
        let upper = HELLO_SHA256.to_uppercase();
        let result = hash_request(
            &request(file.path(), "sha256", Some(&upper)),
            &CancelFlag::new(),
        );
        assert!(result.success, "{result:?}");
        assert_eq!(result.error_message, None);

        let empty_expectation = hash_request(
            &request(file.path(), "sha256", Some("")),
            &CancelFlag::new(),
        );
        assert!(empty_expectation.success, "empty expected_hash is unset");
    }

    #[test]
    fn mismatch_fails_but_reports_the_hash() {
        let file = temp_file(b"hello world\n");
        let result = hash_request(
            &request(file.path(), "sha256", Some(EMPTY_SHA256)),
            &CancelFlag::new(),
        );
        assert!(!result.success);
        assert_eq!(result.hash_value, HELLO_SHA256);
        assert_eq!(
            result.error_message.as_deref(),
            Some(format!("hash mismatch: expected {EMPTY_SHA256}, got {HELLO_SHA256}").as_str())
        );
    }

    #[test]
    fn missing_file_names_the_path_and_the_os_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.bin");
        let result = hash_request(&request(&path, "", None), &CancelFlag::new());
        assert!(!result.success);
        assert!(result.hash_value.is_empty());
        let message = result.error_message.expect("message");
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        // ENOENT / ERROR_FILE_NOT_FOUND, in the OS's own words.
        assert!(message.contains("(os error 2)"), "{message}");
    }

    #[test]
    fn unsupported_algorithm_is_a_failed_result() {
        let file = temp_file(b"x");
        let result = hash_request(&request(file.path(), "md5", None), &CancelFlag::new());
        assert!(!result.success);
        assert_eq!(result.algorithm, "md5");
        assert!(result.hash_value.is_empty());
        let message = result.error_message.expect("message");
        assert_eq!(
            message,
            "unsupported hash algorithm \"md5\" (supported: sha256, sha512, blake3)"
        );
    }

    #[test]
    fn directories_and_empty_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = hash_request(&request(dir.path(), "", None), &CancelFlag::new());
        assert!(!result.success);
        let message = result.error_message.expect("message");
        assert!(message.contains("not a regular file"), "{message}");

        let result = hash_request(&request(Path::new(""), "", None), &CancelFlag::new());
        assert!(!result.success);
        assert_eq!(
            result.error_message.as_deref(),
            Some("no path given to hash")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("c path");
        // SAFETY: c_path is a valid NUL-terminated string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let result = hash_request(&request(&path, "", None), &CancelFlag::new());
        assert!(!result.success);
        assert!(result
            .error_message
            .expect("message")
            .contains("not a regular file"));
    }

    #[test]
    fn cancellation_stops_hashing() {
        let file = temp_file(b"hello world\n");
        let cancelled = CancelFlag::new();
        cancelled.cancel();
        let result = hash_file(file.path(), Algorithm::Blake3, &cancelled);
        assert!(matches!(result, Err(HashError::Cancelled)));
    }
}
